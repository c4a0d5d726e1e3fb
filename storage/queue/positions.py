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

Each part is a primary-key (or index) range search. A page's positions are one statement (the
items' own columns in place of parameters): its cost grows with the number of items, levels and
same-second ties, not with the queue's depth, and it is one call into SQLite however long the
page, since every statement a request's worker thread runs hands the interpreter lock back and
forth with the event loop.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from storage.queue.model import Row, Status
from storage.queue.schema import RANK_FANOUT_BITS, RANK_SHIFTS

_TOP = RANK_SHIFTS[-1]


def level_bounds(shift: int) -> tuple[str | None, str]:
    """SQL for the buckets of level `shift` counted for an item `q`: `(first, end)`, half-open
    (the top level has no lower bound, None). Together the levels hold every second before
    `q.created_at` once: at each level below the top, the buckets between where the next
    level's bucket holding it starts and its own (fewer than 64)."""
    end = f"(q.created_at >> {shift})"
    if shift == _TOP:
        return None, end
    first = f"((q.created_at >> {shift + RANK_FANOUT_BITS}) << {RANK_FANOUT_BITS})"
    return first, end


def _level(shift: int) -> str:
    first, end = level_bounds(shift)
    lower = "" if first is None else f" AND bucket >= {first}"
    return f"""(SELECT COALESCE(SUM(n), 0) FROM queue_rank
        WHERE shift = {shift} AND priority = q.priority{lower} AND bucket < {end})"""  # noqa: S608


# The text is built from the module's constants only; the ids are the one bound parameter.
_BANDS = f"""(SELECT COALESCE(SUM(n), 0) FROM queue_rank
    WHERE shift = {_TOP} AND priority < q.priority)"""  # noqa: S608
_TIES = """(SELECT COUNT(*) FROM queue_items INDEXED BY queue_claim
    WHERE status = 'PENDING' AND priority = q.priority AND (parent_id IS NULL) = 1
    AND created_at = q.created_at AND seq < q.seq)"""
_AHEAD = " + ".join([_BANDS, *map(_level, RANK_SHIFTS), _TIES])
# CROSS JOIN keeps the ids as the outer loop (a search by key each): SQLite would otherwise read
# every PENDING top-level item through `queue_parent`.
PLACES = f"""SELECT q.id, 1 + {_AHEAD}
    FROM json_each(?) AS page CROSS JOIN queue_items q ON q.id = page.value
    WHERE q.status = 'PENDING' AND q.parent_id IS NULL"""  # noqa: S608


def positions(conn: sqlite3.Connection, rows: Sequence[Row]) -> dict[str, int]:
    """`{id: position}` (1 = next) for the rows that are PENDING top-level items, in one
    statement.

    Call inside one read transaction so every count sees the same queue.
    """
    waiting = [
        row["id"] for row in rows if row["status"] == Status.PENDING and row["parent_id"] is None
    ]
    if not waiting:
        return {}
    return dict(conn.execute(PLACES, (json.dumps(waiting),)).fetchall())
