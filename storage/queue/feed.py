"""The queue's committed changes, read back for the live events (SPEC §14).

Every change to the queue appends an audit entry in the transaction that makes it, so the audit
log, read in id order, is the queue's changes in commit order: the events publisher reads it from
a cursor (`actors.events`), and whatever committed is read, whatever rolled back never was. Each
entry comes with the current JSON of its item and of that item's top-level request, read in one
snapshot after the fact: an event says what the request looks like now, never a state that did
not commit.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from storage.queue import limits, reads, rows
from storage.queue.base import StoreBase
from storage.queue.model import item_json


class Change(NamedTuple):
    entry_id: int
    event_type: str
    user: str | None  # who made the change (the requester, or an admin's handle)
    at: int
    details: dict[str, Any] | None
    item: dict[str, Any] | None  # the item's QueueItem JSON now (None: an entry about no item)
    request: dict[str, Any] | None  # its top-level item, shaped as `my-requests` shows it


class Changes(NamedTuple):
    changes: list[Change]
    cursor: int  # the newest audit entry read (the cursor given when there was none)
    capacity: dict[str, Any]  # CapacityStatus now


class QueueFeed(StoreBase):
    def changes_after(self, cursor: int, limit: int, now: int) -> Changes:
        """Up to `limit` audit entries after `cursor`, oldest first, with their items now."""
        with self.db.read() as conn:
            conn.execute("BEGIN")
            entries = conn.execute(
                "SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
            ).fetchall()
            about = (entry["queue_item_id"] for entry in entries if entry["queue_item_id"])
            items = rows.fetch_many(conn, about)
            top_ids = {row["parent_id"] or row["id"] for row in items.values()}
            tops = rows.fetch_many(conn, top_ids - items.keys()) | {
                i: row for i, row in items.items() if i in top_ids
            }
            requests = dict(
                zip(tops, reads.shape(conn, list(tops.values()), dm=self.dm, now=now), strict=True)
            )
            capacity = limits.capacity(conn, self.dm, now)
        changes = []
        for entry in entries:
            row = items.get(entry["queue_item_id"])
            top = None if row is None else requests[row["parent_id"] or row["id"]]
            changes.append(
                Change(
                    entry["id"],
                    entry["event_type"],
                    entry["user"],
                    entry["timestamp"],
                    json.loads(entry["details"]) if entry["details"] else None,
                    None if row is None else item_json(row),
                    top,
                )
            )
        return Changes(changes, entries[-1]["id"] if entries else cursor, capacity)

    def newest_entry(self) -> int:
        """The id of the newest audit entry (0 when there is none)."""
        with self.db.read() as conn:
            newest: int = conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_log").fetchone()[0]
            return newest
