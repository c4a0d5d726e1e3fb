"""Catalog queries: the JSON shapes of SPEC §5 and the integrity scan's reads.

Functions take a connection lent by `CatalogStore`. A shape built from several queries reads in
one snapshot (`BEGIN`), so it never mixes an album with tracks from a later ingestion. Lists of
ids passed to SQL travel as one JSON parameter (`json_each`), never as built SQL.

The integrity scan compares a whole table against a folder's listing in one statement per kind
(`missing_files`): the listing arrives in slices, each a JSON array, into a temporary table that
is indexed once filled, and the statement returns only the rows whose file is absent. The
comparison runs inside `sqlite3_step`, during which the sqlite3 module releases the interpreter
lock, so a scan of the whole catalog does not hold the lock against the event loop; it can
still be stopped, by a progress handler polled every `PROGRESS_STEPS` virtual-machine steps,
which also leaves the CPU to threads waiting for one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

_EXISTING = {
    "albums": "SELECT id FROM albums WHERE id IN (SELECT value FROM json_each(?))",
    "artists": "SELECT id FROM artists WHERE id IN (SELECT value FROM json_each(?))",
}
_TRACK_ROWS = """SELECT id, name, album_id, number, disc_number, duration_ms, is_explicit,
    audio_format FROM tracks"""
# Each album by its key, its tracks through `tracks_album`: a read per album asked about.
_ALBUMS_AUDIO = """SELECT a.id, t.id, t.audio_format FROM albums a
    LEFT JOIN tracks t ON t.album_id = a.id WHERE a.id IN (SELECT value FROM json_each(?))"""


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


def _tracks_of(shape: dict[str, Any]) -> list[dict[str, Any]]:
    """The tracks of an album's JSON, or the track JSON itself."""
    tracks: list[dict[str, Any]] = shape.get("tracks", [shape])
    return tracks


def track_ids(shape: dict[str, Any]) -> list[str]:
    """The ids of the tracks in an album's or a track's JSON."""
    return [track["id"] for track in _tracks_of(shape)]


def add_availability(shape: dict[str, Any], unavailable: Collection[str]) -> dict[str, Any]:
    """Give each track of an album's or a track's JSON its `availability` (SPEC §8.9), in place:
    `unavailable` if its id is among `unavailable` (the watchdog gave up on its audio, which
    outranks a format still recorded for a file since lost), else `available` if the catalog
    records its audio, else `missing`."""
    for track in _tracks_of(shape):
        if track["id"] in unavailable:
            track["availability"] = "unavailable"
        else:
            track["availability"] = "available" if track["audio_available"] else "missing"
    return shape


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


def albums_audio(
    conn: sqlite3.Connection, album_ids: Sequence[str]
) -> dict[str, dict[str, str | None]]:
    """For each album among `album_ids` that the catalog holds, its tracks' audio formats
    (None: no audio recorded), by track id."""
    found: dict[str, dict[str, str | None]] = {}
    for album, track, audio_format in conn.execute(_ALBUMS_AUDIO, (json.dumps(list(album_ids)),)):
        tracks = found.setdefault(album, {})
        if track is not None:
            tracks[track] = audio_format
    return found


# Per kind: (content id, the ids of the albums it came with, joined by commas, or NULL) of each
# row whose file is not among the names in `temp.scan_listing`, in primary-key order. A
# track or a cover comes with its album; a portrait with every album its artist appears on, as
# the album's artist or on one of its tracks, since any of them may be the download that will
# fetch it. A track's file is `<id>.<audio_format>`, so a track without a format, or whose file
# has another extension, is missing; an image's file is `<id>.jpg`. A leftover
# `<name>.<random>.part` never equals either.
MISSING_FILES = {
    "track_audio": """SELECT id, album_id FROM tracks
        WHERE audio_format IS NULL
            OR id || '.' || audio_format NOT IN (SELECT name FROM temp.scan_listing)
        ORDER BY id""",
    "album_images": """SELECT image_id, album_id FROM album_images
        WHERE image_id || '.jpg' NOT IN (SELECT name FROM temp.scan_listing)
        ORDER BY album_id, image_id""",
    "artist_images": """SELECT image_id, (SELECT group_concat(album_id) FROM (
                SELECT album_id FROM album_artists
                    WHERE album_artists.artist_id = artist_images.artist_id
                UNION SELECT tracks.album_id FROM track_artists
                    JOIN tracks ON tracks.id = track_artists.track_id
                    WHERE track_artists.artist_id = artist_images.artist_id))
        FROM artist_images
        WHERE image_id || '.jpg' NOT IN (SELECT name FROM temp.scan_listing)
        ORDER BY artist_id, image_id""",
}
# Between two polls of `stop`: about 0.6 ms of SQLite work here (a 100,000-track comparison
# polls about 220 times). Each poll takes the interpreter lock for a few microseconds.
PROGRESS_STEPS = 10_000


@contextlib.contextmanager
def _stoppable(conn: sqlite3.Connection, stop: Callable[[], bool]) -> Iterator[None]:
    """Let `stop()` interrupt the block's statements, with temporary tables in a file (SQLite
    keeps 2 MB of their pages, the system's file cache the rest: a million-name listing held in
    memory left tens of MiB in the process after the scan); the lent connection goes back to
    its pool as it came.

    Each poll also leaves the CPU to any thread waiting for one (`os.sched_yield`): a
    comparison is tens of milliseconds of C code per 100,000 tracks, and on a machine with few
    cores the event loop's thread, woken by a request, would otherwise wait behind it for the
    rest of its time slice."""
    temp_store = int(conn.execute("PRAGMA temp_store").fetchone()[0])
    conn.execute("PRAGMA temp_store = FILE")

    def poll() -> bool:
        os.sched_yield()
        return stop()

    conn.set_progress_handler(poll, PROGRESS_STEPS)
    try:
        yield
    finally:
        conn.set_progress_handler(None, PROGRESS_STEPS)
        conn.execute(f"PRAGMA temp_store = {temp_store}")


def missing_files(
    conn: sqlite3.Connection, kind: str, listing: Iterable[str], stop: Callable[[], bool]
) -> list[tuple[str, str | None]]:
    """(content id, album ids joined by commas or None) of the `kind` rows whose file is not in
    `listing`, a folder's file names as JSON arrays, one slice of the folder each, consumed as
    they come (see `MISSING_FILES`). They fill a temporary table, indexed once full (one
    sorted build, which is quicker than inserting into an index name by name), which the
    rollback at the end drops with all it held. Raises sqlite3.OperationalError
    ('interrupted') once `stop()` returns True."""
    with _stoppable(conn, stop):
        conn.execute("BEGIN")
        try:
            conn.execute("CREATE TEMP TABLE scan_listing (name TEXT)")
            for names in listing:
                if stop():  # also between slices, which the handler may not see
                    raise sqlite3.OperationalError("interrupted")
                conn.execute(
                    "INSERT INTO temp.scan_listing SELECT value FROM json_each(?)", (names,)
                )
            conn.execute("CREATE INDEX temp.scan_listing_name ON scan_listing (name)")
            return [(r[0], r[1]) for r in conn.execute(MISSING_FILES[kind])]
        finally:
            if conn.in_transaction:  # an interrupted statement may have rolled it back already
                conn.execute("ROLLBACK")


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM artists), (SELECT count(*) FROM albums),
            (SELECT count(*) FROM tracks), (SELECT count(*) FROM images)"""
    ).fetchone()
    return {"artists": row[0], "albums": row[1], "tracks": row[2], "images": row[3]}
