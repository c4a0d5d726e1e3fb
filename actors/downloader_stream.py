"""Downloader response bodies, read on the event loop: bounded in size as they arrive.

JSON and error bodies are gathered into memory (`read_capped`); a media body is handed to a
sink chunk by chunk (`MediaBody.receive`), checked against its cap while it arrives and against
its Content-Length at its end. httpx's body iterators are nested async generators; a consumer
that stops iterating early leaves them suspended, and trio warns when they are collected. `pump`
therefore never leaves the loop by raising: a failure of its sink is kept aside and the read is
stopped by cancelling it, which raises inside the generators and closes them, then the failure
is raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import httpx
import trio

from actors.failures import (
    DownloaderConnectionError,
    DownloaderParseError,
    DownloaderTimeout,
    DownloaderTooLarge,
    ItemFailure,
)

Sink = Callable[[bytes], Awaitable[None]]


async def pump(response: httpx.Response, path: str, sink: Sink) -> None:
    """Feed the body to `sink` chunk by chunk, translating transport failures mid-body.

    An `ItemFailure` from `sink` stops the read (see the module docstring) and is raised.
    """
    failure: ItemFailure | None = None
    with trio.CancelScope() as stop, mid_body(path):
        async for chunk in response.aiter_bytes():
            if failure is not None:
                continue  # only reached when the body needs no checkpoint (in memory)
            try:
                await sink(chunk)
            except ItemFailure as exc:
                failure = exc
                stop.cancel()
    if failure is not None:
        raise failure


@contextmanager
def mid_body(path: str) -> Iterator[None]:
    """Translate the transport failures of a body that is arriving into downloader errors."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise DownloaderTimeout(f"downloader stalled while sending {path}") from exc
    except httpx.RemoteProtocolError as exc:
        raise DownloaderParseError(f"truncated body from {path}: {exc}") from exc
    except httpx.TransportError as exc:
        raise DownloaderConnectionError(f"connection lost while reading {path}: {exc}") from exc


async def read_capped(response: httpx.Response, path: str, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0

    async def keep(chunk: bytes) -> None:
        nonlocal size
        size = _counted(size, chunk, path, cap, DownloaderParseError)
        parts.append(chunk)

    await pump(response, path, keep)
    return b"".join(parts)


def _counted(size: int, chunk: bytes, path: str, cap: int, over: type[DownloaderParseError]) -> int:
    """The body's size with `chunk`; `over` (a parse error) once it passes `cap`."""
    size += len(chunk)
    if size > cap:
        raise over(f"too large: {path} sent more than {cap} bytes")
    return size


def content_length(response: httpx.Response, path: str) -> int | None:
    if response.headers.get("content-encoding", "identity") != "identity":
        return None  # the header counts encoded bytes; we count decoded ones
    raw = response.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise DownloaderParseError(f"bad Content-Length {raw[:32]!r} from {path}")
    return int(raw)


class MediaBody:
    """A media response whose body has not been read yet: its type, and `receive`.

    A Content-Length over `max_bytes` is refused at once (`DownloaderTooLarge`).
    """

    def __init__(self, response: httpx.Response, path: str, max_bytes: int) -> None:
        self._response = response
        self.path = path
        self.max_bytes = max_bytes
        self.media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        self.expected = content_length(response, path)
        if self.expected is not None and self.expected > max_bytes:
            raise DownloaderTooLarge(f"too large: {path} is {self.expected} bytes")

    async def receive(self, sink: Sink) -> int:
        """Hand the body to `sink` chunk by chunk; return its size. Raises
        `DownloaderTooLarge` once it passes `max_bytes`, `DownloaderParseError` if it ends
        short of (or beyond) its Content-Length, and whatever `ItemFailure` `sink` raises."""
        size = 0

        async def counted(chunk: bytes) -> None:
            nonlocal size
            size = _counted(size, chunk, self.path, self.max_bytes, DownloaderTooLarge)
            await sink(chunk)

        await pump(self._response, self.path, counted)
        if self.expected is not None and size != self.expected:
            problem = "truncated body" if size < self.expected else "body longer than announced"
            raise DownloaderParseError(
                f"{problem}: {self.path} sent {size} of {self.expected} bytes"
            )
        return size
