"""The user side of the download queue (SPEC §8.3, §8.4): limits, positions, a user's requests."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.db import Database
from storage.ids import InvalidId
from storage.queue import (
    MIGRATIONS,
    QueueAdminStore,
    Rejection,
    RequestStore,
    Status,
    UserLimitStatus,
)

DAY = 86400
# 2024-05-10 13:20:00 UTC: mid-day, mid-hour.
MIDNIGHT = 1_715_299_200
NOW = MIDNIGHT + 13 * 3600 + 20 * 60
MIDNIGHT_NEXT = MIDNIGHT + DAY


def album(n: int) -> str:
    return f"Album{n:017d}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "download_queue.db"


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def open_store(db_path: Path, metrics: Metrics) -> Iterator[Any]:
    opened: list[Database] = []

    def make(**limits: Any) -> RequestStore:
        db = Database(db_path, MIGRATIONS)
        opened.append(db)
        settings = replace(DownloadManagerConfig(), **limits)
        return RequestStore(db, settings, on_audit=metrics.count_audit_events)

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def store(open_store: Any) -> RequestStore:
    result: RequestStore = open_store()
    return result


# What the routes read: `my-requests` (with the limits), `limits` (with the capacity), and an
# item's position as an admin sees it (any item, any requester).


def my_requests(
    store: RequestStore, user: str, status: Status | None = None, limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    return store.my_requests_and_limits(user, status, limit, offset, NOW)[0]


def user_limits(store: RequestStore, user: str, now: int) -> UserLimitStatus:
    return store.limits_and_capacity(user, now)[0]


def queue_position(store: RequestStore, item_id: str) -> int | None:
    found = QueueAdminStore(store.db, store.dm).audit_for_item(item_id)
    return None if found is None else found["queue_item"].get("queue_position")


_RAW = """INSERT INTO queue_items (id, parent_id, status, priority, content_type, content_id,
    request_source, requested_by, created_at, started_at, max_retries)
    VALUES (:id, :parent_id, :status, :priority, :content_type, :content_id, :request_source,
    :requested_by, :created_at, :started_at, 5)"""


def insert_raw(store: RequestStore, **fields: Any) -> str:
    """An item created by the processing or admin side (children, repairs, other states)."""
    row = {
        "id": str(uuid.uuid4()), "parent_id": None, "status": "PENDING", "priority": 2,
        "content_type": "ALBUM", "content_id": album(uuid.uuid4().int % 10**9),
        "request_source": "USER", "requested_by": None, "created_at": NOW, "started_at": None,
        **fields,
    }  # fmt: skip
    with store.db.write() as conn:
        conn.execute(_RAW, row)
    return str(row["id"])


def set_status(
    store: RequestStore, item_id: str, status: str, started_at: int | None = None
) -> None:
    with store.db.write() as conn:
        conn.execute(
            "UPDATE queue_items SET status = ?, started_at = COALESCE(?, started_at) WHERE id = ?",
            (status, started_at, item_id),
        )


def rows(store: RequestStore, sql: str, *args: Any) -> list[sqlite3.Row]:
    with store.db.read() as conn:
        return conn.execute(sql, args).fetchall()


def request(
    store: RequestStore, user: str, n: int, now: int = NOW, in_catalog: bool = False
) -> Any:
    return store.request_album(user, album(n), f"Album {n}", "Artist", now, in_catalog)


# -- request_album ------------------------------------------------------------------------------


def test_request_album_queues_a_pending_user_item_with_its_audit_entry(
    store: RequestStore, metrics: Metrics
) -> None:
    result = request(store, "alice", 1)
    assert result.rejected is None
    assert result.queue_position == 1
    [item] = rows(store, "SELECT * FROM queue_items")
    assert (item["id"], item["status"], item["priority"], item["content_type"]) == (
        result.request_id, "PENDING", 2, "ALBUM",
    )  # fmt: skip
    assert (item["request_source"], item["requested_by"], item["created_at"]) == (
        "USER",
        "alice",
        NOW,
    )
    assert (item["content_name"], item["artist_name"], item["max_retries"]) == (
        "Album 1",
        "Artist",
        5,
    )
    [entry] = rows(store, "SELECT * FROM audit_log")
    assert (entry["event_type"], entry["queue_item_id"], entry["user"]) == (
        "REQUEST_CREATED", result.request_id, "alice",
    )  # fmt: skip
    assert entry["timestamp"] == NOW
    assert metrics.audit_events.labels("REQUEST_CREATED")._value.get() == 1
    assert result.limits.requests_today == 1 and result.limits.in_queue == 1


def test_request_album_refuses_catalog_and_queued_albums_without_spending_limits(
    store: RequestStore,
) -> None:
    assert request(store, "alice", 1, in_catalog=True).rejected is Rejection.IN_CATALOG
    first = request(store, "alice", 2)
    assert request(store, "bob", 2).rejected is Rejection.IN_QUEUE
    assert request(store, "alice", 2).rejected is Rejection.IN_QUEUE
    assert len(rows(store, "SELECT * FROM queue_items")) == 1
    assert user_limits(store, "alice", NOW).requests_today == 1
    assert user_limits(store, "bob", NOW).requests_today == 0
    # Once the earlier item is terminal, the album can be requested again.
    set_status(store, str(first.request_id), "FAILED")
    assert request(store, "bob", 2).rejected is None


def test_request_album_rejects_a_bad_id(store: RequestStore) -> None:
    with pytest.raises(InvalidId):
        store.request_album("alice", "../etc/passwd", "x", "y", NOW, False)
    assert rows(store, "SELECT * FROM queue_items") == []


def test_concurrent_requests_never_exceed_the_queue_limit(open_store: Any) -> None:
    # Two Database objects (two write connections): only the transaction can keep the count.
    stores = [open_store(user_max_queue_size=5), open_store(user_max_queue_size=5)]
    results: list[Any] = []
    barrier = threading.Barrier(20)

    def one(n: int) -> None:
        barrier.wait()
        results.append(request(stores[n % 2], "alice", n))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = [r for r in results if r.rejected is None]
    assert len(admitted) == 5
    assert all(r.rejected is Rejection.RATE_LIMITED for r in results if r.rejected is not None)
    assert len(rows(stores[0], "SELECT * FROM queue_items")) == 5
    assert sorted(r.queue_position for r in admitted) == [1, 2, 3, 4, 5]
    assert user_limits(stores[0], "alice", NOW).in_queue == 5


def test_daily_limit_counts_todays_requests_from_the_queue(open_store: Any) -> None:
    store = open_store(user_max_requests_per_day=3, user_max_queue_size=100)
    for n in range(3):
        assert request(store, "alice", n, now=NOW - DAY).rejected is None
    # Yesterday's items do not count today, whatever their state.
    assert user_limits(store, "alice", NOW).requests_today == 0
    today = [request(store, "alice", n).request_id for n in range(3, 6)]
    refused = request(store, "alice", 6)
    assert refused.rejected is Rejection.RATE_LIMITED
    assert refused.limits.requests_today == 3
    assert None not in today
    assert refused.limits.in_queue == 6
    assert refused.limits.can_request is False
    assert refused.limits.resets_at == MIDNIGHT_NEXT
    # Finishing an item does not give back a daily request.
    set_status(store, str(today[0]), "COMPLETED")
    assert request(store, "alice", 6).rejected is Rejection.RATE_LIMITED
    assert request(store, "bob", 6).rejected is None
    assert request(store, "alice", 6, now=MIDNIGHT_NEXT).rejected is Rejection.IN_QUEUE
    assert request(store, "alice", 7, now=MIDNIGHT_NEXT).rejected is None


def test_queue_limit_counts_only_non_terminal_top_level_items(open_store: Any) -> None:
    store = open_store(user_max_queue_size=2)
    first = request(store, "alice", 1)
    request(store, "alice", 2)
    insert_raw(store, parent_id=first.request_id, content_type="TRACK_AUDIO", requested_by="alice")
    limits = user_limits(store, "alice", NOW)
    assert (limits.in_queue, limits.can_request, limits.resets_at) == (2, False, None)
    assert request(store, "alice", 3).rejected is Rejection.RATE_LIMITED
    set_status(store, str(first.request_id), "COMPLETED")
    limits = user_limits(store, "alice", NOW)
    assert (limits.in_queue, limits.can_request, limits.resets_at) == (1, True, MIDNIGHT_NEXT)
    assert request(store, "alice", 3).rejected is None


# -- request_discography ------------------------------------------------------------------------


def test_discography_queues_what_it_can_and_names_each_skip(open_store: Any) -> None:
    store = open_store(user_max_requests_per_day=4)
    request(store, "bob", 2)
    request(store, "alice", 9)
    albums = [(album(n), f"Album {n}") for n in (1, 2, 3, 4, 3, 5, 6, 7)]
    result = store.request_discography("alice", albums, "Artist", NOW, {album(1)})
    assert len(result.request_ids) == 3
    assert result.skipped == [
        {"album_id": album(1), "reason": "in_catalog"},
        {"album_id": album(2), "reason": "in_queue"},
        {"album_id": album(3), "reason": "in_queue"},
        {"album_id": album(6), "reason": "rate_limited"},
        {"album_id": album(7), "reason": "rate_limited"},
    ]
    queued = rows(store, "SELECT * FROM queue_items WHERE requested_by = 'alice' ORDER BY seq")
    assert [r["content_id"] for r in queued] == [album(9), album(3), album(4), album(5)]
    assert {r["content_name"] for r in queued[1:]} == {"Album 3", "Album 4", "Album 5"}
    assert result.limits.requests_today == 4 and result.limits.can_request is False
    created = rows(store, "SELECT * FROM audit_log WHERE user = 'alice'")
    assert len(created) == 4


def test_discography_over_the_limit_queues_nothing(open_store: Any) -> None:
    store = open_store(user_max_queue_size=1)
    request(store, "alice", 1)
    result = store.request_discography("alice", [(album(2), "Two")], "Artist", NOW, set())
    assert result.request_ids == []
    assert result.skipped == [{"album_id": album(2), "reason": "rate_limited"}]
    assert len(rows(store, "SELECT * FROM queue_items")) == 1


# -- positions ----------------------------------------------------------------------------------


def test_queue_position_follows_the_claim_order(store: RequestStore) -> None:
    started = insert_raw(store, status="IN_PROGRESS", created_at=NOW - 100)
    child = insert_raw(store, parent_id=started, content_type="TRACK_AUDIO", created_at=NOW - 50)
    late_user = request(store, "alice", 1, now=NOW).request_id
    early_user = request(store, "alice", 2, now=NOW - 10).request_id
    same_time = request(store, "bob", 3, now=NOW).request_id  # tie on created_at: seq decides
    repair = insert_raw(store, priority=1, content_type="TRACK_AUDIO", request_source="WATCHDOG",
                        created_at=NOW + 5)  # fmt: skip
    expansion = insert_raw(store, priority=3, request_source="EXPANSION", created_at=NOW - 500)
    expected = {repair: 1, early_user: 2, late_user: 3, same_time: 4, expansion: 5}
    assert {i: queue_position(store, str(i)) for i in expected} == expected
    mine = my_requests(store, "alice")
    assert {m["id"]: m["queue_position"] for m in mine} == {early_user: 2, late_user: 3}
    for not_ranked in (started, child, "no-such-id"):
        assert queue_position(store, not_ranked) is None
    set_status(store, repair, "IN_PROGRESS")
    assert queue_position(store, str(same_time)) == 3


def test_positions_of_many_requests_match_one_by_one(store: RequestStore) -> None:
    for n in range(30):
        who = "alice" if n % 3 else "bob"
        assert request(store, who, n, now=NOW - (n * 7919) % 50).rejected is None
        if n % 5 == 0:
            insert_raw(store, priority=1 + n % 3, created_at=NOW - n)
    mine = my_requests(store, "alice", limit=500)
    assert len(mine) == 20
    assert all(m["queue_position"] == queue_position(store, m["id"]) for m in mine)


def _fill(store: RequestStore, count: int, start: int) -> None:
    batch = [
        (str(uuid.uuid4()), "PENDING", 2, "ALBUM", album(start + i), "USER", "crowd", NOW + i, 5)
        for i in range(count)
    ]
    with store.db.write() as conn:
        conn.executemany(
            """INSERT INTO queue_items (id, status, priority, content_type, content_id,
                request_source, requested_by, created_at, max_retries)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            batch,
        )


def _best_time(fn: Any, repeat: int = 15) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def test_queue_position_costs_about_the_same_at_any_depth(open_store: Any) -> None:
    store = open_store(user_max_requests_per_day=1000, user_max_queue_size=1000)
    front = str(request(store, "alice", 0, now=NOW - 1).request_id)
    _fill(store, 1_000, 1)
    small = _best_time(lambda: queue_position(store, front))
    _fill(store, 99_000, 1_001)
    assert queue_position(store, front) == 1
    back = str(request(store, "alice", 999_999, now=NOW + 200_000).request_id)
    assert queue_position(store, back) == 100_002
    # Maintained counters, not a walk over the items ahead (generous bound for noisy machines).
    assert _best_time(lambda: queue_position(store, back)) < small * 10 + 0.002
    # A page of requests spread through the queue: each position costs the same few searches.
    late = [(album(2_000_000 + n), f"Late {n}") for n in range(200)]
    assert (
        len(store.request_discography("late", late, "Artist", NOW + 300_000, set()).request_ids)
        == 200
    )
    page = my_requests(store, "late", limit=500)
    assert [m["queue_position"] for m in page] == list(range(100_202, 100_002, -1))
    assert _best_time(lambda: my_requests(store, "late", limit=500), repeat=2) < 1.0


# -- reading a user's requests ------------------------------------------------------------------


def test_my_requests_are_own_top_level_items_newest_first_and_paged(store: RequestStore) -> None:
    ids = [request(store, "alice", n, now=NOW + n).request_id for n in range(5)]
    request(store, "bob", 99)
    insert_raw(store, parent_id=ids[0], content_type="TRACK_AUDIO", requested_by="alice")
    set_status(store, str(ids[1]), "COMPLETED")
    assert [m["id"] for m in my_requests(store, "alice")] == ids[::-1]
    assert [m["id"] for m in my_requests(store, "alice", limit=2, offset=1)] == [ids[3], ids[2]]
    assert [m["id"] for m in my_requests(store, "alice", status=Status.COMPLETED)] == [ids[1]]
    assert my_requests(store, "alice", status=Status.FAILED) == []
    assert my_requests(store, "nobody") == []
    oldest = my_requests(store, "alice")[-1]
    assert oldest["progress"] == {"total_children": 1, "completed": 0, "failed": 0, "pending": 1,
                                  "in_progress": 0, "retry_waiting": 0, "cancelled": 0}  # fmt: skip
    assert my_requests(store, "alice")[0]["progress"] is None
    done = my_requests(store, "alice", status=Status.COMPLETED)[0]
    assert done["queue_position"] is None


def test_item_for_user_shows_own_items_with_children_and_hides_the_rest(
    store: RequestStore,
) -> None:
    mine = str(request(store, "alice", 1).request_id)
    theirs = str(request(store, "bob", 2).request_id)
    set_status(store, mine, "IN_PROGRESS", started_at=NOW)
    kids = [
        insert_raw(store, parent_id=mine, content_type="TRACK_AUDIO", requested_by="alice",
                   content_id=album(100 + n))
        for n in range(3)
    ]  # fmt: skip
    set_status(store, kids[0], "COMPLETED")
    item = store.item_for_user(mine, "alice")
    assert item is not None
    assert (item["id"], item["status"], item["queue_position"]) == (mine, "IN_PROGRESS", None)
    assert [c["id"] for c in item["children"]] == kids
    assert item["children"][0]["status"] == "COMPLETED"
    assert "progress" not in item["children"][0]
    assert item["progress"]["completed"] == 1 and item["progress"]["pending"] == 2
    assert store.item_for_user(theirs, "alice") is None
    assert store.item_for_user(kids[1], "alice") is None
    assert store.item_for_user("not-an-id", "alice") is None
    other = store.item_for_user(theirs, "bob")
    assert other is not None and other["queue_position"] == 1 and other["children"] == []


def test_in_queue_ids_names_only_non_terminal_content(store: RequestStore) -> None:
    queued = request(store, "alice", 1)
    done = request(store, "alice", 2)
    set_status(store, str(done.request_id), "COMPLETED")
    assert queued.request_id is not None
    assert store.in_queue_ids([album(1), album(2), album(3)]) == {album(1)}
    assert store.in_queue_ids([]) == set()


def test_global_capacity_counts_albums_started_this_hour_and_day(open_store: Any) -> None:
    store = open_store(max_albums_per_hour=2, max_albums_per_day=3)
    hour = NOW - NOW % 3600
    starts = {1: hour + 5, 2: hour - 60, 3: NOW - NOW % DAY - 1}
    for n, started in starts.items():
        item = str(request(store, "alice", n).request_id)
        set_status(store, item, "COMPLETED", started_at=started)
    insert_raw(store, content_type="TRACK_AUDIO", status="COMPLETED", started_at=hour + 1,
               priority=1)  # fmt: skip
    limits, capacity = store.limits_and_capacity("alice", NOW)
    assert limits == store.my_requests_and_limits("alice", None, 50, 0, NOW)[1]
    assert capacity == {
        "albums_this_hour": 1, "max_per_hour": 2, "albums_today": 2, "max_per_day": 3,
        "at_capacity": False, "resets_at": hour + 3600,
    }  # fmt: skip
    set_status(store, str(request(store, "alice", 4).request_id), "IN_PROGRESS", started_at=NOW)
    _, capacity = store.limits_and_capacity("alice", NOW)
    assert (capacity["albums_this_hour"], capacity["albums_today"]) == (2, 3)
    assert capacity["at_capacity"] is True
    assert capacity["resets_at"] == MIDNIGHT_NEXT
