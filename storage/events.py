"""The stored live events of SPEC §14, in `server.db`: what a reconnecting client is replayed.

Every event is a row with an id that only grows (AUTOINCREMENT: never reused, across restarts
and pruning), a name, its JSON data, and who may see it: its `audience` is `owner` (the user
handle in `owner`: events about their own requests), `admin` (ViewAnalytics) or `catalog`
(AccessCatalog). Events are appended in batches, one transaction each, together with the cursor
of the queue's audit log they were made from (`actors.events`), so a batch is stored whole or
not at all, and after a crash the publisher resumes from the cursor and makes the same events
again. Those commits do not wait for the disk: a power cut can roll back the newest batches, and
their cursor with them.

`event_retention_days` bounds the table; pruning remembers the newest id it deleted, which is
how a client resuming from an id older than what is kept is told to `resync`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from storage.db import Database


class Audience(StrEnum):
    OWNER = "owner"  # the requester named in `owner`
    ADMIN = "admin"  # ViewAnalytics
    CATALOG = "catalog"  # AccessCatalog


class NewEvent(NamedTuple):
    name: str
    audience: Audience
    owner: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    audience: Audience
    owner: str | None
    data: str  # JSON text, as sent

    def sse(self) -> bytes:
        """The event in `text/event-stream` form (the data is one line of JSON)."""
        return f"id: {self.id}\nevent: {self.name}\ndata: {self.data}\n\n".encode()


@dataclass(frozen=True)
class Viewer:
    """Who reads a stream: which events they may see."""

    handle: str
    admin: bool  # ViewAnalytics
    catalog: bool  # AccessCatalog

    def sees(self, event: Event) -> bool:
        if event.audience is Audience.OWNER:
            return event.owner == self.handle
        return self.admin if event.audience is Audience.ADMIN else self.catalog


class Window(NamedTuple):
    pruned_through: int  # the newest id no longer kept (0: nothing pruned)
    newest: int  # the newest id stored (0: none yet)

    def resumable(self, last_id: int) -> bool:
        """Whether a client that saw `last_id` can be replayed everything after it."""
        return self.pruned_through <= last_id <= self.newest


# The rows a viewer may see; the parameters are the viewer's handle and permissions.
_AFTER = """SELECT * FROM events WHERE id > ? AND ((audience = 'owner' AND owner = ?)
    OR (audience = 'admin' AND ?) OR (audience = 'catalog' AND ?)) ORDER BY id LIMIT ?"""


def _row(row: sqlite3.Row) -> Event:
    return Event(row["id"], row["name"], Audience(row["audience"]), row["owner"], row["data"])


class EventStore:
    """Blocking operations on the events of `server.db` (run them with `await db.run(...)`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(self, events: list[NewEvent], at: int, audit_cursor: int | None) -> list[Event]:
        """Store a batch in one transaction, with the audit cursor it was made up to (None:
        unchanged); return the events with their ids, in order."""
        stored = []
        with self.db.write(durable=False) as conn:
            for event in events:
                data = json.dumps(event.data, separators=(",", ":"))
                (event_id,) = conn.execute(
                    "INSERT INTO events (at, name, audience, owner, data) VALUES (?, ?, ?, ?, ?)"
                    " RETURNING id",
                    (at, event.name, event.audience.value, event.owner, data),
                ).fetchone()
                stored.append(Event(event_id, event.name, event.audience, event.owner, data))
            if audit_cursor is not None:
                conn.execute("UPDATE event_state SET audit_cursor = ?", (audit_cursor,))
        return stored

    def audit_cursor(self) -> int:
        with self.db.read() as conn:
            cursor: int = conn.execute("SELECT audit_cursor FROM event_state").fetchone()[0]
            return cursor

    def window(self) -> Window:
        with self.db.read() as conn:
            pruned = conn.execute("SELECT pruned_through FROM event_state").fetchone()[0]
            newest = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
            return Window(pruned, max(newest, pruned))

    def after(self, last_id: int, viewer: Viewer, limit: int) -> list[Event]:
        """Up to `limit` events after `last_id` that `viewer` may see, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                _AFTER, (last_id, viewer.handle, viewer.admin, viewer.catalog, limit)
            ).fetchall()
        return [_row(row) for row in rows]

    def prune_chunk(self, before: int, limit: int = 5000) -> int:
        """Delete up to `limit` of the oldest events stored before `before` (unix seconds), in
        one short transaction; return how many."""
        with self.db.write() as conn:
            newest = conn.execute(
                "SELECT MAX(id) FROM (SELECT id FROM events WHERE at < ? ORDER BY id LIMIT ?)",
                (before, limit),
            ).fetchone()[0]
            if newest is None:
                return 0
            deleted = conn.execute("DELETE FROM events WHERE id <= ?", (newest,)).rowcount
            conn.execute(
                "UPDATE event_state SET pruned_through = MAX(pruned_through, ?)", (newest,)
            )
            return int(deleted)
