"""Seed download_queue.db with rows in any state, directly, for tests of the read/admin side.

Rows are inserted as the processor would leave them, without going through its transitions, so a
test can set up "an album FAILED with two failed children and one completed" in a few lines.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from daemon.config import DownloadManagerConfig
from storage.db import Database
from storage.queue_admin import QueueAdminStore
from storage.queue_schema import MIGRATIONS, AuditEvent, append_audit

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


def audit(db: Database, event: AuditEvent, item_id: str | None, at: int, **kw: Any) -> None:
    """Append one audit entry about an item (or about none)."""
    with db.write() as conn:
        item = None
        if item_id is not None:
            item = conn.execute("SELECT * FROM queue_items WHERE id = ?", (item_id,)).fetchone()
        append_audit(conn, event, item, kw.pop("details", None), at=at, **kw)


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
