"""The one place queue items are inserted, and fetched by id or by parent.

Every item enters the queue PENDING through `insert`: a user's album (`storage.queue.requests`),
a watchdog repair (`storage.queue.admin`) or an album's child (`storage.queue.transitions`). Its
content id is checked against its kind first, and `last_activity_at` starts at its creation. A
child exists once per parent and content (the unique index `queue_one_child`): inserting it
again inserts nothing. The functions run inside the caller's transaction.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from storage.queue.model import TERMINAL, ContentType, Source, validate_content

_INSERT = """INSERT INTO queue_items (id, parent_id, status, priority, content_type, content_id,
    content_name, artist_name, request_source, requested_by, created_at, max_retries,
    last_activity_at)
    VALUES (?, ?, 'PENDING', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING *"""
_ACTIVE = """SELECT 1 FROM queue_items
    WHERE content_type = ? AND content_id = ? AND status NOT IN (?, ?, ?) LIMIT 1"""


@dataclass(frozen=True)
class NewItem:
    """An item to queue: top-level, or a child when `parent_id` is set."""

    content_type: ContentType
    content_id: str
    priority: int
    source: Source
    requested_by: str | None = None
    content_name: str | None = None
    artist_name: str | None = None
    parent_id: str | None = None


def insert(
    conn: sqlite3.Connection, item: NewItem, max_retries: int, now: int
) -> sqlite3.Row | None:
    """Insert one PENDING item created at `now`; return its row, or None for a child its
    parent already has. Raises `InvalidId` for a content id that is not of its kind."""
    validate_content(item.content_type, item.content_id)
    row: sqlite3.Row | None = conn.execute(
        _INSERT,
        (str(uuid.uuid4()), item.parent_id, item.priority, item.content_type.value,
         item.content_id, item.content_name, item.artist_name, item.source.value,
         item.requested_by, now, max_retries, now),
    ).fetchone()  # fmt: skip
    return row


def fetch(conn: sqlite3.Connection, item_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM queue_items WHERE id = ?", (item_id,)
    ).fetchone()
    return row


def fetch_many(conn: sqlite3.Connection, item_ids: Iterable[str]) -> dict[str, sqlite3.Row]:
    """Several items by id, in one statement; ids that do not exist are left out."""
    rows = conn.execute(
        "SELECT * FROM queue_items WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(set(item_ids))),),
    ).fetchall()
    return {row["id"]: row for row in rows}


def children(conn: sqlite3.Connection, parent_id: str) -> list[sqlite3.Row]:
    """An album's children in creation order."""
    return conn.execute(
        "SELECT * FROM queue_items WHERE parent_id = ? ORDER BY seq", (parent_id,)
    ).fetchall()


def is_active(conn: sqlite3.Connection, content_type: ContentType, content_id: str) -> bool:
    """Whether an item for this content is not yet terminal (it is queued, running or waiting)."""
    found = conn.execute(_ACTIVE, (content_type.value, content_id, *TERMINAL)).fetchone()
    return found is not None
