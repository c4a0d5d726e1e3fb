"""The processor's store: claim, children, completion, failure, release, recovery, gauges.

Each method is one write transaction around one transition of `storage.queue.transitions` or
`storage.queue.retries` (its audit entries, the hourly activity counters and, for a child, its
album's completion commit together); the events reach `on_audit` after the commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from storage.db import Database
from storage.files import Faults, no_faults
from storage.queue import reads, retries, transitions
from storage.queue.base import StoreBase
from storage.queue.model import (
    ChildSpec,
    DownloadManagerConfig,
    ErrorType,
    OnAudit,
    Status,
    ignore_audit,
)
from storage.queue.transitions import ChildrenCreated, Recovery


class Claimed(NamedTuple):
    item: sqlite3.Row | None  # None when nothing is ready or the queue is paused
    capacity: dict[str, Any]  # CapacityStatus after the claim
    paused: bool = False  # an admin has paused the queue (`storage.queue.pause`)


class QueueStore(StoreBase):
    def __init__(
        self,
        db: Database,
        dm: DownloadManagerConfig | None = None,
        *,
        on_audit: OnAudit = ignore_audit,
        faults: Faults = no_faults,
    ) -> None:
        super().__init__(db, dm, on_audit=on_audit)
        self.faults = faults  # the crash tests' hook (`storage.files.Faults`)

    def claim(self, now: int) -> Claimed:
        """Promote the retries that are due and take the next item in claim order, a new album
        only while the global capacity allows and nothing while the queue is paused
        (`transitions.claim`), in one transaction.

        The claim does not wait for the disk (`Database.write(durable=False)`): a claim rolled
        back by a power cut leaves its item as the startup recovery would have made it, and
        the retries it promoted due again; the completion's commit makes it durable anyway.
        """
        with self.db.write(durable=False) as conn:
            taken = transitions.claim(conn, self.dm, now)
        self.on_audit(taken.events)
        return Claimed(taken.item, taken.capacity, taken.paused)

    def create_children(
        self, parent_id: str, children: Sequence[ChildSpec], now: int
    ) -> ChildrenCreated:
        """Create the album's children once and mark it as having them; an album with nothing
        to fetch completes at once (`transitions.add_children`)."""
        with self.db.write() as conn:
            created, events = transitions.add_children(conn, parent_id, children, now)
        self.on_audit(events)
        return created

    def complete(self, item_id: str, size: int, duration_ms: int, now: int) -> bool:
        """IN_PROGRESS → COMPLETED with its album settled (`transitions.complete`); True if a
        top-level album completed."""
        with self.db.write() as conn:
            album_done, events = transitions.complete(conn, item_id, size, duration_ms, now)
            self.faults("before_commit")  # the crash tests' points on each side of the commit
        self.faults("after_commit")
        self.on_audit(events)
        return album_done

    def fail(
        self,
        item_id: str,
        error: ErrorType,
        message: str,
        now: int,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> Status:
        """Record a failed attempt per SPEC §8.6 (`retries.record_failure`); return the item's
        new status."""
        with self.db.write() as conn:
            status, events = retries.record_failure(
                conn, item_id, self.dm, error, message, now, retry_after, permanent
            )
        self.on_audit(events)
        return status

    def release(self, item_id: str, now: int) -> bool:
        """IN_PROGRESS → PENDING without spending a retry (a download cancelled at shutdown),
        handed to the next run; False if the item already left IN_PROGRESS."""
        with self.db.write() as conn:
            events = transitions.release(conn, item_id, now)
        self.on_audit(events)
        return bool(events)

    def recover_after_restart(self, now: int) -> Recovery:
        """SPEC §8.7, at startup (`transitions.recover`)."""
        with self.db.write() as conn:
            recovery, events = transitions.recover(conn, now)
        self.on_audit(events)
        return recovery

    def next_retry_at(self) -> int | None:
        """When the earliest RETRY_WAITING item is due (unix seconds), if any."""
        with self.db.read() as conn:
            due: int | None = conn.execute(
                """SELECT MIN(next_retry_at) FROM queue_items INDEXED BY queue_retry_due
                    WHERE status = 'RETRY_WAITING'"""
            ).fetchone()[0]
            return due

    def status_counts(self) -> dict[tuple[str, int], int]:
        """Items per (status, priority), zeros included, for the queue-size gauge."""
        with self.db.read() as conn:
            return reads.status_counts(conn)
