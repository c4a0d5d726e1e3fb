"""Why an item waits (SPEC §8.2 rev 2 `wait`), each reason from the situation that causes it,
and the estimated start and completion times from recent history, under a controlled clock.

Items are read as users and admins read them (`item_for_user`, `audit_for_item`), so what is
checked is the QueueItem JSON every consumer gets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daemon.config import DownloadManagerConfig
from storage.db import Database
from storage.queue import (
    MIGRATIONS,
    ChildSpec,
    ContentType,
    ErrorType,
    QueueAdminStore,
    QueueStore,
    RequestStore,
)
from storage.queue.estimates import RECENT_ARGS, RECENT_DURATIONS, album_start
from tests.support.queue_rows import cid, enqueue, insert

T0 = 1_700_000_000 - 1_700_000_000 % 86400  # midnight UTC
HOUR, DAY = 3600, 86400
DM = DownloadManagerConfig(
    max_albums_per_hour=1_000, max_albums_per_day=1_000, initial_backoff_secs=60
)


class Queue:
    def __init__(self, path: Path, dm: DownloadManagerConfig = DM) -> None:
        self.db = Database(path, MIGRATIONS, synchronous="OFF")
        self.processing = QueueStore(self.db, dm)
        self.requests = RequestStore(self.db, dm)
        self.admin = QueueAdminStore(self.db, dm)

    def album(self, n: int, at: int = T0) -> str:
        return str(enqueue(self.processing, ContentType.ALBUM, cid(n), at, requested_by="al")["id"])

    def item(self, item_id: str, now: int) -> dict[str, Any]:
        found = self.admin.audit_for_item(item_id, now)
        assert found is not None
        return dict(found["queue_item"])

    def family(self, album_id: str, now: int) -> dict[str, Any]:
        """The album as its requester reads it, children included."""
        found = self.requests.item_for_user(album_id, "al", now)
        assert found is not None
        return found

    def wait(self, item_id: str, now: int) -> tuple[str, int | None] | None:
        wait = self.item(item_id, now)["wait"]
        return None if wait is None else (wait["reason"], wait["until"])

    def take(self, now: int) -> str:
        claimed = self.processing.claim(now).item
        assert claimed is not None
        return str(claimed["id"])

    def children(self, album_id: str, count: int, now: int) -> list[str]:
        """Give the album `count` tracks; every child's id, in order."""
        specs = [ChildSpec(ContentType.TRACK_AUDIO, cid(900 + n)) for n in range(count)]
        self.processing.create_children(album_id, specs, now)
        with self.db.read() as conn:
            found = conn.execute(
                "SELECT id FROM queue_items WHERE parent_id = ? ORDER BY seq", (album_id,)
            )
            return [r[0] for r in found]


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = Queue(tmp_path / "download_queue.db")
    yield q
    q.db.close()


# -- wait reasons --------------------------------------------------------------------------------


def test_work_ahead_is_queued_and_the_next_item_on_an_idle_queue_is_not(queue: Queue) -> None:
    first, second = queue.album(1), queue.album(2, T0 + 1)
    assert queue.wait(first, T0 + 2) is None  # next, and nothing is being fetched
    assert queue.wait(second, T0 + 2) == ("queued", None)
    assert queue.take(T0 + 3) == first
    assert queue.wait(first, T0 + 4) is None  # its data is being fetched: it moves
    assert queue.wait(second, T0 + 4) == ("queued", None)  # next, but the processor is busy
    kids = queue.children(first, 2, T0 + 5)
    family = queue.family(first, T0 + 5)
    assert family["wait"] is None  # its children go next
    assert [c["wait"] for c in family["children"]] == [None, None]
    assert queue.take(T0 + 6) == kids[0]
    family = queue.family(first, T0 + 7)
    assert family["wait"] is None  # one of its children is being fetched
    assert [c["wait"] for c in family["children"]] == [None, {"reason": "queued", "until": None}]


def test_a_new_album_waits_for_capacity_until_the_window_resets(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.db", replace(DM, max_albums_per_hour=1))
    try:
        started, waiting = queue.album(1), queue.album(2, T0 + 1)
        assert queue.take(T0 + 10) == started  # the hour's one album
        assert queue.wait(waiting, T0 + 20) == ("capacity", T0 + HOUR)
        assert queue.wait(started, T0 + 20) is None
        # A repair is never held by the capacity.
        repair = enqueue(queue.processing, ContentType.TRACK_AUDIO, cid(3), T0 + 21)
        assert queue.wait(str(repair["id"]), T0 + 22) == ("queued", None)
        assert queue.wait(waiting, T0 + HOUR) == ("queued", None)  # a new hour: room again
    finally:
        queue.db.close()


def test_a_failed_attempt_waits_to_retry_and_its_album_waits_for_it(queue: Queue) -> None:
    album = queue.album(1)
    queue.take(T0)
    first, second = queue.children(album, 2, T0)
    assert queue.take(T0 + 1) == first
    queue.processing.fail(first, ErrorType.TIMEOUT, "slow", T0 + 2)  # due at T0 + 62
    family = queue.family(album, T0 + 3)
    assert family["children"][0]["wait"] == {"reason": "retry", "until": T0 + 62}
    assert family["wait"] is None  # its other child goes on meanwhile
    assert queue.take(T0 + 4) == second
    queue.processing.complete(second, 10, 1000, T0 + 5)
    # All it has left is a child waiting to retry: it waits as that child does.
    assert queue.wait(album, T0 + 6) == ("retry", T0 + 62)


def test_a_busy_downloader_is_told_apart_and_the_album_waits_for_its_first_child_due(
    queue: Queue,
) -> None:
    album = queue.album(1)
    queue.take(T0)
    first, second = queue.children(album, 2, T0)
    queue.take(T0 + 1)
    queue.processing.fail(first, ErrorType.TIMEOUT, "slow", T0 + 2)  # due at T0 + 62
    queue.take(T0 + 3)
    queue.processing.fail(second, ErrorType.RATE_LIMITED, "429", T0 + 4, retry_after=30)
    family = queue.family(album, T0 + 5)
    assert [c["wait"] for c in family["children"]] == [
        {"reason": "retry", "until": T0 + 62},
        {"reason": "downloader_busy", "until": T0 + 34},
    ]
    assert family["wait"] == {"reason": "downloader_busy", "until": T0 + 34}  # due first


def test_a_pause_comes_first_but_a_file_being_fetched_finishes(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.db", replace(DM, max_albums_per_hour=1))
    try:
        album, at_capacity = queue.album(1), queue.album(2, T0 + 1)
        queue.take(T0)
        first, second, third = queue.children(album, 3, T0)
        queue.take(T0 + 1)
        queue.processing.fail(first, ErrorType.TIMEOUT, "slow", T0 + 2)
        assert queue.take(T0 + 3) == second
        queue.admin.pause("ops", None, T0 + 4)
        family = queue.family(album, T0 + 5)
        paused = {"reason": "paused", "until": None}
        assert family["wait"] is None  # its file in flight goes on
        assert [c["wait"] for c in family["children"]] == [paused, None, paused]
        assert queue.wait(at_capacity, T0 + 5) == ("paused", None)  # before the capacity
        queue.processing.complete(second, 10, 1000, T0 + 6)
        assert queue.family(album, T0 + 7)["wait"] == paused
        queue.admin.resume("ops", T0 + 8)
        assert queue.wait(at_capacity, T0 + 9) == ("capacity", T0 + HOUR)
        assert queue.take(T0 + 10) == third
    finally:
        queue.db.close()


def test_finished_items_do_not_wait(queue: Queue) -> None:
    done = insert(queue.db, status="COMPLETED", completed_at=T0)
    failed = insert(queue.db, status="FAILED", completed_at=T0, content_id=cid(5))
    for item in (done, failed):
        shaped = queue.item(item, T0 + 1)
        assert (shaped["wait"], shaped["estimated_start_at"]) == (None, None)
        assert shaped["estimated_completion_at"] is None


# -- estimates -----------------------------------------------------------------------------------


def history(
    db: Database, kind: str, seconds: float, count: int = 3, *, started: int = T0 - DAY
) -> None:
    """`count` completed items of `kind` that took `seconds` each, started at `started`."""
    for n in range(count):
        insert(
            db, status="COMPLETED", content_type=kind, content_id=f"H{kind[:4]}{n:017d}",
            started_at=started, completed_at=started + int(seconds),
            processing_duration_ms=int(seconds * 1000),
        )  # fmt: skip


def test_without_history_there_is_no_estimate(queue: Queue) -> None:
    first, second = queue.album(1), queue.album(2, T0 + 1)
    assert queue.item(second, T0 + 2)["estimated_start_at"] is None
    queue.take(T0 + 3)
    queue.children(first, 2, T0 + 3)
    assert queue.item(first, T0 + 4)["estimated_completion_at"] is None


def test_starts_follow_the_queue_and_completion_follows_the_children_left(queue: Queue) -> None:
    history(queue.db, "ALBUM", 600)
    history(queue.db, "TRACK_AUDIO", 60)
    history(queue.db, "ALBUM_IMAGE", 5)
    albums = [queue.album(n, T0 + n) for n in range(1, 4)]
    assert [queue.item(a, T0 + 10)["estimated_start_at"] for a in albums] == [
        T0 + 10, T0 + 610, T0 + 1210,
    ]  # fmt: skip
    assert queue.take(T0 + 10) == albums[0]
    # Fetching its data: the album median from its start.
    assert queue.item(albums[0], T0 + 100)["estimated_completion_at"] == T0 + 610
    assert queue.item(albums[1], T0 + 100)["estimated_start_at"] == T0 + 610
    tracks = queue.children(albums[0], 3, T0 + 110)
    specs = [ChildSpec(ContentType.ALBUM_IMAGE, "c" * 40)]
    queue.processing.create_children(albums[0], specs, T0 + 110)
    queue.take(T0 + 110)
    queue.processing.complete(tracks[0], 1, 60_000, T0 + 170)
    assert queue.take(T0 + 170) == tracks[1]
    # 20 s into the second track: 40 s of it left, then a track and a cover.
    left = 40 + 60 + 5
    assert queue.item(albums[0], T0 + 190)["estimated_completion_at"] == T0 + 190 + left
    starts = [queue.item(a, T0 + 190)["estimated_start_at"] for a in albums[1:]]
    assert starts == [T0 + 190 + left, T0 + 190 + left + 600]
    # Children carry no estimate of their own.
    assert {c["estimated_start_at"] for c in queue.family(albums[0], T0 + 190)["children"]} == {
        None
    }


def test_an_album_estimate_waits_for_the_capacity_to_reset(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.db", replace(DM, max_albums_per_hour=2))
    try:
        history(queue.db, "ALBUM", 600)
        history(queue.db, "ALBUM", 600, 1, started=T0 + 50)  # this hour's first album
        albums = [queue.album(n, T0 + 100 + n) for n in range(1, 5)]
        starts = [queue.item(a, T0 + 200)["estimated_start_at"] for a in albums]
        # One more album this hour; then two an hour, ten minutes apart.
        assert starts == [T0 + 200, T0 + HOUR, T0 + HOUR + 600, T0 + 2 * HOUR]
        queue.take(T0 + 200)
        assert queue.wait(albums[1], T0 + 300) == ("capacity", T0 + HOUR)
        assert queue.item(albums[1], T0 + 300)["estimated_start_at"] == T0 + HOUR
    finally:
        queue.db.close()


def test_a_repair_is_estimated_from_its_own_kind_and_never_waits_for_capacity(
    tmp_path: Path,
) -> None:
    queue = Queue(tmp_path / "q.db", replace(DM, max_albums_per_hour=0))
    try:
        history(queue.db, "TRACK_AUDIO", 30)
        repairs = [
            str(enqueue(queue.processing, ContentType.TRACK_AUDIO, cid(n), T0 + n)["id"])
            for n in range(3)
        ]
        starts = [queue.item(r, T0 + 10)["estimated_start_at"] for r in repairs]
        assert starts == [T0 + 10, T0 + 40, T0 + 70]
        assert queue.item(queue.album(9), T0 + 10)["estimated_start_at"] is None  # no albums
    finally:
        queue.db.close()


def test_there_is_no_estimate_while_paused(queue: Queue) -> None:
    history(queue.db, "ALBUM", 600)
    history(queue.db, "TRACK_AUDIO", 60)
    album, waiting = queue.album(1), queue.album(2, T0 + 1)
    queue.take(T0 + 2)
    queue.children(album, 2, T0 + 3)
    assert queue.item(waiting, T0 + 4)["estimated_start_at"] == T0 + 4 + 120
    queue.admin.pause("ops", None, T0 + 5)
    assert queue.item(album, T0 + 6)["estimated_completion_at"] is None
    assert queue.item(waiting, T0 + 6)["estimated_start_at"] is None


def test_far_starts_follow_the_long_run_rate() -> None:
    """Beyond the windows laid out one by one, the long-run rate: the daily budget binds."""
    per_day = (10, 60)  # ten an hour, sixty a day, a minute each: six busy hours a day
    assert album_start(T0, 0, 60, (0, 0), T0, per_day) == T0
    assert album_start(T0, 10, 60, (0, 0), T0, per_day) == T0 + HOUR
    assert album_start(T0, 60, 60, (0, 0), T0, per_day) == T0 + DAY
    far = album_start(T0, 6000, 60, (0, 0), T0, per_day)  # a hundred days ahead
    assert far is not None and abs(far - (T0 + 100 * DAY)) <= DAY  # within a day of it
    assert album_start(T0, 5, 60, (0, 0), T0, (0, 60)) is None  # no album may ever start


def test_the_history_read_costs_the_same_however_much_has_completed(queue: Queue) -> None:
    """The medians read the newest completions of a kind through an index, never a sort or a
    scan of everything that completed."""
    with queue.db.read() as conn:
        steps = conn.execute(f"EXPLAIN QUERY PLAN {RECENT_DURATIONS}", RECENT_ARGS).fetchall()
    plan = " ".join(step[3] for step in steps)
    assert "queue_done_kind" in plan and "TEMP B-TREE" not in plan, plan
