"""Live events (SPEC §14): the hub the streams hang on, and the actor that publishes to them.

The queue's changes are read from its audit log after they commit (`storage.queue.feed`), turned
into events (`events_of`), stored in `server.db` with the audit cursor they were made up to
(`storage.events`), and only then handed to the open streams. Jobs hand their events in directly
(`EventHub.publish`). So an event is never published before its change has committed, a stream
that reconnects with `Last-Event-ID` is replayed from what is stored, and after a crash the
publisher resumes from its cursor and makes the missing events from the audit log again.

The queue's stores call `EventHub.poke` after each commit, from whatever thread ran it; the
publisher then reads every entry since its cursor in batches. A slow client never slows anyone:
each stream has a bounded buffer, and a stream whose buffer is full is dropped (its HTTP response
cancelled; the client resumes with `Last-Event-ID`). At shutdown every stream is closed at once,
so none holds the graceful window; every few seconds the streams' sessions are checked again, and
a revoked or expired one closes its streams (a changed permission changes what they see). A
batch for many streams is handed out a stream per turn of the event loop, and a stream per
millisecond while an HTTP request is being served, so that the requests hardly notice it; the
keep-alive comments of quiet streams come from one timer of the hub.

The publisher answers at most two pokes in any `BURST_WINDOW_S` (40 ms): at the downloader's
pace every change goes out at once (a file's completion and the next file's claim are the two),
and a burst of commits (a queue draining from a local downloader) costs a read and a write per
20 ms rather than per commit, at the price of up to 40 ms more for the events of such a burst.

The hub outlives the publisher: a publisher restarted after a crash serves the same streams.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import trio

from storage.events import Audience, Event, EventStore, NewEvent, Viewer
from storage.queue import AuditEvent, Status, now
from storage.queue.feed import Change, Changes, QueueFeed
from storage.users import Permission, User, UserStore

log = logging.getLogger("pezzottify.events")

STREAM_BUFFER = 256  # events a stream may fall behind by before it is dropped
BATCH = 500  # audit entries read per batch
SESSION_CHECK_S = 5.0
FANOUT_PACE_S = 0.001  # while a request is being served, a stream per this long in a fan-out
KEEPALIVE_S = 15.0  # a stream that had nothing for this long is sent a comment line
KEEPALIVE_TICK_S = 1.0
# At most two batches in any such window: a file's two commits at once, a burst in batches.
BURST_WINDOW_S = 0.04


class Stream:
    """One open `/v1/events` response: who reads it, its buffer, and how to end it. What it
    receives is events, and `None` for a keep-alive comment."""

    def __init__(self, viewer: Viewer, token: str, scope: trio.CancelScope) -> None:
        self.viewer = viewer
        self.token = token
        self.scope = scope  # the response's: cancelling it ends the HTTP response
        self._send, self.receive = trio.open_memory_channel[Event | None](STREAM_BUFFER)
        self.pushed_at = trio.current_time()  # when it was last handed something

    def push(self, events: list[Event] | list[None]) -> bool:
        """Buffer events this stream may see, in order; False when the buffer is full."""
        self.pushed_at = trio.current_time()
        try:
            for event in events:
                self._send.send_nowait(event)
        except trio.WouldBlock:
            return False
        except trio.BrokenResourceError:  # the response has ended; it unregisters itself
            pass
        return True

    def end(self) -> None:
        self._send.close()
        self.scope.cancel()


def viewer_of(user: User) -> Viewer:
    permissions = user.permissions
    return Viewer(
        user.handle,
        admin=Permission.ViewAnalytics in permissions,
        catalog=Permission.AccessCatalog in permissions,
    )


class HubClosed(Exception):
    """The daemon is shutting down: no new streams."""


class EventHub:
    """The open streams and what is waiting to be published; safe to poke from any thread."""

    def __init__(self, started_at: int | None = None) -> None:
        self.started_at = now() if started_at is None else started_at
        self.streams: set[Stream] = set()
        # The streams by who may see what, so that a batch costs the streams it goes to, not
        # every open one: a household's idle phones must not tax each admin event.
        self._by_handle: dict[str, set[Stream]] = {}
        self._admins: set[Stream] = set()
        self._catalog: set[Stream] = set()
        self.closed = False
        self.dropped = 0  # streams dropped because their client fell behind
        self.serving = 0  # HTTP requests being served, other than the streams (`StreamScopes`)
        self._pending: list[NewEvent] = []
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._answered = (-math.inf, -math.inf)  # when the last two pokes were answered

    def attach(self) -> None:
        """Called by the publisher, on the event loop, before it waits for work."""
        self._token = trio.lowlevel.current_trio_token()

    def poke(self, _events: object = None) -> None:
        """Something committed to the queue: wake the publisher (from any thread)."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._set)

    def _set(self) -> None:  # on the event loop: wakes whichever event is current then
        self._wake.set()

    def publish(self, event: NewEvent) -> None:
        """Publish an event that is not the queue's (from the event loop)."""
        self._pending.append(event)
        self._set()

    def join(self, stream: Stream) -> None:
        if self.closed:
            raise HubClosed
        self.streams.add(stream)
        self._index(stream)

    def close_stream(self, stream: Stream) -> None:
        self.streams.discard(stream)
        self._unindex(stream)

    def set_viewer(self, stream: Stream, viewer: Viewer) -> None:
        """What a stream may see changed (its user's permissions)."""
        if viewer == stream.viewer:
            return
        self._unindex(stream)
        stream.viewer = viewer
        if stream in self.streams:
            self._index(stream)

    def _index(self, stream: Stream) -> None:
        viewer = stream.viewer
        self._by_handle.setdefault(viewer.handle, set()).add(stream)
        if viewer.admin:
            self._admins.add(stream)
        if viewer.catalog:
            self._catalog.add(stream)

    def _unindex(self, stream: Stream) -> None:
        handle = stream.viewer.handle
        own = self._by_handle.get(handle)
        if own is not None:
            own.discard(stream)
            if not own:
                del self._by_handle[handle]
        self._admins.discard(stream)
        self._catalog.discard(stream)

    async def deliver(self, events: list[Event]) -> None:
        """Hand a batch to every stream that may see some of it, each its own events in order.

        A batch that goes to many streams (`catalog.updated` to every phone of a household) is
        handed out a stream per turn of the event loop, and while a request is being served a
        stream per `FANOUT_PACE_S` (`_paced`): each stream writes its socket in the turn after
        it is handed its events, so a request waits for one stream's write at most, and only
        now and then, instead of sharing the loop with a thousand of them."""
        owned: dict[str, list[Event]] = {}
        shared: list[Event] = []
        for event in events:
            if event.audience is Audience.OWNER and event.owner is not None:
                owned.setdefault(event.owner, []).append(event)
            elif event.audience is not Audience.OWNER:
                shared.append(event)
        targets: set[Stream] = set()
        for handle in owned:
            targets.update(self._by_handle.get(handle, ()))
        if any(event.audience is Audience.ADMIN for event in shared):
            targets.update(self._admins)
        if any(event.audience is Audience.CATALOG for event in shared):
            targets.update(self._catalog)
        views: dict[tuple[bool, bool], list[Event]] = {}  # the shared events by permissions
        async for stream in self._paced(targets):
            viewer = stream.viewer
            seen = views.get((viewer.admin, viewer.catalog))
            if seen is None:
                seen = views[viewer.admin, viewer.catalog] = [e for e in shared if viewer.sees(e)]
            own = owned.get(viewer.handle, [])
            self._hand(
                stream, sorted(seen + own, key=lambda e: e.id) if seen and own else seen or own
            )

    async def keep_alive(self) -> None:
        """Every `KEEPALIVE_TICK_S`, a keep-alive comment (`None`) to each stream that was
        handed nothing since `KEEPALIVE_S` ago, or less by a tick: one timer for all the
        streams, rather than a timeout around each stream's every wait."""
        while True:
            await trio.sleep(KEEPALIVE_TICK_S)
            due = trio.current_time() - (KEEPALIVE_S - KEEPALIVE_TICK_S)
            async for stream in self._paced([s for s in self.streams if s.pushed_at <= due]):
                self._hand(stream, [None])

    async def _paced(self, streams: Iterable[Stream]) -> AsyncIterator[Stream]:
        """The streams still open among `streams`, one per turn of the event loop, and one per
        `FANOUT_PACE_S` while a request is being served: a fan-out to a thousand streams is
        over in about a tenth of a second on an idle loop, and takes a tenth of the loop or less
        while requests come in."""
        for count, stream in enumerate(streams):
            if count:
                if self.serving:
                    await trio.sleep(FANOUT_PACE_S)
                else:
                    await trio.lowlevel.checkpoint()
            if stream in self.streams:  # not closed while the others were handed theirs
                yield stream

    def _hand(self, stream: Stream, items: list[Event] | list[None]) -> None:
        if not stream.push(items):
            self.dropped += 1
            log.info("dropped a stream of %s: it fell behind", stream.viewer.handle)
            self._end(stream)

    def close_all(self) -> None:
        self.closed = True
        for stream in list(self.streams):
            self._end(stream)

    def _end(self, stream: Stream) -> None:
        self.close_stream(stream)
        stream.end()

    async def wait(self) -> list[NewEvent]:
        """Wait for a poke or a published event; return (and forget) the published ones. A
        third poke within `BURST_WINDOW_S` is answered once that window has passed, together
        with every poke that came meanwhile."""
        await self._wake.wait()
        await trio.sleep_until(self._answered[0] + BURST_WINDOW_S)
        self._answered = (self._answered[1], trio.current_time())
        self._wake = trio.Event()
        pending, self._pending = self._pending, []
        return pending


class EventPublisher:
    """The actor: reads committed changes, stores their events, hands them to the streams."""

    def __init__(
        self,
        hub: EventHub,
        store: EventStore,
        feed: QueueFeed | None,
        users: UserStore,
        *,
        shutdown: trio.Event,
        clock: Callable[[], int] = now,
    ) -> None:
        self.hub = hub
        self.store = store
        self.feed = feed
        self.users = users
        self.shutdown = shutdown
        self.clock = clock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cursor = await self.store.db.run(self.store.audit_cursor)
        if self.feed is not None:
            newest = await self.feed.db.run(self.feed.newest_entry)
            # Audit ids start again only if every entry was pruned: then nothing is missed.
            cursor = min(cursor, newest)
        self.hub.attach()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._check_sessions)
            nursery.start_soon(self.hub.keep_alive)
            nursery.start_soon(self._close_on_shutdown, nursery.cancel_scope)
            pending: list[NewEvent] = []
            while True:
                cursor = await self._publish(cursor, pending)
                pending = await self.hub.wait()

    async def _publish(self, cursor: int, pending: list[NewEvent]) -> int:
        """Store and deliver the published events and every queue change after `cursor`;
        return the new cursor."""
        while True:
            made, moved_to, more = pending, None, False
            if self.feed is not None:
                changes = await self.feed.db.run(
                    self.feed.changes_after, cursor, BATCH, self.clock()
                )
                made = made + events_of(changes)
                moved_to = changes.cursor if changes.cursor != cursor else None
                more = len(changes.changes) == BATCH
            if made or moved_to is not None:
                stored = await self.store.db.run(self.store.append, made, self.clock(), moved_to)
                await self.hub.deliver(stored)
            cursor = moved_to if moved_to is not None else cursor
            if not more:
                return cursor
            pending = []

    async def _close_on_shutdown(self, scope: trio.CancelScope) -> None:
        await self.shutdown.wait()
        self.hub.close_all()
        scope.cancel()

    async def _check_sessions(self) -> None:
        while True:
            await trio.sleep(SESSION_CHECK_S)
            tokens = sorted({stream.token for stream in self.hub.streams})
            if not tokens:
                continue
            users = await self.users.db.run(self.users.session_users, tokens)
            checked = set(tokens)
            viewers: dict[int, Viewer] = {}  # a user's streams share one
            for stream in list(self.hub.streams):
                if stream.token not in checked:
                    continue  # opened while the check ran: its session was just checked
                user = users.get(stream.token)
                if user is None:
                    log.info("closed a stream of %s: its session ended", stream.viewer.handle)
                    self.hub.close_stream(stream)
                    stream.end()
                else:
                    if user.id not in viewers:
                        viewers[user.id] = viewer_of(user)
                    self.hub.set_viewer(stream, viewers[user.id])


# The request's own event when a change is one of these on the request itself.
_ENDINGS = {
    AuditEvent.REQUEST_CREATED.value: "request.created",
    AuditEvent.REQUEST_CANCELLED.value: "request.cancelled",
}
# A request's ending that lands in its requester's inbox: an `inbox` event follows it.
_INBOXED = ("request.completed", "request.failed")
_PROGRESS_FIELDS = (
    "id", "status", "progress", "bytes_downloaded", "wait", "estimated_completion_at",
)  # fmt: skip


def events_of(changes: Changes) -> list[NewEvent]:
    """The events of SPEC §14 that a batch of queue changes makes, in order.

    Every change to an item is a `queue.item` for admins. A change to a user's request (the
    request itself or one of its children) is, for its requester, `request.created`,
    `request.completed`, `request.failed` or `request.cancelled` when it is that, else
    `request.progress`, at most once per request per batch (the last, with the request as it is
    now); its completion or failure is followed by `inbox` (a new item in the requester's inbox).
    An album starting moves the capacity (`capacity`); an album ingested changes the
    catalog (`catalog.updated`, once per batch); a pause or a resume is `queue.paused` /
    `queue.resumed`.
    """
    made: list[NewEvent] = []
    progress_at: dict[str, int] = {}  # the last request.progress of each request in `made`
    capacity_at = catalog_at = None  # where the batch's one `capacity` / `catalog.updated` go
    albums: list[str] = []
    for change in changes.changes:
        if change.item is None:
            made += _queue_state(change)
            continue
        made.append(NewEvent("queue.item", Audience.ADMIN, None, _item(change)))
        kind, item = change.event_type, change.item
        if item["parent_id"] is None and item["content_type"] == "ALBUM":
            if kind == AuditEvent.DOWNLOAD_STARTED.value and capacity_at is None:
                capacity_at = len(made)
            if kind == AuditEvent.CHILDREN_CREATED.value:
                catalog_at = len(made) if catalog_at is None else catalog_at
                albums.append(item["content_id"])
        request = change.request
        if request is None or request["requested_by"] is None:
            continue
        if request["request_source"] != "USER":
            continue
        owner = request["requested_by"]
        name = _request_event(change, request)
        if name == "request.progress":
            data = {field: request.get(field) for field in _PROGRESS_FIELDS}
            progress_at[request["id"]] = len(made)
            made.append(NewEvent(name, Audience.OWNER, owner, data))
        else:
            made.append(NewEvent(name, Audience.OWNER, owner, request))
            if name in _INBOXED:  # its inbox row committed with it (`storage.queue.notices`)
                data = {"event": name, "request_id": request["id"]}
                made.append(NewEvent("inbox", Audience.OWNER, owner, data))
    extra = {}
    if capacity_at is not None:
        extra[capacity_at] = NewEvent("capacity", Audience.ADMIN, None, changes.capacity)
    if catalog_at is not None:
        updated = {"album_ids": sorted(set(albums))}
        extra[catalog_at] = NewEvent("catalog.updated", Audience.CATALOG, None, updated)
    events = []
    for position, event in enumerate(made):
        if position in extra:
            events.append(extra[position])
        if event.name != "request.progress" or progress_at[event.data["id"]] == position:
            events.append(event)
    if len(made) in extra:
        events.append(extra[len(made)])
    return events


def _item(change: Change) -> dict[str, Any]:
    assert change.item is not None
    return {**change.item, "change": change.event_type}


def _request_event(change: Change, request: dict[str, Any]) -> str:
    assert change.item is not None
    if change.item["id"] != request["id"]:
        return "request.progress"  # a child moved
    ended = {
        AuditEvent.DOWNLOAD_COMPLETED.value: (Status.COMPLETED.value, "request.completed"),
        AuditEvent.DOWNLOAD_FAILED.value: (Status.FAILED.value, "request.failed"),
    }.get(change.event_type)
    if ended is not None and request["status"] == ended[0]:
        return ended[1]
    return _ENDINGS.get(change.event_type, "request.progress")


_QUEUE_STATES = {
    AuditEvent.QUEUE_PAUSED.value: "queue.paused",
    AuditEvent.QUEUE_RESUMED.value: "queue.resumed",
}


def _queue_state(change: Change) -> list[NewEvent]:
    name = _QUEUE_STATES.get(change.event_type)
    if name is None:
        return []  # watchdog scans: their jobs' own events tell of them
    details = change.details or {}
    if name == "queue.paused":  # the shape `POST /v1/download/admin/pause` answers
        data = {"paused": True, "paused_by": change.user, "paused_at": change.at,
                "reason": details.get("reason")}  # fmt: skip
    else:
        data = {"paused": False, "resumed_by": change.user, "resumed_at": change.at}
    return [NewEvent(name, Audience.ADMIN, None, data)]


def job_event(name: str, job_id: str, run_id: int, status: str, triggered_by: str) -> NewEvent:
    """`job.started` / `job.finished` for admins."""
    data = {"job_id": job_id, "run_id": run_id, "status": status, "triggered_by": triggered_by}
    return NewEvent(name, Audience.ADMIN, None, data)
