"""An admin's controls over queued items (SPEC §8.10 rev 2): a priority change, and the bulk
actions (retry, cancel, set_priority) over the items a filter selects. The functions run inside
the caller's write transaction and return the audit events they appended.

Priority: a top-level item that has not ended moves to the new priority (1 is claimed first, 9
last) with its children that have not ended, each with a PRIORITY_CHANGED entry carrying the
admin's handle and the old and new priority. Claim order follows at once (claims read
`priority` through the `queue_claim` index), and so do queue positions: the `queue_rank`
triggers of migration 3 fire on an UPDATE of `priority` and move a waiting item's counts to its
new band in the same statement. A child is refused (it moves with its album), and so is an item
that has ended. Giving an item the priority it has changes nothing and writes no entry.

Bulk: the filter's fields combine with AND, and the selection is restricted to the states the
action can change (FAILED for retry; PENDING, IN_PROGRESS and RETRY_WAITING for cancel and
set_priority, top-level items only for set_priority), through the `queue_status` index: its cost
follows the items in those states, never the history of completed ones. Each selected item then
goes through the one-item transition, top-level items first, each read again first, so one that
an earlier step already changed (a child reset or cancelled with its album) is skipped, and so
is one the single action would refuse (a failed child of a cancelled album). `matched` counts the
selected items; `changed` counts the items the action changed, each with its own entry carrying
the admin's handle: an album's children cancelled with it and an album reopened by its child's
retry count too.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from storage.queue import audit, retries, rows, transitions
from storage.queue.model import TERMINAL, AuditEvent, ContentType, ErrorType, Source, Status

_MOVE_ITEM = "UPDATE queue_items SET priority = ? WHERE id = ? RETURNING *"
_CHILDREN_TO_MOVE = """SELECT * FROM queue_items
    WHERE parent_id = ? AND status NOT IN (?, ?, ?) AND priority <> ? ORDER BY seq"""
_MOVE_CHILDREN = """UPDATE queue_items SET priority = ?
    WHERE parent_id = ? AND status NOT IN (?, ?, ?) AND priority <> ?"""
# Pinned to the status index: with a user filter SQLite might otherwise take `queue_user`, which
# walks that user's whole history. Constant fragments only; every value is a parameter.
_SELECT = """SELECT id FROM queue_items INDEXED BY queue_status WHERE {where}
    ORDER BY parent_id IS NOT NULL, seq"""
_ACTIVE = (Status.PENDING, Status.IN_PROGRESS, Status.RETRY_WAITING)


class PriorityRefused(Exception):
    """A priority change of an item that does not exist (`status` 404), has ended (409
    ALREADY_FINISHED) or is an album's child (409 CHILD_ITEM); nothing changed."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def set_priority(
    conn: sqlite3.Connection, row: sqlite3.Row, priority: int, admin: str, now: int
) -> list[AuditEvent]:
    """Move the top-level item `row` (read in this transaction) and its children that have not
    ended to `priority` (see the module's docstring); the item's entry says how many children
    moved. Raises `PriorityRefused` (409) for an item that has ended or a child."""
    if row["status"] in TERMINAL:
        message = f"queue item is {row['status']}: it has already finished"
        raise PriorityRefused(409, message, "ALREADY_FINISHED")
    if row["parent_id"] is not None:
        message = f"a child moves with its album: change the priority of {row['parent_id']}"
        raise PriorityRefused(409, message, "CHILD_ITEM")
    children = conn.execute(_CHILDREN_TO_MOVE, (row["id"], *TERMINAL, priority)).fetchall()
    events = []
    if row["priority"] != priority:
        item = conn.execute(_MOVE_ITEM, (priority, row["id"])).fetchone()
        details = {"old_priority": row["priority"], "new_priority": priority,
                   "children": len(children)}  # fmt: skip
        events.append(_entry(conn, item, details, admin, now))
    if children:
        conn.execute(_MOVE_CHILDREN, (priority, row["id"], *TERMINAL, priority))
    for child in children:
        details = {"old_priority": child["priority"], "new_priority": priority,
                   "with_parent": row["id"]}  # fmt: skip
        events.append(_entry(conn, child, details, admin, now))
    return events


def _entry(
    conn: sqlite3.Connection, item: sqlite3.Row, details: dict[str, Any], admin: str, now: int
) -> AuditEvent:
    return audit.append(conn, AuditEvent.PRIORITY_CHANGED, item, details, user=admin, at=now)


class BulkAction(StrEnum):
    RETRY = "retry"
    CANCEL = "cancel"
    SET_PRIORITY = "set_priority"


# The states each action can change.
_ACTS_ON = {
    BulkAction.RETRY: (Status.FAILED,),
    BulkAction.CANCEL: _ACTIVE,
    BulkAction.SET_PRIORITY: _ACTIVE,
}


@dataclass(frozen=True)
class BulkFilter:
    """Which items a bulk action selects; a field left None selects on nothing. `user` is the
    requester's handle; `created_after` is inclusive and `created_before` exclusive (unix
    seconds), so consecutive windows never share an item."""

    status: Status | None = None
    user: str | None = None
    content_type: ContentType | None = None
    error_type: ErrorType | None = None
    request_source: Source | None = None
    created_after: int | None = None
    created_before: int | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, field.name) is None for field in dataclasses.fields(self))

    def where(self, action: BulkAction) -> tuple[str, list[Any]] | None:
        """The WHERE clause of the selection for `action`, and its parameters; None when the
        filter's status is one the action cannot change (nothing is selected)."""
        states = [s.value for s in _ACTS_ON[action] if self.status in (None, s)]
        if not states:
            return None
        fragments: list[tuple[str, Any]] = [
            ("requested_by = ?", self.user),
            ("content_type = ?", self.content_type.value if self.content_type else None),
            ("error_type = ?", self.error_type.value if self.error_type else None),
            ("request_source = ?", self.request_source.value if self.request_source else None),
            ("created_at >= ?", self.created_after),
            ("created_at < ?", self.created_before),
        ]
        used = [(sql, value) for sql, value in fragments if value is not None]
        clauses = [f"status IN ({', '.join('?' for _ in states)})", *(sql for sql, _ in used)]
        if action is BulkAction.SET_PRIORITY:
            clauses.append("parent_id IS NULL")  # children move with their album
        return " AND ".join(clauses), [*states, *(value for _, value in used)]


class BulkOutcome(NamedTuple):
    matched: int  # items the filter selected among those the action can change
    changed: int  # items the action changed, one audit entry each
    cancelled: list[str]  # ids now CANCELLED, for the processor to abandon
    album_completed: bool  # a child cancelled alone was its album's last: the album COMPLETED
    events: list[AuditEvent]


def selection(action: BulkAction, where: BulkFilter) -> tuple[str, list[Any]] | None:
    """The statement selecting the ids of the items `where` selects for `action`, and its
    parameters; None when it selects nothing."""
    clause = where.where(action)
    if clause is None:
        return None
    sql, params = clause
    return _SELECT.format(where=sql), params


def select(conn: sqlite3.Connection, action: BulkAction, where: BulkFilter) -> list[str]:
    """The ids `where` selects for `action`, top-level items first, then in creation order."""
    statement = selection(action, where)
    if statement is None:
        return []
    return [row[0] for row in conn.execute(*statement)]


def bulk(
    conn: sqlite3.Connection,
    action: BulkAction,
    where: BulkFilter,
    admin: str,
    now: int,
    priority: int | None = None,
) -> BulkOutcome:
    """Apply `action` to every item `where` selects for the admin `admin` (see the module's
    docstring). `priority` is set_priority's, required for it."""
    if action is BulkAction.SET_PRIORITY and priority is None:
        raise ValueError("set_priority needs a priority")
    selected = select(conn, action, where)
    states = {s.value for s in _ACTS_ON[action]}
    changed, cancelled, album_completed = 0, [], False
    events: list[AuditEvent] = []
    for item_id in selected:
        row = rows.fetch(conn, item_id)  # again: an earlier step may have changed it
        if row is None or row["status"] not in states:
            continue
        if action is BulkAction.RETRY:
            if retries.refusal(conn, row) is not None:
                continue
            done = retries.admin_retry(conn, row, admin, now)
            changed += len(done)  # one ADMIN_RETRY per item reset, its album's included
        elif action is BulkAction.CANCEL:
            took, done = transitions.cancel(conn, row, admin, now)
            cancelled += took.ids
            changed += len(took.ids)
            album_completed |= took.album_completed
        else:
            assert priority is not None
            done = set_priority(conn, row, priority, admin, now)
            changed += len(done)
        events += done
    return BulkOutcome(len(selected), changed, cancelled, album_completed, events)
