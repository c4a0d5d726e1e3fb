"""Logging setup: stderr, a compact format, the configured level, written by a thread.

The code that logs, the event loop above all, only appends the record to a bounded buffer; a
writer thread formats what has gathered and writes it to stderr every `WRITE_INTERVAL_S`, in
one write. A write to stderr blocks while its reader does not keep up (a full pipe to a stalled
log collector, a terminal on pause), and that must not stop the API and the queue with it. When
the buffer is full, records are dropped and counted, and a warning says how many once there is
room again.

The lines the daemon prints when ready (`write_line`: "listening on ...") join the same buffer, so
that no batch can land inside one of them (a `print` beside the writer is two writes, and a
batch written between them cut the line in two) and a stalled stderr cannot stop the event loop
at startup either.

Batches, not a record at a time (`logging.handlers.QueueListener`): waking a thread for each
record made every API request cost 13% more CPU, in interpreter-lock handoffs; one write per
batch costs less than the one write per record of a plain `StreamHandler`.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from typing import TextIO

BUFFER_RECORDS = 10_000
WRITE_INTERVAL_S = 0.05
FLUSH_TIMEOUT_S = 5.0
FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")


# What the writer writes: log records, and lines written as they are (`write_line`).
Pending = deque[logging.LogRecord | str]


class BufferHandler(logging.Handler):
    """Appends records to `pending` without ever waiting; counts those it drops."""

    def __init__(self, pending: Pending) -> None:
        super().__init__()
        self.pending = pending
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.pending) >= BUFFER_RECORDS:
            self.dropped += 1
            return
        if self.dropped:
            self.pending.append(self._drop_notice())
            self.dropped = 0
        # Only the message is merged now (its arguments may change later); the time, level and
        # any traceback are formatted by the writer.
        record.msg, record.args = record.getMessage(), None
        self.pending.append(record)

    def _drop_notice(self) -> logging.LogRecord:
        return logging.LogRecord(
            "pezzottify.logs", logging.WARNING, __file__, 0,
            "%d log records dropped: stderr was not keeping up", (self.dropped,), None,
        )  # fmt: skip


class Writer:
    """The thread that writes the pending records to `stream`, a batch at a time."""

    def __init__(self, pending: Pending, stream: TextIO) -> None:
        self.pending = pending
        self.stream = stream
        self.stopping = threading.Event()
        self.wake = threading.Event()  # set: write what is pending now, not at the next interval
        # A daemon thread: a stderr that never drains must not keep the process alive.
        self.thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(WRITE_INTERVAL_S)
            self.wake.clear()
            self.write_pending()
        self.write_pending()

    def write_pending(self) -> None:
        lines = []
        while self.pending:
            record = self.pending.popleft()
            if isinstance(record, str):
                lines.append(record + "\n")
                continue
            try:
                lines.append(FORMAT.format(record) + "\n")
            except Exception:  # a record that cannot be formatted is a bug of its caller
                lines.append(f"unformattable log record from {record.name}\n")
        if lines:
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # stderr is gone: nowhere left to say so
                pass

    def stop(self, timeout: float) -> None:
        """Write out what is pending and end (blocking, at most `timeout` seconds: a stderr that
        does not drain loses what is left)."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)


_writer: Writer | None = None


def setup_logging(level: str) -> None:
    """Log to stderr through the writer thread (started here; `flush_logging` stops it)."""
    global _writer
    flush_logging()
    pending: Pending = deque()
    _writer = Writer(pending, sys.stderr)
    _writer.thread.start()
    root = logging.getLogger()
    root.handlers[:] = [BufferHandler(pending)]
    root.setLevel(level.upper())
    # Framework loggers stay at warning: the daemon logs requests itself.
    for noisy in ("hypercorn", "quart", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def flush_logging(timeout: float = FLUSH_TIMEOUT_S) -> None:
    """Write out the records logged so far and stop the writer (blocking; at exit). Whatever is
    logged afterwards is written directly."""
    global _writer
    if _writer is None:
        return
    writer, _writer = _writer, None
    direct = logging.StreamHandler(sys.stderr)
    direct.setFormatter(FORMAT)
    logging.getLogger().handlers[:] = [direct]
    writer.stop(timeout)


def write_line(line: str) -> None:
    """Write `line` to stderr as a line of its own, after what was logged before it: through the
    writer while it runs (woken at once for it, never waiting on stderr), else in one write."""
    writer = _writer
    if writer is None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        return
    writer.pending.append(line)
    writer.wake.set()
