"""State changes of queue items, each inside the caller's write transaction (SPEC §8.3, §8.5 to
§8.7).

A claim, an album's children, a completion, a release, a cancellation and the recovery after a
restart are functions of the connection of a `Database.write()` block. Each changes its rows,
appends its audit entries (`storage.queue.audit`) and counts the hourly activity
(`storage.queue.activity`) in that transaction, settles the album of a child that moved, and
returns the audit events it appended so the store can report them once the transaction has
committed. Failed attempts and retries are `storage.queue.retries`.

A cancelled item is CANCELLED, terminal, at once, with its unfinished children; the processor
may still be working on one of them. Its outcome is then not recorded: a completion or a
failure of an item cancelled meanwhile changes nothing (and is no bug), and an album cancelled
while its step ran gets no children.

A claim is one `UPDATE … WHERE seq = (SELECT … LIMIT 1) RETURNING *` over a partial index holding
PENDING rows only, so however many items wait in RETRY_WAITING, or wait as new albums while the
global capacity is used up, a claim reads one index entry. The `INDEXED BY` clauses pin those
plans: without statistics SQLite would rather pick the (status, priority) index and sort.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from storage.queue import activity, audit, limits, marks, notices, pause, rows
from storage.queue.model import (
    TERMINAL,
    AuditEvent,
    ChildSpec,
    ContentType,
    DownloadManagerConfig,
    ErrorType,
    Source,
    Status,
)
from storage.queue.rows import NewItem

# The claim order of SPEC §8.5. The subquery's WHERE repeats the terms of its partial index
# verbatim, which is what lets SQLite use that index.
_CLAIM = """UPDATE queue_items SET status = 'IN_PROGRESS', started_at = COALESCE(started_at, ?),
    last_attempt_at = ?, last_activity_at = ?, next_retry_at = NULL
    WHERE seq = (SELECT seq FROM queue_items INDEXED BY {index} WHERE {where}
        ORDER BY priority, parent_id IS NULL, created_at, seq LIMIT 1) RETURNING *"""
# Constant fragments only; every value is a parameter.
_CLAIM_ANY = _CLAIM.format(index="queue_claim", where="status = 'PENDING'")
_CLAIM_NO_NEW_ALBUM = _CLAIM.format(
    index="queue_claim_no_new_album",
    where="status = 'PENDING' AND (parent_id IS NOT NULL OR content_type <> 'ALBUM')",
)
_PROMOTE = """UPDATE queue_items INDEXED BY queue_retry_due SET status = 'PENDING',
    next_retry_at = NULL WHERE status = 'RETRY_WAITING' AND next_retry_at <= ?"""
_COMPLETE = """UPDATE queue_items SET status = 'COMPLETED', completed_at = ?, last_activity_at = ?,
    bytes_downloaded = ?, processing_duration_ms = ?, error_type = NULL, error_message = NULL
    WHERE id = ? AND status = 'IN_PROGRESS' RETURNING *"""
_RELEASE = """UPDATE queue_items SET status = 'PENDING', last_activity_at = ?
    WHERE id = ? AND status = 'IN_PROGRESS' RETURNING *"""
_RECOVER = """UPDATE queue_items SET status = 'PENDING', last_activity_at = ?
    WHERE status = 'IN_PROGRESS' AND (parent_id IS NOT NULL OR children_created = 0)
    RETURNING *"""
_ALBUMS_WITH_CHILDREN = """SELECT id FROM queue_items
    WHERE status = 'IN_PROGRESS' AND parent_id IS NULL AND children_created = 1"""
_CHILDREN_DONE = """SELECT COUNT(*), COALESCE(SUM(status = 'COMPLETED'), 0),
    COALESCE(SUM(status = 'FAILED'), 0), COALESCE(SUM(status = 'CANCELLED'), 0),
    COALESCE(SUM(CASE WHEN status = 'COMPLETED' THEN bytes_downloaded END), 0)
    FROM queue_items WHERE parent_id = ?"""
# An album ends with its last child: its bytes are its children's, its time since it started.
_SETTLE = """UPDATE queue_items SET status = ?, completed_at = ?, last_activity_at = ?,
    bytes_downloaded = ?, error_type = ?, error_message = ?, next_retry_at = NULL,
    processing_duration_ms = (? - COALESCE(started_at, ?)) * 1000
    WHERE id = ? RETURNING *"""
_LAST_CHILD_ERROR = """SELECT error_type FROM queue_items WHERE parent_id = ? AND status = 'FAILED'
    ORDER BY completed_at DESC, seq DESC LIMIT 1"""
# A child whose file is already here: done as it is made, nothing fetched, nothing counted.
_PRESENT = """UPDATE queue_items SET status = 'COMPLETED', completed_at = ?, last_activity_at = ?,
    bytes_downloaded = 0, processing_duration_ms = 0 WHERE id = ? RETURNING *"""
# The one item asked for, then its children (through `queue_parent`); each unless it has ended.
_CANCEL = """UPDATE queue_items SET status = 'CANCELLED', completed_at = ?, last_activity_at = ?,
    next_retry_at = NULL WHERE {which} = ? AND status NOT IN (?, ?, ?) RETURNING *"""
_CANCEL_ITEM = _CANCEL.format(which="id")
_CANCEL_CHILDREN = _CANCEL.format(which="parent_id")


class QueueStateError(Exception):
    """A transition was asked of an item that is not in the state it requires (a bug)."""


class CancelRefused(Exception):
    """A cancel of an item that is not there for the caller (`status` 404) or has already
    ended (409); nothing changed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def in_progress(conn: sqlite3.Connection, item_id: str) -> sqlite3.Row | None:
    """The IN_PROGRESS item `item_id`, or None if it was cancelled while the processor worked on
    it; `QueueStateError` if it is missing or in any other state."""
    row = rows.fetch(conn, item_id)
    if row is not None and row["status"] == Status.IN_PROGRESS.value:
        return row
    if row is not None and row["status"] == Status.CANCELLED.value:
        return None
    raise _not_in_progress(item_id, row)


def _not_in_progress(item_id: str, row: sqlite3.Row | None) -> QueueStateError:
    state = "missing" if row is None else row["status"]
    return QueueStateError(f"queue item {item_id} is {state}, not IN_PROGRESS")


class Claim(NamedTuple):
    item: sqlite3.Row | None  # None when nothing is ready, or the queue is paused
    capacity: dict[str, Any]  # CapacityStatus after the claim (an album started now counts)
    paused: bool  # an admin has paused the queue: nothing was taken
    events: list[AuditEvent]


def claim(conn: sqlite3.Connection, dm: DownloadManagerConfig, now: int) -> Claim:
    """The processor's claim: promote the retries that are due, then, unless an admin paused
    the queue, take the next PENDING item in SPEC §8.5 order (DOWNLOAD_STARTED), a new album
    only while the global capacity allows (children and watchdog repairs always).

    `started_at` is set on the first claim only, so an album counts against the capacity once.
    Due retries are promoted even while paused, so the processor's next wake-up is never a
    retry already due (it would wake at once, again and again, until the resume).
    """
    conn.execute(_PROMOTE, (now,))
    room = limits.capacity(conn, dm, now)
    if pause.is_paused(conn):
        return Claim(None, room, True, [])
    statement = _CLAIM_NO_NEW_ALBUM if room["at_capacity"] else _CLAIM_ANY
    row: sqlite3.Row | None = conn.execute(statement, (now, now, now)).fetchone()
    if row is None:
        return Claim(None, room, False, [])
    attempt = {"attempt": row["retry_count"] + 1}
    events = [audit.append(conn, AuditEvent.DOWNLOAD_STARTED, row, attempt, at=now)]
    if row["parent_id"] is not None:
        touch_parent(conn, row["parent_id"], now)
    elif row["content_type"] == ContentType.ALBUM.value:
        room = limits.capacity(conn, dm, now)
        if room["at_capacity"]:  # this album used up the last slot
            notices.reached_capacity(conn, room, now)
    return Claim(row, room, False, events)


class ChildrenCreated(NamedTuple):
    created: int  # rows inserted now (0 on a repeat)
    total: int  # children the album has
    album_completed: bool  # an album with nothing to fetch completes at once


def add_children(
    conn: sqlite3.Connection, parent_id: str, children: Sequence[ChildSpec], now: int
) -> tuple[ChildrenCreated, list[AuditEvent]]:
    """Create the album's children once (a repeat inserts nothing) and mark it as having them
    (CHILDREN_CREATED); they inherit its priority, source, requester and max_retries. A
    `present` child is COMPLETED at once (DOWNLOAD_COMPLETED, 0 bytes). An album cancelled
    while its step ran gets none."""
    parent = rows.fetch(conn, parent_id)
    if parent is None:
        raise QueueStateError(f"no queue item {parent_id}")
    if parent["status"] == Status.CANCELLED.value:
        return ChildrenCreated(0, 0, False), []
    created = 0
    events: list[AuditEvent] = []
    for child in children:
        item = NewItem(
            child.content_type, child.content_id, parent["priority"],
            Source(parent["request_source"]), parent["requested_by"], child.content_name,
            child.artist_name, parent_id,
        )  # fmt: skip
        row = rows.insert(conn, item, parent["max_retries"], now)
        created += row is not None
        if row is not None and child.present:
            events.append(_already_here(conn, row, now))
    conn.execute(
        "UPDATE queue_items SET children_created = 1, last_activity_at = ? WHERE id = ?",
        (now, parent_id),
    )
    total = conn.execute(
        "SELECT COUNT(*) FROM queue_items WHERE parent_id = ?", (parent_id,)
    ).fetchone()[0]
    details = {"created": created, "total_children": total, "already_present": len(events)}
    events.insert(0, audit.append(conn, AuditEvent.CHILDREN_CREATED, parent, details, at=now))
    status, settled = settle_parent(conn, parent_id, now)
    return ChildrenCreated(created, total, status is Status.COMPLETED), events + settled


def _already_here(conn: sqlite3.Connection, child: sqlite3.Row, now: int) -> AuditEvent:
    row = conn.execute(_PRESENT, (now, now, child["id"])).fetchone()
    details = {"bytes": 0, "already_present": True}
    return audit.append(conn, AuditEvent.DOWNLOAD_COMPLETED, row, details, at=now)


def complete(
    conn: sqlite3.Connection, item_id: str, size: int, duration_ms: int, now: int
) -> tuple[bool, list[AuditEvent]]:
    """IN_PROGRESS → COMPLETED (DOWNLOAD_COMPLETED), counted in the hourly activity, its album
    settled; True if a top-level album completed. Content the watchdog had given up on is no
    longer marked unavailable: the file has come after all. An item cancelled meanwhile stays
    as it is (False, no events)."""
    row: sqlite3.Row | None = conn.execute(
        _COMPLETE, (now, now, size, duration_ms, item_id)
    ).fetchone()
    if row is None:
        in_progress(conn, item_id)  # raises unless the item was cancelled meanwhile
        return False, []
    details = {"bytes": size, "duration_ms": duration_ms}
    events = [audit.append(conn, AuditEvent.DOWNLOAD_COMPLETED, row, details, at=now)]
    marks.clear(conn, row["content_type"], row["content_id"])
    activity.count_completion(conn, row["content_type"], size, now)
    if row["parent_id"] is None:
        return row["content_type"] == ContentType.ALBUM.value, events
    touch_parent(conn, row["parent_id"], now)
    status, settled = settle_parent(conn, row["parent_id"], now)
    return status is Status.COMPLETED, events + settled


def release(conn: sqlite3.Connection, item_id: str, now: int) -> list[AuditEvent]:
    """IN_PROGRESS → PENDING without spending a retry, as RECOVERED_AFTER_RESTART with reason
    "shutdown"; no events when the item had already left IN_PROGRESS."""
    row = conn.execute(_RELEASE, (now, item_id)).fetchone()
    if row is None:
        return []
    details = {"reason": "shutdown"}
    return [audit.append(conn, AuditEvent.RECOVERED_AFTER_RESTART, row, details, at=now)]


class Cancelled(NamedTuple):
    ids: list[str]  # the items now CANCELLED: the one asked for, then its unfinished children
    album_completed: bool  # a child cancelled alone was its album's last: the album COMPLETED


def cancel(
    conn: sqlite3.Connection, row: sqlite3.Row, by: str, now: int
) -> tuple[Cancelled, list[AuditEvent]]:
    """Cancel the item `row` (read in this transaction) and its unfinished children (SPEC §8.3
    rev 2): each CANCELLED with a REQUEST_CANCELLED entry whose user is `by`, the item's
    naming how many items it took. A child cancelled alone settles its album. Raises
    `CancelRefused` (409) if the item has already ended; nothing changes then."""
    item = conn.execute(_CANCEL_ITEM, (now, now, row["id"], *TERMINAL)).fetchone()
    if item is None:
        raise CancelRefused(409, f"queue item is {row['status']}: it has already finished")
    children = conn.execute(_CANCEL_CHILDREN, (now, now, row["id"], *TERMINAL)).fetchall()
    details = {"cancelled_by": by, "items": 1 + len(children), "previous_status": row["status"]}
    events = [audit.append(conn, AuditEvent.REQUEST_CANCELLED, item, details, user=by, at=now)]
    for child in children:
        details = {"cancelled_by": by, "with_parent": row["id"]}
        events.append(
            audit.append(conn, AuditEvent.REQUEST_CANCELLED, child, details, user=by, at=now)
        )
    status = None
    if row["parent_id"] is not None:
        touch_parent(conn, row["parent_id"], now)
        status, settled = settle_parent(conn, row["parent_id"], now)
        events += settled
    ids = [item["id"], *(child["id"] for child in children)]
    return Cancelled(ids, status is Status.COMPLETED), events


class Recovery(NamedTuple):
    recovered: int  # items put back to PENDING
    albums_completed: int  # albums found finished while re-checking completion


def recover(conn: sqlite3.Connection, now: int) -> tuple[Recovery, list[AuditEvent]]:
    """SPEC §8.7: items left IN_PROGRESS by a dead process go back to PENDING (children,
    repairs, albums without children yet); albums with children stay IN_PROGRESS and have their
    completion re-checked. Running it twice changes nothing the second time."""
    recovered = conn.execute(_RECOVER, (now,)).fetchall()
    details = {"reason": "restart"}
    events = [
        audit.append(conn, AuditEvent.RECOVERED_AFTER_RESTART, row, details, at=now)
        for row in recovered
    ]
    completed = 0
    for (album_id,) in conn.execute(_ALBUMS_WITH_CHILDREN).fetchall():
        status, settled = settle_parent(conn, album_id, now)
        events += settled
        completed += status is Status.COMPLETED
    return Recovery(len(recovered), completed), events


def touch_parent(conn: sqlite3.Connection, parent_id: str, now: int) -> None:
    """A child moved: the album shows life (the stale detector counts from here)."""
    conn.execute("UPDATE queue_items SET last_activity_at = ? WHERE id = ?", (now, parent_id))


def settle_parent(
    conn: sqlite3.Connection, parent_id: str, now: int
) -> tuple[Status | None, list[AuditEvent]]:
    """Complete or fail an IN_PROGRESS album whose children are all terminal.

    None FAILED → COMPLETED with the completed children's bytes summed (children cancelled
    alone are counted in the entry's `cancelled`); any FAILED → FAILED with "<k> of <n>
    children failed" and the error type of the last child that failed. Returns the album's new
    status (None when it is still waiting or not IN_PROGRESS) and the audit events.
    """
    parent = rows.fetch(conn, parent_id)
    if parent is None or parent["status"] != Status.IN_PROGRESS.value:
        return None, []
    total, done, failed, cancelled, size = conn.execute(_CHILDREN_DONE, (parent_id,)).fetchone()
    if done + failed + cancelled < total:
        return None, []
    if failed == 0:
        row = conn.execute(
            _SETTLE, (Status.COMPLETED.value, now, now, size, None, None, now, now, parent_id)
        ).fetchone()
        activity.count_completion(conn, row["content_type"], size, now)
        details = {"bytes": size, "children": total}
        if cancelled:
            details["cancelled"] = cancelled
        return Status.COMPLETED, [
            audit.append(conn, AuditEvent.DOWNLOAD_COMPLETED, row, details, at=now)
        ]
    message = f"{failed} of {total} children failed"
    error = conn.execute(_LAST_CHILD_ERROR, (parent_id,)).fetchone()[0] or ErrorType.UNKNOWN.value
    row = conn.execute(
        _SETTLE, (Status.FAILED.value, now, now, size, error, message, now, now, parent_id)
    ).fetchone()
    activity.bump(conn, now, failed=1)
    details = {"error_type": row["error_type"], "error_message": message}
    return Status.FAILED, [audit.append(conn, AuditEvent.DOWNLOAD_FAILED, row, details, at=now)]
