"""Notifications in download_queue.db (SPEC §16 rev 2): the outbox the notifier delivers from, and
each user's inbox.

A notification is written in the transaction of the change that causes it. `after_entry` is
called by `storage.queue.audit.append` for every audit entry, so whichever transition ends a
user's request (a completion, an album settled by its last child, a failure, a cancel that
leaves an album complete) writes, with its entry: the requester's inbox row and outbox row, and
for a failure the admins' `request.failed`; a pause writes `queue.paused`, and a file the disk
refused `disk_trouble` (at most one an hour). The claim that fills the global capacity writes
`capacity_reached` (`reached_capacity`). Operator events not born in a queue transaction (stale
work, a failed job) are written by `NoticeStore.alarm` as soon as they are seen.

An outbox row names the user it is for (NULL: the admins' URLs), not URLs: the notifier reads
the user's URLs and chosen events when it delivers, so a URL removed meanwhile is not sent to.
Delivery is at least once: a crash between a send and its record sends it again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.queue.base import StoreBase
from storage.queue.model import AuditEvent, ErrorType, Row, Status, failure_json

ADMIN_EVENTS = (
    "request.failed", "stale_work", "job.failed", "disk_trouble", "capacity_reached",
    "queue.paused",
)  # fmt: skip
REPEAT_AFTER_S = 3600  # a condition that persists (a full disk) is told again after an hour
_OUTBOX = """INSERT INTO outbox (created_at, event, user, title, body, request_id, next_attempt_at)
    VALUES (?, ?, ?, ?, ?, ?, ?)"""
_INBOX = """INSERT INTO inbox (user, created_at, event, title, body, request_id)
    VALUES (?, ?, ?, ?, ?, ?)"""
_INBOX_PAGE = "SELECT * FROM inbox WHERE user = ? ORDER BY id DESC LIMIT ? OFFSET ?"
_INBOX_UNREAD_PAGE = """SELECT * FROM inbox INDEXED BY inbox_unread WHERE user = ? AND read = 0
    ORDER BY id DESC LIMIT ? OFFSET ?"""
_RECENT = "SELECT 1 FROM outbox WHERE event = ? AND created_at > ? LIMIT 1"
_PRUNE_DONE = """DELETE FROM outbox WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_done
    WHERE state IN ('sent', 'skipped') AND finished_at < ? ORDER BY finished_at, id LIMIT ?)"""
_PRUNE_FAILED = """DELETE FROM outbox WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_failed
    WHERE state = 'failed' AND finished_at < ? ORDER BY finished_at, id LIMIT ?)"""
_PRUNE_INBOX = """DELETE FROM inbox WHERE id IN (SELECT id FROM inbox INDEXED BY inbox_time
    WHERE created_at < ? ORDER BY created_at, id LIMIT ?)"""


def _name(item: Row) -> str:
    name = item["content_name"] or item["content_id"]
    return f"{name} by {item['artist_name']}" if item["artist_name"] else str(name)


def after_entry(
    conn: sqlite3.Connection,
    event: AuditEvent,
    item: Row | None,
    details: dict[str, Any] | None,
    at: int,
) -> None:
    """The notifications one audit entry causes, in its transaction (see the module)."""
    if event is AuditEvent.QUEUE_PAUSED:
        reason = (details or {}).get("reason")
        body = "Nothing new is downloaded until an admin resumes it." + (
            f" Reason: {reason}" if reason else ""
        )
        _outbox(conn, at, "queue.paused", None, "Download queue paused", body)
        return
    if item is None:
        return
    if (details or {}).get("error_type") == ErrorType.STORAGE.value:
        message = (details or {}).get("error_message") or "the disk refused a write"
        alarm(conn, "disk_trouble", "Disk trouble", f"A download could not be saved: {message}", at)
    if event not in (AuditEvent.DOWNLOAD_COMPLETED, AuditEvent.DOWNLOAD_FAILED):
        return
    if item["parent_id"] is not None or item["request_source"] != "USER":
        return
    user = item["requested_by"]
    if user is None:
        return
    if event is AuditEvent.DOWNLOAD_COMPLETED and item["status"] == Status.COMPLETED.value:
        title, body = "Download complete", f"{_name(item)} is in the catalog."
        _for_user(conn, at, "request.completed", user, title, body, item["id"])
    elif event is AuditEvent.DOWNLOAD_FAILED and item["status"] == Status.FAILED.value:
        failure = failure_json(item)
        reason = failure["reason"] if failure else "it failed."
        title, body = "Download failed", f"{_name(item)} could not be downloaded. {reason}"
        _for_user(conn, at, "request.failed", user, title, body, item["id"])
        body = f"{body} (requested by {user})"
        _outbox(conn, at, "request.failed", None, title, body, item["id"])


def _for_user(
    conn: sqlite3.Connection, at: int, event: str, user: str, title: str, body: str, request: str
) -> None:
    conn.execute(_INBOX, (user, at, event, title, body, request))
    _outbox(conn, at, event, user, title, body, request)


def _outbox(
    conn: sqlite3.Connection,
    at: int,
    event: str,
    user: str | None,
    title: str,
    body: str,
    request: str | None = None,
) -> None:
    conn.execute(_OUTBOX, (at, event, user, title, body, request, at))


def alarm(conn: sqlite3.Connection, event: str, title: str, body: str, at: int) -> bool:
    """An operator event for the admins' URLs, unless the same event was written within the
    last hour (a condition that persists is told once an hour, not once per item); whether it
    was written."""
    if conn.execute(_RECENT, (event, at - REPEAT_AFTER_S)).fetchone() is not None:
        return False
    _outbox(conn, at, event, None, title, body)
    return True


def reached_capacity(conn: sqlite3.Connection, room: dict[str, Any], at: int) -> None:
    """The claim that started an album has used up the global capacity: tell the admins."""
    resets = datetime.fromtimestamp(room["resets_at"], UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"{room['albums_this_hour']} of {room['max_per_hour']} albums this hour, "
        f"{room['albums_today']} of {room['max_per_day']} today: new albums wait until {resets}."
    )
    alarm(conn, "capacity_reached", "Download capacity reached", body, at)


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt of an outbox row came to."""

    state: str  # "pending" (retry at `next_attempt_at`), "sent", "failed", "skipped"
    delivered: Sequence[str]  # the ids of the URLs sent to so far
    error: str | None = None
    next_attempt_at: int | None = None


def _notice_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "created_at": row["created_at"],
        "event": row["event"],
        "user": row["user"],
        "title": row["title"],
        "body": row["body"],
        "request_id": row["request_id"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "failed_at": row["finished_at"],
    }


def _inbox_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "created_at": row["created_at"],
        "event": row["event"],
        "title": row["title"],
        "body": row["body"],
        "request_id": row["request_id"],
        "read": bool(row["read"]),
    }


class NoticeStore(StoreBase):
    """The notifier's outbox and the users' inboxes, over the queue's database."""

    def due(self, now: int, limit: int) -> list[sqlite3.Row]:
        """Pending notifications due by `now`, oldest first."""
        with self.db.read() as conn:
            return conn.execute(
                """SELECT * FROM outbox INDEXED BY outbox_due WHERE state = 'pending'
                    AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?""",
                (now, limit),
            ).fetchall()

    def next_due(self, busy: Sequence[int] = ()) -> int | None:
        """When the earliest pending notification is due, leaving out `busy` ones (being
        delivered), if any."""
        with self.db.read() as conn:
            row = conn.execute(
                """SELECT next_attempt_at FROM outbox INDEXED BY outbox_due
                    WHERE state = 'pending' AND id NOT IN (SELECT value FROM json_each(?))
                    ORDER BY next_attempt_at, id LIMIT 1""",
                (json.dumps(list(busy)),),
            ).fetchone()
            return None if row is None else int(row[0])

    def record(self, notice_id: int, outcome: Outcome, now: int) -> None:
        """Record one delivery attempt's outcome."""
        finished = None if outcome.state == "pending" else now
        with self.db.write() as conn:
            conn.execute(
                """UPDATE outbox SET state = ?, attempts = attempts + 1, delivered = ?,
                    last_error = ?, next_attempt_at = COALESCE(?, next_attempt_at),
                    finished_at = ? WHERE id = ? AND state = 'pending'""",
                (outcome.state, json.dumps(list(outcome.delivered)), outcome.error,
                 outcome.next_attempt_at, finished, notice_id),
            )  # fmt: skip

    def alarm(self, event: str, title: str, body: str, now: int) -> bool:
        """An operator event seen outside a queue transaction (`alarm`); whether it was written."""
        with self.db.write() as conn:
            return alarm(conn, event, title, body, now)

    def failed(self, limit: int, offset: int) -> dict[str, Any]:
        """Notifications given up on, newest first: `{items, total}`."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            total = conn.execute(
                "SELECT COUNT(*) FROM outbox INDEXED BY outbox_failed WHERE state = 'failed'"
            ).fetchone()[0]
            rows = conn.execute(
                """SELECT * FROM outbox INDEXED BY outbox_failed WHERE state = 'failed'
                    ORDER BY finished_at DESC, id DESC LIMIT ? OFFSET ?""",
                (limit, offset),
            ).fetchall()
            conn.execute("COMMIT")
        return {"items": [_notice_json(row) for row in rows], "total": total}

    def inbox(self, user: str, unread_only: bool, limit: int, offset: int) -> dict[str, Any]:
        """A page of the user's inbox, newest first, and how many are unread."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            rows = conn.execute(
                _INBOX_UNREAD_PAGE if unread_only else _INBOX_PAGE, (user, limit, offset)
            ).fetchall()
            unread = conn.execute(
                "SELECT COUNT(*) FROM inbox INDEXED BY inbox_unread WHERE user = ? AND read = 0",
                (user,),
            ).fetchone()[0]
            conn.execute("COMMIT")
        return {"items": [_inbox_json(row) for row in rows], "unread": unread}

    def prune_chunk(
        self, done_before: int, failed_before: int | None, inbox_before: int | None, limit: int
    ) -> tuple[int, int]:
        """Delete, in one transaction, up to `limit` each of: the notifications delivered (or
        skipped) before `done_before`, those failed before `failed_before`, the inbox items
        created before `inbox_before` (read or not; None keeps them). Pending ones are never
        deleted. How many outbox rows and inbox items went; retention calls it until both
        are 0, so the write lock is never held for long."""
        with self.db.write() as conn:
            outbox = conn.execute(_PRUNE_DONE, (done_before, limit)).rowcount
            if failed_before is not None:
                outbox += conn.execute(_PRUNE_FAILED, (failed_before, limit)).rowcount
            inbox = 0
            if inbox_before is not None:
                inbox = conn.execute(_PRUNE_INBOX, (inbox_before, limit)).rowcount
            return outbox, inbox

    def mark_read(self, user: str, ids: Sequence[int] | None) -> int:
        """Mark the user's items `ids` read (None: all of them); how many changed. Ids that
        are not the user's are ignored."""
        with self.db.write() as conn:
            if ids is None:
                cursor = conn.execute(
                    "UPDATE inbox SET read = 1 WHERE user = ? AND read = 0", (user,)
                )
            else:
                cursor = conn.execute(
                    """UPDATE inbox SET read = 1 WHERE user = ? AND read = 0
                        AND id IN (SELECT value FROM json_each(?))""",
                    (user, json.dumps(list(ids))),
                )
            return cursor.rowcount
