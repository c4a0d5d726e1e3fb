"""Maintained queue ranks (`queue_rank`, `storage.queue.positions`): positions from counters that
triggers keep in step, checked against a brute-force sort after random sequences of the stores'
operations, and against a fresh recount (a drifted counter would be a silent wrong answer)."""

from __future__ import annotations

import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import DownloadManagerConfig
from storage.db import Database, Migration
from storage.queue import (
    MIGRATIONS,
    BulkAction,
    BulkFilter,
    ChildSpec,
    ContentType,
    ErrorType,
    Priority,
    QueueAdminStore,
    QueueStore,
    RequestStore,
    RetryRefused,
    Status,
)
from storage.queue.positions import PLACES, level_bounds, positions
from storage.queue.schema import RANK_SHIFTS
from tests.support.queue_rows import enqueue

DM = DownloadManagerConfig(
    max_albums_per_hour=10**6,
    max_albums_per_day=10**6,
    user_max_requests_per_day=10**6,
    user_max_queue_size=10**6,
    max_retries=1,
    initial_backoff_secs=60,
)
# A bucket boundary at every level; the offsets cross each level's boundaries, reach back to
# the epoch and before it, and a few seconds of jitter make same-second ties and a clock that
# goes backwards.
BASE = 2**31
OFFSETS = (
    -BASE - 70, -BASE, -(2**30) - 1, -(2**24), -(2**18) - 1, -4097, -64, -1, 0, 1, 63, 64, 4095,
    4096, 2**18, 2**24 + 5, 2**30,
)  # fmt: skip
times = st.builds(lambda offset, jitter: BASE + offset + jitter,
                  st.sampled_from(OFFSETS), st.integers(-1, 1))  # fmt: skip
pick = st.integers(0, 1000)
grow = st.one_of(
    st.tuples(st.just("request"), st.integers(0, 2), times),
    st.tuples(st.just("enqueue"), st.sampled_from([int(p) for p in Priority]),
              st.sampled_from([ContentType.ALBUM, ContentType.TRACK_AUDIO]), times),
)  # fmt: skip
claim = st.tuples(st.just("claim"), st.booleans(), times)
change = st.one_of(
    st.tuples(st.just("children"), pick, st.integers(0, 3), times),
    st.tuples(st.just("complete"), pick, times),
    st.tuples(st.just("fail"), pick,
              st.sampled_from([ErrorType.CONNECTION, ErrorType.NOT_FOUND, ErrorType.RATE_LIMITED]),
              times),
    st.tuples(st.just("promote"), times),
    st.tuples(st.just("admin_retry"), pick, times),
    st.tuples(st.just("release"), pick, times),
    st.tuples(st.just("recover"), times),
    st.tuples(st.just("cancel"), pick, times),
    st.tuples(st.just("edit"), pick, st.sampled_from(["priority", "created_at", "parent_id"]),
              st.integers(0, 4), times),
    st.tuples(st.just("delete"), pick),
    st.tuples(st.just("set_priority"), pick, st.integers(1, 9), times),
    st.tuples(st.just("bulk"), st.sampled_from(list(BulkAction)), st.integers(1, 9),
              st.sampled_from([BulkFilter(user="user0"), BulkFilter(content_type=ContentType.ALBUM),
                               BulkFilter(status=Status.FAILED), BulkFilter(created_after=BASE)]),
              times),
)  # fmt: skip
# Weighted (one_of alone would draw each of its flattened branches alike) so that queues grow to
# a few dozen items while every kind of change happens.
_KINDS = {"grow": grow, "claim": claim, "change": change}
operations = st.sampled_from(["grow"] * 6 + ["claim"] + ["change"] * 3).flatmap(_KINDS.__getitem__)
# Operations that read positions, which a database without queue_rank cannot answer.
READS_POSITIONS = frozenset({"request", "admin_retry", "set_priority"})


def content(serial: int) -> str:
    return f"{serial:022d}"  # digits are base62: a valid content id


class Queue:
    """The three stores over one database, driven by generated operations."""

    def __init__(self, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.db = Database(path, migrations, synchronous="OFF")
        self.processing = QueueStore(self.db, DM)
        # The same queue with the global capacity used up: new albums are not claimed.
        self.at_capacity = QueueStore(self.db, replace(DM, max_albums_per_hour=0))
        self.requests = RequestStore(self.db, DM)
        self.admin = QueueAdminStore(self.db, DM)
        self.serial = 0

    def next_content(self) -> str:
        self.serial += 1
        return content(self.serial)

    def pick(self, where: str, n: int, *args: object) -> sqlite3.Row | None:
        """The n-th (modulo) item matching `where` (a constant of this file) in insertion
        order, if any."""
        with self.db.read() as conn:
            found = conn.execute(
                f"SELECT * FROM queue_items q WHERE {where} ORDER BY seq",  # noqa: S608
                args,
            ).fetchall()
        return found[n % len(found)] if found else None

    def raw(self, sql: str, *args: object) -> None:
        """A change no store makes (an admin's cancel, an edit, retention deleting rows)."""
        with self.db.write() as conn:
            conn.execute(sql, args)

    def apply(self, op: tuple[Any, ...]) -> None:
        getattr(self, "op_" + op[0])(*op[1:])

    def in_progress(
        self, n: int, at: int, where: str = "children_created = 0"
    ) -> sqlite3.Row | None:
        """An IN_PROGRESS item matching `where`, claimed first if there is none (as the
        processor does: claim, then finish)."""
        where = "status = 'IN_PROGRESS' AND " + where
        item = self.pick(where, n)
        if item is None and self.processing.claim(at).item is not None:
            item = self.pick(where, n)
        return item

    def op_request(self, user: int, at: int) -> None:
        self.requests.request_album(f"user{user}", self.next_content(), "A", "B", at, False)

    def op_enqueue(self, priority: int, kind: ContentType, at: int) -> None:
        enqueue(self.processing, kind, self.next_content(), at, priority=priority)

    def op_claim(self, albums_allowed: bool, at: int) -> None:
        (self.processing if albums_allowed else self.at_capacity).claim(at)

    def op_children(self, n: int, count: int, at: int) -> None:
        album = self.in_progress(n, at, "parent_id IS NULL AND content_type = 'ALBUM'")
        if album is not None:
            specs = [ChildSpec(ContentType.TRACK_AUDIO, self.next_content()) for _ in range(count)]
            self.processing.create_children(album["id"], specs, at)

    def op_complete(self, n: int, at: int) -> None:
        item = self.in_progress(n, at)
        if item is not None:
            self.processing.complete(item["id"], 1, 1, at)

    def op_fail(self, n: int, error: ErrorType, at: int) -> None:
        item = self.in_progress(n, at)
        if item is not None:
            self.processing.fail(item["id"], error, "boom", at)

    def op_promote(self, at: int) -> None:
        # Due retries back to PENDING; of them, only children and repairs are claimed.
        self.at_capacity.claim(at)

    def op_admin_retry(self, n: int, at: int) -> None:
        item = self.pick("status = 'FAILED'", n)
        if item is None and (item := self.in_progress(n, at)) is not None:
            self.processing.fail(item["id"], ErrorType.NOT_FOUND, "gone", at)
            item = self.pick("status = 'FAILED'", n)
        if item is not None:
            # A failed track of an album cancelled (by a bulk cancel) is refused, changing nothing.
            with suppress(RetryRefused):
                self.admin.admin_retry(item["id"], "admin", at)

    def op_release(self, n: int, at: int) -> None:
        item = self.in_progress(n, at, "true")
        if item is not None:
            self.processing.release(item["id"], at)

    def op_recover(self, at: int) -> None:
        self.processing.recover_after_restart(at)

    def op_cancel(self, n: int, at: int) -> None:
        item = self.pick("status IN ('PENDING', 'RETRY_WAITING')", n)
        if item is not None:
            self.raw(
                "UPDATE queue_items SET status = 'FAILED', completed_at = ? WHERE id = ?",
                at, item["id"],
            )  # fmt: skip

    def op_edit(self, n: int, column: str, value: int, at: int) -> None:
        item = self.pick("status <> 'IN_PROGRESS'", n)
        if item is None:
            return
        if column == "priority":
            self.raw("UPDATE queue_items SET priority = ? WHERE id = ?", value, item["id"])
        elif column == "created_at":
            self.raw("UPDATE queue_items SET created_at = ? WHERE id = ?", at, item["id"])
        elif item["parent_id"] is not None:
            self.raw("UPDATE queue_items SET parent_id = NULL WHERE id = ?", item["id"])
        else:  # a childless top-level item becomes the child of another one
            parent = self.pick("parent_id IS NULL AND id <> ?", value, item["id"])
            has_children = self.pick("parent_id = ?", 0, item["id"])
            if parent is not None and has_children is None:
                self.raw(
                    "UPDATE queue_items SET parent_id = ? WHERE id = ?", parent["id"], item["id"]
                )

    def op_set_priority(self, n: int, priority: int, at: int) -> None:
        item = self.pick("parent_id IS NULL AND status IN ('PENDING', 'IN_PROGRESS')", n)
        if item is not None:
            self.admin.set_priority(item["id"], priority, "admin", at)

    def op_bulk(self, action: BulkAction, priority: int, where: BulkFilter, at: int) -> None:
        self.admin.bulk(action, where, "admin", at, priority=priority)

    def op_delete(self, n: int) -> None:
        item = self.pick("NOT EXISTS (SELECT 1 FROM queue_items c WHERE c.parent_id = q.id)", n)
        if item is not None:
            self.raw("DELETE FROM queue_items WHERE id = ?", item["id"])


@contextmanager
def queue(migrations: Sequence[Migration] = MIGRATIONS) -> Iterator[Queue]:
    with tempfile.TemporaryDirectory() as folder:
        opened = Queue(Path(folder) / "download_queue.db", migrations)
        try:
            yield opened
        finally:
            opened.db.close()


def expected_positions(rows: Sequence[sqlite3.Row]) -> dict[str, int]:
    """Brute force: the PENDING top-level items sorted in claim order, numbered from 1."""
    waiting = sorted(
        (row["priority"], row["created_at"], row["seq"], row["id"])
        for row in rows
        if row["status"] == "PENDING" and row["parent_id"] is None
    )
    return {item[-1]: k for k, item in enumerate(waiting, start=1)}


def recount(rows: Sequence[sqlite3.Row]) -> Counter[tuple[int, int, int]]:
    """What queue_rank must hold: PENDING top-level items per (shift, priority, bucket)."""
    return Counter(
        (shift, row["priority"], row["created_at"] >> shift)
        for row in rows
        if row["status"] == "PENDING" and row["parent_id"] is None
        for shift in RANK_SHIFTS
    )


def position(q: Queue, item_id: str) -> int | None:
    """One item's position as an admin reads it (`audit_for_item`)."""
    found = q.admin.audit_for_item(item_id)
    return None if found is None else found["queue_item"].get("queue_position")


def check(q: Queue) -> None:
    """The counters equal a recount (no zeros left), and every position, taken for all rows
    at once and one by one, equals the brute-force one."""
    with q.db.read() as conn:
        conn.execute("BEGIN")
        rows = conn.execute("SELECT * FROM queue_items").fetchall()
        counters = {
            (shift, priority, bucket): n
            for shift, priority, bucket, n in conn.execute("SELECT * FROM queue_rank")
        }
        found = positions(conn, rows)
    expected = expected_positions(rows)
    assert counters == dict(recount(rows))
    assert found == expected
    assert {item_id: position(q, item_id) for item_id in expected} == expected


# -- the counters and positions under random operations ----------------------------------------


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(operations, min_size=20, max_size=80))
def test_positions_and_counters_match_brute_force_after_every_operation(
    ops: list[tuple[Any, ...]],
) -> None:
    with queue() as q:
        for op in ops:
            q.apply(op)
            check(q)


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(operations, min_size=20, max_size=80))
def test_the_migration_backfills_a_filled_queue(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "download_queue.db"
        old = Queue(path, MIGRATIONS[:2])
        # Today's stores also keep the watchdog's marks (migration 4) and read the pause
        # (migration 6): the old database holds those tables while it is filled, and loses them
        # before the migrations apply.
        with old.db.write() as conn:
            for statement in [*MIGRATIONS[3], MIGRATIONS[5][0]]:
                conn.execute(statement)
        for op in ops:
            if op[0] not in READS_POSITIONS:
                old.apply(op)
        with old.db.write() as conn:
            conn.execute("DROP TABLE unavailable_content")
            conn.execute("DROP TABLE unavailable_version")
            conn.execute("DROP TABLE queue_pause")
        old.db.close()
        new = Queue(path)
        try:
            check(new)
            new.apply(("enqueue", int(Priority.USER), ContentType.ALBUM, BASE))
            new.apply(("claim", True, BASE))
            check(new)
        finally:
            new.db.close()


def test_a_drained_queue_leaves_no_counters() -> None:
    with queue() as q:
        for n in range(5):
            q.apply(("request", n % 2, BASE + n))
        while q.processing.claim(BASE).item is not None:
            pass
        with q.db.read() as conn:
            assert conn.execute("SELECT COUNT(*) FROM queue_rank").fetchone()[0] == 0


# -- the decomposition and the plan ------------------------------------------------------------


def level_ranges(conn: sqlite3.Connection, created_at: int) -> list[tuple[int, int, int]]:
    """`(shift, first, end)` per level as SQLite computes them for an item created then."""
    ranges = []
    for shift in RANK_SHIFTS:
        first, end = level_bounds(shift)
        lower = str(-(2**63)) if first is None else first
        sql = f"SELECT {lower}, {end} FROM (SELECT ? AS created_at) AS q"  # noqa: S608
        low, high = conn.execute(sql, (created_at,)).fetchone()
        ranges.append((shift, low, high))
    return ranges


@settings(max_examples=300)
@given(created_at=st.integers(-(2**40), 2**40), other=st.integers(-(2**40), 2**40))
def test_level_ranges_hold_every_earlier_second_exactly_once(created_at: int, other: int) -> None:
    conn = sqlite3.connect(":memory:")
    try:
        ranges = level_ranges(conn, created_at)
    finally:
        conn.close()
    holding = [shift for shift, first, end in ranges if first <= other >> shift < end]
    assert len(holding) == (1 if other < created_at else 0)
    for shift, first, end in ranges[:-1]:
        assert end - first < 64, shift  # never more than one fan-out of buckets per level


def test_a_position_is_range_searches_only() -> None:
    with queue() as q, q.db.read() as conn:
        plan = [row["detail"] for row in conn.execute("EXPLAIN QUERY PLAN " + PLACES, ("[]",))]
    searches = [detail for detail in plan if detail.startswith("SEARCH")]
    assert len(searches) == len(RANK_SHIFTS) + 3, plan  # the items themselves, by id
    assert all(
        detail.startswith("SEARCH queue_rank USING PRIMARY KEY (shift=? AND priority")
        or detail.startswith("SEARCH queue_items USING INDEX queue_claim (priority=? AND <expr>=?")
        or detail == "SEARCH q USING INDEX sqlite_autoindex_queue_items_1 (id=?)"
        for detail in searches
    ), plan
    scans = [d for d in plan if d.startswith("SCAN")]
    assert scans == ["SCAN page VIRTUAL TABLE INDEX 1:"], plan  # the ids given, nothing else
