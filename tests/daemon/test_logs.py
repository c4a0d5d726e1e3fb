"""Logging through the writer thread's bounded buffer (the daemon as a process: test_process)."""

from __future__ import annotations

import io
import logging
from collections import deque

import pytest

from daemon import logs


def test_a_full_buffer_drops_records_and_says_how_many_once_there_is_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "BUFFER_RECORDS", 2)
    pending: deque[logging.LogRecord] = deque()
    out = io.StringIO()
    writer = logs.Writer(pending, out)
    log = logging.Logger("test.logs")
    log.addHandler(logs.BufferHandler(pending))
    for n in range(5):
        log.warning("line %d of %s", n, "five")
    writer.write_pending()
    log.warning("after")
    writer.write_pending()
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]  # without the time
    assert lines == [
        "WARNING test.logs: line 0 of five",
        "WARNING test.logs: line 1 of five",
        "WARNING pezzottify.logs: 3 log records dropped: stderr was not keeping up",
        "WARNING test.logs: after",
    ]
