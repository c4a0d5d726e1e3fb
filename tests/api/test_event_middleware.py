"""`StreamScopes` puts each event stream in a cancel scope of its own and counts the other HTTP
requests while they are served, so that a fan-out to many streams makes way for them; the
lifespan, which lasts as long as the daemon, is not a request."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.events import EventHub
from api.events import PATH, SCOPE_KEY, StreamScopes


async def test_requests_count_while_served_and_the_streams_and_the_lifespan_do_not() -> None:
    hub = EventHub(0)
    seen: list[tuple[str, str | None, int, bool]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scoped = isinstance(scope.get(SCOPE_KEY), trio.CancelScope)
        seen.append((scope["type"], scope.get("path"), hub.serving, scoped))

    middleware = StreamScopes(app, hub)
    await middleware({"type": "lifespan"}, None, None)
    await middleware({"type": "http", "path": "/v1/download/my-requests"}, None, None)
    await middleware({"type": "http", "path": PATH}, None, None)
    assert seen == [
        ("lifespan", None, 0, False),
        ("http", "/v1/download/my-requests", 1, False),
        ("http", PATH, 0, True),
    ]
    assert hub.serving == 0


async def test_a_request_that_fails_is_no_longer_counted() -> None:
    hub = EventHub(0)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        await StreamScopes(app, hub)({"type": "http", "path": "/v1/content/album/x"}, None, None)
    assert hub.serving == 0
