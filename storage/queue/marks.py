"""Content the integrity watchdog gave up on (SPEC §8.9 rev 2), kept in `unavailable_content`.

A repair (a top-level WATCHDOG item) that fails with `not_found` marks its content unavailable,
in the transaction of the failure, with one WATCHDOG_GAVE_UP entry. While the mark is younger
than `unavailable_recheck_days` the watchdog queues no repair for that content and reports it as
`items_unavailable`; after that, the next scan queues one repair again (the mark stays meanwhile),
and if that one fails with `not_found` too the mark is renewed with a new WATCHDOG_GAVE_UP. So a
file the downloader no longer has costs one failed repair per period, not one per scan. With 0
days the watchdog never gives up: no mark is made, and every scan queues the repair.

Only repairs mark. A user's request that fails `not_found` says so on the request itself, and it
is not the watchdog's loop that needs stopping; if the file stays missing, the watchdog's own
repair will find out within a scan. Other failures (timeouts, connection errors, parse errors
after their retries) never mark: they say nothing about what the downloader has.

A mark goes when its content is downloaded (any completion of it), when an admin retries the
failed repair (in the retry's transaction), and when a complete scan finds the file present.

The functions run inside the caller's transaction; those that write return their audit events.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from storage.queue import audit
from storage.queue.model import DAY, AuditEvent, Row, Source

Key = tuple[str, str]  # (content_type, content_id)

_MARK = """INSERT INTO unavailable_content (content_type, content_id, marked_at, queue_item_id)
    VALUES (?, ?, ?, ?) ON CONFLICT (content_type, content_id) DO UPDATE
    SET marked_at = excluded.marked_at, queue_item_id = excluded.queue_item_id"""
_CLEAR = "DELETE FROM unavailable_content WHERE content_type = ? AND content_id = ?"


def is_repair(row: Row) -> bool:
    return row["parent_id"] is None and row["request_source"] == Source.WATCHDOG.value


def give_up(
    conn: sqlite3.Connection, row: Row, recheck_days: int, message: str, now: int
) -> list[AuditEvent]:
    """Mark the content of `row`, a repair that just failed with not_found (WATCHDOG_GAVE_UP);
    nothing with `recheck_days` 0."""
    if recheck_days <= 0:
        return []
    conn.execute(_MARK, (row["content_type"], row["content_id"], now, row["id"]))
    details = {"error_message": message, "recheck_after": now + recheck_days * DAY}
    return [audit.append(conn, AuditEvent.WATCHDOG_GAVE_UP, row, details, at=now)]


def clear(conn: sqlite3.Connection, content_type: str, content_id: str) -> bool:
    """Drop the mark of one content; True if there was one."""
    return conn.execute(_CLEAR, (content_type, content_id)).rowcount > 0


def all_marks(conn: sqlite3.Connection) -> dict[Key, int]:
    """Every mark, with when it was made."""
    rows = conn.execute("SELECT content_type, content_id, marked_at FROM unavailable_content")
    return {(kind, cid): marked_at for kind, cid, marked_at in rows}


def holding(marks: Mapping[Key, int], recheck_days: int, now: int) -> set[Key]:
    """The marks younger than `recheck_days`: content the watchdog must not queue at `now`."""
    if recheck_days <= 0:
        return set()
    since = now - recheck_days * DAY
    return {key for key, marked_at in marks.items() if marked_at > since}


def forget(conn: sqlite3.Connection, marks: Mapping[Key, int]) -> int:
    """Drop the given marks unless they were renewed since they were read; return how many."""
    # `rowcount`: the rows this statement deleted, whatever else the transaction changed.
    return conn.executemany(
        _CLEAR + " AND marked_at = ?", [(kind, cid, at) for (kind, cid), at in marks.items()]
    ).rowcount


def among(conn: sqlite3.Connection, content_type: str, ids: Sequence[str]) -> set[str]:
    """The ids among `ids` (one content type) that carry a mark, in one statement."""
    rows = conn.execute(
        """SELECT content_id FROM unavailable_content
            WHERE content_type = ? AND content_id IN (SELECT value FROM json_each(?))""",
        (content_type, json.dumps(list(ids))),
    )
    return {row[0] for row in rows}
