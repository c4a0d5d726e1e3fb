"""A small `text/event-stream` reader for tests: the events of a `/v1/events` stream, parsed
as a browser's EventSource would (fields `id`, `event`, `data`; comment lines kept apart)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio


@dataclass(frozen=True)
class Sse:
    name: str
    data: Any
    id: int | None


@dataclass
class Reader:
    """Reads one open stream in a task of its own; `events` grows as they arrive."""

    response: httpx.Response
    events: list[Sse] = field(default_factory=list)
    comments: int = 0
    ended: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        name, data, ident = "message", list[str](), None
        try:
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    self.comments += 1
                elif line == "":
                    if data:
                        self.events.append(Sse(name, json.loads("\n".join(data)), ident))
                    name, data, ident = "message", list[str](), None
                else:
                    key, _, value = line.partition(": ")
                    if key == "event":
                        name = value
                    elif key == "data":
                        data.append(value)
                    elif key == "id":
                        ident = int(value)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass  # the server ended the stream
        finally:
            self.ended.set()

    def names(self) -> list[str]:
        return [event.name for event in self.events]

    def last_id(self) -> int | None:
        ids = [event.id for event in self.events if event.id is not None]
        return ids[-1] if ids else None

    async def wait_for(self, name: str, within: float = 20, **data: Any) -> Sse:
        """The first event called `name` whose data has the given fields."""

        def found(reader: Reader) -> Sse | None:
            for event in reader.events:
                if event.name == name and all(event.data.get(k) == v for k, v in data.items()):
                    return event
            return None

        await self.wait_until(lambda reader: found(reader) is not None, within)
        event = found(self)
        assert event is not None
        return event

    async def wait_until(self, condition: Callable[[Reader], bool], within: float = 20) -> None:
        with trio.fail_after(within):
            while not condition(self):  # noqa: ASYNC110 - events arrive on another task
                await trio.sleep(0.02)


@asynccontextmanager
async def stream(
    http: httpx.AsyncClient, *, headers: dict[str, str] | None = None, **params: Any
) -> AsyncIterator[Reader]:
    """Open `/v1/events` and read it in the background until the block ends."""
    async with (
        http.stream("GET", "/v1/events", headers=headers, params=params, timeout=None) as response,
        trio.open_nursery() as nursery,
    ):
        assert response.status_code == 200, await response.aread()
        reader = Reader(response)
        nursery.start_soon(reader.run)
        yield reader
        nursery.cancel_scope.cancel()
