"""An async test transport served to the blocking transport, through the trio run.

The downloader client makes the processor's calls (an album's metadata, media bodies) through a
blocking httpx transport in worker threads. Tests that answer for the downloader in-process
(`httpx.MockTransport` with async bodies, `httpx.ASGITransport` around the fake downloader) have
async transports only: `TrioBridge` runs each step of a request on the trio run's loop
(`trio.from_thread.run`), so their answers, delays and faults reach the blocking side chunk by
chunk, as a socket would deliver them.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import trio


class TrioBridge(httpx.BaseTransport):
    """A blocking transport for trio's worker threads, forwarding to `inner` on the loop."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = trio.from_thread.run(self.inner.handle_async_request, request)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Chunks(response),
            extensions=response.extensions,
        )


class _Chunks(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        self.chunks = aiter(response.stream)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield trio.from_thread.run(self.chunks.__anext__)
            except StopAsyncIteration:
                return

    def close(self) -> None:
        trio.from_thread.run(self.response.aclose)
