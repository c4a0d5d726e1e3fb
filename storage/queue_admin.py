"""The admin side of the download queue: inspection, admin retry, watchdog repairs, retention.

`QueueAdminStore` shares download_queue.db's `Database` with the processing store
(`storage.queue`) and the user store (`storage.queue_requests`). Its methods block; async code
calls them through `await store.db.run(store.method, ...)`. Read queries live in
`storage.queue_admin_read` and `storage.queue_audit`; this module holds the writes, each one
transaction together with its audit entries, and counts the audit metric after the commit.

Admin retry (SPEC §8.10): a FAILED child goes back to PENDING with `retry_count` 0 and reopens
its parent (IN_PROGRESS); a FAILED album with children gets its FAILED children reset and goes
back to IN_PROGRESS; a FAILED top-level item without children (an album that failed before its
children existed, a watchdog repair) goes back to PENDING. Every item that changes state gets an
ADMIN_RETRY entry carrying the admin's handle and the error it had. A reset item's
`last_activity_at` becomes now, so the stale detector counts from the retry. An item sent back to
PENDING also loses `started_at`, so an album retried from scratch counts against the global
capacity when it starts again; an album reopened with its children keeps its start. Retrying a
failed watchdog repair also drops the content's unavailable mark (`storage.queue_marks`), in
the same transaction; its ADMIN_RETRY entry then says `unavailable_cleared`.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from storage import queue_admin_read as read
from storage import queue_audit, queue_marks
from storage.queue_audit import AuditFilter, AuditPage
from storage.queue_schema import (
    TERMINAL,
    AuditEvent,
    ContentType,
    Priority,
    QueueStoreBase,
    Source,
    Status,
    append_audit,
)

REPAIR_REASONS = {
    ContentType.TRACK_AUDIO: "missing_audio",
    ContentType.ALBUM_IMAGE: "missing_album_image",
    ContentType.ARTIST_IMAGE: "missing_artist_image",
}
_ACTIVE = (
    "SELECT 1 FROM queue_items WHERE content_type = ? AND content_id = ? AND status NOT IN (?, ?)"
)
_RESET = """UPDATE queue_items SET status = ?, retry_count = 0, next_retry_at = NULL,
    error_type = NULL, error_message = NULL, completed_at = NULL, last_activity_at = ?
    WHERE id = ?"""
# An item sent back to PENDING starts over: its next claim is a new start (an album counts
# against the global capacity again) and its results are measured afresh.
_RESTART = """UPDATE queue_items SET started_at = NULL, bytes_downloaded = NULL,
    processing_duration_ms = NULL WHERE id = ?"""
# Scan entries are about no item; they name the watchdog as their source.
_WATCHDOG = {
    "id": None,
    "content_type": None,
    "content_id": None,
    "requested_by": None,
    "request_source": Source.WATCHDOG.value,
}


class RetryRefused(Exception):
    """Admin retry of an item that does not exist (`status` 404) or is not FAILED (409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Repair:
    """A missing file to fetch again. `album_ids` also block the repair while one of those
    albums has a non-terminal item of its own (its download will write the file): a track's or
    a cover's album, every album a portrait's artist appears on."""

    content_type: ContentType
    content_id: str
    album_ids: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return REPAIR_REASONS[self.content_type]


class RepairFilter(NamedTuple):
    active: set[tuple[str, str]]  # (content_type, content_id) of every non-terminal item
    unavailable: set[tuple[str, str]]  # given up on, not to be queued yet
    marks: dict[tuple[str, str], int]  # every mark, with when it was made


class QueueAdminStore(QueueStoreBase):
    # -- reads -------------------------------------------------------------------------------

    def stats(self, now: int) -> dict[str, Any]:
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return read.stats(conn, self.dm, now)

    def capacity(self, now: int) -> dict[str, Any]:
        with self.db.read() as conn:
            return read.capacity(conn, self.dm, now)

    def failed(self, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        with self.db.read() as conn:
            conn.execute("BEGIN")  # total, page and positions from one snapshot
            return read.failed_items(conn, limit, offset)

    def requests(
        self,
        *,
        status: Status | None = None,
        user: str | None = None,
        top_level_only: bool = False,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return read.request_items(
                conn,
                status=status,
                user=user,
                top_level_only=top_level_only,
                limit=limit,
                offset=offset,
            )

    def activity(self, hours: int, now: int) -> dict[str, Any]:
        with self.db.read() as conn:
            return read.activity(conn, hours, now)

    def audit(self, where: AuditFilter, limit: int, offset: int) -> AuditPage:
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return queue_audit.query(conn, where, limit, offset)

    def audit_for_user(
        self, handle: str, limit: int, offset: int, since: int | None = None,
        until: int | None = None,
    ) -> AuditPage:  # fmt: skip
        where = AuditFilter(user=handle, since=since, until=until)
        return self.audit(where, limit, offset)

    def audit_for_item(self, item_id: str) -> dict[str, Any] | None:
        """`{"queue_item", "events"}` (events oldest first), or None for an unknown item."""
        with self.db.read() as conn:
            conn.execute("BEGIN")  # one snapshot for the item and its history
            row = read.get_row(conn, item_id)
            if row is None:
                return None
            item = read.shape(conn, [row])[0]
            return {"queue_item": item, "events": queue_audit.item_history(conn, item_id)}

    def stale_items(self, threshold_secs: int, now: int) -> list[read.StaleItem]:
        with self.db.read() as conn:
            return read.stale_items(conn, threshold_secs, now)

    def gauges(self, now: int) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
        """({(status, priority): size}, {"hour": albums, "day": albums})."""
        with self.db.read() as conn:
            return read.gauges(conn, self.dm, now)

    def repair_filter(self, now: int) -> RepairFilter:
        """What a scan starting at `now` must not queue, read in one snapshot: the content of
        every non-terminal item, and the content given up on within `unavailable_recheck_days`
        (`storage.queue_marks`), with every mark as read."""
        with self.db.read() as conn:
            conn.execute("BEGIN")  # a repair failing meanwhile is either active or marked
            marks = queue_marks.all_marks(conn)
            held = queue_marks.holding(marks, self.dm.unavailable_recheck_days, now)
            return RepairFilter(read.active_content(conn), held, marks)

    def unavailable_among(self, content_type: ContentType, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` marked unavailable (one statement for them all)."""
        with self.db.read() as conn:
            return queue_marks.among(conn, content_type.value, ids)

    # -- admin retry -------------------------------------------------------------------------

    def admin_retry(self, item_id: str, admin: str, now: int) -> dict[str, Any]:
        """Retry a FAILED item as SPEC §8.10 says; return its QueueItem JSON.

        Raises `RetryRefused` (404 unknown, 409 not FAILED) and changes nothing then.
        """
        with self.db.write() as conn:
            row = read.get_row(conn, item_id)
            if row is None:
                raise RetryRefused(404, f"no queue item {item_id}")
            if row["status"] != Status.FAILED.value:
                raise RetryRefused(409, f"queue item is {row['status']}, not FAILED")
            events = self._retry(conn, row, admin, now)
            item = read.shape(conn, [read.get_row(conn, item_id) or row])[0]
        self._count(events)
        return item

    def _retry(
        self, conn: sqlite3.Connection, row: sqlite3.Row, admin: str, now: int
    ) -> list[AuditEvent]:
        if row["parent_id"] is not None:
            events = [_reset(conn, row, Status.PENDING, admin, now, {})]
            parent = read.get_row(conn, row["parent_id"])
            if parent is not None and parent["status"] != Status.IN_PROGRESS.value:
                details = {"reopened_for_child": row["id"]}
                events.append(_reset(conn, parent, Status.IN_PROGRESS, admin, now, details))
            return events
        children = conn.execute(
            "SELECT * FROM queue_items WHERE parent_id = ? ORDER BY seq", (row["id"],)
        ).fetchall()
        if not children:
            cleared = queue_marks.is_repair(row) and queue_marks.clear(
                conn, row["content_type"], row["content_id"]
            )
            extra = {"unavailable_cleared": True} if cleared else {}
            return [_reset(conn, row, Status.PENDING, admin, now, extra)]
        failed = [c for c in children if c["status"] == Status.FAILED.value]
        events = [_reset(conn, c, Status.PENDING, admin, now, {}) for c in failed]
        details = {"children_reset": len(failed)}
        events.append(_reset(conn, row, Status.IN_PROGRESS, admin, now, details))
        return events

    # -- watchdog ----------------------------------------------------------------------------

    def enqueue_repair(self, content_type: ContentType, content_id: str, reason: str,
                       now: int) -> bool:  # fmt: skip
        """Queue one repair unless a non-terminal item for that content exists; True if queued."""
        repair = Repair(content_type, content_id)
        if reason != repair.reason:
            raise ValueError(f"reason {reason!r} does not match {content_type.value}")
        return self.enqueue_repairs([repair], now)[0] == 1

    def enqueue_repairs(self, repairs: Sequence[Repair], now: int) -> tuple[int, int]:
        """Queue many repairs in one transaction; return (queued, skipped as already active).

        Each is a top-level item (priority 1, source WATCHDOG) with a WATCHDOG_QUEUED entry
        whose `details.reason` names what was missing.
        """
        queued: list[AuditEvent] = []
        with self.db.write() as conn:
            for repair in repairs:
                if _active(conn, repair.content_type, repair.content_id) or any(
                    _active(conn, ContentType.ALBUM, album) for album in repair.album_ids
                ):
                    continue
                queued.append(self._insert_repair(conn, repair, now))
        self._count(queued)
        return len(queued), len(repairs) - len(queued)

    def _insert_repair(self, conn: sqlite3.Connection, repair: Repair, now: int) -> AuditEvent:
        row = conn.execute(
            """INSERT INTO queue_items (id, status, priority, content_type, content_id,
                request_source, created_at, max_retries, last_activity_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
            (str(uuid.uuid4()), Status.PENDING.value, int(Priority.WATCHDOG),
             repair.content_type.value, repair.content_id, Source.WATCHDOG.value, now,
             self.dm.max_retries, now),
        ).fetchone()  # fmt: skip
        return append_audit(
            conn, AuditEvent.WATCHDOG_QUEUED, row, {"reason": repair.reason}, at=now
        )

    def record_scan_started(self, now: int) -> None:
        with self.db.write() as conn:
            event = append_audit(conn, AuditEvent.WATCHDOG_SCAN_STARTED, _WATCHDOG, at=now)
        self._count([event])

    def forget_marks(self, marks: Mapping[tuple[str, str], int]) -> int:
        """Drop marks of content a complete scan found present, unless renewed since read."""
        with self.db.write() as conn:
            return queue_marks.forget(conn, marks)

    def record_scan_completed(self, report: dict[str, Any], now: int) -> None:
        with self.db.write() as conn:
            event = append_audit(
                conn, AuditEvent.WATCHDOG_SCAN_COMPLETED, _WATCHDOG, report, at=now
            )
        self._count([event])

    # -- retention ---------------------------------------------------------------------------

    def delete_audit_chunk(self, before: int, limit: int = 5000) -> int:
        """Delete up to `limit` entries older than `before` in one transaction; return count."""
        with self.db.write() as conn:
            return queue_audit.delete_chunk(conn, before, limit)

    def delete_audit_older_than(self, before: int, chunk: int = 5000) -> int:
        """Delete every entry older than `before`, chunk by chunk; return how many."""
        deleted = 0
        while (n := self.delete_audit_chunk(before, chunk)) > 0:
            deleted += n
        return deleted


def _active(conn: sqlite3.Connection, content_type: ContentType, content_id: str) -> bool:
    found = conn.execute(_ACTIVE, (content_type.value, content_id, *TERMINAL)).fetchone()
    return found is not None


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
    return append_audit(conn, AuditEvent.ADMIN_RETRY, row, details, user=admin, at=now)
