"""Queue positions of top-level PENDING items: how many top-level items will be claimed first.

Claim order (SPEC §8.5) is the `queue_claim` index: priority, children before top-level items,
`created_at`, `seq`. A position counts only top-level work ahead (albums and watchdog repairs):
children of albums already started also go first, but they are part of the album in progress,
and counting them would make a waiting album's position jump as each album fans out.

Each count is an index range of `queue_claim` (one per priority band, equality on priority and
on `parent_id IS NULL`, then a range on `(created_at, seq)`), so its cost grows with the items
ahead, never with the items behind or with the rest of the table. Several positions are taken in
one pass: sorted in claim order, each one adds the count between it and the previous one, so a
page of a user's requests costs one walk up to its last item, not one walk per item.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from storage.queue_schema import Priority, Status

_BAND = """SELECT COUNT(*) FROM queue_items WHERE status = 'PENDING' AND priority = ?
    AND (parent_id IS NULL) = 1"""
_BAND_FROM = _BAND + " AND (created_at, seq) >= (?, ?)"
_BAND_BEFORE = _BAND + " AND (created_at, seq) < (?, ?)"
_BAND_BETWEEN = _BAND + " AND (created_at, seq) >= (?, ?) AND (created_at, seq) < (?, ?)"


class Key(NamedTuple):
    """A top-level item's place in claim order."""

    priority: int
    created_at: int
    seq: int


def _count_between(conn: sqlite3.Connection, lo: Key | None, hi: Key) -> int:
    """Top-level PENDING items with `lo <= key < hi` (from the head of the queue if lo is None)."""
    first = lo.priority if lo is not None else min(int(min(Priority)), hi.priority)
    total = 0
    for band in range(first, hi.priority + 1):
        starts = lo is not None and band == lo.priority
        ends = band == hi.priority
        if starts and ends:
            assert lo is not None
            args = (band, lo.created_at, lo.seq, hi.created_at, hi.seq)
            total += conn.execute(_BAND_BETWEEN, args).fetchone()[0]
        elif starts:
            assert lo is not None
            total += conn.execute(_BAND_FROM, (band, lo.created_at, lo.seq)).fetchone()[0]
        elif ends:
            total += conn.execute(_BAND_BEFORE, (band, hi.created_at, hi.seq)).fetchone()[0]
        else:
            total += conn.execute(_BAND, (band,)).fetchone()[0]
    return int(total)


def positions(conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> dict[str, int]:
    """`{id: position}` (1 = next) for the rows that are PENDING top-level items.

    Call inside one read transaction so every count sees the same queue.
    """
    waiting = sorted(
        (Key(row["priority"], row["created_at"], row["seq"]), row["id"])
        for row in rows
        if row["status"] == Status.PENDING.value and row["parent_id"] is None
    )
    found: dict[str, int] = {}
    previous: Key | None = None
    position = 1
    for key, item_id in waiting:
        position += _count_between(conn, previous, key)
        found[item_id] = position
        previous = key
    return found
