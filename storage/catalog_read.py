"""Catalog queries: the JSON shapes of SPEC §5 and the keyset scans the integrity watchdog pages.

Functions take a connection lent by `CatalogStore`. A shape built from several queries reads in
one snapshot (`BEGIN`), so it never mixes an album with tracks from a later ingestion. Scans use
keyset pagination on the primary key (no OFFSET), so each page costs the same however far in it
is. Lists of ids passed to SQL travel as one JSON parameter (`json_each`), never as built SQL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

_EXISTING = {
    "albums": "SELECT id FROM albums WHERE id IN (SELECT value FROM json_each(?))",
    "artists": "SELECT id FROM artists WHERE id IN (SELECT value FROM json_each(?))",
}
_LINK_PAGES = {
    "album_images": """SELECT album_id, image_id FROM album_images
        WHERE (album_id, image_id) > (?, ?) ORDER BY album_id, image_id LIMIT ?""",
    "artist_images": """SELECT artist_id, image_id FROM artist_images
        WHERE (artist_id, image_id) > (?, ?) ORDER BY artist_id, image_id LIMIT ?""",
}
_TRACK_ROWS = """SELECT id, name, album_id, number, disc_number, duration_ms, is_explicit,
    audio_format FROM tracks"""


def _ids(conn: sqlite3.Connection, sql: str, *params: Any) -> list[str]:
    return [row[0] for row in conn.execute(sql, params)]


def _grouped(conn: sqlite3.Connection, sql: str, *params: Any) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for owner, target in conn.execute(sql, params):
        groups.setdefault(owner, []).append(target)
    return groups


def _track(row: sqlite3.Row, artist_ids: list[str]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "album_id": row["album_id"],
        "artist_ids": artist_ids,
        "number": row["number"],
        "disc_number": row["disc_number"],
        "duration_ms": row["duration_ms"],
        "is_explicit": bool(row["is_explicit"]),
        "audio_available": row["audio_format"] is not None,
        "audio_format": row["audio_format"],
    }


def _artists(conn: sqlite3.Connection, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The artists among `ids` that the catalog holds, in the order given."""
    wanted = json.dumps(list(ids))
    rows = {
        row["id"]: row
        for row in conn.execute(
            "SELECT id, name, genres FROM artists WHERE id IN (SELECT value FROM json_each(?))",
            (wanted,),
        )
    }
    images = _grouped(
        conn,
        """SELECT artist_id, image_id FROM artist_images
            WHERE artist_id IN (SELECT value FROM json_each(?)) ORDER BY artist_id, position""",
        wanted,
    )
    return [
        {
            "id": rows[i]["id"],
            "name": rows[i]["name"],
            "genres": json.loads(rows[i]["genres"]),
            "image_ids": images.get(i, []),
        }
        for i in ids
        if i in rows
    ]


def artist_json(conn: sqlite3.Connection, artist_id: str) -> dict[str, Any] | None:
    conn.execute("BEGIN")
    found = _artists(conn, [artist_id])
    if not found:
        return None
    # Newest-first would hide the back catalogue's order; releases read oldest first, undated last.
    found[0]["album_ids"] = _ids(
        conn,
        """SELECT aa.album_id FROM album_artists aa JOIN albums a ON a.id = aa.album_id
            WHERE aa.artist_id = ?
            ORDER BY a.release_date IS NULL, a.release_date, a.id""",
        artist_id,
    )
    return found[0]


def album_json(conn: sqlite3.Connection, album_id: str) -> dict[str, Any] | None:
    conn.execute("BEGIN")
    row = conn.execute("SELECT * FROM albums WHERE id = ?", (album_id,)).fetchone()
    if row is None:
        return None
    artist_ids = _ids(
        conn, "SELECT artist_id FROM album_artists WHERE album_id = ? ORDER BY position", album_id
    )
    track_artists = _grouped(
        conn,
        """SELECT ta.track_id, ta.artist_id FROM tracks t
            JOIN track_artists ta ON ta.track_id = t.id
            WHERE t.album_id = ? ORDER BY ta.track_id, ta.position""",
        album_id,
    )
    tracks = [
        _track(t, track_artists.get(t["id"], []))
        for t in conn.execute(
            _TRACK_ROWS + " WHERE album_id = ? ORDER BY disc_number, number, id",
            (album_id,),
        )
    ]
    # Album artists first, then featured track artists, each once.
    everyone = list(dict.fromkeys([*artist_ids, *(a for t in tracks for a in t["artist_ids"])]))
    return {
        "id": row["id"],
        "name": row["name"],
        "album_type": row["album_type"],
        "label": row["label"],
        "release_date": row["release_date"],
        "genres": json.loads(row["genres"]),
        "artist_ids": artist_ids,
        "image_ids": _ids(
            conn,
            "SELECT image_id FROM album_images WHERE album_id = ? ORDER BY position",
            album_id,
        ),
        "discs": json.loads(row["discs"]),
        "tracks": tracks,
        "artists": _artists(conn, everyone),
    }


def track_json(conn: sqlite3.Connection, track_id: str) -> dict[str, Any] | None:
    conn.execute("BEGIN")
    row = conn.execute(_TRACK_ROWS + " WHERE id = ?", (track_id,)).fetchone()
    if row is None:
        return None
    artist_ids = _ids(
        conn, "SELECT artist_id FROM track_artists WHERE track_id = ? ORDER BY position", track_id
    )
    return _track(row, artist_ids)


def image_json(conn: sqlite3.Connection, image_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT id, size, width, height FROM images WHERE id = ?", (image_id,)
    ).fetchone()
    return None if row is None else dict(row)


def existing_ids(conn: sqlite3.Connection, table: str, ids: Sequence[str]) -> set[str]:
    return set(_ids(conn, _EXISTING[table], json.dumps(list(ids))))


def track_audio_page(
    conn: sqlite3.Connection, after_id: str, limit: int
) -> list[tuple[str, str | None, str]]:
    rows = conn.execute(
        "SELECT id, audio_format, album_id FROM tracks WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    )
    return [(r[0], r[1], r[2]) for r in rows]


def link_page(
    conn: sqlite3.Connection, table: str, after: tuple[str, str], limit: int
) -> list[tuple[str, str]]:
    rows = conn.execute(_LINK_PAGES[table], (after[0], after[1], limit))
    return [(r[0], r[1]) for r in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM artists), (SELECT count(*) FROM albums),
            (SELECT count(*) FROM tracks), (SELECT count(*) FROM images)"""
    ).fetchone()
    return {"artists": row[0], "albums": row[1], "tracks": row[2], "images": row[3]}
