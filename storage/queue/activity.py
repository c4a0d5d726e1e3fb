"""Hourly activity counters (`activity_hourly`): what finished in each UTC hour.

A completion or a terminal failure adds to the counters of its hour inside the transaction of
that transition, so the counters and the items never disagree; the admin's activity read
(SPEC §8.10) lists them hour by hour.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.db import table
from storage.queue.model import HOUR, ContentType

FIELDS = ("albums", "tracks", "images", "bytes", "failed")


def bump(
    conn: sqlite3.Connection,
    now: int,
    *,
    albums: int = 0,
    tracks: int = 0,
    images: int = 0,
    size: int = 0,
    failed: int = 0,
) -> None:
    """Add to the counters of the UTC hour containing `now`."""
    conn.execute(
        """INSERT INTO activity_hourly (hour, albums, tracks, images, bytes, failed)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (hour) DO UPDATE SET albums = albums + excluded.albums,
                tracks = tracks + excluded.tracks, images = images + excluded.images,
                bytes = bytes + excluded.bytes, failed = failed + excluded.failed""",
        (now - now % HOUR, albums, tracks, images, size, failed),
    )


def count_completion(conn: sqlite3.Connection, content_type: str, size: int, now: int) -> None:
    """One item of `content_type` completed with `size` bytes."""
    kind = ContentType(content_type)
    if kind is ContentType.ALBUM:
        bump(conn, now, albums=1)  # its bytes were counted with each child
    elif kind is ContentType.TRACK_AUDIO:
        bump(conn, now, tracks=1, size=size)
    else:
        bump(conn, now, images=1, size=size)


def hourly(conn: sqlite3.Connection, hours: int, now: int) -> dict[str, Any]:
    """One bucket per UTC hour for the last `hours` hours (current one included), oldest first,
    and their totals. Hours without activity appear with zeros so a chart needs no gap filling.
    """
    current = now - now % HOUR
    first = current - (hours - 1) * HOUR
    rows = table(conn, "activity_hourly").rows_where("hour >= ? AND hour <= ?", [first, current])
    stored = {row["hour"]: row for row in rows}
    buckets = []
    for hour in range(first, current + 1, HOUR):
        row = stored.get(hour)
        buckets.append({"hour": hour, **{f: row[f] if row else 0 for f in FIELDS}})
    totals = {f: sum(bucket[f] for bucket in buckets) for f in FIELDS}
    return {"hourly": buckets, "totals": totals}
