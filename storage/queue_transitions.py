"""Pieces of the queue's state transitions that run inside the caller's write transaction.

`storage.queue.QueueStore` composes them so that a transition, its audit entry, the hourly
activity counters and the parent album's completion always commit together (SPEC §8.5, §8.6).
Each function returns the audit events it appended so the store can count them after the commit.
"""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.config import DownloadManagerConfig
from storage import queue_marks
from storage.queue_schema import HOUR, AuditEvent, ContentType, ErrorType, Status, append_audit

# SPEC §8.6: a 429 without a usable Retry-After waits this long.
DEFAULT_RETRY_AFTER_S = 5.0
# Never retry sooner than this after a 429, so "Retry-After: 0" cannot become a busy loop.
MIN_RETRY_AFTER_S = 1
PERMANENT_ERRORS = frozenset({ErrorType.NOT_FOUND, ErrorType.BAD_REQUEST})


@dataclass(frozen=True)
class ChildSpec:
    """One child to create under an album (SPEC §8.5)."""

    content_type: ContentType
    content_id: str
    content_name: str | None = None
    artist_name: str | None = None


def backoff_secs(dm: DownloadManagerConfig, retries_so_far: int) -> int:
    """Delay before retry k (k = retry_count before the failure): SPEC §8.6, rounded up."""
    delay = min(
        dm.initial_backoff_secs * dm.backoff_multiplier**retries_so_far, dm.max_backoff_secs
    )
    return math.ceil(delay)


def rate_limit_wait(retry_after: float | None, longest: float) -> int:
    """Seconds to wait after a 429: its Retry-After (default 5 s), at least 1 s and at most
    `longest` (`max_backoff_secs`), so that no answer of the downloader can park an item for
    years, or overflow the queue's timestamps."""
    wait = DEFAULT_RETRY_AFTER_S if retry_after is None or math.isnan(retry_after) else retry_after
    return max(MIN_RETRY_AFTER_S, math.ceil(min(wait, longest)))


def bump_activity(
    conn: sqlite3.Connection,
    now: int,
    *,
    albums: int = 0,
    tracks: int = 0,
    images: int = 0,
    size: int = 0,
    failed: int = 0,
) -> None:
    """Add to the counters of the UTC hour containing `now`."""
    conn.execute(
        """INSERT INTO activity_hourly (hour, albums, tracks, images, bytes, failed)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (hour) DO UPDATE SET albums = albums + excluded.albums,
                tracks = tracks + excluded.tracks, images = images + excluded.images,
                bytes = bytes + excluded.bytes, failed = failed + excluded.failed""",
        (now - now % HOUR, albums, tracks, images, size, failed),
    )


def count_completion(conn: sqlite3.Connection, content_type: str, size: int, now: int) -> None:
    kind = ContentType(content_type)
    if kind is ContentType.ALBUM:
        bump_activity(conn, now, albums=1)  # its bytes were counted with each child
    elif kind is ContentType.TRACK_AUDIO:
        bump_activity(conn, now, tracks=1, size=size)
    else:
        bump_activity(conn, now, images=1, size=size)


def get_item(conn: sqlite3.Connection, item_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM queue_items WHERE id = ?", (item_id,)
    ).fetchone()
    return row


def touch_parent(conn: sqlite3.Connection, parent_id: str, now: int) -> None:
    """A child moved: the album shows life (the stale detector counts from here)."""
    conn.execute("UPDATE queue_items SET last_activity_at = ? WHERE id = ?", (now, parent_id))


def settle_parent(
    conn: sqlite3.Connection, parent_id: str, now: int
) -> tuple[Status | None, list[AuditEvent]]:
    """Complete or fail an IN_PROGRESS album whose children are all terminal.

    All COMPLETED → COMPLETED with the children's bytes summed; any FAILED → FAILED with
    "<k> of <n> children failed" and the error type of the last child that failed. Returns the
    album's new status (None when it is still waiting or not IN_PROGRESS) and the audit events.
    """
    parent = get_item(conn, parent_id)
    if parent is None or parent["status"] != Status.IN_PROGRESS.value:
        return None, []
    total, done, failed, size = conn.execute(
        """SELECT COUNT(*), COALESCE(SUM(status = 'COMPLETED'), 0),
                COALESCE(SUM(status = 'FAILED'), 0),
                COALESCE(SUM(CASE WHEN status = 'COMPLETED' THEN bytes_downloaded END), 0)
            FROM queue_items WHERE parent_id = ?""",
        (parent_id,),
    ).fetchone()
    if done + failed < total:
        return None, []
    if failed == 0:
        row = conn.execute(
            """UPDATE queue_items SET status = 'COMPLETED', completed_at = ?, last_activity_at = ?,
                bytes_downloaded = ?, error_type = NULL, error_message = NULL, next_retry_at = NULL,
                processing_duration_ms = (? - COALESCE(started_at, ?)) * 1000
                WHERE id = ? RETURNING *""",
            (now, now, size, now, now, parent_id),
        ).fetchone()
        count_completion(conn, row["content_type"], size, now)
        details = {"bytes": size, "children": total}
        return Status.COMPLETED, [
            append_audit(conn, AuditEvent.DOWNLOAD_COMPLETED, row, details, at=now)
        ]
    return _fail_parent(conn, parent_id, f"{failed} of {total} children failed", size, now)


def _fail_parent(
    conn: sqlite3.Connection, parent_id: str, message: str, size: int, now: int
) -> tuple[Status, list[AuditEvent]]:
    last_error = conn.execute(
        """SELECT error_type FROM queue_items WHERE parent_id = ? AND status = 'FAILED'
            ORDER BY completed_at DESC, seq DESC LIMIT 1""",
        (parent_id,),
    ).fetchone()[0]
    row = conn.execute(
        """UPDATE queue_items SET status = 'FAILED', completed_at = ?, last_activity_at = ?,
            bytes_downloaded = ?, error_type = ?, error_message = ?, next_retry_at = NULL,
            processing_duration_ms = (? - COALESCE(started_at, ?)) * 1000
            WHERE id = ? RETURNING *""",
        (now, now, size, last_error or ErrorType.UNKNOWN.value, message, now, now, parent_id),
    ).fetchone()
    bump_activity(conn, now, failed=1)
    details = {"error_type": row["error_type"], "error_message": message}
    return Status.FAILED, [append_audit(conn, AuditEvent.DOWNLOAD_FAILED, row, details, at=now)]


def insert_children(
    conn: sqlite3.Connection, parent: sqlite3.Row, children: Sequence[ChildSpec], now: int
) -> int:
    """Insert the children an album lacks (unique per parent and content); return how many.

    They inherit the parent's priority, source, requester and max_retries.
    """
    before = conn.total_changes
    conn.executemany(
        """INSERT INTO queue_items (id, parent_id, status, priority, content_type, content_id,
            content_name, artist_name, request_source, requested_by, created_at, max_retries,
            last_activity_at)
            VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
        [(str(uuid.uuid4()), parent["id"], parent["priority"], c.content_type.value,
          c.content_id, c.content_name, c.artist_name, parent["request_source"],
          parent["requested_by"], now, parent["max_retries"], now) for c in children],
    )  # fmt: skip
    return conn.total_changes - before


def record_failure(
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    dm: DownloadManagerConfig,
    error: ErrorType,
    message: str,
    now: int,
    retry_after: float | None,
    permanent: bool = False,
) -> tuple[Status, list[AuditEvent]]:
    """Apply SPEC §8.6 to a failed attempt of the IN_PROGRESS item `row`; `permanent` fails it
    at once whatever its error type (a body over the size cap would come again the same)."""
    retries = row["retry_count"]
    if error is ErrorType.RATE_LIMITED:
        status, wait = Status.RETRY_WAITING, rate_limit_wait(retry_after, dm.max_backoff_secs)
    elif permanent or error in PERMANENT_ERRORS or retries >= row["max_retries"]:
        status, wait = Status.FAILED, 0
    else:
        status, wait = Status.RETRY_WAITING, backoff_secs(dm, retries)
        retries += 1
    failed = status is Status.FAILED
    updated = conn.execute(
        """UPDATE queue_items SET status = ?, error_type = ?, error_message = ?,
            retry_count = ?, next_retry_at = ?, completed_at = ?, last_activity_at = ?
            WHERE id = ? RETURNING *""",
        (status.value, error.value, message, retries, None if failed else now + wait,
         now if failed else None, now, row["id"]),
    ).fetchone()  # fmt: skip
    details: dict[str, Any] = {"error_type": error.value, "error_message": message}
    if not failed:
        details |= {"retry_count": retries, "next_retry_at": now + wait}
        return status, [append_audit(conn, AuditEvent.RETRY_SCHEDULED, updated, details, at=now)]
    bump_activity(conn, now, failed=1)
    events = [append_audit(conn, AuditEvent.DOWNLOAD_FAILED, updated, details, at=now)]
    if error is ErrorType.NOT_FOUND and queue_marks.is_repair(row):
        # The downloader no longer has it: the watchdog stops asking for a while (SPEC §8.9).
        events += queue_marks.give_up(conn, updated, dm.unavailable_recheck_days, message, now)
    if row["parent_id"] is not None:
        touch_parent(conn, row["parent_id"], now)
        events += settle_parent(conn, row["parent_id"], now)[1]
    return status, events
