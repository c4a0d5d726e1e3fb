"""Live events from the queue's changes (SPEC §14): which events a change makes and for whom, how
they are stored and replayed, and what the hub does with streams that fall behind.

The queue's real stores make the changes; the publisher reads them back from the audit log, as
in the daemon, with its calls run inline (autojump clock).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from actors.events import BURST_WINDOW_S, STREAM_BUFFER, EventHub, EventPublisher, Stream
from daemon.config import DownloadManagerConfig
from storage.db import Database
from storage.events import Audience, Event, EventStore, NewEvent, Viewer
from storage.jobs import MIGRATIONS as SERVER_MIGRATIONS
from storage.offload import Offload
from storage.queue import (
    MIGRATIONS,
    ChildSpec,
    ContentType,
    QueueAdminStore,
    QueueStore,
    RequestStore,
)
from storage.queue.feed import QueueFeed
from storage.users import UserStore
from tests.support.queue_rows import BASE, cid

NOW = BASE + 100
ALICE = Viewer("alice", admin=False, catalog=True)
BOB = Viewer("bob", admin=False, catalog=True)
ADMIN = Viewer("root", admin=True, catalog=True)


@dataclass
class Rig:
    queue: QueueStore
    requests: RequestStore
    admin: QueueAdminStore
    feed: QueueFeed
    events: EventStore
    hub: EventHub
    publisher: EventPublisher

    async def publish(self) -> None:
        """What the publisher does when poked: everything after its stored cursor."""
        cursor = await self.events.db.run(self.events.audit_cursor)
        await self.publisher._publish(cursor, [])

    def stored(self, viewer: Viewer) -> list[Event]:
        return self.events.after(0, viewer, 1000)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    inline = Offload.inline()
    queue_db = Database(tmp_path / "download_queue.db", MIGRATIONS, offload=inline)
    server_db = Database(tmp_path / "server.db", SERVER_MIGRATIONS, offload=inline)
    users = UserStore(Database(tmp_path / "user.db", [], offload=inline))
    dm = DownloadManagerConfig()
    events, hub, feed = EventStore(server_db), EventHub(started_at=NOW), QueueFeed(queue_db, dm)
    publisher = EventPublisher(hub, events, feed, users, shutdown=trio.Event(), clock=lambda: NOW)
    yield Rig(
        QueueStore(queue_db, dm), RequestStore(queue_db, dm), QueueAdminStore(queue_db, dm),
        feed, events, hub, publisher,
    )  # fmt: skip
    for db in (queue_db, server_db, users.db):
        db.close()


def album_request(rig: Rig, user: str, n: int) -> str:
    queued = rig.requests.request_album(user, cid(n), f"Album {n}", "Artist", NOW, False)
    assert queued.request_id is not None
    return queued.request_id


def download_album(rig: Rig, album: str, tracks: int) -> None:
    claimed = rig.queue.claim(NOW).item
    assert claimed is not None and claimed["id"] == album
    children = [ChildSpec(ContentType.TRACK_AUDIO, cid(900 + t)) for t in range(tracks)]
    rig.queue.create_children(album, children, NOW)
    for _ in range(tracks):
        child = rig.queue.claim(NOW).item
        assert child is not None
        rig.queue.complete(child["id"], 10, 5, NOW)


async def test_a_requester_is_told_of_their_request_and_admins_of_every_item(rig: Rig) -> None:
    album = album_request(rig, "alice", 1)
    album_request(rig, "bob", 2)
    await rig.publish()
    download_album(rig, album, tracks=2)
    await rig.publish()

    mine = rig.stored(ALICE)
    names = [e.name for e in mine]
    assert names[0] == "request.created"
    assert names[-2:] == ["request.completed", "inbox"]  # the inbox row committed with it
    assert names.index("catalog.updated") < names.index("request.progress")
    # One progress event per request per batch, however many children moved in it.
    assert names.count("request.progress") == 1
    assert "catalog.updated" in names  # the album was ingested (its children created)
    assert all(f'"id":"{album}"' in e.data for e in mine if e.name.startswith("request."))
    # Bob sees his own request and the catalog, never Alice's request.
    assert album not in "".join(e.data for e in rig.stored(BOB))
    # An admin sees every item's change, the capacity it took, and no one's request.* events.
    admin_names = [e.name for e in rig.stored(ADMIN)]
    assert admin_names.count("queue.item") == 2 + 1 + 1 + 2 * 2 + 1  # created x2, started,
    # children created, two children started and completed, the album completed
    assert "capacity" in admin_names
    assert not any(n.startswith("request.") for n in admin_names)
    ids = [e.id for e in rig.stored(ADMIN)]
    assert ids == sorted(ids)


async def test_a_burst_of_commits_is_published_two_at_once_then_in_batches(
    autojump_clock: trio.abc.Clock, rig: Rig
) -> None:
    """Two commits close together (one file's completion, the next one's claim) are each
    published at once; the rest of a burst waits for the window and goes out in batches."""
    stream = Stream(ADMIN, "token-root", trio.CancelScope())
    rig.hub.join(stream)
    received: list[tuple[float, str]] = []

    async def read() -> None:
        async for event in stream.receive:
            if event.name == "queue.item":
                received.append((round(trio.current_time(), 3), json.loads(event.data)["id"]))

    async with trio.open_nursery() as nursery:
        await nursery.start(rig.publisher.run)
        nursery.start_soon(read)
        requests = []
        for n in range(10):  # a commit every 6 ms, each poking the hub as the stores do
            requests.append(album_request(rig, "alice", n))
            rig.hub.poke()
            await trio.sleep(0.006)
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert [item for _, item in received] == requests  # every change, in order
    window = BURST_WINDOW_S
    assert [at for at, _ in received] == [
        0.0, 0.006, *[window] * 5, round(0.006 + window, 3), *[2 * window] * 2,
    ]  # fmt: skip


async def test_a_cancel_a_pause_and_a_resume_are_told(rig: Rig) -> None:
    album = album_request(rig, "alice", 1)
    rig.requests.cancel_request(album, "alice", NOW)
    rig.admin.pause("root", "downloader maintenance", NOW)
    rig.admin.resume("root", NOW)
    await rig.publish()
    assert [e.name for e in rig.stored(ALICE)] == ["request.created", "request.cancelled"]
    paused = [e for e in rig.stored(ADMIN) if e.name in ("queue.paused", "queue.resumed")]
    assert [e.name for e in paused] == ["queue.paused", "queue.resumed"]
    assert '"reason":"downloader maintenance"' in paused[0].data


async def test_publishing_again_after_a_crash_makes_no_event_twice(rig: Rig) -> None:
    album_request(rig, "alice", 1)
    await rig.publish()
    before = rig.stored(ADMIN)
    await rig.publish()  # a restarted publisher resumes from the stored cursor
    assert rig.stored(ADMIN) == before
    album_request(rig, "alice", 2)
    await rig.publish()
    assert len(rig.stored(ALICE)) == 2


async def test_replay_windows_and_pruning(rig: Rig) -> None:
    made = [NewEvent("job.started", Audience.ADMIN, None, {"n": n}) for n in range(5)]
    stored = rig.events.append(made, NOW - 100, None)
    assert [e.id for e in stored] == [1, 2, 3, 4, 5]
    assert rig.events.window().resumable(0)
    assert rig.events.prune_chunk(NOW, limit=3) == 3
    window = rig.events.window()
    assert (window.pruned_through, window.newest) == (3, 5)
    assert not window.resumable(2) and window.resumable(3) and not window.resumable(6)
    # Ids are never reused, even once everything has been pruned.
    rig.events.prune_chunk(NOW)
    again = rig.events.append(made[:1], NOW, None)
    assert again[0].id == 6
    assert rig.events.window() == (5, 6)


async def test_a_stream_that_falls_behind_is_dropped_and_others_are_not(rig: Rig) -> None:
    hub = rig.hub
    slow, fast = trio.CancelScope(), trio.CancelScope()
    behind, keeping_up = Stream(ADMIN, "t1", slow), Stream(ADMIN, "t2", fast)
    hub.join(behind)
    hub.join(keeping_up)
    event = Event(1, "job.started", Audience.ADMIN, None, "{}")
    for _ in range(STREAM_BUFFER):
        await hub.deliver([event])
        await keeping_up.receive.receive()
    assert hub.dropped == 0
    await hub.deliver([event])
    assert hub.dropped == 1 and slow.cancel_called and not fast.cancel_called
    assert hub.streams == {keeping_up}
    assert await keeping_up.receive.receive() == event
    # A stream only buffers what its viewer may see.
    await hub.deliver([Event(2, "request.progress", Audience.OWNER, "bob", "{}")])
    assert keeping_up.receive.statistics().current_buffer_used == 0
    hub.close_all()
    assert fast.cancel_called and hub.closed
