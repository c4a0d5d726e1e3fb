"""Read queries of the download queue for users, admins and monitors (SPEC §8.4, §8.8, §8.10).

Plain functions over a connection, used by the stores. Every count is taken from the queue
itself, so no counter can drift from the rows. The filtered, paged lists (a user's requests,
the admin's requests and failures) are `sqlite_utils` table reads: filters become one WHERE
clause of constant fragments before paging, and `total` counts the filtered rows. The reads that
pin an index or aggregate stay SQL. Top-level items are shaped with their `progress` and, while
PENDING, their `queue_position` (`storage.queue.positions`), and every item with its `wait` and
estimates (`storage.queue.waits`, `storage.queue.estimates`), the same for users and admins.

Windows are UTC: the day starts at `now - now % 86400`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.db import table
from storage.queue import limits, pause
from storage.queue.estimates import Estimates
from storage.queue.model import (
    DAY,
    PRIORITIES,
    TERMINAL,
    DownloadManagerConfig,
    Row,
    Status,
    item_json,
    progress_json,
)
from storage.queue.positions import positions
from storage.queue.waits import Snapshot, wait_json

NEWEST_FIRST = "created_at DESC, seq DESC"
# The latest sign of life of an item, and for a parent the latest of its children.
_STALE = """
    SELECT id, content_type, content_id, content_name, since FROM (
        SELECT q.id, q.content_type, q.content_id, q.content_name,
            MAX(COALESCE(q.started_at, 0), COALESCE(q.last_attempt_at, 0),
                COALESCE(q.last_activity_at, 0),
                COALESCE((SELECT MAX(MAX(COALESCE(c.last_activity_at, 0),
                                         COALESCE(c.last_attempt_at, 0),
                                         COALESCE(c.completed_at, 0)))
                          FROM queue_items c WHERE c.parent_id = q.id), 0)) AS since
        FROM queue_items q WHERE q.status = 'IN_PROGRESS')
    WHERE since < ? ORDER BY since, id"""
_FINISHED_SINCE = """SELECT COALESCE(SUM(status = 'COMPLETED'), 0),
    COALESCE(SUM(status = 'FAILED'), 0)
    FROM queue_items WHERE status IN ('COMPLETED', 'FAILED') AND completed_at >= ?"""
_IN_QUEUE = """SELECT DISTINCT content_id FROM queue_items
    WHERE content_id IN (SELECT value FROM json_each(?)) AND status NOT IN (?, ?, ?)"""


@dataclass(frozen=True)
class StaleItem:
    id: str
    content_type: str
    content_id: str
    content_name: str | None
    since: int


def shape(
    conn: sqlite3.Connection, rows: Sequence[Row], *, dm: DownloadManagerConfig, now: int
) -> list[dict[str, Any]]:
    """QueueItem JSON as of `now`, the one shaping every list and event uses: top-level items
    add `progress` and `queue_position` (null unless PENDING); every item adds `wait`
    (`storage.queue.waits`) and `estimated_start_at` / `estimated_completion_at`
    (`storage.queue.estimates`; null where they do not apply, always for a child).

    Call inside one read transaction so positions, progress and waits describe the same queue.
    """
    ranks = positions(conn, rows)
    done = progress_many(conn, [row["id"] for row in rows if row["parent_id"] is None])
    snap = Snapshot(conn, dm, now)
    estimates = Estimates(snap)
    items = []
    for row in rows:
        item = item_json(row)
        progress, position = done.get(row["id"]), ranks.get(row["id"])
        if row["parent_id"] is None:
            item["progress"] = progress
            item["queue_position"] = position
        item["wait"] = wait_json(snap, row, progress, position)
        item["estimated_start_at"] = estimates.start_at(row, position)
        item["estimated_completion_at"] = estimates.completion_at(row)
        items.append(item)
    return items


def progress_many(
    conn: sqlite3.Connection, parent_ids: Sequence[str]
) -> dict[str, dict[str, int] | None]:
    """Children counts by state of several top-level items (a page of them), in one statement;
    None for an item before its children exist."""
    counts: dict[str, dict[str, int]] = {parent: {} for parent in parent_ids}
    rows = conn.execute(
        """SELECT parent_id, status, COUNT(*) FROM queue_items
            WHERE parent_id IN (SELECT value FROM json_each(?)) GROUP BY parent_id, status""",
        (json.dumps(list(parent_ids)),),
    )
    for parent, status, count in rows:
        counts[parent][status] = count
    return {parent: progress_json(by_status) for parent, by_status in counts.items()}


def _where(clauses: Sequence[tuple[str, Any]]) -> tuple[str | None, list[Any]]:
    """One WHERE clause from `(fragment, value)` pairs: a constant SQL fragment and its one
    parameter, or None for a fragment without one."""
    where = " AND ".join(sql for sql, _ in clauses) or None
    return where, [value for _, value in clauses if value is not None]


def _page(
    conn: sqlite3.Connection, clauses: Sequence[tuple[str, Any]], order_by: str, limit: int,
    offset: int, *, dm: DownloadManagerConfig, now: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """One page of the items matching every clause, in `order_by`, shaped as of `now`."""
    where, params = _where(clauses)
    rows = table(conn, "queue_items").rows_where(
        where, params, order_by=order_by, limit=limit, offset=offset
    )
    return shape(conn, list(rows), dm=dm, now=now)


def _count(conn: sqlite3.Connection, clauses: Sequence[tuple[str, Any]]) -> int:
    """How many items match every clause (a list's total before paging)."""
    return table(conn, "queue_items").count_where(*_where(clauses))


def requests_of(
    conn: sqlite3.Connection, user: str, status: Status | None, limit: int, offset: int, *,
    dm: DownloadManagerConfig, now: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """A user's top-level items, newest first, each with `progress` and `queue_position`."""
    clauses: list[tuple[str, Any]] = [("parent_id IS NULL", None), ("requested_by = ?", user)]
    if status is not None:
        clauses.append(("status = ?", status.value))
    return _page(conn, clauses, NEWEST_FIRST, limit, offset, dm=dm, now=now)


def request_items(
    conn: sqlite3.Connection,
    *,
    status: Status | None,
    user: str | None,
    top_level_only: bool,
    limit: int,
    offset: int,
    dm: DownloadManagerConfig,
    now: int,
) -> tuple[list[dict[str, Any]], int]:
    """Items matching every given filter, newest first, and how many match before paging."""
    clauses: list[tuple[str, Any]] = []
    if status is not None:
        clauses.append(("status = ?", status.value))
    if user is not None:
        clauses.append(("requested_by = ?", user))
    if top_level_only:
        clauses.append(("parent_id IS NULL", None))
    page = _page(conn, clauses, NEWEST_FIRST, limit, offset, dm=dm, now=now)
    return page, _count(conn, clauses)


def failed_items(
    conn: sqlite3.Connection, limit: int, offset: int, *, dm: DownloadManagerConfig, now: int
) -> tuple[list[dict[str, Any]], int]:
    """FAILED items (children included), newest failure first, and how many there are."""
    failed = [("status = 'FAILED'", None)]
    newest_failure = "COALESCE(completed_at, last_attempt_at, created_at) DESC, seq DESC"
    page = _page(conn, failed, newest_failure, limit, offset, dm=dm, now=now)
    return page, _count(conn, failed)


def stats(conn: sqlite3.Connection, dm: DownloadManagerConfig, now: int) -> dict[str, Any]:
    """The admin dashboard: queue counts, capacity, processing over the last 24 hours, and the
    pause (`storage.queue.pause`).

    Counts cover every item (children and repairs included). `average_duration_ms` and
    `success_rate_percent` are null when nothing finished in the last 24 hours.
    """
    counts = dict(
        conn.execute(
            "SELECT status, COUNT(*) FROM queue_items WHERE status IN (?, ?, ?) GROUP BY status",
            (Status.PENDING.value, Status.IN_PROGRESS.value, Status.RETRY_WAITING.value),
        ).fetchall()
    )
    completed_today, failed_today = _finished_since(conn, now - now % DAY)
    completed, failed = _finished_since(conn, now - DAY)
    average = conn.execute(
        """SELECT AVG(processing_duration_ms) FROM queue_items
            WHERE status = 'COMPLETED' AND completed_at >= ?""",
        (now - DAY,),
    ).fetchone()[0]
    finished = completed + failed
    return {
        "queue": {
            "pending": counts.get(Status.PENDING.value, 0),
            "in_progress": counts.get(Status.IN_PROGRESS.value, 0),
            "retry_waiting": counts.get(Status.RETRY_WAITING.value, 0),
            "completed_today": completed_today,
            "failed_today": failed_today,
        },
        "capacity": limits.capacity(conn, dm, now),
        "processing": {
            "average_duration_ms": None if average is None else round(average),
            "success_rate_percent": round(100 * completed / finished, 1) if finished else None,
        },
        "paused": pause.state(conn),
    }


def _finished_since(conn: sqlite3.Connection, since: int) -> tuple[int, int]:
    row = conn.execute(_FINISHED_SINCE, (since,)).fetchone()
    return int(row[0]), int(row[1])


def status_counts(conn: sqlite3.Connection) -> dict[tuple[str, int], int]:
    """Items per (status, priority), zeros included for every priority an item may have, so a
    gauge of a priority nobody uses any more goes back to 0."""
    sizes = {(s.value, p): 0 for s in Status for p in PRIORITIES}
    for status, priority, count in conn.execute(
        "SELECT status, priority, COUNT(*) FROM queue_items GROUP BY status, priority"
    ):
        sizes[(status, priority)] = count
    return sizes


def stale_items(conn: sqlite3.Connection, threshold_secs: int, now: int) -> list[StaleItem]:
    """IN_PROGRESS items with no sign of life for longer than the threshold.

    An item's last sign of life is the latest of its `started_at`, `last_attempt_at` and
    `last_activity_at`; a parent also counts its children's `last_activity_at`,
    `last_attempt_at` and `completed_at`, so an album busy with its tracks is not stale.
    """
    return [
        StaleItem(r["id"], r["content_type"], r["content_id"], r["content_name"], r["since"])
        for r in conn.execute(_STALE, (now - threshold_secs,))
    ]


def active_content(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """(content_type, content_id) of every non-terminal item."""
    rows: Sequence[tuple[str, str]] = conn.execute(
        """SELECT content_type, content_id FROM queue_items
            WHERE status IN ('PENDING', 'IN_PROGRESS', 'RETRY_WAITING')"""
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


def in_queue_ids(conn: sqlite3.Connection, content_ids: Sequence[str]) -> set[str]:
    """Which of these ids have a non-terminal item (for search results)."""
    rows = conn.execute(_IN_QUEUE, (json.dumps(list(content_ids)), *TERMINAL))
    return {row[0] for row in rows}
