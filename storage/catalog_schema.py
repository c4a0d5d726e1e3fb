"""The catalog's schema and the upserts that ingestion runs against it.

Kept apart from `storage.catalog` so the store reads as behaviour. Every statement is a constant;
ids and lists travel as parameters (a list as one JSON text read with `json_each`).
"""

from __future__ import annotations

MIGRATIONS = [
    [
        """CREATE TABLE artists (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            genres TEXT NOT NULL DEFAULT '[]') WITHOUT ROWID""",
        """CREATE TABLE images (
            id TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE albums (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            album_type TEXT,
            label TEXT,
            release_date INTEGER,
            genres TEXT NOT NULL DEFAULT '[]',
            discs TEXT NOT NULL DEFAULT '[]') WITHOUT ROWID""",
        """CREATE TABLE tracks (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            album_id TEXT NOT NULL REFERENCES albums(id),
            disc_number INTEGER NOT NULL,
            number INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL,
            is_explicit INTEGER NOT NULL,
            audio_format TEXT) WITHOUT ROWID""",
        "CREATE INDEX tracks_album ON tracks(album_id, disc_number, number)",
        """CREATE TABLE album_artists (
            album_id TEXT NOT NULL REFERENCES albums(id),
            artist_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (album_id, artist_id)) WITHOUT ROWID""",
        "CREATE INDEX album_artists_artist ON album_artists(artist_id, album_id)",
        """CREATE TABLE track_artists (
            track_id TEXT NOT NULL REFERENCES tracks(id),
            artist_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (track_id, artist_id)) WITHOUT ROWID""",
        """CREATE TABLE album_images (
            album_id TEXT NOT NULL REFERENCES albums(id),
            image_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (album_id, image_id)) WITHOUT ROWID""",
        """CREATE TABLE artist_images (
            artist_id TEXT NOT NULL REFERENCES artists(id),
            image_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (artist_id, image_id)) WITHOUT ROWID""",
    ],
    # The albums an artist appears on through a track only (a featured artist), for the
    # watchdog: its portrait comes with those albums' downloads too.
    ["CREATE INDEX track_artists_artist ON track_artists(artist_id, track_id)"],
    # An image's size is what the downloader calls it, a size class such as "large" (the real
    # service) or a number (the plan), kept as text; any of the three may be missing. The
    # plan's numbers already stored become their decimal text.
    [
        """CREATE TABLE images_v3 (
            id TEXT PRIMARY KEY,
            size TEXT,
            width INTEGER,
            height INTEGER) WITHOUT ROWID""",
        "INSERT INTO images_v3 SELECT id, CAST(size AS TEXT), width, height FROM images",
        "DROP TABLE images",
        "ALTER TABLE images_v3 RENAME TO images",
    ],
]

# The WHERE clauses make a repeat a true no-op: no row is rewritten, so `total_changes` stays put.
UPSERT_IMAGE = """INSERT INTO images (id, size, width, height) VALUES (?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET size = excluded.size, width = excluded.width,
        height = excluded.height
    WHERE (size, width, height) IS NOT (excluded.size, excluded.width, excluded.height)"""
UPSERT_ARTIST = """INSERT INTO artists (id, name, genres) VALUES (?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, genres = excluded.genres
    WHERE (name, genres) IS NOT (excluded.name, excluded.genres)"""
UPSERT_ALBUM = """INSERT INTO albums (id, name, album_type, label, release_date, genres, discs)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, album_type = excluded.album_type,
        label = excluded.label, release_date = excluded.release_date,
        genres = excluded.genres, discs = excluded.discs
    WHERE (name, album_type, label, release_date, genres, discs) IS NOT (excluded.name,
        excluded.album_type, excluded.label, excluded.release_date, excluded.genres,
        excluded.discs)"""
# audio_format is deliberately absent: metadata never resets a downloaded file's state.
UPSERT_TRACK = """INSERT INTO tracks
        (id, name, album_id, disc_number, number, duration_ms, is_explicit)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, album_id = excluded.album_id,
        disc_number = excluded.disc_number, number = excluded.number,
        duration_ms = excluded.duration_ms, is_explicit = excluded.is_explicit
    WHERE (name, album_id, disc_number, number, duration_ms, is_explicit) IS NOT (excluded.name,
        excluded.album_id, excluded.disc_number, excluded.number, excluded.duration_ms,
        excluded.is_explicit)"""

# Per link table: (prune the links no longer listed, upsert the listed ones with their position).
LINKS: dict[str, tuple[str, str]] = {
    "album_artists": (
        """DELETE FROM album_artists WHERE album_id = ?
            AND artist_id NOT IN (SELECT value FROM json_each(?))""",
        """INSERT INTO album_artists (album_id, artist_id, position) VALUES (?, ?, ?)
            ON CONFLICT (album_id, artist_id) DO UPDATE SET position = excluded.position
            WHERE position IS NOT excluded.position""",
    ),
    "track_artists": (
        """DELETE FROM track_artists WHERE track_id = ?
            AND artist_id NOT IN (SELECT value FROM json_each(?))""",
        """INSERT INTO track_artists (track_id, artist_id, position) VALUES (?, ?, ?)
            ON CONFLICT (track_id, artist_id) DO UPDATE SET position = excluded.position
            WHERE position IS NOT excluded.position""",
    ),
    "album_images": (
        """DELETE FROM album_images WHERE album_id = ?
            AND image_id NOT IN (SELECT value FROM json_each(?))""",
        """INSERT INTO album_images (album_id, image_id, position) VALUES (?, ?, ?)
            ON CONFLICT (album_id, image_id) DO UPDATE SET position = excluded.position
            WHERE position IS NOT excluded.position""",
    ),
    "artist_images": (
        """DELETE FROM artist_images WHERE artist_id = ?
            AND image_id NOT IN (SELECT value FROM json_each(?))""",
        """INSERT INTO artist_images (artist_id, image_id, position) VALUES (?, ?, ?)
            ON CONFLICT (artist_id, image_id) DO UPDATE SET position = excluded.position
            WHERE position IS NOT excluded.position""",
    ),
}
