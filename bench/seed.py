"""Benchmark and test data: a synthetic catalog, and fast seeding of queue rows and media files.

`synthetic_bundles` makes deterministic albums (ids derived from counters) that tests and
benchmarks ingest through the real store; `bench.library_seed` writes the same rows in bulk.

Seeding is never measured. Queue rows go in with one `executemany` inside one transaction on a
database created by the real migrations (so every index the stores rely on is there), written
with `synchronous=OFF` because a seed that is lost is simply made again. No `ANALYZE`: the
daemon never runs it, so the query plans measured are the ones it gets.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from storage.catalog import (
    AlbumBundle,
    AlbumRecord,
    ArtistRecord,
    CatalogStore,
    DiscRecord,
    ImageRecord,
    TrackRecord,
)
from storage.db import Database
from storage.ids import content_id
from storage.queue import MIGRATIONS

T0 = 1_700_000_000
CHILDREN = 20
_CATALOGS: dict[int, Path] = {}
_COLUMNS = (
    "id, parent_id, status, priority, content_type, content_id, request_source, requested_by, "
    "created_at, started_at, next_retry_at, max_retries, children_created, last_activity_at"
)
_INSERT = f"INSERT INTO queue_items ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"  # noqa: S608


def synthetic_id(kind: str, n: int) -> str:
    """A valid content id derived from a one-letter kind and a counter (seeding, benchmarks)."""
    return content_id(f"{kind}{n:021d}")


def synthetic_image_id(kind: str, n: int) -> str:
    return hashlib.sha1(f"{kind}{n}".encode()).hexdigest()


def synthetic_bundles(
    albums: int, tracks_per_album: int = 10, *, artists: int = 100, start: int = 0
) -> Iterator[AlbumBundle]:
    """Deterministic albums for tests and benchmarks (`ingest_many(synthetic_bundles(10_000))`
    seeds 100,000 tracks). Album k belongs to artist k % artists; each album has one cover and
    each artist one portrait; no track has audio. Ids derive from the counters, so re-seeding
    the same range changes nothing."""
    for k in range(start, start + albums):
        a = k % artists
        artist = ArtistRecord(
            synthetic_id("R", a), f"Artist {a}", ("synthetic",), (synthetic_image_id("R", a),)
        )
        album_id = synthetic_id("L", k)
        track_ids = tuple(
            synthetic_id("T", k * tracks_per_album + t) for t in range(tracks_per_album)
        )
        album = AlbumRecord(
            album_id, f"Album {k}", "album", "Synthetic Records", 946684800 + k * 86400,
            ("synthetic",), (artist.id,), (synthetic_image_id("L", k),),
            (DiscRecord(1, None, track_ids),),
        )  # fmt: skip
        tracks = [
            TrackRecord(tid, f"Track {k}.{t + 1}", album_id, (artist.id,), t + 1, 1, 180_000, False)
            for t, tid in enumerate(track_ids)
        ]
        images = [ImageRecord(i, "large", 640, 640) for i in (*album.image_ids, *artist.image_ids)]
        yield AlbumBundle(album, tracks, [artist], images)


def _connect(path: Path) -> sqlite3.Connection:
    Database(path, MIGRATIONS).close()  # the real schema
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def _albums_with_children(albums: int, start: int) -> Iterator[tuple[object, ...]]:
    """IN_PROGRESS albums, each with CHILDREN pending TRACK_AUDIO children."""
    for k in range(start, start + albums):
        album = str(uuid.uuid4())
        yield (album, None, "IN_PROGRESS", 2, "ALBUM", synthetic_id("L", k), "USER", "bench",
               T0 + k, T0 + k, None, 5, 1, T0 + k)  # fmt: skip
        for t in range(CHILDREN):
            yield (str(uuid.uuid4()), album, "PENDING", 2, "TRACK_AUDIO",
                   synthetic_id("T", k * CHILDREN + t), "USER", "bench", T0 + k, None, None, 5,
                   0, T0 + k)  # fmt: skip


def add_albums(conn: sqlite3.Connection, albums: int, start: int) -> None:
    """Queue `albums` more IN_PROGRESS albums with their pending children, inside the caller's
    transaction (to keep a queue's length while a benchmark drains it)."""
    conn.executemany(_INSERT, _albums_with_children(albums, start))


def _retry_waiting(count: int, due: int) -> Iterator[tuple[object, ...]]:
    """Top-priority watchdog repairs waiting for a retry that is not due before `due`."""
    for n in range(count):
        yield (str(uuid.uuid4()), None, "RETRY_WAITING", 1, "TRACK_AUDIO",
               synthetic_id("W", n), "WATCHDOG", None, T0, None, due, 5, 0, T0)  # fmt: skip


def _pending_albums(count: int, users: int, start: int) -> Iterator[tuple[object, ...]]:
    """Top-level PENDING albums requested by `users` users in turn."""
    for n in range(start, start + count):
        yield (str(uuid.uuid4()), None, "PENDING", 2, "ALBUM", synthetic_id("P", n), "USER",
               f"user{n % users}", T0 + n, None, None, 5, 0, T0 + n)  # fmt: skip


def seed_queue(path: Path, children: int, retry_waiting: int = 0, retry_due: int = 0) -> None:
    """`children` pending children (in albums of CHILDREN) plus `retry_waiting` repairs."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN")
        conn.executemany(_INSERT, _albums_with_children(children // CHILDREN, 0))
        conn.executemany(_INSERT, _retry_waiting(retry_waiting, retry_due))
        conn.execute("COMMIT")
    finally:
        conn.close()


def convert_to_retry_waiting(path: Path, count: int, due: int) -> None:
    """Replace the last `count` pending children by as many top-priority waiting repairs."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN")
        conn.execute(
            """DELETE FROM queue_items WHERE seq IN (SELECT seq FROM queue_items
                WHERE status = 'PENDING' ORDER BY seq DESC LIMIT ?)""",
            (count,),
        )
        conn.executemany(_INSERT, _retry_waiting(count, due))
        conn.execute("COMMIT")
    finally:
        conn.close()


def seed_pending_albums(path: Path, count: int, users: int = 500) -> None:
    """`count` top-level PENDING albums from `users` users (for queue positions)."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN")
        conn.executemany(_INSERT, _pending_albums(count, users, 0))
        conn.execute("COMMIT")
    finally:
        conn.close()


def shared_catalog(albums: int) -> Path:
    """A folder with `albums` albums of 10 tracks in catalog.db and every file in place, made
    once per process (several benchmarks use it) and removed at exit."""
    if albums not in _CATALOGS:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-catalog-{albums}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        seed_catalog(folder, folder, albums)
        _CATALOGS[albums] = folder
    return _CATALOGS[albums]


def seed_catalog(db_dir: Path, media: Path, albums: int, missing_every: int = 0) -> None:
    """`albums` albums of 10 tracks with their audio and image files; with `missing_every` N,
    every N-th file is absent (so a scan has repairs to consider)."""
    catalog = CatalogStore.open(db_dir / "catalog.db")
    try:
        catalog.ingest_many(synthetic_bundles(albums))
        tracks = [synthetic_id("T", n) for n in range(albums * 10)]
        present = [t for n, t in enumerate(tracks) if not _missing(n, missing_every)]
        with catalog.db.write() as conn:  # what set_track_audio records after each download
            conn.executemany(
                "UPDATE tracks SET audio_format = 'flac' WHERE id = ?", [(t,) for t in present]
            )
    finally:
        catalog.db.close()
    images = [synthetic_image_id("L", k) for k in range(albums)]
    images += [synthetic_image_id("R", a) for a in range(min(albums, 100))]
    touch(media / "audio", [f"{t}.flac" for t in present])
    touch(media / "images", [f"{i}.jpg" for n, i in enumerate(images)
                             if not _missing(n, missing_every)])  # fmt: skip


def _missing(n: int, every: int) -> bool:
    return every > 0 and n % every == 0


def touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        for name in names:
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
