"""`download_queue.db`: the schema, the enums and the shapes shared by every queue module.

The queue is one table of items (albums and their children, watchdog repairs), an append-only
audit log written in the same transaction as each transition, per-hour activity counters, and
the content the watchdog gave up on (`storage.queue_marks`).
Only PENDING rows are in the claim index, so items waiting in RETRY_WAITING (however many) never
slow a claim; they are promoted by `next_retry_at` through their own index.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from enum import IntEnum, StrEnum
from typing import Any

from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.db import Database
from storage.files import Faults, no_faults

HOUR = 3600  # the queue's time windows are UTC hours and days (unix seconds)
DAY = 86400


class Status(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    RETRY_WAITING = "RETRY_WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED)


TERMINAL = (Status.COMPLETED.value, Status.FAILED.value)


class Priority(IntEnum):
    WATCHDOG = 1
    USER = 2
    EXPANSION = 3


class ContentType(StrEnum):
    ALBUM = "ALBUM"
    TRACK_AUDIO = "TRACK_AUDIO"
    ALBUM_IMAGE = "ALBUM_IMAGE"
    ARTIST_IMAGE = "ARTIST_IMAGE"


class Source(StrEnum):
    USER = "USER"
    WATCHDOG = "WATCHDOG"
    EXPANSION = "EXPANSION"


class ErrorType(StrEnum):
    CONNECTION = "connection"
    TIMEOUT = "timeout"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"
    RATE_LIMITED = "rate_limited"
    PARSE = "parse"
    STORAGE = "storage"
    UNKNOWN = "unknown"


class AuditEvent(StrEnum):
    REQUEST_CREATED = "REQUEST_CREATED"
    DOWNLOAD_STARTED = "DOWNLOAD_STARTED"
    CHILDREN_CREATED = "CHILDREN_CREATED"
    DOWNLOAD_COMPLETED = "DOWNLOAD_COMPLETED"
    DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
    RETRY_SCHEDULED = "RETRY_SCHEDULED"
    ADMIN_RETRY = "ADMIN_RETRY"
    WATCHDOG_QUEUED = "WATCHDOG_QUEUED"
    WATCHDOG_SCAN_STARTED = "WATCHDOG_SCAN_STARTED"
    WATCHDOG_SCAN_COMPLETED = "WATCHDOG_SCAN_COMPLETED"
    RECOVERED_AFTER_RESTART = "RECOVERED_AFTER_RESTART"
    WATCHDOG_GAVE_UP = "WATCHDOG_GAVE_UP"


# The levels of `queue_rank` (migration 3): bucket = created_at >> shift, one bucket of a level
# spanning 2**RANK_FANOUT_BITS buckets of the level below. The triggers carry these values in
# their SQL; changing them needs a new migration that rebuilds the table and its triggers.
RANK_SHIFTS = (0, 6, 12, 18, 24, 30)
RANK_FANOUT_BITS = 6


MIGRATIONS = [
    [
        """CREATE TABLE queue_items (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            parent_id TEXT REFERENCES queue_items(id),
            status TEXT NOT NULL,
            priority INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            content_id TEXT NOT NULL,
            content_name TEXT,
            artist_name TEXT,
            request_source TEXT NOT NULL,
            requested_by TEXT,
            created_at INTEGER NOT NULL,
            started_at INTEGER,
            completed_at INTEGER,
            last_attempt_at INTEGER,
            next_retry_at INTEGER,
            retry_count INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER NOT NULL,
            error_type TEXT,
            error_message TEXT,
            bytes_downloaded INTEGER,
            processing_duration_ms INTEGER,
            children_created INTEGER NOT NULL DEFAULT 0,
            last_activity_at INTEGER)""",
        # A child exists once per parent and content.
        """CREATE UNIQUE INDEX queue_one_child
            ON queue_items(parent_id, content_type, content_id) WHERE parent_id IS NOT NULL""",
        # The claim order of SPEC §8.5; only PENDING rows are indexed.
        """CREATE INDEX queue_claim
            ON queue_items(priority, parent_id IS NULL, created_at, seq)
            WHERE status = 'PENDING'""",
        """CREATE INDEX queue_retry_due ON queue_items(next_retry_at)
            WHERE status = 'RETRY_WAITING'""",
        "CREATE INDEX queue_parent ON queue_items(parent_id, status)",
        "CREATE INDEX queue_content ON queue_items(content_id, status)",
        "CREATE INDEX queue_status ON queue_items(status, priority)",
        """CREATE INDEX queue_user ON queue_items(requested_by, created_at)
            WHERE parent_id IS NULL""",
        """CREATE INDEX queue_album_started ON queue_items(started_at)
            WHERE content_type = 'ALBUM' AND parent_id IS NULL""",
        "CREATE INDEX queue_completed ON queue_items(status, completed_at)",
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            timestamp INTEGER NOT NULL,
            event_type TEXT NOT NULL,
            queue_item_id TEXT,
            content_type TEXT,
            content_id TEXT,
            user TEXT,
            request_source TEXT,
            details TEXT)""",
        "CREATE INDEX audit_item ON audit_log(queue_item_id, id)",
        "CREATE INDEX audit_user ON audit_log(user, id)",
        "CREATE INDEX audit_type ON audit_log(event_type, id)",
        "CREATE INDEX audit_time ON audit_log(timestamp)",
        # Entries are never edited; retention may delete old ones.
        """CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END""",
        """CREATE TABLE activity_hourly (
            hour INTEGER PRIMARY KEY,
            albums INTEGER NOT NULL DEFAULT 0,
            tracks INTEGER NOT NULL DEFAULT 0,
            images INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0)""",
    ],
    [
        # What may be claimed while the global capacity is used up (children and watchdog
        # repairs, not new albums), so that pending albums never lengthen that claim.
        """CREATE INDEX queue_claim_no_new_album
            ON queue_items(priority, parent_id IS NULL, created_at, seq)
            WHERE status = 'PENDING' AND (parent_id IS NOT NULL OR content_type <> 'ALBUM')""",
    ],
    [
        # Maintained ranks for `storage.queue_position`: how many top-level PENDING items each
        # priority has per bucket of `created_at` (bucket = created_at >> shift) at each level
        # of RANK_SHIFTS (the VALUES lists below). The triggers keep it in step inside the
        # transaction of every change to queue_items, whichever code path makes it. A counter
        # that reaches 0 is deleted, so the table stays about one row per second in which
        # waiting top-level items were created.
        """CREATE TABLE queue_rank (
            shift INTEGER NOT NULL,
            priority INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            n INTEGER NOT NULL CHECK (n >= 0),
            PRIMARY KEY (shift, priority, bucket)) WITHOUT ROWID""",
        # +1 at every level for a row that enters the ranks (the `WHERE true` lets SQLite parse
        # an upsert after a SELECT).
        """CREATE TRIGGER queue_rank_insert AFTER INSERT ON queue_items
            WHEN NEW.status = 'PENDING' AND NEW.parent_id IS NULL BEGIN
                INSERT INTO queue_rank (shift, priority, bucket, n)
                    SELECT column1, NEW.priority, NEW.created_at >> column1, 1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)) WHERE true
                    ON CONFLICT (shift, priority, bucket) DO UPDATE SET n = n + 1;
            END""",
        # -1 at every level for a row that leaves them, and the counters left at 0 deleted.
        """CREATE TRIGGER queue_rank_delete AFTER DELETE ON queue_items
            WHEN OLD.status = 'PENDING' AND OLD.parent_id IS NULL BEGIN
                UPDATE queue_rank SET n = n - 1 WHERE (shift, priority, bucket) IN
                    (SELECT column1, OLD.priority, OLD.created_at >> column1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)));
                DELETE FROM queue_rank WHERE n = 0 AND (shift, priority, bucket) IN
                    (SELECT column1, OLD.priority, OLD.created_at >> column1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)));
            END""",
        # An update is the old image leaving and the new one entering, one trigger each, so an
        # update that touches no ranked row (a child, IN_PROGRESS to COMPLETED) costs only the
        # WHEN tests.
        """CREATE TRIGGER queue_rank_update_old
            AFTER UPDATE OF status, priority, created_at, parent_id ON queue_items
            WHEN OLD.status = 'PENDING' AND OLD.parent_id IS NULL BEGIN
                UPDATE queue_rank SET n = n - 1 WHERE (shift, priority, bucket) IN
                    (SELECT column1, OLD.priority, OLD.created_at >> column1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)));
                DELETE FROM queue_rank WHERE n = 0 AND (shift, priority, bucket) IN
                    (SELECT column1, OLD.priority, OLD.created_at >> column1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)));
            END""",
        """CREATE TRIGGER queue_rank_update_new
            AFTER UPDATE OF status, priority, created_at, parent_id ON queue_items
            WHEN NEW.status = 'PENDING' AND NEW.parent_id IS NULL BEGIN
                INSERT INTO queue_rank (shift, priority, bucket, n)
                    SELECT column1, NEW.priority, NEW.created_at >> column1, 1
                    FROM (VALUES (0), (6), (12), (18), (24), (30)) WHERE true
                    ON CONFLICT (shift, priority, bucket) DO UPDATE SET n = n + 1;
            END""",
        # Backfill from the rows already there.
        """INSERT INTO queue_rank (shift, priority, bucket, n)
            SELECT column1, priority, created_at >> column1, COUNT(*)
            FROM queue_items, (VALUES (0), (6), (12), (18), (24), (30))
            WHERE status = 'PENDING' AND parent_id IS NULL GROUP BY 1, 2, 3""",
    ],
    [
        # Content the watchdog gave up on (`storage.queue_marks`): one row per content, the
        # failed repair that marked it and when.
        """CREATE TABLE unavailable_content (
            content_type TEXT NOT NULL,
            content_id TEXT NOT NULL,
            marked_at INTEGER NOT NULL,
            queue_item_id TEXT NOT NULL,
            PRIMARY KEY (content_type, content_id)) WITHOUT ROWID""",
        # One row counting every change to the marks, kept by the triggers below whichever code
        # path makes it: answers that show marks are kept until it moves.
        "CREATE TABLE unavailable_version (n INTEGER NOT NULL)",
        "INSERT INTO unavailable_version (n) VALUES (0)",
        """CREATE TRIGGER unavailable_insert AFTER INSERT ON unavailable_content
            BEGIN UPDATE unavailable_version SET n = n + 1; END""",
        """CREATE TRIGGER unavailable_update AFTER UPDATE ON unavailable_content
            BEGIN UPDATE unavailable_version SET n = n + 1; END""",
        """CREATE TRIGGER unavailable_delete AFTER DELETE ON unavailable_content
            BEGIN UPDATE unavailable_version SET n = n + 1; END""",
    ],
    [
        # Nothing keeps answers by the marks' version any more: drop the counter and the
        # triggers that moved it with every change to the marks.
        "DROP TRIGGER unavailable_insert",
        "DROP TRIGGER unavailable_update",
        "DROP TRIGGER unavailable_delete",
        "DROP TABLE unavailable_version",
    ],
]

ITEM_FIELDS = (
    "id",
    "parent_id",
    "status",
    "priority",
    "content_type",
    "content_id",
    "content_name",
    "artist_name",
    "request_source",
    "requested_by",
    "created_at",
    "started_at",
    "completed_at",
    "last_attempt_at",
    "next_retry_at",
    "retry_count",
    "max_retries",
    "error_type",
    "error_message",
    "bytes_downloaded",
    "processing_duration_ms",
)


class QueueStoreBase:
    """What the three stores over the one queue Database share: the connection, the settings,
    and counting audit entries in the metrics once their transaction has committed."""

    def __init__(
        self,
        db: Database,
        dm: DownloadManagerConfig | None = None,
        *,
        metrics: Metrics | None = None,
        faults: Faults = no_faults,
    ) -> None:
        self.db = db
        self.dm = dm if dm is not None else DownloadManagerConfig()
        self.metrics = metrics
        self.faults = faults  # the crash tests' hook (`storage.files.Faults`)

    def _count(self, events: Iterable[AuditEvent]) -> None:
        if self.metrics is not None:
            for event in events:
                self.metrics.audit_events.labels(event.value).inc()


def now() -> int:
    return int(time.time())


def item_json(row: sqlite3.Row) -> dict[str, Any]:
    """The QueueItem JSON of SPEC §8.2, without `progress`/`queue_position`/`children`."""
    return {name: row[name] for name in ITEM_FIELDS}


def append_audit(
    conn: sqlite3.Connection,
    event: AuditEvent,
    item: sqlite3.Row | dict[str, Any] | None,
    details: dict[str, Any] | None = None,
    *,
    user: str | None = None,
    at: int | None = None,
) -> AuditEvent:
    """Append one audit entry inside the caller's transaction; returns the event for metrics.

    `user` defaults to the item's requester (an admin's handle is passed for ADMIN_RETRY).
    """
    conn.execute(
        "INSERT INTO audit_log (timestamp, event_type, queue_item_id, content_type, content_id, "
        "user, request_source, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            now() if at is None else at,
            event.value,
            item["id"] if item is not None else None,
            item["content_type"] if item is not None else None,
            item["content_id"] if item is not None else None,
            user if user is not None else (item["requested_by"] if item is not None else None),
            item["request_source"] if item is not None else None,
            json.dumps(details) if details is not None else None,
        ),
    )
    return event


def audit_json(row: sqlite3.Row) -> dict[str, Any]:
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


def progress_many(
    conn: sqlite3.Connection, parent_ids: Sequence[str]
) -> dict[str, dict[str, int] | None]:
    """Children counts by state of several top-level items (a page of them), with one
    statement; None for an item before its children exist."""
    counts: dict[str, dict[str, int]] = {parent: {} for parent in parent_ids}
    marks = ", ".join("?" * len(parent_ids))
    rows = conn.execute(
        # Placeholders only: the ids are bound as parameters.
        f"SELECT parent_id, status, COUNT(*) FROM queue_items WHERE parent_id IN ({marks}) "  # noqa: S608
        "GROUP BY parent_id, status",
        list(parent_ids),
    )
    for parent, status, count in rows:
        counts[parent][status] = count
    return {parent: _progress_json(by_status) for parent, by_status in counts.items()}


def _progress_json(counts: dict[str, int]) -> dict[str, int] | None:
    total = sum(counts.values())
    if total == 0:
        return None
    return {
        "total_children": total,
        "completed": counts.get("COMPLETED", 0),
        "failed": counts.get("FAILED", 0),
        "pending": counts.get("PENDING", 0),
        "in_progress": counts.get("IN_PROGRESS", 0),
        "retry_waiting": counts.get("RETRY_WAITING", 0),
    }
