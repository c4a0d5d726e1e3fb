"""Response bodies and their delivery over raw ASGI, including the hostile fault modes.

Every body is a `period` repeated up to `size` bytes (a JSON document is its own period), so a
50 MB audio file, a truncated one and an endless one are all streamed in bounded chunks.
Long deliveries watch for ``http.disconnect`` and stop as soon as the client hangs up.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from fake_downloader.content import DEFAULT_CHUNK_BYTES, cyclic_slice, iter_cyclic
from fake_downloader.knobs import Fault

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = "application/json"
BAD_JSON = b'{"results": [{"id": "unterminated'
# The `trickle` fault: an endless body at this rate, slower than any deadline allows.
TRICKLE_BYTES_PER_SEC = 512
ERRORS = {
    400: ("bad request", "BAD_REQUEST"),
    404: ("not found", "NOT_FOUND"),
    405: ("method not allowed", "METHOD_NOT_ALLOWED"),
    429: ("too many requests", "TOO_MANY_REQUESTS"),
    500: ("internal error", "INTERNAL_ERROR"),
    502: ("bad gateway", "BAD_GATEWAY"),
    503: ("service unavailable", "SERVICE_UNAVAILABLE"),
    504: ("timeout", "TIMEOUT"),
}


class HttpError(Exception):
    """Raised while building a reply to answer with an error document instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Reply:
    """A response: `period` repeated to `size` bytes, sent at most `rate` bytes/s (0 = fast)."""

    status: int
    content_type: str
    period: bytes
    size: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    rate: int = 0

    @property
    def is_json(self) -> bool:
        return self.content_type == JSON_TYPE


def json_reply(document: object, status: int = 200) -> Reply:
    body = json.dumps(document, separators=(",", ":")).encode()
    return Reply(status, JSON_TYPE, body, len(body))


def error_reply(status: int, message: str | None = None, retry_after: int | None = None) -> Reply:
    """`{"error", "code", "message"}` with the code matching `status`."""
    short, code = ERRORS.get(status, (f"http {status}", f"HTTP_{status}"))
    reply = json_reply({"error": short, "code": code, "message": message or short}, status)
    if status == 429 and retry_after is not None:
        return replace(reply, headers=[(b"retry-after", str(retry_after).encode())])
    return reply


def _headers(reply: Reply, content_type: str, length: int | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type.encode("latin-1"))]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return headers + reply.headers


def _chunk_bytes(rate: int) -> int:
    return DEFAULT_CHUNK_BYTES if rate <= 0 else min(DEFAULT_CHUNK_BYTES, max(1024, rate // 10))


async def _finish(send: Send) -> None:
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream(
    send: Send, reply: Reply, end: int | None, *, complete: bool, on_last: Callable[[], None]
) -> None:
    """Send bytes `[0, end)` of `reply` (forever when `end` is None), paced by `reply.rate`.

    The last chunk ends the response when `complete`; `on_last` runs just before it is sent.
    """
    started = trio.current_time()
    sent = 0
    chunks = iter_cyclic(reply.period, 0, end, _chunk_bytes(reply.rate))
    chunk = next(chunks, None)
    while chunk is not None:
        following = next(chunks, None)
        if following is None:
            on_last()
        more = following is not None or not complete
        await send({"type": "http.response.body", "body": chunk, "more_body": more})
        sent += len(chunk)
        if reply.rate > 0 and following is not None:
            await trio.sleep_until(started + sent / reply.rate)
        chunk = following
    if sent == 0:
        on_last()
        if complete:
            await _finish(send)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def _nothing() -> None:
    pass


async def deliver(
    receive: Receive,
    send: Send,
    reply: Reply,
    fault: Fault | None,
    *,
    head: bool = False,
    on_last: Callable[[], None] = _nothing,
) -> None:
    """Send `reply`, bent by `fault` when given; HEAD requests get the headers only.

    `on_last` runs right before the last byte is handed over, so that a client which starts
    its next request as soon as this one completes never races the server's bookkeeping.
    """
    mode = fault.mode if fault else None
    if mode == "trickle":
        reply = replace(reply, rate=TRICKLE_BYTES_PER_SEC)
    if mode == "bad_json":
        reply = replace(reply, period=BAD_JSON, size=len(BAD_JSON))
    content_type = fault.content_type if fault and mode == "content_type" else reply.content_type
    length = None if mode in ("endless", "trickle") else reply.size
    start = {"type": "http.response.start", "status": reply.status}
    await send(start | {"headers": _headers(reply, content_type, length)})
    simple = mode is None or mode in ("bad_json", "content_type")
    if head or (simple and reply.rate <= 0 and reply.size <= DEFAULT_CHUNK_BYTES):
        body = b"" if head else cyclic_slice(reply.period, 0, reply.size)
        on_last()
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
        if fault is not None and mode == "stall":
            await trio.sleep(fault.stall_seconds)
        ends = {"truncate": reply.size // 2, "stall_body": reply.size // 2}
        end = None if mode in ("endless", "trickle") else ends.get(mode or "", reply.size)
        cut = mode in ("truncate", "stall_body")
        await _stream(send, reply, end, complete=not cut, on_last=on_last)
        if fault is not None and mode == "stall_body":
            await trio.sleep(fault.stall_seconds)  # then end short, as a truncated body
        nursery.cancel_scope.cancel()
