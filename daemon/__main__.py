"""`python -m daemon` runs the server."""

import sys

from daemon.main import main

sys.exit(main())
