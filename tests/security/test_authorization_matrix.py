"""SEC-1: function- and object-level authorization on every route, generated from the route table.

Each (route, method) is called anonymously and as each persona of `routes.PERSONAS`. The expected
status comes from the view's own declaration: anonymous → 401 unless public; a persona lacking a
declared permission → 403; a persona holding them → anything but 401/403 and never a 5xx. Callers
who should be refused send a malformed body, which proves the check runs before the body is read.
The only hand-written entries are the documented exceptions below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from quart import Blueprint
from quart_trio import QuartTrio

import api.app
from api.app import check_route_permissions, create_app
from api.auth import public, requires
from daemon.config import Config
from daemon.root import Root
from storage.queue import now
from storage.users import Permission, Role
from tests.conftest import make_user
from tests.security.routes import (
    PERSONAS,
    Route,
    held_permissions,
    prepared,
    random_content_id,
    routes,
    samples_for,
    security_config,
    seed_personas,
    session_headers,
)
from tests.support.asgi import StreamingASGITransport

# Routes that ask the downloader, which is unreachable here: SPEC §8.3 answers 502 for that.
DOCUMENTED_5XX: dict[str, frozenset[int]] = {
    "/v1/download/search": frozenset({502}),
    "/v1/download/search/discography/<path:artist_id>": frozenset({502}),
    "/v1/download/image/<path:image_id>": frozenset({502}),
    "/v1/download/request/discography": frozenset({502}),
}
MALFORMED_JSON = b'{"user_handle": '


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return security_config(tmp_path)


@pytest.fixture
async def root(root: Root, nursery: trio.Nursery) -> AsyncIterator[Root]:
    async with prepared(root, nursery) as ready:
        yield ready


@pytest.fixture
def ready(root: Root) -> Root:
    seed_personas(root)
    return root


async def call(
    client: Any, route: Route, path: str, headers: dict[str, str], allowed: bool | None
) -> Any:
    """One request; a refused caller's body is malformed JSON, an allowed caller's is `{}`."""
    kwargs: dict[str, Any] = {"method": route.method, "headers": dict(headers)}
    if route.body_model is not None:
        if allowed:
            kwargs["json"] = {}
        else:
            kwargs["data"] = MALFORMED_JSON
            kwargs["headers"]["Content-Type"] = "application/json"
    if route.rule in STREAMS:
        return await first_chunk(client, path, headers)
    return await client.open(path, **kwargs)


# Routes whose answer stays open: the matrix reads the status and the first chunk, then leaves.
STREAMS = frozenset({"/v1/events"})


async def body_of(response: Any) -> Any:
    return await response.get_json(force=True, silent=True) or {}


async def first_chunk(client: Any, path: str, headers: dict[str, str]) -> Any:
    """The status and first chunk of an answer that may stay open, read over an in-process
    transport that disconnects when the response is closed."""
    async with StreamingASGITransport.open(client.app) as transport:
        request = httpx.Request("GET", "http://test" + path, headers=headers)
        response = await transport.handle_async_request(request)
        body = response.stream
        assert isinstance(body, httpx.AsyncByteStream)
        first = await anext(aiter(body), b"")
        await body.aclose()
    return client.app.response_class(first, response.status_code, dict(response.headers))


def problem(route: Route, allowed: bool | None, status: int, body: Any) -> str | None:
    """Why this answer breaks the declaration, or None if it is right."""
    if allowed is None and (status != 401 or body.get("code") != "UNAUTHORIZED"):
        return f"expected 401 UNAUTHORIZED, got {status} {body}"
    if allowed is False and (status != 403 or body.get("code") != "FORBIDDEN"):
        return f"expected 403 FORBIDDEN, got {status} {body}"
    if allowed and status in (401, 403):
        return f"holder refused with {status} {body}"
    if allowed and status >= 500 and status not in DOCUMENTED_5XX.get(route.rule, frozenset()):
        return f"server error {status} {body}"
    return None


async def test_every_route_answers_as_its_declaration_says(ready: Root, app: Any) -> None:
    samples = samples_for(ready)
    table = routes(app)
    personas: list[str | None] = [None, *PERSONAS]
    failures: list[str] = []
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for route in table:
            path = samples.path(route)
            for persona in personas:
                held = None if persona is None else held_permissions(ready, persona)
                headers = {} if persona is None else session_headers(ready, persona)
                allowed = route.allows(held)
                response = await call(client, route, path, headers, allowed)
                body = {} if response.mimetype == "text/event-stream" else await body_of(response)
                why = problem(route, allowed, response.status_code, body)
                if why is not None:
                    failures.append(f"{persona or 'anonymous'} {route.method} {path}: {why}")
    assert not failures, "\n".join(failures)
    # The table really is the app's: every blueprint contributed routes to the matrix.
    prefixes = {route.view.__module__ for route in table}
    for module in api.app.BLUEPRINT_MODULES:
        assert module.__name__ in prefixes, f"no route of {module.__name__} in the matrix"


async def test_public_routes_are_only_the_documented_ones(app: Any) -> None:
    public_routes = {str(route) for route in routes(app) if route.permissions is None}
    assert public_routes == {"GET /health", "GET /openapi.json", "POST /v1/auth/login"}


def download_detail_route(app: Any) -> Route:
    for route in routes(app):
        if route.method == "GET" and route.rule.startswith("/v1/download/request/"):
            return route
    pytest.skip("the app has no GET /v1/download/request/<id> route")


async def test_a_requester_sees_only_their_own_request(ready: Root, app: Any) -> None:
    route = download_detail_route(app)
    if ready.downloads is None:
        pytest.skip("the download manager is not enabled")
    store = ready.downloads.requests
    for handle in ("alice", "bob"):
        make_user(ready, handle, (Role.Regular,), extra=(Permission.RequestContent,))
    own = store.request_album("alice", random_content_id(), "Mine", "Band", now(), False)
    foreign = store.request_album("bob", random_content_id(), "Theirs", "Band", now(), False)
    assert own.request_id is not None and foreign.request_id is not None
    samples = samples_for(ready)
    alice = session_headers(ready, "alice")
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def get(item_id: str, headers: dict[str, str]) -> Any:
            path = samples.path(route, {route.arguments[0]: item_id})
            return await client.get(path, headers=headers)

        mine = await get(own.request_id, alice)
        assert mine.status_code == 200
        assert (await mine.get_json())["id"] == own.request_id
        theirs = await get(foreign.request_id, alice)
        missing = await get(samples.queue_item, alice)
        assert theirs.status_code == missing.status_code == 404
        # Someone else's item and no item at all are indistinguishable.
        assert await theirs.get_json() == await missing.get_json()
        # Holding every admin permission does not open another user's request on this route.
        make_user(ready, "boss", (Role.Admin,))
        as_admin = await get(own.request_id, session_headers(ready, "boss"))
        assert as_admin.status_code == 404


def undeclared_blueprint() -> Blueprint:
    blueprint = Blueprint("undeclared", __name__)

    @blueprint.get("/v1/undeclared")
    async def undeclared() -> str:
        return "open by accident"

    return blueprint


def test_check_refuses_a_route_without_a_declaration() -> None:
    app = QuartTrio(__name__, static_folder=None)
    app.register_blueprint(undeclared_blueprint())
    with pytest.raises(RuntimeError, match="/v1/undeclared"):
        check_route_permissions(app)


def test_check_accepts_declared_routes() -> None:
    app = QuartTrio(__name__, static_folder=None)
    blueprint = Blueprint("declared", __name__)

    @blueprint.get("/v1/open")
    @public
    async def open_view() -> str:
        return "ok"

    @blueprint.get("/v1/closed")
    @requires(Permission.ServerAdmin)
    async def closed_view() -> str:
        return "ok"

    app.register_blueprint(blueprint)
    check_route_permissions(app)


async def test_create_app_refuses_an_undeclared_route(
    root: Root, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Module:
        blueprint = undeclared_blueprint()

    monkeypatch.setattr(api.app, "BLUEPRINT_MODULES", [*api.app.BLUEPRINT_MODULES, Module])
    with pytest.raises(RuntimeError, match="declares no permission"):
        create_app(root)
