"""Cancelling queue items (SPEC §8.3 rev 2, §8.10): the user's and the admin's cancel, how an
album settles around cancelled children, outcomes recorded after a cancel, and children whose
files are already here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.db import Database
from storage.queue import (
    MIGRATIONS,
    CancelRefused,
    ChildSpec,
    ContentType,
    ErrorType,
    QueueAdminStore,
    QueueStateError,
    QueueStore,
    RequestStore,
    RetryRefused,
    Status,
)
from tests.support.queue_rows import BASE, audit_rows, cid, row

NOW = BASE + 100
COVER = "c" * 40


@dataclass
class Stores:
    db: Database
    queue: QueueStore
    requests: RequestStore
    admin: QueueAdminStore
    metrics: Metrics

    def request(self, user: str, n: int) -> str:
        queued = self.requests.request_album(user, cid(n), f"Album {n}", "Artist", NOW, False)
        assert queued.request_id is not None, queued
        return queued.request_id

    def album_with_children(self, user: str = "alice", n: int = 1, tracks: int = 3) -> str:
        """An album claimed, its children created (a cover, `tracks` tracks), all PENDING."""
        album = self.request(user, n)
        claimed = self.queue.claim(NOW).item
        assert claimed is not None and claimed["id"] == album
        children = [ChildSpec(ContentType.TRACK_AUDIO, cid(100 * n + t)) for t in range(tracks)]
        children.append(ChildSpec(ContentType.ALBUM_IMAGE, COVER))
        self.queue.create_children(album, children, NOW)
        return album

    def children(self, album: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            found = conn.execute(
                "SELECT * FROM queue_items WHERE parent_id = ? ORDER BY seq", (album,)
            )
            return [dict(r) for r in found]

    def claim_next(self) -> str:
        claimed = self.queue.claim(NOW).item
        assert claimed is not None
        return str(claimed["id"])

    def events(self, event: str) -> float:
        labels = {"event_type": event}
        value = self.metrics.registry.get_sample_value(
            "pezzottify_download_audit_events_total", labels
        )
        return value or 0.0


@pytest.fixture
def s(tmp_path: Path) -> Iterator[Stores]:
    db = Database(tmp_path / "download_queue.db", MIGRATIONS)
    dm = DownloadManagerConfig(user_max_queue_size=2, user_max_requests_per_day=10)
    metrics = Metrics()
    counted = metrics.count_audit_events
    yield Stores(
        db,
        QueueStore(db, dm, on_audit=counted),
        RequestStore(db, dm, on_audit=counted),
        QueueAdminStore(db, dm, on_audit=counted),
        metrics,
    )
    db.close()


def every_row(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        items = conn.execute("SELECT * FROM queue_items ORDER BY seq").fetchall()
        entries = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
        return [tuple(r) for r in [*items, *entries]]


# -- a user's cancel ---------------------------------------------------------------------------


def test_a_pending_request_is_cancelled_and_frees_its_place_in_the_queue(s: Stores) -> None:
    first, second = s.request("alice", 1), s.request("alice", 2)
    assert s.requests.request_album("alice", cid(3), "A", "B", NOW, False).rejected is not None
    item, cancelled = s.requests.cancel_request(first, "alice", NOW + 5)
    assert (item["id"], item["status"], item["completed_at"]) == (first, "CANCELLED", NOW + 5)
    assert (item["queue_position"], item["progress"]) == (None, None)
    assert cancelled.ids == [first] and not cancelled.album_completed
    # No longer in the queue: the user's queue has room, search shows it as not queued, the
    # next album moves up; it still counts among today's requests.
    limits = s.requests.limits_and_capacity("alice", NOW + 5)[0]
    assert (limits.in_queue, limits.requests_today, limits.can_request) == (1, 2, True)
    assert s.requests.in_queue_ids([cid(1), cid(2)]) == {cid(2)}
    (mine,) = [r for r in s.requests.my_requests_and_limits("alice", None, 50, 0, NOW)[0]
               if r["id"] == second]  # fmt: skip
    assert mine["queue_position"] == 1
    # One entry, naming who cancelled; counted once committed.
    (entry,) = audit_rows(s.db, "REQUEST_CANCELLED")
    assert (entry["queue_item_id"], entry["user"]) == (first, "alice")
    details = json.loads(entry["details"])
    assert details == {"cancelled_by": "alice", "items": 1, "previous_status": "PENDING"}
    assert s.events("REQUEST_CANCELLED") == 1
    # The same album may be requested again.
    again = s.requests.request_album("alice", cid(1), "Album 1", "Artist", NOW + 6, False)
    assert again.rejected is None and again.request_id not in (None, first)


def test_cancelling_an_album_in_progress_cancels_its_unfinished_children_only(
    s: Stores,
) -> None:
    album = s.album_with_children(tracks=3)
    done, downloading, waiting, _cover = (k["id"] for k in s.children(album))
    assert s.claim_next() == done
    s.queue.complete(done, 100, 10, NOW)
    assert s.claim_next() == downloading  # left IN_PROGRESS: its download is under way
    assert s.claim_next() == waiting
    assert s.queue.fail(waiting, ErrorType.CONNECTION, "reset", NOW) is Status.RETRY_WAITING

    item, cancelled = s.requests.cancel_request(album, "alice", NOW + 9)

    states = {k["id"]: k["status"] for k in s.children(album)}
    assert states[done] == "COMPLETED"
    assert {states[k] for k in states if k != done} == {"CANCELLED"}
    assert cancelled.ids[0] == album and set(cancelled.ids[1:]) == set(states) - {done}
    assert item["status"] == "CANCELLED"
    assert item["progress"] == {
        "total_children": 4, "completed": 1, "failed": 0, "pending": 0, "in_progress": 0,
        "retry_waiting": 0, "cancelled": 3,
    }  # fmt: skip
    entries = audit_rows(s.db, "REQUEST_CANCELLED")
    assert [e["queue_item_id"] for e in entries] == cancelled.ids
    assert json.loads(entries[0]["details"]) == {
        "cancelled_by": "alice", "items": 4, "previous_status": "IN_PROGRESS",
    }  # fmt: skip
    assert all(json.loads(e["details"])["with_parent"] == album for e in entries[1:])
    assert row(s.db, waiting)["next_retry_at"] is None
    # A cancelled album is never completed afterwards, whatever its children do.
    assert not [e for e in audit_rows(s.db, "DOWNLOAD_COMPLETED") if e["queue_item_id"] == album]


def test_refusals_change_nothing(s: Stores) -> None:
    mine = s.album_with_children("alice", 1, tracks=1)
    theirs = s.request("bob", 2)
    child = s.children(mine)[0]["id"]
    before = every_row(s.db)
    for item_id, status in [
        (theirs, 404),  # someone else's
        (child, 404),  # a child is not a request
        ("00000000-0000-4000-8000-000000000000", 404),
        ("not an id at all", 404),
    ]:
        with pytest.raises(CancelRefused) as refused:
            s.requests.cancel_request(item_id, "alice", NOW)
        assert refused.value.status == status, item_id
    s.requests.cancel_request(mine, "alice", NOW)
    after_cancel = every_row(s.db)
    with pytest.raises(CancelRefused) as refused:
        s.requests.cancel_request(mine, "alice", NOW + 1)  # already finished
    assert refused.value.status == 409
    assert every_row(s.db) == after_cancel != before
    assert row(s.db, theirs)["status"] == "PENDING"


# -- an admin's cancel, and how an album settles ----------------------------------------------


def test_a_child_cancelled_alone_lets_its_album_complete_without_it(s: Stores) -> None:
    album = s.album_with_children(tracks=2)
    first, second, cover = (k["id"] for k in s.children(album))
    assert s.claim_next() == first
    s.queue.complete(first, 100, 10, NOW)
    assert s.claim_next() == second  # left IN_PROGRESS: its download is under way
    assert s.claim_next() == cover
    s.queue.complete(cover, 7, 10, NOW)
    assert row(s.db, album)["status"] == "IN_PROGRESS"

    item, cancelled = s.admin.admin_cancel(second, "root", NOW + 3)

    assert (item["id"], item["status"]) == (second, "CANCELLED")
    assert cancelled.ids == [second] and cancelled.album_completed
    settled = row(s.db, album)
    assert (settled["status"], settled["bytes_downloaded"]) == ("COMPLETED", 107)
    (entry,) = audit_rows(s.db, "REQUEST_CANCELLED")
    assert entry["user"] == "root" and json.loads(entry["details"])["cancelled_by"] == "root"
    completion = [e for e in audit_rows(s.db, "DOWNLOAD_COMPLETED") if e["queue_item_id"] == album]
    assert json.loads(completion[0]["details"]) == {"bytes": 107, "children": 3, "cancelled": 1}
    (shown,) = s.admin.requests(top_level_only=True)[0]
    assert shown["progress"]["cancelled"] == 1 and shown["progress"]["completed"] == 2


def test_an_album_with_a_failed_child_fails_when_its_last_is_cancelled(s: Stores) -> None:
    album = s.album_with_children(tracks=1)
    track, cover = (k["id"] for k in s.children(album))
    assert s.claim_next() == track
    s.queue.fail(track, ErrorType.NOT_FOUND, "gone", NOW)
    _, cancelled = s.admin.admin_cancel(cover, "root", NOW)
    settled = row(s.db, album)
    assert (settled["status"], settled["error_message"]) == ("FAILED", "1 of 2 children failed")
    assert not cancelled.album_completed


def test_the_admin_cancels_anyones_album_and_is_refused_like_a_user(s: Stores) -> None:
    album = s.request("bob", 1)
    item, cancelled = s.admin.admin_cancel(album, "root", NOW)
    assert (item["status"], item["requested_by"], cancelled.ids) == ("CANCELLED", "bob", [album])
    for item_id, status in [(album, 409), ("nope", 404)]:
        with pytest.raises(CancelRefused) as refused:
            s.admin.admin_cancel(item_id, "root", NOW)
        assert refused.value.status == status
    assert s.events("REQUEST_CANCELLED") == 1


def test_a_failed_child_of_a_cancelled_album_is_not_retried(s: Stores) -> None:
    album = s.album_with_children(tracks=1)
    track = s.children(album)[0]["id"]
    assert s.claim_next() == track
    s.queue.fail(track, ErrorType.NOT_FOUND, "gone", NOW)
    s.requests.cancel_request(album, "alice", NOW)
    before = every_row(s.db)
    with pytest.raises(RetryRefused) as refused:
        s.admin.admin_retry(track, "root", NOW)
    assert (refused.value.status, refused.value.code) == (409, "ALBUM_CANCELLED")
    assert every_row(s.db) == before


# -- what the processor records after a cancel ------------------------------------------------


def test_outcomes_recorded_after_a_cancel_change_nothing(s: Stores) -> None:
    album = s.album_with_children(tracks=2)
    first, second, _ = (k["id"] for k in s.children(album))
    assert s.claim_next() == first
    s.requests.cancel_request(album, "alice", NOW)
    before = every_row(s.db)
    assert s.queue.complete(first, 100, 10, NOW + 1) is False
    assert s.queue.fail(first, ErrorType.TIMEOUT, "slow", NOW + 1) is Status.CANCELLED
    assert s.queue.release(first, NOW + 1) is False
    created = s.queue.create_children(album, [ChildSpec(ContentType.TRACK_AUDIO, cid(9))], NOW)
    assert (created.created, created.album_completed) == (0, False)
    assert every_row(s.db) == before
    assert {row(s.db, i)["status"] for i in (album, first, second)} == {"CANCELLED"}
    # Anything else not IN_PROGRESS is still a bug.
    pending = s.request("alice", 5)
    with pytest.raises(QueueStateError):
        s.queue.complete(pending, 1, 1, NOW)


# -- children whose files are already here ----------------------------------------------------


def test_children_already_here_are_completed_at_once_and_fetch_nothing(s: Stores) -> None:
    album = s.request("alice", 1)
    assert s.claim_next() == album
    children = [
        ChildSpec(ContentType.TRACK_AUDIO, cid(101), present=True),
        ChildSpec(ContentType.TRACK_AUDIO, cid(102)),
        ChildSpec(ContentType.ALBUM_IMAGE, COVER, present=True),
    ]
    created = s.queue.create_children(album, children, NOW)
    assert (created.created, created.total, created.album_completed) == (3, 3, False)
    kids = s.children(album)
    assert [(k["status"], k["bytes_downloaded"]) for k in kids] == [
        ("COMPLETED", 0), ("PENDING", None), ("COMPLETED", 0),
    ]  # fmt: skip
    present = [json.loads(e["details"]) for e in audit_rows(s.db, "DOWNLOAD_COMPLETED")]
    assert present == [{"bytes": 0, "already_present": True}] * 2
    (made,) = audit_rows(s.db, "CHILDREN_CREATED")
    assert json.loads(made["details"])["already_present"] == 2
    assert s.claim_next() == kids[1]["id"]  # only the missing one is fetched
    assert s.queue.complete(kids[1]["id"], 50, 5, NOW) is True
    assert (row(s.db, album)["status"], row(s.db, album)["bytes_downloaded"]) == ("COMPLETED", 50)


def test_an_album_whose_files_are_all_here_completes_as_its_children_are_made(
    s: Stores,
) -> None:
    album = s.request("alice", 1)
    s.claim_next()
    whole = [ChildSpec(ContentType.TRACK_AUDIO, cid(101), present=True)]
    assert s.queue.create_children(album, whole, NOW).album_completed
    assert row(s.db, album)["status"] == "COMPLETED"
