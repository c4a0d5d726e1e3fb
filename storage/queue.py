"""The processing side of the download queue: claim, children, completion, retries, recovery.

`QueueStore` shares download_queue.db's `Database` with `storage.queue_requests` (users) and
`storage.queue_admin` (admins). Its methods block; async code calls them through
`await store.db.run(store.method, ...)`, and every method takes `now` so tests control time.

Each transition is one write transaction together with its audit entry, the hourly activity
counters and, for a child, its album's completion (SPEC §8.5 to §8.7); the audit metric is counted
after the commit. A claim is one `UPDATE … WHERE seq = (SELECT … LIMIT 1) RETURNING *` over a
partial index holding PENDING rows only, so however many items wait in RETRY_WAITING, or wait
as new albums while the global capacity is used up, a claim reads one index entry. The
`INDEXED BY` clauses pin those plans: without statistics SQLite would rather pick the
(status, priority) index and sort.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

from storage import queue_marks
from storage.ids import content_id, image_id
from storage.queue_admin_read import capacity
from storage.queue_schema import (
    AuditEvent,
    ContentType,
    ErrorType,
    Priority,
    QueueStoreBase,
    Source,
    Status,
    append_audit,
)
from storage.queue_transitions import (
    ChildSpec,
    bump_activity,
    get_item,
    insert_children,
    record_failure,
    settle_parent,
    touch_parent,
)

__all__ = [
    "ChildSpec",
    "ChildrenCreated",
    "Claimed",
    "Completion",
    "QueueStateError",
    "QueueStore",
    "Recovery",
]


class Completion(NamedTuple):
    """A download to record as COMPLETED."""

    item_id: str
    size: int
    duration_ms: int


# The claim order of SPEC §8.5. The second WHERE repeats the terms of its partial index verbatim,
# which is what lets SQLite use that index.
_CLAIM_ANY = """UPDATE queue_items SET status = 'IN_PROGRESS', started_at = COALESCE(started_at, ?),
    last_attempt_at = ?, last_activity_at = ?, next_retry_at = NULL
    WHERE seq = (SELECT seq FROM queue_items INDEXED BY queue_claim WHERE status = 'PENDING'
        ORDER BY priority, parent_id IS NULL, created_at, seq LIMIT 1) RETURNING *"""
_CLAIM_NO_NEW_ALBUM = """UPDATE queue_items SET status = 'IN_PROGRESS',
    started_at = COALESCE(started_at, ?), last_attempt_at = ?, last_activity_at = ?,
    next_retry_at = NULL
    WHERE seq = (SELECT seq FROM queue_items INDEXED BY queue_claim_no_new_album
        WHERE status = 'PENDING' AND (parent_id IS NOT NULL OR content_type <> 'ALBUM')
        ORDER BY priority, parent_id IS NULL, created_at, seq LIMIT 1) RETURNING *"""


def _promote_due_retries(conn: sqlite3.Connection, now: int) -> int:
    cursor = conn.execute(
        """UPDATE queue_items INDEXED BY queue_retry_due SET status = 'PENDING',
            next_retry_at = NULL WHERE status = 'RETRY_WAITING' AND next_retry_at <= ?""",
        (now,),
    )
    return cursor.rowcount


def _take(
    conn: sqlite3.Connection, now: int, *, albums_allowed: bool
) -> tuple[sqlite3.Row | None, list[AuditEvent]]:
    """Claim the next item in claim order (DOWNLOAD_STARTED); see `QueueStore.claim`."""
    statement = _CLAIM_ANY if albums_allowed else _CLAIM_NO_NEW_ALBUM
    row: sqlite3.Row | None = conn.execute(statement, (now, now, now)).fetchone()
    if row is None:
        return None, []
    attempt = {"attempt": row["retry_count"] + 1}
    events = [append_audit(conn, AuditEvent.DOWNLOAD_STARTED, row, attempt, at=now)]
    if row["parent_id"] is not None:
        touch_parent(conn, row["parent_id"], now)
    return row, events


class Claimed(NamedTuple):
    item: sqlite3.Row | None  # None when nothing is ready
    capacity: dict[str, Any]  # CapacityStatus after the claim


class QueueStateError(Exception):
    """A transition was asked of an item that is not in the state it requires (a bug)."""


def _not_in_progress(item_id: str, row: sqlite3.Row | None) -> QueueStateError:
    state = "missing" if row is None else row["status"]
    return QueueStateError(f"queue item {item_id} is {state}, not IN_PROGRESS")


class ChildrenCreated(NamedTuple):
    created: int  # rows inserted now (0 on a repeat)
    total: int  # children the album has
    album_completed: bool  # an album with nothing to fetch completes at once


class Recovery(NamedTuple):
    recovered: int  # items put back to PENDING
    albums_completed: int  # albums found finished while re-checking completion


def _validate_content(content_type: ContentType, cid: str) -> None:
    if content_type in (ContentType.ALBUM_IMAGE, ContentType.ARTIST_IMAGE):
        image_id(cid)
    else:
        content_id(cid)


class QueueStore(QueueStoreBase):
    def enqueue(
        self,
        content_type: ContentType,
        cid: str,
        now: int,
        *,
        content_name: str | None = None,
        artist_name: str | None = None,
        priority: int = Priority.USER,
        source: Source = Source.USER,
        requested_by: str | None = None,
    ) -> sqlite3.Row:
        """Insert a top-level item (REQUEST_CREATED) without any limit check; return its row."""
        _validate_content(content_type, cid)
        with self.db.write() as conn:
            row: sqlite3.Row = conn.execute(
                """INSERT INTO queue_items (id, status, priority, content_type, content_id,
                    content_name, artist_name, request_source, requested_by, created_at,
                    max_retries, last_activity_at)
                    VALUES (?, 'PENDING', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
                (str(uuid.uuid4()), int(priority), content_type.value, cid, content_name,
                 artist_name, source.value, requested_by, now, self.dm.max_retries, now),
            ).fetchone()  # fmt: skip
            event = append_audit(conn, AuditEvent.REQUEST_CREATED, row, at=now)
        self._count([event])
        return row

    def promote_due_retries(self, now: int) -> int:
        """RETRY_WAITING items whose time has come go back to PENDING; return how many."""
        with self.db.write() as conn:
            return _promote_due_retries(conn, now)

    def claim_next(self, now: int, *, albums_allowed: bool) -> sqlite3.Row | None:
        """Atomically take the next PENDING item in SPEC §8.5 order (DOWNLOAD_STARTED).

        With `albums_allowed` False (global capacity used up) top-level albums stay PENDING;
        children and watchdog repairs are still claimed. `started_at` is set on the first claim
        only, so an album counts against the capacity once.
        """
        with self.db.write() as conn:
            row, events = _take(conn, now, albums_allowed=albums_allowed)
        self._count(events)
        return row

    def claim(self, now: int) -> Claimed:
        """The processor's claim, as one transaction: promote the retries that are due, then
        take the next item in claim order (as `claim_next`), a new album only while the global
        capacity allows. Returns the item (None when nothing is ready) and the capacity after
        the claim (an album started now counts).

        The claim does not wait for the disk (`Database.write(durable=False)`): a claim rolled
        back by a power cut leaves its item as the startup recovery would have made it, and
        the retries it promoted due again; the completion's commit makes it durable anyway.
        """
        with self.db.write(durable=False) as conn:
            _promote_due_retries(conn, now)
            room = capacity(conn, self.dm, now)
            row, events = _take(conn, now, albums_allowed=not room["at_capacity"])
            if row is not None and row["content_type"] == ContentType.ALBUM.value:
                room = capacity(conn, self.dm, now)
        self._count(events)
        return Claimed(row, room)

    def capacity(self, now: int) -> dict[str, Any]:
        """CapacityStatus (SPEC §8.3): albums started this UTC hour / day against the limits."""
        with self.db.read() as conn:
            return capacity(conn, self.dm, now)

    def create_children(
        self, parent_id: str, children: Sequence[ChildSpec], now: int
    ) -> ChildrenCreated:
        """Create the album's children once (a repeat inserts nothing) and mark it as having
        them; children inherit priority, source, requester and max_retries (CHILDREN_CREATED)."""
        for child in children:
            _validate_content(child.content_type, child.content_id)
        with self.db.write() as conn:
            parent = get_item(conn, parent_id)
            if parent is None:
                raise QueueStateError(f"no queue item {parent_id}")
            created = insert_children(conn, parent, children, now)
            conn.execute(
                "UPDATE queue_items SET children_created = 1, last_activity_at = ? WHERE id = ?",
                (now, parent_id),
            )
            total = conn.execute(
                "SELECT COUNT(*) FROM queue_items WHERE parent_id = ?", (parent_id,)
            ).fetchone()[0]
            details = {"created": created, "total_children": total}
            events = [append_audit(conn, AuditEvent.CHILDREN_CREATED, parent, details, at=now)]
            status, settled = settle_parent(conn, parent_id, now)
            events += settled
        self._count(events)
        return ChildrenCreated(created, total, status is Status.COMPLETED)

    def _take_in_progress(self, conn: sqlite3.Connection, item_id: str) -> sqlite3.Row:
        row = get_item(conn, item_id)
        if row is None or row["status"] != Status.IN_PROGRESS.value:
            raise _not_in_progress(item_id, row)
        return row

    def complete(self, item_id: str, size: int, duration_ms: int, now: int) -> bool:
        """IN_PROGRESS → COMPLETED (DOWNLOAD_COMPLETED), counted in the hourly activity, and
        the parent album settled in the same transaction. True if a top-level album completed.
        Content the watchdog had given up on is no longer marked unavailable.
        """
        with self.db.write() as conn:
            row = self._mark_completed(conn, Completion(item_id, size, duration_ms), now)
            kind = ContentType(row["content_type"])
            details = {"bytes": size, "duration_ms": duration_ms}
            events = [append_audit(conn, AuditEvent.DOWNLOAD_COMPLETED, row, details, at=now)]
            # A file the watchdog had given up on has come after all.
            queue_marks.clear_many(conn, [(row["content_type"], row["content_id"])])
            image = kind in (ContentType.ALBUM_IMAGE, ContentType.ARTIST_IMAGE)
            bump_activity(
                conn, now, albums=int(kind is ContentType.ALBUM),
                tracks=int(kind is ContentType.TRACK_AUDIO), images=int(image),
                size=0 if kind is ContentType.ALBUM else size,
            )  # fmt: skip
            album_done = row["parent_id"] is None and kind is ContentType.ALBUM
            if row["parent_id"] is not None:
                touch_parent(conn, row["parent_id"], now)
                status, settled = settle_parent(conn, row["parent_id"], now)
                album_done = status is Status.COMPLETED
                events += settled
            self.faults("before_commit")  # the crash tests' points on each side of the commit
        self.faults("after_commit")
        self._count(events)
        return album_done

    def _mark_completed(self, conn: sqlite3.Connection, item: Completion, now: int) -> sqlite3.Row:
        row: sqlite3.Row | None = conn.execute(
            """UPDATE queue_items SET status = 'COMPLETED', completed_at = ?,
                last_activity_at = ?, bytes_downloaded = ?, processing_duration_ms = ?,
                error_type = NULL, error_message = NULL
                WHERE id = ? AND status = 'IN_PROGRESS' RETURNING *""",
            (now, now, item.size, item.duration_ms, item.item_id),
        ).fetchone()
        if row is None:
            raise _not_in_progress(item.item_id, get_item(conn, item.item_id))
        return row

    def fail(
        self,
        item_id: str,
        error: ErrorType,
        message: str,
        now: int,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> Status:
        """Record a failed attempt per SPEC §8.6; return the item's new status.

        not_found / bad_request fail at once; rate_limited waits `retry_after` (default 5 s)
        without counting a retry; anything else waits the backoff for its retry_count, or fails
        once `max_retries` retries are spent. A child failing terminally settles its album; a
        watchdog repair failing not_found marks its content unavailable (`storage.queue_marks`).
        """
        with self.db.write() as conn:
            row = self._take_in_progress(conn, item_id)
            status, events = record_failure(
                conn, row, self.dm, error, message, now, retry_after, permanent
            )
        self._count(events)
        return status

    def release(self, item_id: str, now: int) -> bool:
        """IN_PROGRESS → PENDING without spending a retry (a download cancelled at shutdown).

        Recorded as RECOVERED_AFTER_RESTART with reason "shutdown": the item is handed back to
        the next run. A no-op (False) if the item already left IN_PROGRESS.
        """
        with self.db.write() as conn:
            row = conn.execute(
                """UPDATE queue_items SET status = 'PENDING', last_activity_at = ?
                    WHERE id = ? AND status = 'IN_PROGRESS' RETURNING *""",
                (now, item_id),
            ).fetchone()
            if row is None:
                return False
            details = {"reason": "shutdown"}
            events = [append_audit(conn, AuditEvent.RECOVERED_AFTER_RESTART, row, details, at=now)]
        self._count(events)
        return True

    def recover_after_restart(self, now: int) -> Recovery:
        """SPEC §8.7: items left IN_PROGRESS by a dead process go back to PENDING (children,
        repairs, albums without children yet); albums with children stay IN_PROGRESS and have
        their completion re-checked. Running it twice changes nothing the second time."""
        with self.db.write() as conn:
            rows = conn.execute(
                """UPDATE queue_items SET status = 'PENDING', last_activity_at = ?
                    WHERE status = 'IN_PROGRESS'
                        AND (parent_id IS NOT NULL OR children_created = 0) RETURNING *""",
                (now,),
            ).fetchall()
            details = {"reason": "restart"}
            events = [
                append_audit(conn, AuditEvent.RECOVERED_AFTER_RESTART, r, details, at=now)
                for r in rows
            ]
            albums = conn.execute(
                """SELECT id FROM queue_items WHERE status = 'IN_PROGRESS'
                    AND parent_id IS NULL AND children_created = 1"""
            ).fetchall()
            completed = 0
            for (album_id,) in albums:
                status, settled = settle_parent(conn, album_id, now)
                events += settled
                completed += status is Status.COMPLETED
        self._count(events)
        return Recovery(len(rows), completed)

    def next_retry_at(self) -> int | None:
        """When the earliest RETRY_WAITING item is due (unix seconds), if any."""
        with self.db.read() as conn:
            due: int | None = conn.execute(
                """SELECT MIN(next_retry_at) FROM queue_items INDEXED BY queue_retry_due
                    WHERE status = 'RETRY_WAITING'"""
            ).fetchone()[0]
            return due

    def status_counts(self) -> dict[tuple[str, int], int]:
        """Items per (status, priority), zeros included, for the queue-size gauge."""
        sizes = {(s.value, int(p)): 0 for s in Status for p in Priority}
        with self.db.read() as conn:
            for status, priority, count in conn.execute(
                "SELECT status, priority, COUNT(*) FROM queue_items GROUP BY status, priority"
            ):
                sizes[(status, priority)] = count
        return sizes
