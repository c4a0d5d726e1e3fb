"""Opt-in log of every response the fake downloader sends (``--log-responses PATH``).

One JSON object per line, written when the response ends (completed, cut short or abandoned):

    {"endpoint": "audio", "id": "...", "status": 200,
     "received": 812.031, "start": 812.061, "end": 814.045, "bytes": 8388608}

`received` is when the request reached the app (before `latency_ms`), `start` when the status
line was handed to the server, `end` when the last body chunk was (`start` and `end` are null
if nothing was sent), and `bytes` the body bytes sent. Times are `time.monotonic()`: on Linux
that is CLOCK_MONOTONIC, the same clock in every process of the machine, so a benchmark can set
them beside its own. The benchmarks use it to see when the downloader is busy sending audio
(`bench/busy_downloader.py`). Lines are flushed as they are written, so the file can be read
while the server runs. Off by default: nothing is timed or written without the flag.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ResponseRecord:
    """Wraps one response's `send`, noting when its status line and body chunks go out."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.received = time.monotonic()
        self.status: int | None = None
        self.start: float | None = None
        self.end: float | None = None
        self.bytes = 0

    async def send(self, message: Message) -> None:
        # Noted before the hand-over: the response's last `send` may be cancelled once the
        # server has taken the bytes (the app stops watching for a disconnect then).
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.start = time.monotonic()
        elif message["type"] == "http.response.body":
            self.bytes += len(message.get("body", b""))
            self.end = time.monotonic()
        await self._send(message)

    def line(self, endpoint: str, ident: str) -> str:
        return json.dumps({
            "endpoint": endpoint, "id": ident, "status": self.status, "received": self.received,
            "start": self.start, "end": self.end, "bytes": self.bytes,
        })  # fmt: skip


async def logged(
    respond: Callable[[Receive, Send], Awaitable[None]],
    receive: Receive,
    send: Send,
    endpoint: str,
    ident: str,
    log: TextIO,
) -> None:
    """Run `respond` with a recording `send`, then write its line to `log` (also when the
    response is cut short by a disconnect or a cancellation)."""
    record = ResponseRecord(send)
    try:
        await respond(receive, record.send)
    finally:
        log.write(record.line(endpoint, ident) + "\n")
        log.flush()
