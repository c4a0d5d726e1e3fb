"""The download queue's vocabulary: states, kinds, sources, errors and audit events, the settings
it reads, the records handed to it, the clock, and the QueueItem JSON.

Plain data shared by the modules of `storage.queue`; nothing here touches the database. Times
are unix seconds; the queue's windows are UTC hours and days.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Protocol

from storage.ids import content_id, image_id

HOUR = 3600
DAY = 86400


def now() -> int:
    return int(time.time())


def at_or_now(at: int | None) -> int:
    """`at`, or the clock when a caller leaves the time out."""
    return now() if at is None else at


class Status(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    RETRY_WAITING = "RETRY_WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# The states an item ends in; the queries that exclude them carry one placeholder per state.
TERMINAL = (Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value)


class Priority(IntEnum):
    WATCHDOG = 1
    USER = 2
    EXPANSION = 3


# Every priority an item may have: the defaults above, and any an admin sets (SPEC §8.10 rev 2),
# 1 claimed first.
PRIORITIES = range(1, 10)


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
    REQUEST_CANCELLED = "REQUEST_CANCELLED"
    QUEUE_PAUSED = "QUEUE_PAUSED"
    QUEUE_RESUMED = "QUEUE_RESUMED"
    PRIORITY_CHANGED = "PRIORITY_CHANGED"


# Told of the audit entries a store's transaction appended, once it has committed (the daemon
# counts them in its metrics); storage knows nothing of who listens.
OnAudit = Callable[[Sequence[AuditEvent]], None]


def ignore_audit(events: Sequence[AuditEvent]) -> None:
    """The `OnAudit` of a store nobody measures."""


@dataclass(frozen=True)
class DownloadManagerConfig:
    """`[download_manager]`: the download manager's settings.

    Defined with the queue, which reads its limits, retries, backoff and recheck period;
    `daemon.config` reads the section into it, and the actors read the rest (the idle interval,
    the stale threshold, the audit retention, the largest file).
    """

    max_albums_per_hour: int = 10
    max_albums_per_day: int = 60
    user_max_requests_per_day: int = 100
    user_max_queue_size: int = 200
    process_interval_secs: float = 5.0
    stale_in_progress_threshold_secs: int = 3600
    max_retries: int = 5
    initial_backoff_secs: float = 60.0
    max_backoff_secs: float = 3600.0
    backoff_multiplier: float = 2.0
    audit_log_retention_days: int = 90
    max_file_bytes: int = 2 * 1024**3
    unavailable_recheck_days: int = 7


@dataclass(frozen=True)
class ChildSpec:
    """One child to create under an album (SPEC §8.5). A `present` child's file is already
    here (SPEC §8.3 rev 2): it is created COMPLETED, and nothing is fetched for it."""

    content_type: ContentType
    content_id: str
    content_name: str | None = None
    artist_name: str | None = None
    present: bool = False


class Row(Protocol):
    """A queue row read by name: an `sqlite3.Row`, or a dict from a plain read."""

    def __getitem__(self, key: str, /) -> Any: ...


def validate_content(content_type: ContentType, cid: str) -> None:
    """Raise `InvalidId` unless `cid` is an id of its kind (images have their own form)."""
    if content_type in (ContentType.ALBUM_IMAGE, ContentType.ARTIST_IMAGE):
        image_id(cid)
    else:
        content_id(cid)


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


# SPEC §8.2 `failure`: what a failure means to the person who asked, and what they can do. The
# technical `error_message` stays beside it for admins.
FAILURES: dict[ErrorType, tuple[str, str]] = {
    ErrorType.NOT_FOUND: (
        "The downloader does not have this album or file.",
        "Search for another edition of the album.",
    ),
    ErrorType.BAD_REQUEST: (
        "The downloader refused the request.",
        "Search for the album again and request it from the new result.",
    ),
    ErrorType.RATE_LIMITED: (
        "The downloader stayed too busy to answer.",
        "Request it again later.",
    ),
    ErrorType.CONNECTION: (
        "The downloader could not be reached.",
        "Request it again later; if it keeps happening, tell the server's admin.",
    ),
    ErrorType.TIMEOUT: (
        "The downloader took too long to answer.",
        "Request it again later.",
    ),
    ErrorType.PARSE: (
        "The downloader sent something that could not be used (a damaged or unexpected file).",
        "Request it again later, or search for another edition.",
    ),
    ErrorType.STORAGE: (
        "The server could not save the files: its disk is full or failing.",
        "Tell the server's admin.",
    ),
    ErrorType.UNKNOWN: (
        "The download failed for an unexpected reason.",
        "Tell the server's admin.",
    ),
}


def failure_json(row: Row) -> dict[str, str] | None:
    """`{reason, hint}` for a FAILED item, from its error type (an album that failed through
    its children carries its last failed child's); None otherwise."""
    if row["status"] != Status.FAILED:
        return None
    reason, hint = FAILURES[ErrorType(row["error_type"] or ErrorType.UNKNOWN.value)]
    if row["content_type"] == ContentType.ALBUM and row["children_created"]:
        reason = "Some of the album's tracks or images could not be downloaded. " + reason
    return {"reason": reason, "hint": hint}


def item_json(row: Row) -> dict[str, Any]:
    """The QueueItem JSON of SPEC §8.2, without `progress`/`queue_position`/`children`."""
    return {**{name: row[name] for name in ITEM_FIELDS}, "failure": failure_json(row)}


def progress_json(counts: dict[str, int]) -> dict[str, int] | None:
    """An album's children by state (SPEC §8.2 `progress`); None before its children exist."""
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
        "cancelled": counts.get("CANCELLED", 0),
    }
