"""Queue positions of top-level PENDING items: how many top-level items will be claimed first.

Claim order (SPEC §8.5) is the `queue_claim` index: priority, children before top-level items,
`created_at`, `seq`. A position counts only top-level work ahead (albums and watchdog repairs):
children of albums already started also go first, but they are part of the album in progress,
and counting them would make a waiting album's position jump as each album fans out.

Counting the items ahead one index entry at a time would cost one step per item ahead, so the
counts come from `queue_rank` (migration 3 in `storage.queue.schema`), which triggers keep in
step with queue_items: the top-level PENDING items per priority and per bucket of `created_at`
at the levels of RANK_SHIFTS (bucket = created_at >> shift, 64 buckets of a level per bucket of
the next). For an item at (priority p, created_at T, seq S), the items ahead are:

- every band of a smaller priority number: each band's total at the top level;
- in band p, those created before T: at each level, the buckets between where the next level's
  bucket holding T starts and T's own bucket (fewer than 64 each), and at the top level every
  bucket before T's; together they cover every second before T exactly once;
- in band p, those created in the same second with a smaller seq: walked in `queue_claim`, so
  only same-second ties cost a step each.

Each part is a primary-key (or index) range search, all in one statement per item: its cost
grows with the number of levels and same-second ties, not with the queue's depth.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from storage.queue.model import Row, Status
from storage.queue.schema import RANK_FANOUT_BITS, RANK_SHIFTS

_TOP = RANK_SHIFTS[-1]
# No bucket is below this: the top level is counted from the start of time.
_NO_LOWER_BOUND = -(2**63)
# The parameters are (_TOP, p), then (shift, p, first bucket, end bucket) per level, then
# (p, T, S). The text only repeats a fixed fragment once per level; every value is bound.
_AHEAD_BANDS = "(SELECT COALESCE(SUM(n), 0) FROM queue_rank WHERE shift = ? AND priority < ?)"
_AHEAD_LEVEL = """(SELECT COALESCE(SUM(n), 0) FROM queue_rank
    WHERE shift = ? AND priority = ? AND bucket >= ? AND bucket < ?)"""
_AHEAD_TIES = """(SELECT COUNT(*) FROM queue_items INDEXED BY queue_claim
    WHERE status = 'PENDING' AND priority = ? AND (parent_id IS NULL) = 1
    AND created_at = ? AND seq < ?)"""
AHEAD = "SELECT " + " + ".join([_AHEAD_BANDS, *[_AHEAD_LEVEL] * len(RANK_SHIFTS), _AHEAD_TIES])


class Key(NamedTuple):
    """A top-level item's place in claim order."""

    priority: int
    created_at: int
    seq: int


def level_ranges(created_at: int) -> list[tuple[int, int, int]]:
    """`(shift, first bucket, end bucket)` per level: the buckets that together hold every
    second before `created_at` once (half-open; the top level has no lower bound)."""
    ranges = []
    for shift in RANK_SHIFTS:
        end = created_at >> shift
        if shift == _TOP:
            first = _NO_LOWER_BOUND
        else:
            first = (created_at >> (shift + RANK_FANOUT_BITS)) << RANK_FANOUT_BITS
        ranges.append((shift, first, end))
    return ranges


def ahead_args(key: Key) -> tuple[int, ...]:
    """The parameters of AHEAD for `key`."""
    args: list[int] = [_TOP, key.priority]
    for shift, first, end in level_ranges(key.created_at):
        args += [shift, key.priority, first, end]
    args += [key.priority, key.created_at, key.seq]
    return tuple(args)


def count_ahead(conn: sqlite3.Connection, key: Key) -> int:
    """Top-level PENDING items claimed before the item at `key`."""
    return int(conn.execute(AHEAD, ahead_args(key)).fetchone()[0])


def positions(conn: sqlite3.Connection, rows: Sequence[Row]) -> dict[str, int]:
    """`{id: position}` (1 = next) for the rows that are PENDING top-level items.

    Call inside one read transaction so every count sees the same queue.
    """
    return {
        row["id"]: 1 + count_ahead(conn, Key(row["priority"], row["created_at"], row["seq"]))
        for row in rows
        if row["status"] == Status.PENDING.value and row["parent_id"] is None
    }
