"""An admin's priority changes and bulk actions on the queue (SPEC §8.10 rev 2 operator controls):
what moves and what does not, the order and positions that follow, one audit entry per item
changed with the admin's handle, one transaction for a bulk action however many items it takes,
and a dry run that changes nothing."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.queue import (
    AuditEvent,
    BulkAction,
    BulkFilter,
    ContentType,
    ErrorType,
    PriorityRefused,
    QueueAdminStore,
    QueueStore,
    Source,
    Status,
)
from storage.queue.controls import select, selection
from tests.support.queue_rows import (
    BASE,
    audit_rows,
    cid,
    insert,
    insert_many,
    open_store,
    row,
)

DM = DownloadManagerConfig(max_albums_per_hour=10**6, max_albums_per_day=10**6)
FAILED = {"status": "FAILED", "error_type": "connection", "error_message": "refused",
          "completed_at": BASE, "retry_count": 5}  # fmt: skip
NOW = BASE + 100


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def store(tmp_path: Path, metrics: Metrics) -> QueueAdminStore:
    return open_store(tmp_path, DM, on_audit=metrics.count_audit_events)


def entries(store: QueueAdminStore, event: AuditEvent) -> list[dict[str, Any]]:
    found = audit_rows(store.db, event.value)
    for entry in found:
        entry["details"] = json.loads(entry["details"]) if entry["details"] else None
    return found


def statuses(store: QueueAdminStore, ids: list[str]) -> list[str]:
    return [row(store.db, i)["status"] for i in ids]


def album_with_children(
    store: QueueAdminStore, *states: str, **fields: Any
) -> tuple[str, list[str]]:
    """An IN_PROGRESS album (priority 2) with one TRACK_AUDIO child per state given."""
    album = insert(store.db, status="IN_PROGRESS", children_created=1, started_at=BASE, **fields)
    kids = [
        insert(store.db, parent_id=album, status=state, content_type="TRACK_AUDIO",
               content_id=cid(100 + k), **fields)
        for k, state in enumerate(states)
    ]  # fmt: skip
    return album, kids


# -- one item's priority ----------------------------------------------------------------------


def test_a_priority_change_moves_the_album_and_its_unfinished_children(
    store: QueueAdminStore, metrics: Metrics
) -> None:
    album, (done, waiting, retrying) = album_with_children(
        store, "COMPLETED", "PENDING", "RETRY_WAITING", requested_by="alice"
    )
    item = store.set_priority(album, 7, "root", NOW)
    assert (item["id"], item["priority"], item["status"]) == (album, 7, "IN_PROGRESS")
    assert [row(store.db, k)["priority"] for k in (done, waiting, retrying)] == [2, 7, 7]
    found = entries(store, AuditEvent.PRIORITY_CHANGED)
    assert [(e["queue_item_id"], e["user"], e["timestamp"]) for e in found] == [
        (album, "root", NOW), (waiting, "root", NOW), (retrying, "root", NOW),
    ]  # fmt: skip
    assert found[0]["details"] == {"old_priority": 2, "new_priority": 7, "children": 2}
    assert found[1]["details"] == {"old_priority": 2, "new_priority": 7, "with_parent": album}
    sample = metrics.registry.get_sample_value(
        "pezzottify_download_audit_events_total", {"event_type": "PRIORITY_CHANGED"}
    )
    assert sample == 3


def test_positions_and_claim_order_follow_a_priority_change_at_once(
    store: QueueAdminStore,
) -> None:
    first, second, third = (
        insert(store.db, content_id=cid(k), created_at=BASE + k) for k in range(3)
    )
    assert store.set_priority(third, 1, "root", NOW)["queue_position"] == 1
    assert store.set_priority(first, 9, "root", NOW)["queue_position"] == 3
    page, _ = store.requests(top_level_only=True, now=NOW)
    assert {i["id"]: i["queue_position"] for i in page} == {third: 1, second: 2, first: 3}
    queue = QueueStore(store.db, DM)
    claimed = [queue.claim(NOW).item for _ in range(3)]
    assert [c["id"] for c in claimed if c is not None] == [third, second, first]


def test_setting_the_priority_an_item_has_changes_nothing(store: QueueAdminStore) -> None:
    album = insert(store.db, priority=4)
    assert store.set_priority(album, 4, "root", NOW)["priority"] == 4
    assert audit_rows(store.db) == []


def test_a_priority_change_is_refused_for_unknown_ended_and_child_items(
    store: QueueAdminStore,
) -> None:
    with pytest.raises(PriorityRefused) as unknown:
        store.set_priority("no-such-item", 3, "root", NOW)
    assert (unknown.value.status, unknown.value.code) == (404, "NOT_FOUND")
    for k, status in enumerate(("COMPLETED", "FAILED", "CANCELLED")):
        ended = insert(store.db, status=status, content_id=cid(k))
        with pytest.raises(PriorityRefused) as refused:
            store.set_priority(ended, 3, "root", NOW)
        assert (refused.value.status, refused.value.code) == (409, "ALREADY_FINISHED")
    album, (child,) = album_with_children(store, "PENDING")
    with pytest.raises(PriorityRefused) as refused:
        store.set_priority(child, 3, "root", NOW)
    assert (refused.value.status, refused.value.code) == (409, "CHILD_ITEM")
    assert album in str(refused.value)  # says which album to move instead
    assert row(store.db, child)["priority"] == 2
    assert audit_rows(store.db) == []


# -- bulk: one transaction --------------------------------------------------------------------


@contextlib.contextmanager
def counting_writes(store: QueueAdminStore) -> Iterator[list[int]]:
    """Count the write transactions the store's database opens meanwhile."""
    opened = [0]
    write = store.db.write

    @contextlib.contextmanager
    def counted(**kw: Any) -> Iterator[sqlite3.Connection]:
        opened[0] += 1
        with write(**kw) as conn:
            yield conn

    store.db.write = counted  # type: ignore[method-assign]
    try:
        yield opened
    finally:
        del store.db.write


def test_a_bulk_retry_of_a_thousand_failed_items_is_one_quick_transaction(
    store: QueueAdminStore, metrics: Metrics
) -> None:
    failed = insert_many(store.db, 1000, requested_by="alice", **FAILED)
    with counting_writes(store) as opened:
        started = time.perf_counter()
        outcome = store.bulk(BulkAction.RETRY, BulkFilter(status=Status.FAILED), "root", NOW)
        took = time.perf_counter() - started
    assert (outcome.matched, outcome.changed) == (1000, 1000)
    assert opened == [1]
    assert took < 1.0, f"a bulk retry of 1,000 items took {took:.2f} s"
    assert set(statuses(store, failed)) == {"PENDING"}
    found = entries(store, AuditEvent.ADMIN_RETRY)
    assert len(found) == 1000 and {e["user"] for e in found} == {"root"}
    assert {e["queue_item_id"] for e in found} == set(failed)
    sample = metrics.registry.get_sample_value(
        "pezzottify_download_audit_events_total", {"event_type": "ADMIN_RETRY"}
    )
    assert sample == 1000
    # Every one is in the ranks at once: the last has 999 ahead of it.
    page, _ = store.requests(top_level_only=True, limit=1, now=NOW)
    assert page[0]["queue_position"] == 1000


def test_a_bulk_action_failing_at_its_last_item_changes_none(store: QueueAdminStore) -> None:
    failed = insert_many(store.db, 1000, **FAILED)
    with store.db.write() as conn:  # the last item's update is refused, after 999 succeeded
        conn.execute(
            f"""CREATE TRIGGER refuse_last BEFORE UPDATE OF status ON queue_items
                WHEN OLD.id = '{failed[-1]}' BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"""
        )
    with pytest.raises(sqlite3.IntegrityError, match="disk trouble"):
        store.bulk(BulkAction.RETRY, BulkFilter(status=Status.FAILED), "root", NOW)
    assert set(statuses(store, failed)) == {"FAILED"}
    assert audit_rows(store.db) == []


def test_a_dry_run_answers_what_would_change_and_changes_nothing(
    store: QueueAdminStore, metrics: Metrics
) -> None:
    album, kids = album_with_children(store, "PENDING", "PENDING", requested_by="bob")
    lone = insert(store.db, requested_by="bob", content_id=cid(1))
    where = BulkFilter(user="bob", content_type=ContentType.ALBUM)
    rehearsed = store.bulk(BulkAction.CANCEL, where, "root", NOW, dry_run=True)
    assert (rehearsed.matched, rehearsed.changed) == (2, 4)
    assert rehearsed.cancelled == [] and rehearsed.events == []
    assert statuses(store, [album, lone, *kids]) == ["IN_PROGRESS", "PENDING", "PENDING", "PENDING"]
    assert audit_rows(store.db) == []
    assert metrics.registry.get_sample_value(
        "pezzottify_download_audit_events_total", {"event_type": "REQUEST_CANCELLED"}
    ) in (None, 0)
    done = store.bulk(BulkAction.CANCEL, where, "root", NOW)
    assert (done.matched, done.changed) == (2, 4)  # the rehearsal said so
    assert sorted(done.cancelled) == sorted([album, *kids, lone])


# -- bulk: each action ------------------------------------------------------------------------


def test_a_bulk_retry_resets_an_album_once_and_refuses_children_of_cancelled_albums(
    store: QueueAdminStore,
) -> None:
    failed_album = insert(store.db, children_created=1, **FAILED)
    kids = [insert(store.db, parent_id=failed_album, content_type="TRACK_AUDIO",
                   content_id=cid(10 + k), **FAILED) for k in range(2)]  # fmt: skip
    cancelled = insert(store.db, status="CANCELLED", children_created=1, content_id=cid(1))
    orphan = insert(store.db, parent_id=cancelled, content_type="TRACK_AUDIO", content_id=cid(20),
                    **FAILED)  # fmt: skip
    outcome = store.bulk(BulkAction.RETRY, BulkFilter(status=Status.FAILED), "root", NOW)
    # The album and its two children matched; the album's retry reset both children.
    assert (outcome.matched, outcome.changed) == (4, 3)
    assert statuses(store, [failed_album, *kids, orphan]) == [
        "IN_PROGRESS", "PENDING", "PENDING", "FAILED",
    ]  # fmt: skip
    found = entries(store, AuditEvent.ADMIN_RETRY)
    assert sorted(e["queue_item_id"] for e in found) == sorted([failed_album, *kids])
    assert {e["user"] for e in found} == {"root"}


def test_a_bulk_retry_of_a_child_reopens_its_album_and_counts_it(store: QueueAdminStore) -> None:
    album = insert(store.db, children_created=1, **FAILED)
    child = insert(store.db, parent_id=album, content_type="TRACK_AUDIO", content_id=cid(9),
                   **FAILED)  # fmt: skip
    where = BulkFilter(content_type=ContentType.TRACK_AUDIO, error_type=ErrorType.CONNECTION)
    outcome = store.bulk(BulkAction.RETRY, where, "root", NOW)
    assert (outcome.matched, outcome.changed) == (1, 2)
    assert statuses(store, [album, child]) == ["IN_PROGRESS", "PENDING"]


def test_a_bulk_cancel_takes_albums_with_their_children_and_children_alone(
    store: QueueAdminStore,
) -> None:
    album, kids = album_with_children(store, "PENDING", "COMPLETED", requested_by="carol")
    other, (last,) = album_with_children(store, "PENDING", requested_by="dave")
    insert(store.db, parent_id=other, status="COMPLETED", content_type="TRACK_AUDIO",
           content_id=cid(50), requested_by="dave")  # fmt: skip
    outcome = store.bulk(BulkAction.CANCEL, BulkFilter(user="carol"), "root", NOW)
    assert (outcome.matched, outcome.changed) == (2, 2)  # the album, then its child (already)
    assert sorted(outcome.cancelled) == sorted([album, kids[0]])
    assert statuses(store, [album, *kids]) == ["CANCELLED", "CANCELLED", "COMPLETED"]
    found = entries(store, AuditEvent.REQUEST_CANCELLED)
    assert [(e["queue_item_id"], e["user"]) for e in found] == [(album, "root"), (kids[0], "root")]
    # A child alone: its album had nothing else left, so it completes.
    where = BulkFilter(user="dave", content_type=ContentType.TRACK_AUDIO)
    outcome = store.bulk(BulkAction.CANCEL, where, "root", NOW)
    assert (outcome.matched, outcome.changed, outcome.cancelled) == (1, 1, [last])
    assert outcome.album_completed
    assert row(store.db, other)["status"] == "COMPLETED"


def test_a_bulk_priority_change_moves_top_level_items_with_their_children(
    store: QueueAdminStore,
) -> None:
    album, (kid,) = album_with_children(store, "PENDING", request_source="WATCHDOG")
    repair = insert(store.db, request_source="WATCHDOG", content_type="TRACK_AUDIO",
                    content_id=cid(1))  # fmt: skip
    user_item = insert(store.db, content_id=cid(2))
    done = insert(store.db, status="COMPLETED", request_source="WATCHDOG", content_id=cid(3))
    where = BulkFilter(request_source=Source.WATCHDOG)
    outcome = store.bulk(BulkAction.SET_PRIORITY, where, "root", NOW, priority=8)
    assert (outcome.matched, outcome.changed) == (2, 3)  # album, repair; the child with its album
    moved = {i: row(store.db, i)["priority"] for i in (album, kid, repair, user_item, done)}
    assert moved == {album: 8, kid: 8, repair: 8, user_item: 2, done: 2}
    found = entries(store, AuditEvent.PRIORITY_CHANGED)
    assert sorted(e["queue_item_id"] for e in found) == sorted([album, kid, repair])
    assert {e["user"] for e in found} == {"root"}


def test_a_bulk_priority_change_needs_a_priority(store: QueueAdminStore) -> None:
    with pytest.raises(ValueError, match="priority"):
        store.bulk(BulkAction.SET_PRIORITY, BulkFilter(user="x"), "root", NOW)


# -- bulk: the filter -------------------------------------------------------------------------


def test_each_filter_field_narrows_the_selection(store: QueueAdminStore) -> None:
    def failed(**fields: Any) -> str:
        return insert(store.db, **{**FAILED, "content_id": cid(len(made)), **fields})

    made: list[str] = []
    for fields in (
        {}, {"requested_by": "erin"}, {"content_type": "ARTIST_IMAGE", "content_id": "a" * 40},
        {"error_type": "not_found"}, {"request_source": "WATCHDOG"}, {"created_at": BASE + 50},
    ):  # fmt: skip
        made.append(failed(**fields))
    conn_filters = {
        BulkFilter(user="erin"): [made[1]],
        BulkFilter(content_type=ContentType.ARTIST_IMAGE): [made[2]],
        BulkFilter(error_type=ErrorType.NOT_FOUND): [made[3]],
        BulkFilter(request_source=Source.WATCHDOG): [made[4]],
        BulkFilter(created_after=BASE + 50): [made[5]],
        BulkFilter(created_before=BASE + 50): made[:5],
        BulkFilter(created_after=BASE, created_before=BASE + 50): made[:5],
        BulkFilter(status=Status.FAILED, user="erin"): [made[1]],
        BulkFilter(status=Status.PENDING): [],  # retry changes FAILED items only
    }
    with store.db.read() as conn:
        for where, expected in conn_filters.items():
            assert select(conn, BulkAction.RETRY, where) == expected, where
        # Cancel and set_priority select only what has not ended.
        assert select(conn, BulkAction.CANCEL, BulkFilter(user="erin")) == []


def test_the_selection_reads_the_status_index_whatever_the_filter(store: QueueAdminStore) -> None:
    filters = [
        BulkFilter(user="x"),
        BulkFilter(created_after=1),
        BulkFilter(status=Status.FAILED),
        BulkFilter(content_type=ContentType.ALBUM, error_type=ErrorType.TIMEOUT),
    ]
    with store.db.read() as conn:
        for action in BulkAction:
            for where in filters:
                statement = selection(action, where)
                if statement is None:  # a status the action cannot change: nothing to read
                    assert where.status is not None
                    continue
                sql, params = statement
                steps = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
                plan = " / ".join(str(step[3]) for step in steps)
                assert "USING INDEX queue_status (status=?" in plan, (action, where, plan)


def test_an_empty_filter_is_known_as_such() -> None:
    assert BulkFilter().is_empty()
    assert not BulkFilter(created_after=0).is_empty()


def test_the_queue_size_gauge_covers_every_priority_an_admin_may_set(
    store: QueueAdminStore,
) -> None:
    item = insert(store.db, priority=2)
    store.set_priority(item, 9, "root", NOW)
    sizes, _ = store.gauges(NOW)
    assert sizes[("PENDING", 9)] == 1 and sizes[("PENDING", 2)] == 0
    store.set_priority(item, 2, "root", NOW)
    sizes, _ = store.gauges(NOW)
    assert sizes[("PENDING", 9)] == 0  # reported as 0, not left at its last value
    assert len(sizes) == 6 * 9
