"""Audit-log queries and retention for download_queue.db (SPEC §8.10, §7.4 `audit_log_cleanup`).

Entries are written by the queue modules with `queue_schema.append_audit`, in the transaction of
the transition they record; this module only reads them and deletes old ones. Filters become SQL
clauses before paging, so `total_count` and `has_more` describe the filtered set. Lists are newest
first (by timestamp, then by id for entries of the same second); one item's history is oldest
first. Retention deletes in bounded chunks, each its own short write transaction, so a large
purge never holds the write lock for long and can stop between chunks.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from storage.queue_schema import AuditEvent, ContentType, audit_json


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

    def where(self) -> tuple[str, list[Any]]:
        """A WHERE clause built from constant fragments, and its parameters."""
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
            return "", []
        return " WHERE " + " AND ".join(sql for sql, _ in used), [value for _, value in used]


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
    """One page of matching entries, newest first."""
    clause, params = where.where()
    # `clause` is assembled from the constant fragments above; values are parameters.
    count_sql = "SELECT COUNT(*) FROM audit_log" + clause  # noqa: S608 (constant clauses)
    page_sql = "SELECT * FROM audit_log" + clause  # noqa: S608 (constant clauses)
    total = conn.execute(count_sql, params).fetchone()[0]
    rows = conn.execute(
        page_sql + " ORDER BY timestamp DESC, id DESC LIMIT ? OFFSET ?", [*params, limit, offset]
    ).fetchall()
    entries = [audit_json(row) for row in rows]
    return AuditPage(entries, int(total), offset + len(entries) < total)


def item_history(conn: sqlite3.Connection, item_id: str) -> list[dict[str, Any]]:
    """Every entry about one item, oldest first."""
    rows = conn.execute(
        "SELECT * FROM audit_log WHERE queue_item_id = ? ORDER BY timestamp, id", (item_id,)
    ).fetchall()
    return [audit_json(row) for row in rows]


def delete_chunk(conn: sqlite3.Connection, before: int, limit: int) -> int:
    """Delete up to `limit` entries older than `before` (oldest first); return how many."""
    cursor = conn.execute(
        """DELETE FROM audit_log WHERE id IN (
            SELECT id FROM audit_log WHERE timestamp < ? ORDER BY timestamp LIMIT ?)""",
        (before, limit),
    )
    return cursor.rowcount
