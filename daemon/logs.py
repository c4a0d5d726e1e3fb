"""Logging setup: one stderr handler, a compact format, the configured level.

Records are written to stderr by a thread of their own: the code that logs, the event loop above
all, only puts them in a bounded queue (`logging.handlers.QueueHandler`). A write to stderr
blocks while its reader does not keep up (a full pipe to a stalled log collector, a terminal on
pause), and it must not stop the API and the queue with it. When the queue is full, records are
dropped and counted, and a warning says how many once there is room again.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import threading

QUEUE_RECORDS = 10_000
FLUSH_TIMEOUT_S = 5.0


class _Enqueue(logging.handlers.QueueHandler):
    """Puts records in the writer's queue without ever waiting; counts those it drops."""

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(records)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Only the message is merged now (its arguments may change later); the time, level and
        # any traceback are formatted by the writer's thread.
        record.msg, record.args = record.getMessage(), None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.queue.put_nowait(self._drop_notice())
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _drop_notice(self) -> logging.LogRecord:
        return logging.LogRecord(
            "pezzottify.logs", logging.WARNING, __file__, 0,
            "%d log records dropped: stderr was not keeping up", (self.dropped,), None,
        )  # fmt: skip


_writer: tuple[queue.Queue[logging.LogRecord | None], threading.Thread] | None = None


def setup_logging(level: str) -> None:
    """Log to stderr through the writer thread (started here; `flush_logging` stops it)."""
    global _writer
    flush_logging()
    handler = _stderr()
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(QUEUE_RECORDS)
    thread = threading.Thread(target=_write_out, args=(records, handler), name="log-writer")
    thread.daemon = True  # a stderr that never drains must not keep the process alive
    thread.start()
    _writer = records, thread
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(records)]
    root.setLevel(level.upper())
    # Framework loggers stay at warning: the daemon logs requests itself.
    for noisy in ("hypercorn", "quart", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _stderr() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    return handler


def _write_out(records: queue.Queue[logging.LogRecord | None], handler: logging.Handler) -> None:
    while (record := records.get()) is not None:
        handler.handle(record)


def flush_logging(timeout: float = FLUSH_TIMEOUT_S) -> None:
    """Write out the records queued so far and stop the writer (blocking, at most about
    `timeout` seconds: a stderr that does not drain loses what is left)."""
    global _writer
    if _writer is None:
        return
    (records, thread), _writer = _writer, None
    logging.getLogger().handlers[:] = [_stderr()]  # whatever comes later, written directly
    try:
        records.put(None, timeout=timeout)
    except queue.Full:
        return
    thread.join(timeout)
