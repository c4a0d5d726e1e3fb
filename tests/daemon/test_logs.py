"""Logging through the writer thread's bounded queue (the daemon as a process: test_process)."""

from __future__ import annotations

import logging
import queue

from daemon.logs import _Enqueue


def taken(records: queue.Queue[logging.LogRecord | None], count: int) -> list[str]:
    got = [records.get_nowait() for _ in range(count)]
    return [record.getMessage() for record in got if record is not None]


def test_a_full_queue_drops_records_and_says_how_many_once_there_is_room() -> None:
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(2)
    log = logging.Logger("test.logs")
    log.addHandler(_Enqueue(records))
    for n in range(5):
        log.warning("line %d of %s", n, "five")
    assert taken(records, 2) == ["line 0 of five", "line 1 of five"]
    log.warning("after")
    assert taken(records, 2) == ["3 log records dropped: stderr was not keeping up", "after"]
    assert records.empty()
