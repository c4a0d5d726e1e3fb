"""The admins' and monitors' store: inspection, admin retry and cancel, the pause, priorities
and bulk actions (`storage.queue.controls`), watchdog repairs, retention.

Reads come from `storage.queue.reads`, `storage.queue.activity` and `storage.queue.audit`, each
list and its total from one snapshot; writes are one transaction each with their audit entries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from storage.queue import activity, audit, controls, marks, pause, reads, retries, rows, transitions
from storage.queue.audit import AuditFilter, AuditPage
from storage.queue.base import StoreBase
from storage.queue.controls import BulkAction, BulkFilter, BulkOutcome, PriorityRefused
from storage.queue.limits import capacity
from storage.queue.model import AuditEvent, ContentType, Priority, Source, Status, at_or_now
from storage.queue.reads import StaleItem
from storage.queue.retries import RetryRefused
from storage.queue.rows import NewItem
from storage.queue.transitions import Cancelled, CancelRefused

REPAIR_REASONS = {
    ContentType.TRACK_AUDIO: "missing_audio",
    ContentType.ALBUM_IMAGE: "missing_album_image",
    ContentType.ARTIST_IMAGE: "missing_artist_image",
}
# Scan entries are about no item; they name the watchdog as their source.
_WATCHDOG = {
    "id": None,
    "content_type": None,
    "content_id": None,
    "requested_by": None,
    "request_source": Source.WATCHDOG.value,
}


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


class QueueAdminStore(StoreBase):
    # -- reads -------------------------------------------------------------------------------

    def stats(self, now: int) -> dict[str, Any]:
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return reads.stats(conn, self.dm, now)

    def failed(
        self, limit: int, offset: int, now: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        with self.db.read() as conn:
            conn.execute("BEGIN")  # total, page and positions from one snapshot
            return reads.failed_items(conn, limit, offset, dm=self.dm, now=at_or_now(now))

    def requests(
        self,
        *,
        status: Status | None = None,
        user: str | None = None,
        top_level_only: bool = False,
        limit: int = 50,
        offset: int = 0,
        now: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return reads.request_items(
                conn, status=status, user=user, top_level_only=top_level_only, limit=limit,
                offset=offset, dm=self.dm, now=at_or_now(now),
            )  # fmt: skip

    def activity(self, hours: int, now: int) -> dict[str, Any]:
        with self.db.read() as conn:
            return activity.hourly(conn, hours, now)

    def audit(self, where: AuditFilter, limit: int, offset: int) -> AuditPage:
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return audit.query(conn, where, limit, offset)

    def audit_for_user(
        self, handle: str, limit: int, offset: int, since: int | None = None,
        until: int | None = None,
    ) -> AuditPage:  # fmt: skip
        return self.audit(AuditFilter(user=handle, since=since, until=until), limit, offset)

    def audit_for_item(self, item_id: str, now: int | None = None) -> dict[str, Any] | None:
        """`{"queue_item", "events"}` (events oldest first), or None for an unknown item."""
        with self.db.read() as conn:
            conn.execute("BEGIN")  # one snapshot for the item and its history
            row = rows.fetch(conn, item_id)
            if row is None:
                return None
            (item,) = reads.shape(conn, [row], dm=self.dm, now=at_or_now(now))
            return {"queue_item": item, "events": audit.item_history(conn, item_id)}

    def stale_items(self, threshold_secs: int, now: int) -> list[StaleItem]:
        with self.db.read() as conn:
            return reads.stale_items(conn, threshold_secs, now)

    def gauges(self, now: int) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
        """({(status, priority): size}, {"hour": albums, "day": albums}) from one snapshot."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            room = capacity(conn, self.dm, now)
            used = {"hour": room["albums_this_hour"], "day": room["albums_today"]}
            return reads.status_counts(conn), used

    def repair_filter(self, now: int) -> RepairFilter:
        """What a scan starting at `now` must not queue, read in one snapshot: the content of
        every non-terminal item, and the content given up on within `unavailable_recheck_days`
        (`storage.queue.marks`), with every mark as read."""
        with self.db.read() as conn:
            conn.execute("BEGIN")  # a repair failing meanwhile is either active or marked
            found = marks.all_marks(conn)
            held = marks.holding(found, self.dm.unavailable_recheck_days, now)
            return RepairFilter(reads.active_content(conn), held, found)

    def unavailable_among(self, content_type: ContentType, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` marked unavailable (one statement for them all)."""
        with self.db.read() as conn:
            return marks.among(conn, content_type.value, ids)

    # -- admin retry -------------------------------------------------------------------------

    def admin_retry(self, item_id: str, admin: str, now: int) -> dict[str, Any]:
        """Retry a FAILED item as SPEC §8.10 says (`retries.admin_retry`); return its QueueItem
        JSON. Raises `RetryRefused` (404 unknown, 409 not FAILED or a child of a cancelled
        album) and changes nothing then."""
        with self.db.write() as conn:
            row = rows.fetch(conn, item_id)
            if row is None:
                raise RetryRefused(404, f"no queue item {item_id}")
            refused = retries.refusal(conn, row)
            if refused is not None:
                raise refused
            events = retries.admin_retry(conn, row, admin, now)
            (item,) = reads.shape(conn, [rows.fetch(conn, item_id) or row], dm=self.dm, now=now)
        self.on_audit(events)
        return item

    # -- admin cancel ------------------------------------------------------------------------

    def admin_cancel(self, item_id: str, admin: str, now: int) -> tuple[dict[str, Any], Cancelled]:
        """Cancel any item, a child alone included, for the admin `admin` (SPEC §8.10), as a
        user cancels their own (`transitions.cancel`); its QueueItem JSON after, and what was
        cancelled. Raises `CancelRefused` (404 unknown, 409 already ended)."""
        with self.db.write() as conn:
            row = rows.fetch(conn, item_id)
            if row is None:
                raise CancelRefused(404, f"no queue item {item_id}")
            cancelled, events = transitions.cancel(conn, row, admin, now)
            (item,) = reads.shape(conn, [rows.fetch(conn, item_id) or row], dm=self.dm, now=now)
        self.on_audit(events)
        return item, cancelled

    # -- pause -------------------------------------------------------------------------------

    def pause_state(self) -> dict[str, Any]:
        """`{paused, paused_by, paused_at, reason}` (`storage.queue.pause`)."""
        with self.db.read() as conn:
            return pause.state(conn)

    def pause(self, admin: str, reason: str | None, now: int) -> dict[str, Any]:
        """Pause the queue (QUEUE_PAUSED), or keep the pause there is; the state after."""
        with self.db.write() as conn:
            paused, events = pause.pause(conn, admin, reason, now)
        self.on_audit(events)
        return paused

    def resume(self, admin: str, now: int) -> bool:
        """Resume the queue (QUEUE_RESUMED); False if it was not paused."""
        with self.db.write() as conn:
            events = pause.resume(conn, admin, now)
        self.on_audit(events)
        return bool(events)

    # -- priorities and bulk actions --------------------------------------------------------

    def set_priority(self, item_id: str, priority: int, admin: str, now: int) -> dict[str, Any]:
        """Move a top-level item and its unfinished children to `priority` for the admin `admin`
        (`controls.set_priority`); its QueueItem JSON after. Raises `PriorityRefused` (404
        unknown, 409 ended or a child) and changes nothing then."""
        with self.db.write() as conn:
            row = rows.fetch(conn, item_id)
            if row is None:
                raise PriorityRefused(404, f"no queue item {item_id}", "NOT_FOUND")
            events = controls.set_priority(conn, row, priority, admin, now)
            (item,) = reads.shape(conn, [rows.fetch(conn, item_id) or row], dm=self.dm, now=now)
        self.on_audit(events)
        return item

    def bulk(
        self, action: BulkAction, where: BulkFilter, admin: str, now: int, *,
        priority: int | None = None, dry_run: bool = False,
    ) -> BulkOutcome:  # fmt: skip
        """Apply `action` to every item `where` selects, in one transaction (`controls.bulk`).
        `dry_run` rehearses it: the same transaction, rolled back, so the outcome says what the
        action would match and change now, and nothing changes (no audit entry either)."""
        try:
            with self.db.write() as conn:
                outcome = controls.bulk(conn, action, where, admin, now, priority)
                if dry_run:
                    raise _Rehearsal(outcome)  # rolls the transaction back
        except _Rehearsal as rehearsal:
            return rehearsal.outcome._replace(cancelled=[], album_completed=False, events=[])
        self.on_audit(outcome.events)
        return outcome

    # -- watchdog ----------------------------------------------------------------------------

    def enqueue_repairs(self, repairs: Sequence[Repair], now: int) -> tuple[int, int]:
        """Queue many repairs in one transaction, each unless a non-terminal item for its
        content or one of its albums exists; return (queued, skipped as already active).

        Each is a top-level item (priority 1, source WATCHDOG) with a WATCHDOG_QUEUED entry
        whose `details.reason` names what was missing.
        """
        queued: list[AuditEvent] = []
        with self.db.write() as conn:
            for repair in repairs:
                if not _blocked(conn, repair):
                    queued.append(self._insert_repair(conn, repair, now))
        self.on_audit(queued)
        return len(queued), len(repairs) - len(queued)

    def _insert_repair(self, conn: sqlite3.Connection, repair: Repair, now: int) -> AuditEvent:
        item = NewItem(repair.content_type, repair.content_id, Priority.WATCHDOG, Source.WATCHDOG)
        row = rows.insert(conn, item, self.dm.max_retries, now)
        details = {"reason": repair.reason}
        return audit.append(conn, AuditEvent.WATCHDOG_QUEUED, row, details, at=now)

    def record_scan_started(self, now: int) -> None:
        with self.db.write() as conn:
            event = audit.append(conn, AuditEvent.WATCHDOG_SCAN_STARTED, _WATCHDOG, at=now)
        self.on_audit([event])

    def forget_marks(self, found: Mapping[tuple[str, str], int]) -> int:
        """Drop marks of content a complete scan found present, unless renewed since read."""
        with self.db.write() as conn:
            return marks.forget(conn, found)

    def record_scan_completed(self, report: dict[str, Any], now: int) -> None:
        with self.db.write() as conn:
            event = audit.append(
                conn, AuditEvent.WATCHDOG_SCAN_COMPLETED, _WATCHDOG, report, at=now
            )
        self.on_audit([event])

    # -- retention ---------------------------------------------------------------------------

    def delete_audit_chunk(self, before: int, limit: int = 5000) -> int:
        """Delete up to `limit` entries older than `before` in one transaction; return count.
        Retention calls it until it returns 0, so the write lock is never held for long."""
        with self.db.write() as conn:
            return audit.delete_chunk(conn, before, limit)


class _Rehearsal(Exception):
    """Leaves a dry run's transaction, which rolls it back, carrying what it would have done."""

    def __init__(self, outcome: BulkOutcome) -> None:
        super().__init__("dry run")
        self.outcome = outcome


def _blocked(conn: sqlite3.Connection, repair: Repair) -> bool:
    return rows.is_active(conn, repair.content_type, repair.content_id) or any(
        rows.is_active(conn, ContentType.ALBUM, album) for album in repair.album_ids
    )
