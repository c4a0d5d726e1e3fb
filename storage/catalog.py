"""`catalog.db`: artists, albums, tracks and images, and how ingestion upserts them.

Every row is keyed by its upstream id and written with `INSERT … ON CONFLICT DO UPDATE … WHERE
<a column differs>`, so ingesting the same album twice (a redelivered download) changes nothing,
duplicates nothing, and the store can tell whether anything changed (which decides whether
`OnCatalogChange` fires). Ordered lists of ids (an album's artists, an artist's portraits, …) live
in link tables with a position, indexed both ways where a lookup needs it; genre lists and an
album's discs are small JSON arrays in their row, since nothing queries inside them. A track's
audio state (`audio_format`, NULL until its file is written) belongs to the download side and is
never touched by a metadata upsert. Links to artists and images are not foreign keys: an album may
name an artist whose details the downloader could not supply, and the album is still worth having.
Reads (the JSON shapes of SPEC §5, the integrity scan's comparisons) live in `storage.catalog_read`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import catalog_read as read
from storage import catalog_schema as schema
from storage.catalog_schema import MIGRATIONS
from storage.db import Database
from storage.files import AUDIO_MEDIA_TYPES
from storage.ids import content_id, image_id


@dataclass(frozen=True)
class ImageRecord:
    """An image as stored: `size` is a size class ("large") or a number written as text; the
    real service may leave any of the three out."""

    id: str
    size: str | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class ArtistRecord:
    id: str
    name: str
    genres: tuple[str, ...] = ()
    image_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiscRecord:
    number: int
    name: str | None
    track_ids: tuple[str, ...]


@dataclass(frozen=True)
class AlbumRecord:
    id: str
    name: str
    album_type: str | None
    label: str | None
    release_date: int | None
    genres: tuple[str, ...]
    artist_ids: tuple[str, ...]
    image_ids: tuple[str, ...]
    discs: tuple[DiscRecord, ...]


@dataclass(frozen=True)
class TrackRecord:
    id: str
    name: str
    album_id: str
    artist_ids: tuple[str, ...]
    number: int
    disc_number: int
    duration_ms: int
    is_explicit: bool


@dataclass(frozen=True)
class AlbumBundle:
    """One album's worth of rows, ingested together (see `CatalogStore.ingest_many`)."""

    album: AlbumRecord
    tracks: Sequence[TrackRecord] = ()
    artists: Sequence[ArtistRecord] = ()
    images: Sequence[ImageRecord] = ()


def _json(value: Any) -> str:
    # Compact and stable, so an unchanged list compares equal to the stored text.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _replace_links(
    conn: sqlite3.Connection, table: str, owners: Iterable[tuple[str, Sequence[str]]]
) -> None:
    prune, upsert = schema.LINKS[table]
    lists = [(owner, list(dict.fromkeys(targets))) for owner, targets in owners]
    conn.executemany(prune, [(owner, _json(targets)) for owner, targets in lists])
    conn.executemany(
        upsert, [(owner, t, i) for owner, targets in lists for i, t in enumerate(targets)]
    )


def validate_bundle(bundle: AlbumBundle) -> None:
    """Raise ValueError (`InvalidId` for a bad id) unless the bundle is safe to ingest."""
    album = bundle.album
    for cid in (album.id, *album.artist_ids):
        content_id(cid)
    for disc in album.discs:
        for cid in disc.track_ids:
            content_id(cid)
    for track in bundle.tracks:
        for cid in (track.id, *track.artist_ids):
            content_id(cid)
        if track.album_id != album.id:
            raise ValueError(f"track {track.id} belongs to album {track.album_id}, not {album.id}")
    for artist in bundle.artists:
        content_id(artist.id)
    for iid in (*album.image_ids, *(i for a in bundle.artists for i in a.image_ids)):
        image_id(iid)
    for image in bundle.images:
        image_id(image.id)


def _ingest(conn: sqlite3.Connection, bundle: AlbumBundle) -> None:
    album = bundle.album
    conn.executemany(
        schema.UPSERT_IMAGE, [(i.id, i.size, i.width, i.height) for i in bundle.images]
    )
    conn.executemany(
        schema.UPSERT_ARTIST, [(a.id, a.name, _json(a.genres)) for a in bundle.artists]
    )
    _replace_links(conn, "artist_images", [(a.id, a.image_ids) for a in bundle.artists])
    discs = [{"number": d.number, "name": d.name, "track_ids": d.track_ids} for d in album.discs]
    conn.execute(
        schema.UPSERT_ALBUM,
        (album.id, album.name, album.album_type, album.label, album.release_date,
         _json(album.genres), _json(discs)),
    )  # fmt: skip
    _replace_links(conn, "album_artists", [(album.id, album.artist_ids)])
    _replace_links(conn, "album_images", [(album.id, album.image_ids)])
    conn.executemany(
        schema.UPSERT_TRACK,
        [(t.id, t.name, t.album_id, t.disc_number, t.number, t.duration_ms, int(t.is_explicit))
         for t in bundle.tracks],
    )  # fmt: skip
    _replace_links(conn, "track_artists", [(t.id, t.artist_ids) for t in bundle.tracks])


class CatalogStore:
    """The catalog database. Methods block: call them through `await store.db.run(...)`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path) -> CatalogStore:
        return cls(Database(path, MIGRATIONS))

    def ingest_album(
        self,
        album: AlbumRecord,
        tracks: Sequence[TrackRecord],
        artists: Sequence[ArtistRecord],
        images: Sequence[ImageRecord],
    ) -> bool:
        """Upsert one album with its tracks, artists and images in one transaction.

        Returns True if any row was inserted, changed or unlinked; a repeat returns False and
        writes nothing. Raises ValueError (nothing written) for a bad id or a foreign track.
        """
        return self.ingest_many([AlbumBundle(album, tracks, artists, images)]) > 0

    def ingest_many(self, bundles: Iterable[AlbumBundle]) -> int:
        """Ingest many albums in one transaction (bulk seeding); return how many changed."""
        changed = 0
        with self.db.write() as conn:
            for bundle in bundles:
                validate_bundle(bundle)
                before = conn.total_changes
                _ingest(conn, bundle)
                changed += conn.total_changes != before
        return changed

    def set_track_audio(self, track_id: str, audio_format: str | None) -> None:
        """Record that a track's audio file exists in `audio_format` (an extension such as
        `flac`), or with None that it is gone. An unknown track is left alone."""
        self.set_tracks_audio([(track_id, audio_format)])

    def set_tracks_audio(self, formats: Sequence[tuple[str, str | None]]) -> None:
        """`set_track_audio` for several tracks, in one transaction."""
        for _, audio_format in formats:
            if audio_format is not None and audio_format not in AUDIO_MEDIA_TYPES:
                raise ValueError(f"unsupported audio format {audio_format!r}")
        if not formats:
            return
        with self.db.write() as conn:
            conn.executemany(
                "UPDATE tracks SET audio_format = ? WHERE id = ? AND audio_format IS NOT ?",
                [(audio_format, track_id, audio_format) for track_id, audio_format in formats],
            )

    def get_artist(self, id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            return read.artist_json(conn, id)

    def get_album(self, id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            return read.album_json(conn, id)

    def get_track(self, id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            return read.track_json(conn, id)

    def get_image(self, id: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            return read.image_json(conn, id)

    def track_audio_format(self, track_id: str) -> str | None:
        """The track's audio format; None for an unknown track or one without audio."""
        with self.db.read() as conn:
            row = conn.execute("SELECT audio_format FROM tracks WHERE id = ?", (track_id,))
            found = row.fetchone()
            return None if found is None else found[0]

    def existing_album_ids(self, ids: Sequence[str]) -> set[str]:
        with self.db.read() as conn:
            return read.existing_ids(conn, "albums", ids)

    def albums_audio(self, album_ids: Sequence[str]) -> dict[str, dict[str, str | None]]:
        """Per album held among `album_ids`: its tracks' audio formats (`storage.presence`
        tells from them and the files whether an album is whole)."""
        with self.db.read() as conn:
            return read.albums_audio(conn, album_ids)

    def existing_artist_ids(self, ids: Sequence[str]) -> set[str]:
        with self.db.read() as conn:
            return read.existing_ids(conn, "artists", ids)

    def missing_files(
        self, kind: str, listing: Iterable[str], stop: Callable[[], bool]
    ) -> list[tuple[str, str | None]]:
        """The integrity scan's comparison for one kind (`track_audio`, `album_images`,
        `artist_images`): (content id, album ids joined by commas or None) of each row whose
        file is not in `listing`, the folder's file names as JSON arrays, a slice each, read as
        they come (see `catalog_read.missing_files`). `stop` is polled every few milliseconds of
        SQLite work; True interrupts it (sqlite3.OperationalError 'interrupted')."""
        with self.db.read() as conn:
            return read.missing_files(conn, kind, listing, stop)

    def counts(self) -> dict[str, int]:
        """Rows per kind: artists, albums, tracks, images."""
        with self.db.read() as conn:
            return read.counts(conn)
