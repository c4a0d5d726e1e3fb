"""QueueAdminStore: stats, lists, admin retry, activity, audit, repairs, stale items, retention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.db import Database
from storage.queue import (
    MIGRATIONS,
    AuditEvent,
    AuditFilter,
    ContentType,
    ErrorType,
    QueueAdminStore,
    QueueStore,
    Repair,
    RetryRefused,
    Status,
)
from tests.support.queue_rows import BASE, audit, audit_rows, cid, insert, open_store, row

DAY = 86400
HOUR = 3600


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def store(tmp_path: Path, metrics: Metrics) -> QueueAdminStore:
    dm = DownloadManagerConfig(max_albums_per_hour=2, max_albums_per_day=3)
    return open_store(tmp_path, dm, on_audit=metrics.count_audit_events)


def audit_count(metrics: Metrics, event: AuditEvent) -> float:
    return (
        metrics.registry.get_sample_value(
            "pezzottify_download_audit_events_total", {"event_type": event.value}
        )
        or 0.0
    )


# -- stats, capacity, lists -------------------------------------------------------------------


def test_stats_counts_queue_today_capacity_and_processing(store: QueueAdminStore) -> None:
    db, day = store.db, BASE - BASE % DAY
    insert(db, status="PENDING")
    insert(db, status="PENDING", parent_id=None, content_type="TRACK_AUDIO")
    insert(db, status="IN_PROGRESS", started_at=BASE - 10)  # an album started this hour
    insert(db, status="RETRY_WAITING")
    insert(db, status="COMPLETED", completed_at=BASE - 60, processing_duration_ms=1000)
    insert(db, status="COMPLETED", completed_at=day + 1, processing_duration_ms=3000)
    insert(db, status="FAILED", completed_at=BASE - 5)
    insert(db, status="COMPLETED", completed_at=day - 10, processing_duration_ms=5000)  # yesterday
    insert(db, status="FAILED", completed_at=BASE - 2 * DAY)  # outside every window
    stats = store.stats(BASE)
    assert stats["queue"] == {
        "pending": 2,
        "in_progress": 1,
        "retry_waiting": 1,
        "completed_today": 2,
        "failed_today": 1,
    }
    assert stats["capacity"]["albums_this_hour"] == 1
    assert stats["capacity"]["albums_today"] == 1
    assert stats["capacity"]["at_capacity"] is False
    # Last 24 h: three completed (1000, 3000, 5000 ms) and one failed.
    assert stats["processing"] == {"average_duration_ms": 3000, "success_rate_percent": 75.0}


def test_stats_processing_is_null_without_finished_items(store: QueueAdminStore) -> None:
    assert store.stats(BASE)["processing"] == {
        "average_duration_ms": None,
        "success_rate_percent": None,
    }


def test_capacity_resets_at_the_binding_window(store: QueueAdminStore) -> None:
    hour, day = BASE - BASE % HOUR, BASE - BASE % DAY
    insert(store.db, status="COMPLETED", started_at=hour + 1)
    insert(store.db, status="IN_PROGRESS", started_at=hour + 2)
    capacity = store.stats(BASE)["capacity"]
    assert capacity["at_capacity"] is True  # hour limit 2 reached
    assert capacity["resets_at"] == hour + HOUR
    insert(store.db, status="COMPLETED", started_at=day + 5)
    capacity = store.stats(BASE)["capacity"]
    assert capacity["albums_today"] == 3
    assert capacity["resets_at"] == day + DAY  # day limit 3 reached: that binds longer


def test_failed_lists_newest_failure_first_with_total(store: QueueAdminStore) -> None:
    ids = [insert(store.db, status="FAILED", completed_at=BASE + k) for k in (3, 1, 2)]
    insert(store.db, status="COMPLETED", completed_at=BASE + 9)
    items, total = store.failed(limit=2, offset=0)
    assert total == 3
    assert [i["id"] for i in items] == [ids[0], ids[2]]
    items, total = store.failed(limit=2, offset=2)
    assert [i["id"] for i in items] == [ids[1]]
    assert items[0]["progress"] is None and items[0]["queue_position"] is None


def test_requests_filters_apply_before_paging(store: QueueAdminStore) -> None:
    db = store.db
    mine = [insert(db, requested_by="alice", created_at=BASE + k) for k in range(5)]
    insert(db, requested_by="bob", created_at=BASE + 10)
    insert(db, requested_by="alice", status="FAILED", created_at=BASE + 11)
    insert(db, parent_id=mine[0], content_type="TRACK_AUDIO", requested_by="alice", created_at=BASE)
    items, total = store.requests(user="alice", status=Status.PENDING, top_level_only=True, limit=2)
    assert total == 5
    assert [i["id"] for i in items] == [mine[4], mine[3]]
    assert [i["queue_position"] for i in items] == [5, 4]
    items, total = store.requests(user="alice", status=Status.PENDING, limit=10)
    assert total == 6  # the child counts without top_level_only
    assert "progress" not in next(i for i in items if i["parent_id"] is not None)
    assert store.requests(user="carol")[1] == 0
    assert store.requests()[1] == 8


# -- admin retry ------------------------------------------------------------------------------


def test_retry_failed_child_resets_it_and_reopens_its_album(
    store: QueueAdminStore, metrics: Metrics
) -> None:
    db = store.db
    album = insert(
        db,
        status="FAILED",
        children_created=1,
        requested_by="alice",
        error_message="1 of 2 children failed",
        completed_at=BASE - 100,
    )
    child = insert(
        db,
        parent_id=album,
        status="FAILED",
        content_type="TRACK_AUDIO",
        retry_count=5,
        error_type="timeout",
        error_message="slow",
        completed_at=BASE - 100,
        last_attempt_at=BASE - 100,
        requested_by="alice",
    )
    insert(db, parent_id=album, status="COMPLETED", content_type="TRACK_AUDIO", content_id=cid(1))
    item = store.admin_retry(child, "root", BASE)
    assert item["status"] == "PENDING" and item["retry_count"] == 0
    assert item["error_type"] is None and item["completed_at"] is None
    parent = row(db, album)
    assert parent["status"] == "IN_PROGRESS" and parent["error_message"] is None
    assert parent["last_activity_at"] == BASE
    entries = audit_rows(db, "ADMIN_RETRY")
    assert [(e["queue_item_id"], e["user"]) for e in entries] == [(child, "root"), (album, "root")]
    details = json.loads(entries[0]["details"])
    assert details["previous_error_type"] == "timeout"
    assert details["previous_retry_count"] == 5
    assert audit_count(metrics, AuditEvent.ADMIN_RETRY) == 2


def test_retry_failed_album_with_children_resets_only_failed_children(
    store: QueueAdminStore,
) -> None:
    db = store.db
    album = insert(
        db,
        status="FAILED",
        children_created=1,
        started_at=BASE - 900,
        error_message="2 of 3 children failed",
    )
    failed = [
        insert(
            db,
            parent_id=album,
            status="FAILED",
            content_type="TRACK_AUDIO",
            content_id=cid(k),
            retry_count=3,
        )
        for k in (1, 2)
    ]
    done = insert(
        db,
        parent_id=album,
        status="COMPLETED",
        content_type="TRACK_AUDIO",
        content_id=cid(3),
        completed_at=BASE - 5,
    )
    item = store.admin_retry(album, "root", BASE)
    assert item["status"] == "IN_PROGRESS" and item["started_at"] == BASE - 900
    assert item["progress"] == {
        "total_children": 3,
        "completed": 1,
        "failed": 0,
        "pending": 2,
        "in_progress": 0,
        "retry_waiting": 0,
        "cancelled": 0,
    }
    assert all(row(db, c)["status"] == "PENDING" and row(db, c)["retry_count"] == 0 for c in failed)
    assert row(db, done)["status"] == "COMPLETED" and row(db, done)["completed_at"] == BASE - 5
    entry = audit_rows(db, "ADMIN_RETRY")[-1]
    assert entry["queue_item_id"] == album
    assert json.loads(entry["details"])["children_reset"] == 2


def test_retry_failed_album_without_children_goes_back_to_pending(
    store: QueueAdminStore,
) -> None:
    album = insert(
        store.db,
        status="FAILED",
        retry_count=5,
        error_type="connection",
        started_at=BASE - 500,
        last_attempt_at=BASE - 400,
    )
    item = store.admin_retry(album, "root", BASE)
    assert item["status"] == "PENDING" and item["retry_count"] == 0
    assert item["queue_position"] == 1
    assert item["error_type"] is None
    # Started over: its next start counts against the global capacity again.
    assert item["started_at"] is None and item["last_attempt_at"] == BASE - 400


def test_retry_refuses_unknown_and_non_failed_items_without_changes(
    store: QueueAdminStore,
) -> None:
    with pytest.raises(RetryRefused) as unknown:
        store.admin_retry("no-such-item", "root", BASE)
    assert unknown.value.status == 404
    for status in ("PENDING", "IN_PROGRESS", "RETRY_WAITING", "COMPLETED"):
        item = insert(store.db, status=status)
        with pytest.raises(RetryRefused) as refused:
            store.admin_retry(item, "root", BASE)
        assert refused.value.status == 409
        assert row(store.db, item)["status"] == status
    assert audit_rows(store.db) == []


# -- activity ---------------------------------------------------------------------------------


def test_activity_fills_every_hour_and_sums_totals(store: QueueAdminStore) -> None:
    hour = BASE - BASE % HOUR
    with store.db.write() as conn:
        conn.executemany(
            "INSERT INTO activity_hourly VALUES (?, ?, ?, ?, ?, ?)",
            [
                (hour, 1, 10, 2, 1000, 1),
                (hour - 2 * HOUR, 2, 20, 4, 2000, 0),
                (hour - 30 * HOUR, 9, 9, 9, 9, 9),
            ],
        )
    result = store.activity(3, BASE)
    assert [b["hour"] for b in result["hourly"]] == [hour - 2 * HOUR, hour - HOUR, hour]
    assert result["hourly"][1] == {
        "hour": hour - HOUR,
        "albums": 0,
        "tracks": 0,
        "images": 0,
        "bytes": 0,
        "failed": 0,
    }
    assert result["totals"] == {"albums": 3, "tracks": 30, "images": 6, "bytes": 3000, "failed": 1}
    assert len(store.activity(24, BASE)["hourly"]) == 24
    assert store.activity(48, BASE)["totals"]["albums"] == 12


# -- audit queries ----------------------------------------------------------------------------


@pytest.fixture
def history(store: QueueAdminStore) -> dict[str, str]:
    db = store.db
    a = insert(db, requested_by="alice", content_id=cid(1))
    b = insert(db, requested_by="bob", content_id=cid(2), content_type="TRACK_AUDIO")
    audit(db, AuditEvent.REQUEST_CREATED, a, BASE)
    audit(db, AuditEvent.REQUEST_CREATED, b, BASE + 1)
    audit(db, AuditEvent.DOWNLOAD_STARTED, a, BASE + 2)
    audit(db, AuditEvent.DOWNLOAD_FAILED, a, BASE + 3, details={"error_type": "timeout"})
    audit(db, AuditEvent.ADMIN_RETRY, a, BASE + 4, user="root")
    audit(db, AuditEvent.WATCHDOG_SCAN_STARTED, None, BASE + 5)
    return {"a": a, "b": b}


def test_audit_filters_by_item_user_type_content_and_time(
    store: QueueAdminStore, history: dict[str, str]
) -> None:
    def events(where: AuditFilter) -> list[str]:
        return [e["event_type"] for e in store.audit(where, 50, 0).entries]

    everything = store.audit(AuditFilter(), 50, 0)
    assert everything.total_count == 6 and not everything.has_more
    assert [e["timestamp"] for e in everything.entries] == [BASE + k for k in (5, 4, 3, 2, 1, 0)]
    assert events(AuditFilter(queue_item_id=history["a"])) == [
        "ADMIN_RETRY",
        "DOWNLOAD_FAILED",
        "DOWNLOAD_STARTED",
        "REQUEST_CREATED",
    ]
    assert events(AuditFilter(user="alice")) == [
        "DOWNLOAD_FAILED",
        "DOWNLOAD_STARTED",
        "REQUEST_CREATED",
    ]
    assert events(AuditFilter(user="root")) == ["ADMIN_RETRY"]
    assert events(AuditFilter(event_type=AuditEvent.REQUEST_CREATED)) == ["REQUEST_CREATED"] * 2
    assert events(AuditFilter(content_type=ContentType.TRACK_AUDIO)) == ["REQUEST_CREATED"]
    assert events(AuditFilter(content_id=cid(2))) == ["REQUEST_CREATED"]
    assert events(AuditFilter(since=BASE + 2, until=BASE + 3)) == [
        "DOWNLOAD_FAILED",
        "DOWNLOAD_STARTED",
    ]
    assert events(AuditFilter(user="alice", event_type=AuditEvent.DOWNLOAD_FAILED)) == [
        "DOWNLOAD_FAILED"
    ]
    entry = store.audit(AuditFilter(event_type=AuditEvent.DOWNLOAD_FAILED), 1, 0).entries[0]
    assert entry["details"] == {"error_type": "timeout"}
    assert entry["request_source"] == "USER" and entry["content_id"] == cid(1)


def test_audit_pages_with_total_and_has_more(
    store: QueueAdminStore, history: dict[str, str]
) -> None:
    first = store.audit(AuditFilter(), 4, 0)
    assert (len(first.entries), first.total_count, first.has_more) == (4, 6, True)
    rest = store.audit(AuditFilter(), 4, 4)
    assert (len(rest.entries), rest.total_count, rest.has_more) == (2, 6, False)
    assert {e["id"] for e in first.entries}.isdisjoint({e["id"] for e in rest.entries})
    user_page = store.audit_for_user("alice", 2, 0)
    assert (len(user_page.entries), user_page.total_count, user_page.has_more) == (2, 3, True)
    assert store.audit_for_user("alice", 10, 0, since=BASE + 3).total_count == 1


def test_audit_for_item_is_oldest_first(store: QueueAdminStore, history: dict[str, str]) -> None:
    found = store.audit_for_item(history["a"])
    assert found is not None
    assert found["queue_item"]["id"] == history["a"]
    assert found["queue_item"]["queue_position"] == 1
    assert [e["event_type"] for e in found["events"]] == [
        "REQUEST_CREATED",
        "DOWNLOAD_STARTED",
        "DOWNLOAD_FAILED",
        "ADMIN_RETRY",
    ]
    assert store.audit_for_item("unknown") is None


def delete_audit_older_than(store: QueueAdminStore, before: int, chunk: int = 5000) -> int:
    """Retention as the audit_log_cleanup job runs it: chunk after chunk until none is left."""
    deleted = 0
    while (n := store.delete_audit_chunk(before, chunk)) > 0:
        deleted += n
    return deleted


def test_delete_audit_older_than_removes_only_old_entries(
    store: QueueAdminStore, history: dict[str, str]
) -> None:
    assert delete_audit_older_than(store, BASE + 3, chunk=1) == 3
    remaining = [e["timestamp"] for e in audit_rows(store.db)]
    assert remaining == [BASE + 3, BASE + 4, BASE + 5]
    assert delete_audit_older_than(store, BASE + 3) == 0


# -- watchdog repairs -------------------------------------------------------------------------


def enqueue_repair(store: QueueAdminStore, content_type: ContentType, content_id: str) -> bool:
    """One repair queued as the watchdog queues them; True if it was queued."""
    return store.enqueue_repairs([Repair(content_type, content_id)], BASE) == (1, 0)


def test_enqueue_repair_queues_top_level_watchdog_item_once(
    store: QueueAdminStore, metrics: Metrics
) -> None:
    track = cid(7)
    assert enqueue_repair(store, ContentType.TRACK_AUDIO, track) is True
    assert enqueue_repair(store, ContentType.TRACK_AUDIO, track) is False
    items, total = store.requests()
    assert total == 1
    item = items[0]
    assert (item["priority"], item["request_source"], item["parent_id"]) == (1, "WATCHDOG", None)
    assert (item["content_type"], item["content_id"], item["status"]) == (
        "TRACK_AUDIO",
        track,
        "PENDING",
    )
    entry = audit_rows(store.db, "WATCHDOG_QUEUED")
    assert len(entry) == 1 and json.loads(entry[0]["details"]) == {"reason": "missing_audio"}
    assert audit_count(metrics, AuditEvent.WATCHDOG_QUEUED) == 1
    # Each kind of file names its own reason.
    assert enqueue_repair(store, ContentType.ALBUM_IMAGE, "a" * 40) is True
    assert json.loads(audit_rows(store.db, "WATCHDOG_QUEUED")[-1]["details"]) == {
        "reason": "missing_album_image"
    }


def test_enqueue_repair_again_once_the_previous_item_is_terminal(store: QueueAdminStore) -> None:
    image = "b" * 40
    insert(store.db, content_type="ARTIST_IMAGE", content_id=image, status="FAILED")
    insert(store.db, content_type="ARTIST_IMAGE", content_id=image, status="COMPLETED")
    assert enqueue_repair(store, ContentType.ARTIST_IMAGE, image)
    assert ("ARTIST_IMAGE", image) in store.repair_filter(BASE).active


def test_active_child_blocks_a_repair(store: QueueAdminStore) -> None:
    album = insert(store.db, status="IN_PROGRESS", children_created=1)
    insert(store.db, parent_id=album, content_type="ALBUM_IMAGE", content_id="c" * 40)
    assert not enqueue_repair(store, ContentType.ALBUM_IMAGE, "c" * 40)


# -- content the watchdog gave up on (SPEC §8.9) ------------------------------------------------


def give_up_on(store: QueueAdminStore, track: str, at: int, source: str = "WATCHDOG") -> str:
    """A repair of `track` (or a user's item with `source` USER) failing not_found at `at`."""
    item = insert(
        store.db, status="IN_PROGRESS", priority=1, content_type="TRACK_AUDIO", content_id=track,
        request_source=source, created_at=at,
    )  # fmt: skip
    QueueStore(store.db, store.dm).fail(item, ErrorType.NOT_FOUND, "no audio", at)
    return item


def test_a_scan_is_held_back_until_the_recheck_period_has_passed(store: QueueAdminStore) -> None:
    give_up_on(store, cid(1), BASE)
    give_up_on(store, cid(2), BASE + 3 * DAY)
    key1, key2 = ("TRACK_AUDIO", cid(1)), ("TRACK_AUDIO", cid(2))
    held = store.repair_filter(BASE + 7 * DAY - 1)
    assert held.unavailable == {key1, key2}
    assert held.marks == {key1: BASE, key2: BASE + 3 * DAY}
    assert store.repair_filter(BASE + 7 * DAY).unavailable == {key2}  # 7 days: ask again
    assert store.repair_filter(BASE + 10 * DAY).unavailable == set()
    never = QueueAdminStore(store.db, DownloadManagerConfig(unavailable_recheck_days=0))
    assert never.repair_filter(BASE).unavailable == set()


def test_admin_retry_of_the_failed_repair_drops_the_mark_in_its_transaction(
    store: QueueAdminStore,
) -> None:
    repair = give_up_on(store, cid(1), BASE)
    users = give_up_on(store, cid(2), BASE, source="USER")
    give_up_on(store, cid(2), BASE)  # the same content given up on by a repair too
    assert store.unavailable_among(ContentType.TRACK_AUDIO, [cid(1), cid(2), cid(3)]) == {
        cid(1), cid(2),
    }  # fmt: skip
    # A user's item retried leaves the watchdog's decision alone.
    store.admin_retry(users, "root", BASE + 60)
    assert store.unavailable_among(ContentType.TRACK_AUDIO, [cid(2)]) == {cid(2)}
    item = store.admin_retry(repair, "root", BASE + 60)
    assert item["status"] == "PENDING"
    assert store.unavailable_among(ContentType.TRACK_AUDIO, [cid(1), cid(2)]) == {cid(2)}
    entries = [e for e in audit_rows(store.db, "ADMIN_RETRY") if e["queue_item_id"] == repair]
    assert json.loads(entries[0]["details"])["unavailable_cleared"] is True
    assert store.repair_filter(BASE + DAY).active >= {("TRACK_AUDIO", cid(1))}


def test_forgetting_marks_spares_those_renewed_since_they_were_read(
    store: QueueAdminStore,
) -> None:
    give_up_on(store, cid(1), BASE)
    give_up_on(store, cid(2), BASE)
    read = store.repair_filter(BASE + 8 * DAY).marks
    give_up_on(store, cid(2), BASE + 8 * DAY)  # a recheck failed meanwhile
    assert store.forget_marks(read) == 1
    assert store.repair_filter(BASE + 8 * DAY).marks == {("TRACK_AUDIO", cid(2)): BASE + 8 * DAY}


def test_a_queue_database_of_the_previous_version_gains_the_marks(tmp_path: Path) -> None:
    old = Database(tmp_path / "download_queue.db", MIGRATIONS[:3])
    kept = insert(old, status="FAILED", content_type="TRACK_AUDIO", request_source="WATCHDOG")
    old.close()
    store = open_store(tmp_path)
    with store.db.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert row(store.db, kept)["status"] == "FAILED"
    assert store.repair_filter(BASE).marks == {}
    store.db.close()


def test_a_queue_database_with_the_marks_counter_loses_it_and_keeps_its_marks(
    tmp_path: Path,
) -> None:
    old = Database(tmp_path / "download_queue.db", MIGRATIONS[:4])
    give_up_on(QueueAdminStore(old, DownloadManagerConfig()), cid(1), BASE)
    old.close()
    store = open_store(tmp_path)
    with store.db.read() as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "unavailable_version" not in names
    assert not {"unavailable_insert", "unavailable_update", "unavailable_delete"} & names
    assert store.unavailable_among(ContentType.TRACK_AUDIO, [cid(1)]) == {cid(1)}
    give_up_on(store, cid(2), BASE)  # marks are still made, renewed and dropped
    give_up_on(store, cid(2), BASE + DAY)
    assert store.forget_marks(store.repair_filter(BASE + 8 * DAY).marks) == 2
    assert store.unavailable_among(ContentType.TRACK_AUDIO, [cid(1), cid(2)]) == set()
    store.db.close()


# -- stale items and gauges -------------------------------------------------------------------


def test_stale_items_count_from_the_latest_sign_of_life(store: QueueAdminStore) -> None:
    db, old = store.db, BASE - 2 * HOUR
    lone = insert(
        db,
        status="IN_PROGRESS",
        content_type="TRACK_AUDIO",
        started_at=old,
        last_attempt_at=old,
        last_activity_at=old,
    )
    insert(db, status="IN_PROGRESS", started_at=BASE - 60, last_activity_at=BASE - 60)
    busy = insert(db, status="IN_PROGRESS", started_at=old, children_created=1)
    insert(
        db,
        parent_id=busy,
        content_type="TRACK_AUDIO",
        status="COMPLETED",
        completed_at=BASE - 120,
        last_activity_at=BASE - 120,
    )
    stuck = insert(db, status="IN_PROGRESS", started_at=old, children_created=1)
    insert(
        db,
        parent_id=stuck,
        content_type="TRACK_AUDIO",
        status="PENDING",
        content_id=cid(1),
        last_activity_at=old,
    )
    insert(db, status="PENDING", created_at=old)
    stale = store.stale_items(HOUR, BASE)
    assert {s.id for s in stale} == {lone, stuck}
    assert all(s.since == old for s in stale)


def test_gauges_cover_every_status_and_priority(store: QueueAdminStore) -> None:
    insert(store.db, status="PENDING", priority=1)
    insert(store.db, status="PENDING", priority=1, content_id=cid(1))
    insert(store.db, status="IN_PROGRESS", started_at=BASE)
    sizes, capacity = store.gauges(BASE)
    assert sizes[("PENDING", 1)] == 2
    assert sizes[("IN_PROGRESS", 2)] == 1
    assert sizes[("FAILED", 3)] == 0
    assert len(sizes) == 54  # six statuses, nine priorities
    assert capacity == {"hour": 1, "day": 1}
