"""A household's library at any size, built once by bulk inserts and kept between runs.

A `Shape` describes a library: a catalog of albums of tracks (the very rows that ingesting
`synthetic_bundles(albums, tracks_per_album, artists=artists)` writes, with every track's audio
recorded as FLAC), the download queue's history of those albums, and the media folders with an
empty file under the name of every track, cover and portrait (the integrity scan and the startup
sweep only list names; the files are hard links to a few empty files, see `link_files`). The
history is what the downloads left: each album COMPLETED with its children (a TRACK_AUDIO per
track and an ALBUM_IMAGE for its cover), plus some albums the downloader did not have (FAILED
`not_found`, no children, not in the catalog), requested in turn by `users` users, and
`listener_requests` of them by `LISTENER`, the user whose requests a benchmark reads. Nothing is
waiting, so a daemon started on it has no work to do. Times run from `T0` at the default
capacity of ten albums an hour; the audit log is left empty, as retention (90 days by default)
leaves a history that old.

Both databases are created by the stores (`CatalogStore.open` and the queue's `Database` with its
migrations, so every index the daemon relies on is there), then filled with `executemany` in one
transaction each, in key order, journal and syncs off: a fixture that is lost is simply built
again. A million tracks take about half a minute on a 2-core machine.

`library(shape)` returns the folder, built at first use under the system's temporary directory
in `pezzottify-bench-library-<albums>x<tracks>-<key>`, where the key hashes the shape, the
generator's `FORMAT` and both schemas' migrations: a later run with the same code reuses it, and
a change to any of them builds a new one. The folder is built beside its final name and renamed
into place complete; delete it to rebuild. Libraries of the same size that no run has used for
an hour (built by older code, or left unfinished by a run that was stopped) are removed when a
new one is built. A benchmark copies the databases out before a daemon opens them, so the kept
library stays as built.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.seed import synthetic_id, synthetic_image_id
from storage import catalog_schema
from storage.catalog import CatalogStore
from storage.db import Database
from storage.queue import MIGRATIONS as QUEUE_MIGRATIONS

FORMAT = 1  # bump when what the generator writes changes
PREFIX = "pezzottify-bench-library-"
COMPLETE = "complete"  # written last: a folder without it is not a library
LISTENER = "listener"
STALE_S = 3600
T0 = 1_700_000_000
ALBUM_EVERY_S = 360  # the default capacity: ten albums an hour
TRACK_BYTES = 30 * 2**20
COVER_BYTES = 200 * 2**10
RELEASED = 946684800  # what synthetic_bundles dates album 0
LINKS_PER_FILE = 60_000  # ext4 allows 65,000 links to one file


@dataclass(frozen=True)
class Shape:
    albums: int
    tracks_per_album: int = 20
    artists: int = 100
    users: int = 300
    failed_albums: int = 0
    listener_requests: int = 50

    @property
    def tracks(self) -> int:
        return self.albums * self.tracks_per_album

    @property
    def queue_items(self) -> int:
        return self.albums * (self.tracks_per_album + 2) + self.failed_albums

    def key(self) -> str:
        """What the folder's contents depend on: the shape, the generator and both schemas."""
        text = json.dumps([FORMAT, asdict(self), catalog_schema.MIGRATIONS, _queue_migrations()])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def folder_name(self) -> str:
        return f"{PREFIX}{self.albums}x{self.tracks_per_album}-{self.key()}"

    def requester(self, k: int) -> str:
        """Who asked for album k: `LISTENER` for `listener_requests` albums spread over the
        history, the other users in turn for the rest."""
        step = max(self.albums // self.listener_requests, 1)
        if k % step == 0 and k // step < self.listener_requests:
            return LISTENER
        return f"user{k % self.users}"


def _queue_migrations() -> list[list[str]]:
    return [list(m) for m in QUEUE_MIGRATIONS]


def library(shape: Shape, root: Path | None = None) -> Path:
    """The folder holding `shape`'s catalog.db, download_queue.db, audio/ and images/, built
    under `root` (the system's temporary directory by default) unless already there."""
    root = Path(tempfile.gettempdir()) if root is None else root
    final = root / shape.folder_name()
    if (final / COMPLETE).exists():
        (final / COMPLETE).touch()  # in use: not stale (see `_remove_stale`)
        return final
    _remove_stale(root, shape)
    building = Path(tempfile.mkdtemp(prefix=f"{final.name}.building-", dir=root))
    try:
        build(building, shape)
        (building / COMPLETE).write_text(json.dumps(asdict(shape)) + "\n")
        try:
            building.rename(final)
        except OSError:  # another run finished the same library first: use it
            if not (final / COMPLETE).exists():
                raise
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return final


def _remove_stale(root: Path, shape: Shape) -> None:
    """Remove the libraries of the same size that no run has used for `STALE_S`: built by other
    code, or left unfinished by a run that was stopped. A younger one may be in use by a run of
    other code (its daemon reads the media folders) or still being built."""
    for path in root.glob(f"{PREFIX}{shape.albums}x{shape.tracks_per_album}-*"):
        if path.name != shape.folder_name() and _unused_for(path) > STALE_S:
            shutil.rmtree(path, ignore_errors=True)


def _unused_for(path: Path) -> float:
    marker = path / COMPLETE
    try:
        used = (marker if marker.exists() else path).stat().st_mtime
    except OSError:  # removed meanwhile
        return 0.0
    return time.time() - used


def build(folder: Path, shape: Shape) -> None:
    """Write `shape`'s databases and media files into `folder` (blocking)."""
    seed_catalog(folder / "catalog.db", shape)
    seed_queue(folder / "download_queue.db", shape)
    sources = folder / "sources"
    link_files(folder / "audio", [f"{synthetic_id('T', n)}.flac" for n in range(shape.tracks)],
               sources)  # fmt: skip
    images = [synthetic_image_id("L", k) for k in range(shape.albums)]
    images += [synthetic_image_id("R", a) for a in range(min(shape.artists, shape.albums))]
    link_files(folder / "images", [f"{i}.jpg" for i in images], sources)


def link_files(folder: Path, names: list[str], sources: Path) -> None:
    """An empty file under each of `names` in `folder`: hard links to a few empty files kept in
    `sources`, because a link is a directory entry only (about 15 µs) where a new file is also
    an inode to allocate (about 90 µs: two and a half minutes for a million)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources.mkdir(exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        for start in range(0, len(names), LINKS_PER_FILE):
            source = sources / f"{folder.name}-{start // LINKS_PER_FILE}"
            source.touch()
            for name in names[start : start + LINKS_PER_FILE]:
                os.link(source, name, dst_dir_fd=fd)
    finally:
        os.close(fd)


def _bulk(path: Path) -> sqlite3.Connection:
    """A connection for seeding a database the store has just created."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: the indexes' pages stay in memory
    return conn


def _finish(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")  # as the daemon leaves it
    conn.close()


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def seed_catalog(path: Path, shape: Shape) -> None:
    """The rows `ingest_many(synthetic_bundles(albums, tracks_per_album, artists=artists))`
    writes, each track's audio recorded as FLAC, inserted in key order."""
    CatalogStore.open(path).db.close()  # the real schema
    conn = _bulk(path)
    try:
        conn.execute("BEGIN")
        _catalog_rows(conn, shape)
        conn.execute("COMMIT")
    finally:
        _finish(conn)


def _catalog_rows(conn: sqlite3.Connection, shape: Shape) -> None:
    artists = range(min(shape.artists, shape.albums))
    portraits = [(synthetic_id("R", a), synthetic_image_id("R", a)) for a in artists]
    covers = [synthetic_image_id("L", k) for k in range(shape.albums)]
    conn.executemany(
        "INSERT INTO images (id, size, width, height) VALUES (?, 'large', 640, 640)",
        sorted((i,) for i in {*covers, *(p for _, p in portraits)}),
    )
    conn.executemany(
        "INSERT INTO artists (id, name, genres) VALUES (?, ?, '[\"synthetic\"]')",
        [(artist, f"Artist {a}") for a, (artist, _) in enumerate(portraits)],
    )
    conn.executemany("INSERT INTO artist_images VALUES (?, ?, 0)", portraits)
    per = shape.tracks_per_album

    def track_ids(k: int) -> list[str]:
        return [synthetic_id("T", k * per + t) for t in range(per)]

    conn.executemany(
        "INSERT INTO albums (id, name, album_type, label, release_date, genres, discs) "
        "VALUES (?, ?, 'album', 'Synthetic Records', ?, '[\"synthetic\"]', ?)",
        ((synthetic_id("L", k), f"Album {k}", RELEASED + k * 86400,
          _json([{"number": 1, "name": None, "track_ids": track_ids(k)}]))
         for k in range(shape.albums)),
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO album_artists VALUES (?, ?, 0)",
        ((synthetic_id("L", k), synthetic_id("R", k % shape.artists)) for k in range(shape.albums)),
    )
    conn.executemany(
        "INSERT INTO album_images VALUES (?, ?, 0)",
        ((synthetic_id("L", k), covers[k]) for k in range(shape.albums)),
    )
    conn.executemany(
        "INSERT INTO tracks (id, name, album_id, disc_number, number, duration_ms, is_explicit, "
        "audio_format) VALUES (?, ?, ?, 1, ?, 180000, 0, 'flac')",
        ((synthetic_id("T", k * per + t), f"Track {k}.{t + 1}", synthetic_id("L", k), t + 1)
         for k in range(shape.albums) for t in range(per)),
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO track_artists VALUES (?, ?, 0)",
        ((synthetic_id("T", n), synthetic_id("R", (n // per) % shape.artists))
         for n in range(shape.tracks)),
    )  # fmt: skip


_COLUMNS = (
    "id, parent_id, status, priority, content_type, content_id, content_name, artist_name, "
    "request_source, requested_by, created_at, started_at, completed_at, last_attempt_at, "
    "error_type, error_message, bytes_downloaded, processing_duration_ms, children_created, "
    "last_activity_at, max_retries"
)
_INSERT = f"INSERT INTO queue_items ({_COLUMNS}) VALUES ({', '.join('?' * 20)}, 5)"  # noqa: S608


def seed_queue(path: Path, shape: Shape) -> None:
    """The history of the catalog's downloads and of the albums that failed (see the module)."""
    Database(path, QUEUE_MIGRATIONS).close()  # the real schema
    conn = _bulk(path)
    try:
        conn.execute("BEGIN")
        conn.executemany(_INSERT, _history(shape))
        conn.execute("COMMIT")
    finally:
        _finish(conn)


def _history(shape: Shape) -> Iterator[tuple[object, ...]]:
    rng = random.Random(shape.key())  # the same ids at every build of this shape

    def new_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    per = shape.tracks_per_album
    for k in range(shape.albums):
        album, user, artist = new_id(), shape.requester(k), f"Artist {k % shape.artists}"
        created = T0 + k * ALBUM_EVERY_S
        started, done = created + 60, created + 60 + (per + 1) * 10
        size = per * TRACK_BYTES + COVER_BYTES
        yield (album, None, "COMPLETED", 2, "ALBUM", synthetic_id("L", k), f"Album {k}", artist,
               "USER", user, created, started, done, started, None, None, size,
               (done - started) * 1000, 1, done)  # fmt: skip
        for t in range(per):
            at = started + 10 * (t + 1)
            yield (new_id(), album, "COMPLETED", 2, "TRACK_AUDIO", synthetic_id("T", k * per + t),
                   f"Track {k}.{t + 1}", artist, "USER", user, started, at - 10, at, at - 10,
                   None, None, TRACK_BYTES, 10_000, 0, at)  # fmt: skip
        yield (new_id(), album, "COMPLETED", 2, "ALBUM_IMAGE", synthetic_image_id("L", k), None,
               None, "USER", user, started, done - 10, done, done - 10, None, None, COVER_BYTES,
               1_000, 0, done)  # fmt: skip
    for n in range(shape.failed_albums):
        created = T0 + (n * shape.albums // max(shape.failed_albums, 1)) * ALBUM_EVERY_S + 1
        yield (new_id(), None, "FAILED", 2, "ALBUM", synthetic_id("F", n), f"Lost album {n}",
               "Artist", "USER", f"user{n % shape.users}", created, created + 60, created + 61,
               created + 60, "not_found", "the downloader does not have this album", 0, 1_000,
               0, created + 61)  # fmt: skip
