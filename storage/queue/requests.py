"""The users' store (SPEC §8.3, §8.4): album and discography requests against the per-user
limits, cancelling one's own request, a user's own requests, their limits and the global
capacity.

A request checks and inserts in one `BEGIN IMMEDIATE` transaction (`storage.queue.limits`), so
concurrent requests never admit more than the limit. An album is refused as in the catalog,
then as already queued, and only then against the limits, so a refusal never spends anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from storage.ids import content_id
from storage.queue import audit, reads, rows, transitions
from storage.queue.base import StoreBase
from storage.queue.limits import Budget, UserLimitStatus, capacity
from storage.queue.model import AuditEvent, ContentType, Priority, Source, Status, at_or_now
from storage.queue.positions import positions
from storage.queue.rows import NewItem
from storage.queue.transitions import Cancelled, CancelRefused


class Rejection(StrEnum):
    """Why a request was not queued; also the `skipped[].reason` of a discography request."""

    IN_CATALOG = "in_catalog"
    IN_QUEUE = "in_queue"
    RATE_LIMITED = "rate_limited"


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


class RequestStore(StoreBase):
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
            budget = Budget(conn, self.dm, user, now)
            reason = _refusal(conn, budget, album_id, in_catalog)
            if reason is not None:
                return AlbumRequest(budget.status(), rejected=reason)
            row = self._insert(conn, user, album_id, album_name, artist_name, now, {})
            budget.spend_one()
            position = positions(conn, [row])[row["id"]]
        self.on_audit([AuditEvent.REQUEST_CREATED])
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
            budget = Budget(conn, self.dm, user, now)
            for album_id, name in albums:
                reason = _refusal(conn, budget, album_id, album_id in in_catalog_ids)
                if reason is not None:
                    skipped.append({"album_id": album_id, "reason": reason.value})
                    continue
                details = {"via": "discography"}
                row = self._insert(conn, user, album_id, name, artist_name, now, details)
                request_ids.append(row["id"])
                budget.spend_one()
            limits = budget.status()
        self.on_audit([AuditEvent.REQUEST_CREATED] * len(request_ids))
        return DiscographyRequest(limits, request_ids, skipped)

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
        item = NewItem(
            ContentType.ALBUM, album_id, Priority.USER, Source.USER, user, album_name, artist_name
        )
        row = rows.insert(conn, item, self.dm.max_retries, now)
        assert row is not None  # only a child can already exist
        details = {"content_name": album_name, "artist_name": artist_name, **details}
        audit.append(conn, AuditEvent.REQUEST_CREATED, row, details, at=now)
        return row

    def cancel_request(self, item_id: str, user: str, now: int) -> tuple[dict[str, Any], Cancelled]:
        """Cancel the user's own top-level item and its unfinished children in one transaction
        (`transitions.cancel`); its QueueItem JSON after, and what was cancelled. Raises
        `CancelRefused`: 404 for anything but the user's own top-level item (others' stay
        hidden), 409 when it has already ended."""
        with self.db.write() as conn:
            row = rows.fetch(conn, item_id)
            if row is None or row["parent_id"] is not None or row["requested_by"] != user:
                raise CancelRefused(404, "no such request of yours")
            cancelled, events = transitions.cancel(conn, row, user, now)
            (item,) = reads.shape(conn, [rows.fetch(conn, item_id) or row], dm=self.dm, now=now)
        self.on_audit(events)
        return item, cancelled

    # -- reads -------------------------------------------------------------------------------

    def my_requests_and_limits(
        self, user: str, status: Status | None, limit: int, offset: int, now: int
    ) -> tuple[list[dict[str, Any]], UserLimitStatus]:
        """The user's top-level items, newest first, each with `progress` and `queue_position`
        (null unless PENDING), and the user's limits, from one snapshot."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            mine = reads.requests_of(conn, user, status, limit, offset, dm=self.dm, now=now)
            return mine, Budget(conn, self.dm, user, now).status()

    def item_for_user(
        self, item_id: str, user: str, now: int | None = None
    ) -> dict[str, Any] | None:
        """The user's own top-level item with `progress`, `queue_position` and `children`
        (QueueItems in creation order), each with its `wait`; None for anything else, so
        others' items stay hidden."""
        with self.db.read() as conn:
            conn.execute("BEGIN")  # the item, its position and its children from one snapshot
            row = rows.fetch(conn, item_id)
            if row is None or row["parent_id"] is not None or row["requested_by"] != user:
                return None
            family = [row, *rows.children(conn, item_id)]
            item, *children = reads.shape(conn, family, dm=self.dm, now=at_or_now(now))
            item["children"] = children
            return item

    def limits_and_capacity(self, user: str, now: int) -> tuple[UserLimitStatus, dict[str, Any]]:
        """The user's limits and the global CapacityStatus from one snapshot."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            return Budget(conn, self.dm, user, now).status(), capacity(conn, self.dm, now)

    def in_queue_ids(self, content_ids: Sequence[str]) -> set[str]:
        """Which of these ids have a non-terminal item (for search results)."""
        if not content_ids:
            return set()
        with self.db.read() as conn:
            return reads.in_queue_ids(conn, content_ids)


def _refusal(
    conn: sqlite3.Connection, budget: Budget, album_id: str, in_catalog: bool
) -> Rejection | None:
    if in_catalog:
        return Rejection.IN_CATALOG
    if rows.is_active(conn, ContentType.ALBUM, album_id):
        return Rejection.IN_QUEUE
    if not budget.allows_one():
        return Rejection.RATE_LIMITED
    return None
