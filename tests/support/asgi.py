"""An httpx transport that runs an ASGI app in-process and streams its responses.

`httpx.ASGITransport` collects a whole response before returning it, so a throttled or endless
body from the fake downloader arrives all at once, or never. This transport runs the app in a
task of the test's nursery and hands each body part over as it is sent, with no buffer (the app
waits for the client to take a part, as a socket's window would make it), so tests under trio's
autojump clock see bodies trickle, stall and get cut in virtual time. Closing a response before
its end tells the app the client went away (`http.disconnect`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

App = Callable[..., Any]
Message = dict[str, Any]


class StreamingASGITransport(httpx.AsyncBaseTransport):
    def __init__(self, app: App, nursery: trio.Nursery) -> None:
        self.app = app
        self.nursery = nursery

    @classmethod
    @asynccontextmanager
    async def open(cls, app: App) -> AsyncIterator[StreamingASGITransport]:
        """The transport, its apps' tasks cancelled when the block ends."""
        async with trio.open_nursery() as nursery:
            yield cls(app, nursery)
            nursery.cancel_scope.cancel()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        parts_send, parts = trio.open_memory_channel[Message](0)
        gone = trio.Event()
        sent_request = False

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            try:
                await parts_send.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await gone.wait()  # the client went away: the app learns it from `receive`

        async def run() -> None:
            async with parts_send:
                await self.app(_scope(request), receive, send)

        self.nursery.start_soon(run)
        start = await parts.receive()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
        return httpx.Response(
            start["status"], headers=headers, stream=_Body(parts, gone), request=request
        )


class _Body(httpx.AsyncByteStream):
    def __init__(self, parts: trio.MemoryReceiveChannel[Message], gone: trio.Event) -> None:
        self._parts = parts
        self._gone = gone

    # An iterator object rather than an async generator: a reader that stops early (a test
    # reading the start of an endless stream) leaves no generator to be finalized.
    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                message = await self._parts.receive()
            except trio.EndOfChannel:
                raise httpx.RemoteProtocolError("the app ended before its body did") from None
            except trio.ClosedResourceError:
                raise StopAsyncIteration from None
            if not message.get("more_body", False):
                await self._parts.aclose()
                if message.get("body"):
                    return bytes(message["body"])
                raise StopAsyncIteration
            if message.get("body"):
                return bytes(message["body"])

    async def aclose(self) -> None:
        self._gone.set()
        await self._parts.aclose()


def _scope(request: httpx.Request) -> Message:
    url = request.url
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.raw_path.split(b"?")[0],
        "query_string": url.query,
        "headers": [(k.lower(), v) for k, v in request.headers.raw],
        "server": (url.host, url.port or 80),
        "client": ("127.0.0.1", 1),
    }
