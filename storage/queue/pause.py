"""The queue's pause (SPEC §8.10 rev 2 operator controls), kept in `queue_pause`.

An admin pauses the queue: nothing new is claimed (`storage.queue.transitions.claim` reads the
row in its own transaction), a file already downloading finishes, and every waiting item shows
`wait.reason` `paused`. The pause is a row, so it outlives a restart; resuming deletes it.

Both are idempotent: pausing a paused queue keeps the first pause as it was (who, when and why)
and resuming a running queue changes nothing, and neither writes an audit entry then, so the
log holds one QUEUE_PAUSED and one QUEUE_RESUMED per pause, each with the admin's handle.

The functions run inside the caller's transaction; those that write return their audit events.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.queue import audit
from storage.queue.model import AuditEvent

_STATE = "SELECT paused_by, paused_at, reason FROM queue_pause"
_PAUSE = """INSERT INTO queue_pause (one, paused_by, paused_at, reason) VALUES (1, ?, ?, ?)
    ON CONFLICT DO NOTHING RETURNING one"""
_RESUME = "DELETE FROM queue_pause RETURNING paused_by, paused_at, reason"


def is_paused(conn: sqlite3.Connection) -> bool:
    return conn.execute(_STATE).fetchone() is not None


def state(conn: sqlite3.Connection) -> dict[str, Any]:
    """`{paused, paused_by, paused_at, reason}` (the last three null while running)."""
    row = conn.execute(_STATE).fetchone()
    if row is None:
        return {"paused": False, "paused_by": None, "paused_at": None, "reason": None}
    return {"paused": True, "paused_by": row[0], "paused_at": row[1], "reason": row[2]}


def pause(
    conn: sqlite3.Connection, admin: str, reason: str | None, now: int
) -> tuple[dict[str, Any], list[AuditEvent]]:
    """Pause the queue for `admin` (QUEUE_PAUSED) unless it is paused already; the state after."""
    if conn.execute(_PAUSE, (admin, now, reason)).fetchone() is None:
        return state(conn), []
    details = {"reason": reason}
    event = audit.append(conn, AuditEvent.QUEUE_PAUSED, None, details, user=admin, at=now)
    return state(conn), [event]


def resume(conn: sqlite3.Connection, admin: str, now: int) -> list[AuditEvent]:
    """Resume the queue for `admin` (QUEUE_RESUMED, saying whose pause ended and how long it
    lasted) unless it is running already."""
    ended = conn.execute(_RESUME).fetchone()
    if ended is None:
        return []
    paused_by, paused_at, reason = ended
    details = {"paused_by": paused_by, "paused_at": paused_at, "reason": reason,
               "paused_secs": max(0, now - paused_at)}  # fmt: skip
    return [audit.append(conn, AuditEvent.QUEUE_RESUMED, None, details, user=admin, at=now)]
