"""The example service files stop the daemon with a grace above its own shutdown timeout."""

from __future__ import annotations

import re
from pathlib import Path

from daemon.config import Config

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHUTDOWN = Config.shutdown_timeout_sec


def test_systemd_unit_fits_the_shutdown_timeout() -> None:
    unit = (ROOT / "deploy" / "pezzottify.service").read_text()
    assert re.search(r"^KillMode=mixed$", unit, re.M)
    assert re.search(r"^Restart=on-failure$", unit, re.M)
    stop = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    assert stop is not None
    assert int(stop.group(1)) >= DEFAULT_SHUTDOWN + 10


def test_dockerfile_stops_with_sigterm_and_documents_the_grace() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "STOPSIGNAL SIGTERM" in text
    grace = re.search(r"docker stop -t (\d+)", text)
    assert grace is not None
    assert int(grace.group(1)) >= DEFAULT_SHUTDOWN + 10
    assert "pezzottify-server" in text
