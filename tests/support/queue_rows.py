"""Seed download_queue.db with rows in any state, directly, for tests of the read/admin side.

Rows are inserted as the processor would leave them, without going through its transitions, so a
test can set up "an album FAILED with two failed children and one completed" in a few lines.
`enqueue` queues a top-level item of any kind, priority and source, as the stores' insert does,
for tests of what happens to it next.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from daemon.config import DownloadManagerConfig
from storage.db import Database
from storage.queue import MIGRATIONS, AuditEvent, ContentType, Priority, QueueAdminStore, Source
from storage.queue import audit as queue_audit
from storage.queue import rows as queue_rows
from storage.queue.base import StoreBase

BASE = 1_700_000_000  # a Tuesday, 22:13:20 UTC
DEFAULTS: dict[str, Any] = {
    "parent_id": None,
    "status": "PENDING",
    "priority": 2,
    "content_type": "ALBUM",
    "content_name": None,
    "artist_name": None,
    "request_source": "USER",
    "requested_by": None,
    "created_at": BASE,
    "started_at": None,
    "completed_at": None,
    "last_attempt_at": None,
    "next_retry_at": None,
    "retry_count": 0,
    "max_retries": 5,
    "error_type": None,
    "error_message": None,
    "bytes_downloaded": None,
    "processing_duration_ms": None,
    "children_created": 0,
    "last_activity_at": None,
}


COLUMNS = ("id", "content_id", *DEFAULTS)
# Column names are the constants above, never caller input.
INSERT = "INSERT INTO queue_items ({}) VALUES ({})".format(  # noqa: S608
    ", ".join(COLUMNS), ", ".join("?" for _ in COLUMNS)
)


def open_store(
    tmp_path: Path, dm: DownloadManagerConfig | None = None, **kw: Any
) -> QueueAdminStore:
    db = Database(tmp_path / "download_queue.db", MIGRATIONS)
    return QueueAdminStore(db, dm or DownloadManagerConfig(), **kw)


def cid(n: int) -> str:
    """A valid 22-character content id."""
    return f"C{n:021d}"


def insert(db: Database, **fields: Any) -> str:
    """Insert one queue item; unspecified columns take `DEFAULTS`. Returns its id."""
    unknown = set(fields) - set(COLUMNS)
    assert not unknown, f"not a queue_items column: {unknown}"
    row = {**DEFAULTS, "id": str(uuid.uuid4()), "content_id": cid(0), **fields}
    with db.write() as conn:
        conn.execute(INSERT, [row[c] for c in COLUMNS])
    return str(row["id"])


def insert_many(db: Database, count: int, **fields: Any) -> list[str]:
    """Insert `count` queue items alike but for their ids and content ids (`cid(k)`), in one
    transaction; unspecified columns take `DEFAULTS`. Returns their ids in insertion order."""
    unknown = set(fields) - set(COLUMNS)
    assert not unknown, f"not a queue_items column: {unknown}"
    made = [{**DEFAULTS, "id": str(uuid.uuid4()), "content_id": cid(k), **fields}
            for k in range(count)]  # fmt: skip
    with db.write() as conn:
        conn.executemany(INSERT, [[r[c] for c in COLUMNS] for r in made])
    return [str(r["id"]) for r in made]


def enqueue(
    store: StoreBase,
    content_type: ContentType,
    content_id: str,
    now: int,
    *,
    priority: int = Priority.USER,
    source: Source = Source.USER,
    requested_by: str | None = None,
) -> sqlite3.Row:
    """Queue a top-level PENDING item with its REQUEST_CREATED entry, as a request would, with
    no limit or duplicate check; the event reaches the store's `on_audit`. Returns its row."""
    item = queue_rows.NewItem(content_type, content_id, priority, source, requested_by)
    with store.db.write() as conn:
        row = queue_rows.insert(conn, item, store.dm.max_retries, now)
        assert row is not None
        event = queue_audit.append(conn, AuditEvent.REQUEST_CREATED, row, at=now)
    store.on_audit([event])
    return row


def audit(db: Database, event: AuditEvent, item_id: str | None, at: int, **kw: Any) -> None:
    """Append one audit entry about an item (or about none)."""
    with db.write() as conn:
        item = None if item_id is None else queue_rows.fetch(conn, item_id)
        queue_audit.append(conn, event, item, kw.pop("details", None), at=at, **kw)


def row(db: Database, item_id: str) -> dict[str, Any]:
    with db.read() as conn:
        found = conn.execute("SELECT * FROM queue_items WHERE id = ?", (item_id,)).fetchone()
        return dict(found)


def audit_rows(db: Database, event: str | None = None) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            "SELECT * FROM audit_log WHERE ? IS NULL OR event_type = ? ORDER BY id", (event, event)
        )
        return [dict(r) for r in rows]
