"""Read-side queries of the download queue for admins and monitors (SPEC §8.8, §8.10, §9).

Plain functions over a connection, used by `storage.queue_admin.QueueAdminStore`. Every count is
taken from the queue itself, so no counter can drift from the rows. Lists are filtered in SQL
before paging (`total` counts the filtered rows), and top-level items are shaped with their
`progress` and, while PENDING, their `queue_position` (`storage.queue_position`, as users see it).

Windows are UTC: the current hour starts at `now - now % 3600`, the day at `now - now % 86400`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.config import DownloadManagerConfig
from storage.queue_position import positions
from storage.queue_schema import DAY, HOUR, Priority, Status, item_json, progress_many

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


@dataclass(frozen=True)
class StaleItem:
    id: str
    content_type: str
    content_id: str
    content_name: str | None
    since: int


def shape(conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[dict[str, Any]]:
    """QueueItem JSON; top-level items add `progress` and `queue_position` (null unless PENDING).

    Call inside one read transaction so positions and progress describe the same queue.
    """
    ranks = positions(conn, rows)
    done = progress_many(conn, [row["id"] for row in rows if row["parent_id"] is None])
    items = []
    for row in rows:
        item = item_json(row)
        if row["parent_id"] is None:
            item["progress"] = done[row["id"]]
            item["queue_position"] = ranks.get(row["id"])
        items.append(item)
    return items


def get_row(conn: sqlite3.Connection, item_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM queue_items WHERE id = ?", (item_id,)
    ).fetchone()
    return row


def capacity(conn: sqlite3.Connection, dm: DownloadManagerConfig, now: int) -> dict[str, Any]:
    """CapacityStatus: albums whose processing started this UTC hour / day against the limits.

    `resets_at` is when the binding limit resets: the next UTC day when the daily limit is
    reached, else the next UTC hour (the nearest window end when nothing binds).
    """
    hour, day = now - now % HOUR, now - now % DAY
    # Pinned to the partial index: without statistics SQLite prefers `queue_parent` (equality
    # on parent_id) and reads every top-level item ever queued, which every claim pays for.
    this_hour, today = conn.execute(
        """SELECT COALESCE(SUM(started_at >= ?), 0), COUNT(*)
            FROM queue_items INDEXED BY queue_album_started
            WHERE content_type = 'ALBUM' AND parent_id IS NULL AND started_at >= ?""",
        (hour, day),
    ).fetchone()
    day_full = today >= dm.max_albums_per_day
    return {
        "albums_this_hour": this_hour,
        "max_per_hour": dm.max_albums_per_hour,
        "albums_today": today,
        "max_per_day": dm.max_albums_per_day,
        "at_capacity": day_full or this_hour >= dm.max_albums_per_hour,
        "resets_at": day + DAY if day_full else hour + HOUR,
    }


def stats(conn: sqlite3.Connection, dm: DownloadManagerConfig, now: int) -> dict[str, Any]:
    """The admin dashboard: queue counts, capacity, and processing over the last 24 hours.

    Counts cover every item (children and repairs included). `average_duration_ms` and
    `success_rate_percent` are null when nothing finished in the last 24 hours.
    """
    counts = dict(
        conn.execute(
            "SELECT status, COUNT(*) FROM queue_items WHERE status IN (?, ?, ?) GROUP BY status",
            (Status.PENDING.value, Status.IN_PROGRESS.value, Status.RETRY_WAITING.value),
        ).fetchall()
    )
    day = now - now % DAY
    completed_today, failed_today = _finished_since(conn, day)
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
        "capacity": capacity(conn, dm, now),
        "processing": {
            "average_duration_ms": None if average is None else round(average),
            "success_rate_percent": round(100 * completed / finished, 1) if finished else None,
        },
    }


def _finished_since(conn: sqlite3.Connection, since: int) -> tuple[int, int]:
    row = conn.execute(
        """SELECT COALESCE(SUM(status = 'COMPLETED'), 0), COALESCE(SUM(status = 'FAILED'), 0)
            FROM queue_items WHERE status IN ('COMPLETED', 'FAILED') AND completed_at >= ?""",
        (since,),
    ).fetchone()
    return int(row[0]), int(row[1])


def failed_items(
    conn: sqlite3.Connection, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """FAILED items (children included), newest failure first, and how many there are."""
    total = conn.execute("SELECT COUNT(*) FROM queue_items WHERE status = 'FAILED'").fetchone()[0]
    rows = conn.execute(
        """SELECT * FROM queue_items WHERE status = 'FAILED'
            ORDER BY COALESCE(completed_at, last_attempt_at, created_at) DESC, seq DESC
            LIMIT ? OFFSET ?""",
        (limit, offset),
    ).fetchall()
    return shape(conn, rows), int(total)


def request_items(
    conn: sqlite3.Connection,
    *,
    status: Status | None,
    user: str | None,
    top_level_only: bool,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """Items matching every given filter, newest first, and how many match before paging."""
    clauses: list[str] = []
    params: list[Any] = []
    if status is not None:
        clauses.append("status = ?")
        params.append(status.value)
    if user is not None:
        clauses.append("requested_by = ?")
        params.append(user)
    if top_level_only:
        clauses.append("parent_id IS NULL")
    # Only constant clauses are joined; every value travels as a parameter.
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    count_sql = "SELECT COUNT(*) FROM queue_items" + where  # noqa: S608 (constant clauses)
    page_sql = "SELECT * FROM queue_items" + where  # noqa: S608 (constant clauses)
    total = conn.execute(count_sql, params).fetchone()[0]
    rows = conn.execute(
        page_sql + " ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?", [*params, limit, offset]
    ).fetchall()
    return shape(conn, rows), int(total)


ACTIVITY_FIELDS = ("albums", "tracks", "images", "bytes", "failed")


def activity(conn: sqlite3.Connection, hours: int, now: int) -> dict[str, Any]:
    """One bucket per UTC hour for the last `hours` hours (current one included), oldest first.

    Hours without activity appear with zeros so a chart needs no gap filling.
    """
    current = now - now % HOUR
    first = current - (hours - 1) * HOUR
    stored = {
        row["hour"]: row
        for row in conn.execute(
            "SELECT * FROM activity_hourly WHERE hour >= ? AND hour <= ?", (first, current)
        )
    }
    hourly = []
    for hour in range(first, current + 1, HOUR):
        row = stored.get(hour)
        hourly.append({"hour": hour, **{f: row[f] if row else 0 for f in ACTIVITY_FIELDS}})
    totals = {f: sum(bucket[f] for bucket in hourly) for f in ACTIVITY_FIELDS}
    return {"hourly": hourly, "totals": totals}


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


def gauges(
    conn: sqlite3.Connection, dm: DownloadManagerConfig, now: int
) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
    """Queue sizes for every (status, priority) pair (zeros included) and capacity used."""
    sizes = {(s.value, int(p)): 0 for s in Status for p in Priority}
    for status, priority, count in conn.execute(
        "SELECT status, priority, COUNT(*) FROM queue_items GROUP BY status, priority"
    ):
        sizes[(status, priority)] = count
    cap = capacity(conn, dm, now)
    return sizes, {"hour": cap["albums_this_hour"], "day": cap["albums_today"]}


def active_content(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """(content_type, content_id) of every non-terminal item."""
    rows: Sequence[tuple[str, str]] = conn.execute(
        """SELECT content_type, content_id FROM queue_items
            WHERE status IN ('PENDING', 'IN_PROGRESS', 'RETRY_WAITING')"""
    ).fetchall()
    return {(r[0], r[1]) for r in rows}
