"""Failed attempts and retries, inside the caller's write transaction: the processor's failure
policy (SPEC §8.6) and an admin's retry of a FAILED item (SPEC §8.10).

A failed attempt: not_found and bad_request fail at once; rate_limited waits its Retry-After
(default 5 s, at least 1 s, at most `max_backoff_secs`) without counting a retry; anything else
waits the backoff for its retry_count, or fails once `max_retries` retries are spent. A child
failing terminally settles its album; a watchdog repair failing not_found marks its content
unavailable (`storage.queue.marks`).

Admin retry: a FAILED child goes back to PENDING with `retry_count` 0 and reopens its parent
(IN_PROGRESS); a FAILED album with children gets its FAILED children reset and goes back to
IN_PROGRESS; a FAILED top-level item without children (an album that failed before its children
existed, a watchdog repair) goes back to PENDING. Every item that changes state gets an
ADMIN_RETRY entry carrying the admin's handle and the error it had. A reset item's
`last_activity_at` becomes now, so the stale detector counts from the retry. An item sent back
to PENDING also loses `started_at`, so an album retried from scratch counts against the global
capacity when it starts again; an album reopened with its children keeps its start. Retrying a
failed watchdog repair also drops the content's unavailable mark, in the same transaction; its
ADMIN_RETRY entry then says `unavailable_cleared`.

Each function returns the audit events it appended.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from storage.queue import activity, audit, marks, rows
from storage.queue.model import AuditEvent, DownloadManagerConfig, ErrorType, Status
from storage.queue.transitions import in_progress, settle_parent, touch_parent

# SPEC §8.6: a 429 without a usable Retry-After waits this long.
DEFAULT_RETRY_AFTER_S = 5.0
# Never retry sooner than this after a 429, so "Retry-After: 0" cannot become a busy loop.
MIN_RETRY_AFTER_S = 1
PERMANENT_ERRORS = frozenset({ErrorType.NOT_FOUND, ErrorType.BAD_REQUEST})


class RetryRefused(Exception):
    """Admin retry of an item that does not exist (`status` 404) or is not FAILED (409), or of
    a child whose album was cancelled (409, `code` ALBUM_CANCELLED)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or ("NOT_FOUND" if status == 404 else "NOT_FAILED")


_FAIL = """UPDATE queue_items SET status = ?, error_type = ?, error_message = ?, retry_count = ?,
    next_retry_at = ?, completed_at = ?, last_activity_at = ? WHERE id = ? RETURNING *"""
_RESET = """UPDATE queue_items SET status = ?, retry_count = 0, next_retry_at = NULL,
    error_type = NULL, error_message = NULL, completed_at = NULL, last_activity_at = ?
    WHERE id = ?"""
# An item sent back to PENDING starts over: its next claim is a new start (an album counts
# against the global capacity again) and its results are measured afresh.
_RESTART = """UPDATE queue_items SET started_at = NULL, bytes_downloaded = NULL,
    processing_duration_ms = NULL WHERE id = ?"""


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


def record_failure(
    conn: sqlite3.Connection,
    item_id: str,
    dm: DownloadManagerConfig,
    error: ErrorType,
    message: str,
    now: int,
    retry_after: float | None,
    permanent: bool = False,
) -> tuple[Status, list[AuditEvent]]:
    """A failed attempt of the IN_PROGRESS item `item_id`; returns its new status. `permanent`
    fails it at once whatever its error type (a body over the size cap would come again the
    same). An item cancelled meanwhile stays CANCELLED (no events); `QueueStateError` if it is
    in any other state but IN_PROGRESS."""
    row = in_progress(conn, item_id)
    if row is None:
        return Status.CANCELLED, []
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
        _FAIL,
        (status.value, error.value, message, retries, None if failed else now + wait,
         now if failed else None, now, item_id),
    ).fetchone()  # fmt: skip
    details: dict[str, Any] = {"error_type": error.value, "error_message": message}
    if not failed:
        details |= {"retry_count": retries, "next_retry_at": now + wait}
        return status, [audit.append(conn, AuditEvent.RETRY_SCHEDULED, updated, details, at=now)]
    activity.bump(conn, now, failed=1)
    events = [audit.append(conn, AuditEvent.DOWNLOAD_FAILED, updated, details, at=now)]
    if error is ErrorType.NOT_FOUND and marks.is_repair(row):
        # The downloader no longer has it: the watchdog stops asking for a while (SPEC §8.9).
        events += marks.give_up(conn, updated, dm.unavailable_recheck_days, message, now)
    if row["parent_id"] is not None:
        touch_parent(conn, row["parent_id"], now)
        events += settle_parent(conn, row["parent_id"], now)[1]
    return status, events


def refusal(conn: sqlite3.Connection, row: sqlite3.Row) -> RetryRefused | None:
    """Why an admin may not retry the item `row` now (409), or None: it must be FAILED, and a
    child's album must not have been cancelled (retrying would reopen an album its requester
    gave up; requesting it again fetches what it lacks)."""
    if row["status"] != Status.FAILED.value:
        return RetryRefused(409, f"queue item is {row['status']}, not FAILED")
    parent = rows.fetch(conn, row["parent_id"]) if row["parent_id"] else None
    if parent is not None and parent["status"] == Status.CANCELLED.value:
        message = "its album was cancelled; request the album again"
        return RetryRefused(409, message, "ALBUM_CANCELLED")
    return None


def admin_retry(
    conn: sqlite3.Connection, row: sqlite3.Row, admin: str, now: int
) -> list[AuditEvent]:
    """Retry the FAILED item `row` for the admin `admin` (see the module's docstring); check
    `refusal` first."""
    if row["parent_id"] is not None:
        events = [_reset(conn, row, Status.PENDING, admin, now, {})]
        parent = rows.fetch(conn, row["parent_id"])
        if parent is not None and parent["status"] != Status.IN_PROGRESS.value:
            details = {"reopened_for_child": row["id"]}
            events.append(_reset(conn, parent, Status.IN_PROGRESS, admin, now, details))
        return events
    children = rows.children(conn, row["id"])
    if not children:
        cleared = marks.is_repair(row) and marks.clear(conn, row["content_type"], row["content_id"])
        extra = {"unavailable_cleared": True} if cleared else {}
        return [_reset(conn, row, Status.PENDING, admin, now, extra)]
    failed = [c for c in children if c["status"] == Status.FAILED.value]
    events = [_reset(conn, c, Status.PENDING, admin, now, {}) for c in failed]
    details = {"children_reset": len(failed)}
    events.append(_reset(conn, row, Status.IN_PROGRESS, admin, now, details))
    return events


def _reset(
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    status: Status,
    admin: str,
    now: int,
    details: dict[str, Any],
) -> AuditEvent:
    conn.execute(_RESET, (status.value, now, row["id"]))
    if status is Status.PENDING:
        conn.execute(_RESTART, (row["id"],))
    details = {
        "previous_status": row["status"],
        "previous_error_type": row["error_type"],
        "previous_error_message": row["error_message"],
        "previous_retry_count": row["retry_count"],
        **details,
    }
    return audit.append(conn, AuditEvent.ADMIN_RETRY, row, details, user=admin, at=now)
