"""Why a queue item is not moving (SPEC §8.2 rev 2 `wait`): `{reason, until}`, or null.

An item moves while it is being fetched, and a PENDING item moves when it is next and the
processor is free. Otherwise it waits, for the first of these that applies:

- `paused`: an admin paused the queue (`storage.queue.pause`); until null. An item already
  being fetched is not paused: it finishes.
- `capacity`: a top-level album waiting (PENDING, or RETRY_WAITING and then PENDING) while the
  global hourly or daily album capacity is used up; until the binding window resets. Children
  and watchdog repairs never wait for capacity.
- `retry`: RETRY_WAITING after a failure; until `next_retry_at`.
- `downloader_busy`: RETRY_WAITING after a 429 (`rate_limited`); until `next_retry_at`.
- `queued`: PENDING with work ahead of it (a top-level item past position 1, or any item while
  another is being fetched); until null.

An album IN_PROGRESS with its children waits as they do: `paused` while paused, unless one of
them is being fetched (then it moves); `queued` when its next child is PENDING and the processor
is busy with another item; and when all it has left are children waiting to retry, the wait of
the child due first (`retry` or `downloader_busy`, until that child's `next_retry_at`), since
nothing moves for it before then.

`Snapshot` holds the queue-wide facts (the pause, the capacity, whether a file is being fetched),
each read at most once per shaping, inside the caller's read transaction.
"""

from __future__ import annotations

import sqlite3
from enum import StrEnum
from functools import cached_property
from typing import Any

from storage.queue import limits, pause
from storage.queue.model import (
    TERMINAL,
    ContentType,
    DownloadManagerConfig,
    ErrorType,
    Row,
    Status,
)

# The IN_PROGRESS items that are a step being done: a file, a repair, an album's metadata (an
# album with its children only waits for them). Few rows, however long the queue.
_BUSY = """SELECT 1 FROM queue_items INDEXED BY queue_status WHERE status = 'IN_PROGRESS'
    AND (parent_id IS NOT NULL OR children_created = 0) LIMIT 1"""
_FIRST_RETRY = """SELECT next_retry_at, error_type FROM queue_items
    WHERE parent_id = ? AND status = 'RETRY_WAITING' ORDER BY next_retry_at LIMIT 1"""


class WaitReason(StrEnum):
    PAUSED = "paused"
    CAPACITY = "capacity"
    RETRY = "retry"
    DOWNLOADER_BUSY = "downloader_busy"
    QUEUED = "queued"


class Snapshot:
    """The queue as every item's wait and estimates see it at `now`, read lazily, once."""

    def __init__(self, conn: sqlite3.Connection, dm: DownloadManagerConfig, now: int) -> None:
        self.conn, self.dm, self.now = conn, dm, now

    @cached_property
    def paused(self) -> bool:
        return pause.is_paused(self.conn)

    @cached_property
    def capacity(self) -> dict[str, Any]:
        return limits.capacity(self.conn, self.dm, self.now)

    @cached_property
    def busy(self) -> bool:
        """Whether the processor is fetching something (a file, a repair, an album's data)."""
        return self.conn.execute(_BUSY).fetchone() is not None


def waits_on_children(row: Row) -> bool:
    """An album IN_PROGRESS whose children exist: it moves only as they do."""
    return row["status"] == Status.IN_PROGRESS and bool(row["children_created"])


def wait_json(
    snap: Snapshot, row: Row, progress: dict[str, int] | None, position: int | None
) -> dict[str, Any] | None:
    """The item's `wait` (see the module docstring); `progress` and `position` are its own
    (None for a child)."""
    status = row["status"]
    if status in TERMINAL:
        return None
    if status == Status.IN_PROGRESS:
        return _album_wait(snap, row, progress) if waits_on_children(row) else None
    if snap.paused:
        return _wait(WaitReason.PAUSED)
    if _gated_by_capacity(row) and snap.capacity["at_capacity"]:
        return _wait(WaitReason.CAPACITY, snap.capacity["resets_at"])
    if status == Status.RETRY_WAITING:
        return _retry_wait(row["error_type"], row["next_retry_at"])
    if snap.busy or (position is not None and position > 1):
        return _wait(WaitReason.QUEUED)
    return None


def _album_wait(snap: Snapshot, row: Row, progress: dict[str, int] | None) -> dict[str, Any] | None:
    if progress is None or progress["in_progress"]:
        return None
    if snap.paused:
        return _wait(WaitReason.PAUSED)
    if progress["pending"]:
        return _wait(WaitReason.QUEUED) if snap.busy else None
    first = snap.conn.execute(_FIRST_RETRY, (row["id"],)).fetchone()
    return None if first is None else _retry_wait(first[1], first[0])


def _gated_by_capacity(row: Row) -> bool:
    """A top-level album waiting to be claimed: at capacity, the claim passes it over."""
    return row["parent_id"] is None and row["content_type"] == ContentType.ALBUM


def _retry_wait(error_type: str | None, until: int | None) -> dict[str, Any]:
    busy = error_type == ErrorType.RATE_LIMITED
    return _wait(WaitReason.DOWNLOADER_BUSY if busy else WaitReason.RETRY, until)


def _wait(reason: WaitReason, until: int | None = None) -> dict[str, Any]:
    return {"reason": reason.value, "until": until}
