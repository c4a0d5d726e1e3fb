"""The user side of the download queue (SPEC §8.3, §8.4): requests with per-user limits, a
user's own requests, queue positions and limit status.

`RequestStore` shares download_queue.db's `Database` with the processing store (`storage.queue`)
and the admin store (`storage.queue_admin`). Its methods block; async code calls them through
`await store.db.run(store.method, ...)`. Every method takes `now` (unix seconds) where time
matters, so tests control the clock.

Limits are counted from the queue itself, never from counters that could drift: a user's
`requests_today` is their top-level items created since 00:00 UTC, `in_queue` their top-level
items not yet terminal. The check and the insert share one `BEGIN IMMEDIATE` transaction, so
concurrent requests (even from another process) can never admit more than the limit. An album
is refused as in the catalog, then as already queued, and only then against the limits, so a
refusal never spends anything. Global capacity is the admin side's CapacityStatus
(`storage.queue_admin_read.capacity`), so both views agree.

Queue positions (`storage.queue_position`) count top-level PENDING work ahead in claim order.
`resets_at` in a user's limit status is the next 00:00 UTC, except when only the queue-size
limit binds: that one frees up when one of the user's items finishes, at no known time, so it
is null then.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from daemon.config import DownloadManagerConfig
from storage import queue_admin_read
from storage.ids import content_id
from storage.queue_position import positions
from storage.queue_schema import (
    DAY,
    TERMINAL,
    AuditEvent,
    ContentType,
    Priority,
    QueueStoreBase,
    Source,
    Status,
    append_audit,
    item_json,
)

_USER_COUNTS = """SELECT COALESCE(SUM(created_at >= ?), 0), COALESCE(SUM(status NOT IN (?, ?)), 0)
    FROM queue_items WHERE parent_id IS NULL AND requested_by = ?"""
_ACTIVE = "SELECT 1 FROM queue_items WHERE content_id = ? AND status NOT IN (?, ?) LIMIT 1"
_INSERT = """INSERT INTO queue_items (id, status, priority, content_type, content_id,
    content_name, artist_name, request_source, requested_by, created_at, max_retries)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *"""
_MINE = """SELECT * FROM queue_items WHERE parent_id IS NULL AND requested_by = ?
    ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?"""
_MINE_BY_STATUS = """SELECT * FROM queue_items WHERE parent_id IS NULL AND requested_by = ?
    AND status = ? ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?"""
_IN_QUEUE = """SELECT DISTINCT content_id FROM queue_items
    WHERE content_id IN (SELECT value FROM json_each(?)) AND status NOT IN (?, ?)"""


class Rejection(StrEnum):
    """Why a request was not queued; also the `skipped[].reason` of a discography request."""

    IN_CATALOG = "in_catalog"
    IN_QUEUE = "in_queue"
    RATE_LIMITED = "rate_limited"


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


@dataclass(frozen=True)
class AlbumRequest:
    """The outcome of `request_album`: a queued item, or why not (with the limits after it)."""

    limits: UserLimitStatus
    request_id: str | None = None
    queue_position: int | None = None
    rejected: Rejection | None = None


@dataclass(frozen=True)
class DiscographyRequest:
    """The outcome of `request_discography`: the items queued and the albums skipped."""

    limits: UserLimitStatus
    request_ids: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


class _Budget:
    """A user's remaining allowance inside one transaction."""

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


class RequestStore(QueueStoreBase):
    # -- requests ----------------------------------------------------------------------------

    def request_album(
        self,
        user: str,
        album_id: str,
        album_name: str,
        artist_name: str,
        now: int,
        in_catalog: bool,
    ) -> AlbumRequest:
        """Queue one album for `user` unless it is in the catalog (`in_catalog`, looked up by
        the caller in the other database), already queued, or over the user's limits."""
        content_id(album_id)
        with self.db.write() as conn:
            budget = _Budget(conn, self.dm, user, now)
            if in_catalog:
                return AlbumRequest(budget.status(), rejected=Rejection.IN_CATALOG)
            if _active(conn, album_id):
                return AlbumRequest(budget.status(), rejected=Rejection.IN_QUEUE)
            if not budget.allows_one():
                return AlbumRequest(budget.status(), rejected=Rejection.RATE_LIMITED)
            row = self._insert(conn, user, album_id, album_name, artist_name, now, {})
            budget.spend_one()
            position = positions(conn, [row])[row["id"]]
        self._count([AuditEvent.REQUEST_CREATED])
        return AlbumRequest(budget.status(), request_id=row["id"], queue_position=position)

    def request_discography(
        self,
        user: str,
        albums: Sequence[tuple[str, str]],
        artist_name: str,
        now: int,
        in_catalog_ids: set[str],
    ) -> DiscographyRequest:
        """Queue every album `(id, name)` of an artist that is neither in the catalog nor
        already queued, one request each against the user's limits, in one transaction; the
        rest are skipped with their reason. A repeated id is skipped as `in_queue`."""
        for album_id, _ in albums:
            content_id(album_id)
        request_ids: list[str] = []
        skipped: list[dict[str, str]] = []
        with self.db.write() as conn:
            budget = _Budget(conn, self.dm, user, now)
            for album_id, name in albums:
                reason = self._discography_skip(conn, budget, album_id, in_catalog_ids)
                if reason is not None:
                    skipped.append({"album_id": album_id, "reason": reason.value})
                    continue
                details = {"via": "discography"}
                row = self._insert(conn, user, album_id, name, artist_name, now, details)
                request_ids.append(row["id"])
                budget.spend_one()
            limits = budget.status()
        self._count([AuditEvent.REQUEST_CREATED] * len(request_ids))
        return DiscographyRequest(limits, request_ids, skipped)

    @staticmethod
    def _discography_skip(
        conn: sqlite3.Connection, budget: _Budget, album_id: str, in_catalog_ids: set[str]
    ) -> Rejection | None:
        if album_id in in_catalog_ids:
            return Rejection.IN_CATALOG
        if _active(conn, album_id):
            return Rejection.IN_QUEUE
        if not budget.allows_one():
            return Rejection.RATE_LIMITED
        return None

    def _insert(
        self,
        conn: sqlite3.Connection,
        user: str,
        album_id: str,
        album_name: str,
        artist_name: str,
        now: int,
        details: dict[str, Any],
    ) -> sqlite3.Row:
        row: sqlite3.Row = conn.execute(
            _INSERT,
            (str(uuid.uuid4()), Status.PENDING.value, int(Priority.USER),
             ContentType.ALBUM.value, album_id, album_name, artist_name, Source.USER.value, user,
             now, self.dm.max_retries),
        ).fetchone()  # fmt: skip
        details = {"content_name": album_name, "artist_name": artist_name, **details}
        append_audit(conn, AuditEvent.REQUEST_CREATED, row, details, at=now)
        return row

    # -- reads -------------------------------------------------------------------------------

    def queue_position(self, item_id: str) -> int | None:
        """1 + the top-level PENDING items ahead in claim order; None unless the item is a
        PENDING top-level item."""
        with self.db.read() as conn:
            conn.execute("BEGIN")  # the item and the count from one snapshot
            row = _get(conn, item_id)
            if row is None or row["parent_id"] is not None:
                return None
            return positions(conn, [row]).get(item_id)

    def my_requests(
        self, user: str, status: Status | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """The user's top-level items, newest first, each with `progress` and `queue_position`
        (null unless PENDING)."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return _mine(conn, user, status, limit, offset)

    def my_requests_and_limits(
        self, user: str, status: Status | None, limit: int, offset: int, now: int
    ) -> tuple[list[dict[str, Any]], UserLimitStatus]:
        """`my_requests` and `user_limits` from one snapshot, in one call (one worker-thread
        round trip for the route that shows both)."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            mine = _mine(conn, user, status, limit, offset)
            return mine, _Budget(conn, self.dm, user, now).status()

    def item_for_user(self, item_id: str, user: str) -> dict[str, Any] | None:
        """The user's own top-level item with `progress`, `queue_position` and `children`
        (QueueItems in creation order); None for anything else, so others' items stay hidden."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            row = _get(conn, item_id)
            if row is None or row["parent_id"] is not None or row["requested_by"] != user:
                return None
            (item,) = queue_admin_read.shape(conn, [row])
            children = conn.execute(
                "SELECT * FROM queue_items WHERE parent_id = ? ORDER BY seq", (item_id,)
            )
            item["children"] = [item_json(child) for child in children]
            return item

    def user_limits(self, user: str, now: int) -> UserLimitStatus:
        with self.db.read() as conn:
            return _Budget(conn, self.dm, user, now).status()

    def limits_and_capacity(self, user: str, now: int) -> tuple[UserLimitStatus, dict[str, Any]]:
        """`user_limits` and the global CapacityStatus (ALBUM items whose processing started
        in this UTC hour / day) from one snapshot, in one call."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return _Budget(conn, self.dm, user, now).status(), queue_admin_read.capacity(
                conn, self.dm, now
            )

    def in_queue_ids(self, content_ids: Sequence[str]) -> set[str]:
        """Which of these ids have a non-terminal item (for search results)."""
        if not content_ids:
            return set()
        with self.db.read() as conn:
            rows = conn.execute(_IN_QUEUE, (json.dumps(list(content_ids)), *TERMINAL))
            return {row[0] for row in rows}


def _active(conn: sqlite3.Connection, content: str) -> bool:
    return conn.execute(_ACTIVE, (content, *TERMINAL)).fetchone() is not None


def _get(conn: sqlite3.Connection, item_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM queue_items WHERE id = ?", (item_id,)
    ).fetchone()
    return row


def _mine(
    conn: sqlite3.Connection, user: str, status: Status | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    if status is None:
        rows = conn.execute(_MINE, (user, limit, offset)).fetchall()
    else:
        rows = conn.execute(_MINE_BY_STATUS, (user, status.value, limit, offset)).fetchall()
    return queue_admin_read.shape(conn, rows)
