"""`GET /v1/events`: the live events of SPEC §14 as a `text/event-stream` that stays open.

Any signed-in user (bearer header, or the session cookie so a browser's `EventSource` works).
The stream opens with `hello`; a client that gives `Last-Event-ID` (header, or
`?last_event_id=`) is first replayed every stored event it may see after that id, in order
(`storage.events`), or told `resync` when that id is older than what is kept. Then come the live
ones (`actors.events`), with the hub's keep-alive comment line when the stream had nothing to
say for `actors.events.KEEPALIVE_S` seconds.

The stream is registered with the hub before the stored events are read, and every event is
stored before it is delivered, so nothing falls between the replay and the live events; a live
event the replay already sent is skipped by its id. The hub ends the response through the cancel
scope `StreamScopes` puts around it: when the client falls behind, at shutdown, or when its
session is revoked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio
from pydantic import Field
from quart import Blueprint, Response, g, request
from quart_schema import validate_querystring

from actors.events import EventHub, HubClosed, Stream, viewer_of
from api.auth import current_user, requires
from api.context import root
from api.errors import ApiError
from api.openapi import media
from api.schemas import Query
from storage.events import EventStore

blueprint = Blueprint("events", __name__)

PATH = "/v1/events"
REPLAY_PAGE = 500
MAX_EVENT_ID = 2**63 - 1
SCOPE_KEY = "pezzottify.stream_scope"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventsQuery(Query):
    last_event_id: int | None = Field(default=None, ge=0, le=MAX_EVENT_ID)


@blueprint.get(PATH)
@media("text/event-stream", schema={"type": "string"})
@requires()
@validate_querystring(EventsQuery)
async def events(query_args: EventsQuery) -> Response:
    """Live events: `hello`, then the events after `Last-Event-ID` (header or query), then
    live ones. Names: request.created, request.progress, request.completed, request.failed,
    request.cancelled (one's own requests); queue.item, queue.paused, queue.resumed, capacity,
    job.started, job.finished (ViewAnalytics); catalog.updated (AccessCatalog); resync."""
    last = _last_event_id(query_args)
    scope = request.scope.get(SCOPE_KEY)
    if not isinstance(scope, trio.CancelScope):  # served without `StreamScopes`: a bug
        raise RuntimeError("the event stream route needs the stream_scopes middleware")
    if root().hub.closed:
        raise ApiError(503, "the server is shutting down", "SHUTTING_DOWN")
    stream = Stream(viewer_of(current_user()), g.token, scope)
    body = _body(stream, root().hub, root().events, last)
    response = Response(body, mimetype="text/event-stream", headers=HEADERS)
    response.timeout = None  # the stream stays open: no response deadline
    return response


def _last_event_id(query_args: EventsQuery) -> int | None:
    header = request.headers.get("Last-Event-ID")
    if header is None or not header.strip():
        return query_args.last_event_id
    text = header.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_EVENT_ID:
        raise ApiError(400, "Last-Event-ID must be an event id", "INVALID_LAST_EVENT_ID")
    return int(text)


def _message(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def _body(
    stream: Stream, hub: EventHub, store: EventStore, last: int | None
) -> AsyncIterator[bytes]:
    """The stream's bytes. It joins the hub when it starts and leaves it when it ends, so a
    response that is never sent leaves nothing behind."""
    try:
        hub.join(stream)
    except HubClosed:
        return
    try:
        window = await store.db.run(store.window)
        hello = {"server_started_at": hub.started_at, "last_event_id": window.newest}
        yield _message("hello", hello)
        sent = window.newest
        if last is not None and not window.resumable(last):
            # Older than what is kept (or from another database): refetch, then go on live.
            yield _message("resync", {"last_event_id": window.newest}, window.newest)
        elif last is not None:
            sent = last
            while True:  # the stored events after `last`, a page per read
                page = await store.db.run(store.after, sent, stream.viewer, REPLAY_PAGE)
                for old in page:
                    sent = old.id
                    yield old.sse()
                if len(page) < REPLAY_PAGE:
                    break
        async for event in stream.receive:  # until the hub closes the stream
            if event is None:
                yield b": keep-alive\n\n"
            elif event.id > sent:
                sent = event.id
                yield event.sse()
    finally:
        hub.close_stream(stream)


class StreamScopes:
    """Runs each request of the event stream inside a cancel scope the hub can cancel: a
    client that stopped reading blocks in the socket's send, where only a cancellation from
    outside the response reaches it. Every other HTTP request is counted while it is served
    (`EventHub.serving`): a fan-out to many streams slows down meanwhile."""

    def __init__(self, app: Any, hub: EventHub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # the lifespan: the daemon's whole life
            await self.app(scope, receive, send)
        elif scope["path"] != PATH:
            self.hub.serving += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.hub.serving -= 1
        else:
            with trio.CancelScope() as cancel:
                await self.app({**scope, SCOPE_KEY: cancel}, receive, send)
