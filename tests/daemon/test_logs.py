"""Logging through the writer thread's bounded buffer (the daemon as a process: test_process)."""

from __future__ import annotations

import io
import logging
import time
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


def test_a_line_such_as_listening_on_goes_through_the_writer_whole_and_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line such as "listening on ..." written beside the writer could be cut in two by one of
    its batches; through the writer it comes out whole, after what was logged before it."""
    pending: logs.Pending = deque()
    out = io.StringIO()
    writer = logs.Writer(pending, out)
    monkeypatch.setattr(logs, "_writer", writer)
    log = logging.Logger("test.logs")
    log.addHandler(logs.BufferHandler(pending))
    log.warning("before")
    logs.write_line("listening on http://127.0.0.1:3001")
    log.warning("after")
    assert out.getvalue() == ""  # nothing written beside the writer
    writer.write_pending()
    first, line, last = out.getvalue().splitlines()
    assert line == "listening on http://127.0.0.1:3001"
    assert [first.split(" ", 1)[1], last.split(" ", 1)[1]] == [
        "WARNING test.logs: before",
        "WARNING test.logs: after",
    ]


def test_a_line_such_as_listening_on_wakes_the_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ready is said at once, not at the writer's next interval."""
    monkeypatch.setattr(logs, "WRITE_INTERVAL_S", 60.0)
    out = io.StringIO()
    writer = logs.Writer(deque(), out)
    monkeypatch.setattr(logs, "_writer", writer)
    writer.thread.start()
    try:
        logs.write_line("listening on http://127.0.0.1:3001")
        deadline = time.monotonic() + 5
        while not out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out.getvalue() == "listening on http://127.0.0.1:3001\n"
    finally:
        writer.stop(5)
    assert not writer.thread.is_alive()
