"""`python -m fake_downloader`: run the fake downloader service."""

from __future__ import annotations

from fake_downloader.main import main

raise SystemExit(main())
