"""What may still be queued and started: a user's limits (SPEC §8.3) and the global capacity.

Both are counted from the queue itself, never from counters that could drift. A user's
`requests_today` is their top-level items created since 00:00 UTC, `in_queue` their top-level
items not yet terminal; read inside the `BEGIN IMMEDIATE` of a request, the check and the insert
are one transaction, so concurrent requests (even from another process) never admit more than
the limit. `resets_at` in a user's status is the next 00:00 UTC, except when only the queue-size
limit binds: that one frees up when one of the user's items finishes, at no known time, so it
is null then.

The global capacity counts albums whose processing started in this UTC hour and day. It gates
every claim (`storage.queue.transitions`), and users and admins read the same figures.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from storage.queue.model import DAY, HOUR, TERMINAL, DownloadManagerConfig

_USER_COUNTS = """SELECT COALESCE(SUM(created_at >= ?), 0),
    COALESCE(SUM(status NOT IN (?, ?, ?)), 0)
    FROM queue_items WHERE parent_id IS NULL AND requested_by = ?"""
# Pinned to the partial index: without statistics SQLite prefers `queue_parent` (equality on
# parent_id) and reads every top-level item ever queued, which every claim pays for.
_ALBUMS_STARTED = """SELECT COALESCE(SUM(started_at >= ?), 0), COUNT(*)
    FROM queue_items INDEXED BY queue_album_started
    WHERE content_type = 'ALBUM' AND parent_id IS NULL AND started_at >= ?"""


@dataclass(frozen=True)
class UserLimitStatus:
    requests_today: int
    max_per_day: int
    in_queue: int
    max_queue: int
    can_request: bool
    resets_at: int | None

    def json(self) -> dict[str, Any]:
        return asdict(self)


class Budget:
    """A user's remaining allowance, counted inside the caller's transaction."""

    def __init__(
        self, conn: sqlite3.Connection, dm: DownloadManagerConfig, user: str, now: int
    ) -> None:
        self.dm, self.now = dm, now
        today, in_queue = conn.execute(_USER_COUNTS, (now - now % DAY, *TERMINAL, user)).fetchone()
        self.today, self.in_queue = int(today), int(in_queue)

    def allows_one(self) -> bool:
        return (
            self.today < self.dm.user_max_requests_per_day
            and self.in_queue < self.dm.user_max_queue_size
        )

    def spend_one(self) -> None:
        self.today += 1
        self.in_queue += 1

    def status(self) -> UserLimitStatus:
        day_full = self.today >= self.dm.user_max_requests_per_day
        queue_full = self.in_queue >= self.dm.user_max_queue_size
        return UserLimitStatus(
            requests_today=self.today,
            max_per_day=self.dm.user_max_requests_per_day,
            in_queue=self.in_queue,
            max_queue=self.dm.user_max_queue_size,
            can_request=not (day_full or queue_full),
            resets_at=None if queue_full and not day_full else self.now - self.now % DAY + DAY,
        )


def capacity(conn: sqlite3.Connection, dm: DownloadManagerConfig, now: int) -> dict[str, Any]:
    """CapacityStatus (SPEC §8.3): albums whose processing started this UTC hour / day against
    the limits. `resets_at` is when the binding limit resets: the next UTC day when the daily
    limit is reached, else the next UTC hour (the nearest window end when nothing binds)."""
    hour, day = now - now % HOUR, now - now % DAY
    this_hour, today = conn.execute(_ALBUMS_STARTED, (hour, day)).fetchone()
    day_full = today >= dm.max_albums_per_day
    return {
        "albums_this_hour": this_hour,
        "max_per_hour": dm.max_albums_per_hour,
        "albums_today": today,
        "max_per_day": dm.max_albums_per_day,
        "at_capacity": day_full or this_hour >= dm.max_albums_per_hour,
        "resets_at": day + DAY if day_full else hour + HOUR,
    }
