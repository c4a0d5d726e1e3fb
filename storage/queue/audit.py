"""The audit log of download_queue.db (SPEC §8.10, §7.4 `audit_log_cleanup`): appending an
entry, reading pages of entries, and retention.

`append` is the one writer: the queue's transitions call it in the transaction of the change
they record and hand the event back, so the store reports it once that transaction commits. The
notifications an entry causes (a request ended, the queue paused) are written with it.
Reads are plain `sqlite_utils` table reads: the filters become one WHERE clause of constant
fragments before paging, so `total_count` and `has_more` describe the filtered set. Lists are
newest first (by timestamp, then by id for entries of the same second); one item's history is
oldest first. Retention deletes in bounded chunks, each its own short write transaction, so a
large purge never holds the write lock for long and can stop between chunks.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from storage.db import table
from storage.queue import notices
from storage.queue.model import AuditEvent, ContentType, Row

_APPEND = """INSERT INTO audit_log (timestamp, event_type, queue_item_id, content_type, content_id,
    user, request_source, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""


def append(
    conn: sqlite3.Connection,
    event: AuditEvent,
    item: Row | None,
    details: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    at: int,
) -> AuditEvent:
    """Append one entry about `item` (None: about no item) inside the caller's transaction;
    return the event. `user` defaults to the item's requester (an admin's handle is passed for
    ADMIN_RETRY). The notifications the entry causes are written with it
    (`storage.queue.notices.after_entry`)."""
    conn.execute(
        _APPEND,
        (
            at,
            event.value,
            item["id"] if item is not None else None,
            item["content_type"] if item is not None else None,
            item["content_id"] if item is not None else None,
            user if user is not None else (item["requested_by"] if item is not None else None),
            item["request_source"] if item is not None else None,
            json.dumps(details) if details is not None else None,
        ),
    )
    notices.after_entry(conn, event, item, details, at)
    return event


def audit_json(row: Row) -> dict[str, Any]:
    """AuditLogEntry JSON of SPEC §8.10."""
    return {
        "id": row["id"],
        "timestamp": row["timestamp"],
        "event_type": row["event_type"],
        "queue_item_id": row["queue_item_id"],
        "content_type": row["content_type"],
        "content_id": row["content_id"],
        "user": row["user"],
        "request_source": row["request_source"],
        "details": json.loads(row["details"]) if row["details"] else None,
    }


@dataclass(frozen=True)
class AuditFilter:
    """Every field left None matches everything; `since` and `until` are inclusive bounds."""

    queue_item_id: str | None = None
    user: str | None = None
    event_type: AuditEvent | None = None
    content_type: ContentType | None = None
    content_id: str | None = None
    since: int | None = None
    until: int | None = None

    def where(self) -> tuple[str | None, list[Any]]:
        """A WHERE clause built from constant fragments (None: no filter), and its parameters."""
        fragments = (
            ("queue_item_id = ?", self.queue_item_id),
            ("user = ?", self.user),
            ("event_type = ?", self.event_type.value if self.event_type else None),
            ("content_type = ?", self.content_type.value if self.content_type else None),
            ("content_id = ?", self.content_id),
            ("timestamp >= ?", self.since),
            ("timestamp <= ?", self.until),
        )
        used = [(sql, value) for sql, value in fragments if value is not None]
        if not used:
            return None, []
        return " AND ".join(sql for sql, _ in used), [value for _, value in used]


@dataclass(frozen=True)
class AuditPage:
    entries: list[dict[str, Any]]
    total_count: int
    has_more: bool

    def json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "total_count": self.total_count,
            "has_more": self.has_more,
        }


def query(conn: sqlite3.Connection, where: AuditFilter, limit: int, offset: int) -> AuditPage:
    """One page of matching entries, newest first (call inside one read transaction, so the
    total and the page agree)."""
    clause, params = where.where()
    log = table(conn, "audit_log")
    total = log.count_where(clause, params)
    rows = log.rows_where(
        clause, params, order_by="timestamp DESC, id DESC", limit=limit, offset=offset
    )
    entries = [audit_json(row) for row in rows]
    return AuditPage(entries, total, offset + len(entries) < total)


def item_history(conn: sqlite3.Connection, item_id: str) -> list[dict[str, Any]]:
    """Every entry about one item, oldest first."""
    rows = table(conn, "audit_log").rows_where(
        "queue_item_id = ?", [item_id], order_by="timestamp, id"
    )
    return [audit_json(row) for row in rows]


def delete_chunk(conn: sqlite3.Connection, before: int, limit: int) -> int:
    """Delete up to `limit` entries older than `before` (oldest first); return how many."""
    cursor = conn.execute(
        """DELETE FROM audit_log WHERE id IN (
            SELECT id FROM audit_log WHERE timestamp < ? ORDER BY timestamp LIMIT ?)""",
        (before, limit),
    )
    return cursor.rowcount
