"""What processing one queue item does, per content type (SPEC §8.5).

ALBUM: fetch the album, its tracks and every artist named by the album or a track; validate;
ingest everything into the catalog in one transaction; describe the children to create (one
TRACK_AUDIO per track, one ALBUM_IMAGE per cover, one ARTIST_IMAGE per portrait), each marked
`present` if its file is already here (`storage.presence`: an album there in part, after a
cancel, a failure or a lost file, fetches only what is missing). An artist the
downloader does not know (404) is left out rather than failing the album: the album and its
tracks are still worth having, and the catalog tolerates links to absent artists.
TRACK_AUDIO: receive `/track/{id}/audio` into a temporary file for `audio/<id>.<ext>` (ext from the
Content-Type); publishing it then marks the track available. ALBUM_IMAGE / ARTIST_IMAGE:
receive `/image/{id}` for `images/<id>.jpg`. Receiving and publishing are two steps
(`Steps.receive`, `Steps.publish`), so that the processor can publish one file while it receives
the next; the temporary file is removed if the item stops before it is published.

Every step is idempotent: catalog rows are upserts keyed by id and file paths are a pure
function of the id, so running an item twice (after a crash or a retry) changes nothing more.
A file is published before the queue records its completion (the processor's part). Failures
leave as `ItemFailure`: the downloader's as they come from the client, the disk's and the
catalog's translated here; anything else is a bug and propagates.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from actors.downloader import ArtistMeta, DownloaderClient
from actors.downloader_stream import Sink
from actors.failures import (
    DownloaderBadRequest,
    DownloaderNotFound,
    DownloaderParseError,
    StorageFailure,
)
from storage.catalog import CatalogStore
from storage.db import disk_trouble
from storage.files import AUDIO_TYPES, MediaFile, MediaLayout
from storage.ids import InvalidId, content_id, image_id
from storage.presence import mark_present
from storage.queue import ChildSpec, ContentType

log = logging.getLogger("pezzottify.processor")

MAX_IMAGE_BYTES = 50 * 1024**2
# Images are stored as .jpg; anything else announced would be mislabelled on disk.
IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg"})
IMAGE_KINDS = (ContentType.ALBUM_IMAGE, ContentType.ARTIST_IMAGE)


@dataclass(frozen=True)
class Ingested:
    """An album ingested: the children to create."""

    children: tuple[ChildSpec, ...] = ()
    catalog_changed: bool = False  # the ingestion changed the catalog


@dataclass(frozen=True)
class Saved:
    """A file published under its final name."""

    path: Path
    size: int
    media_type: str


def checked_id(content_type: str, raw: str) -> str:
    """A queue item's content id, validated before it reaches a URL or a path."""
    kind = ContentType(content_type)
    try:
        return image_id(raw) if kind in IMAGE_KINDS else content_id(raw)
    except InvalidId as exc:
        raise DownloaderBadRequest(f"queue item has a bad id: {exc}") from exc


def _catalog_failure(exc: sqlite3.Error) -> StorageFailure:
    """The item's storage failure for a catalog write that a full or failing disk refused (any
    other SQLite error is a bug, raised as it is)."""
    if not disk_trouble(exc):
        raise exc
    return StorageFailure(f"cannot write the catalog: {exc}")


@dataclass(frozen=True)
class Steps:
    """Everything a step needs; built once by the processor."""

    client: DownloaderClient
    catalog: CatalogStore
    media: MediaLayout
    max_file_bytes: int

    async def album(self, album_id: str) -> Ingested:
        """Fetch the album, its tracks and its artists, and ingest them in one catalog
        transaction; the children to create, those already here marked `present`. If
        cancelled, nothing is ingested unless the ingestion had begun (then it commits whole: a
        repeat changes nothing)."""
        meta = await self.client.album(album_id)
        tracks = await self.client.album_tracks(album_id)
        named = [*meta.album.artist_ids, *(a for t in tracks for a in t.artist_ids)]
        artists = [a for a in [await self._artist(i) for i in dict.fromkeys(named)] if a]
        images = {i.id: i for i in (*meta.covers, *(p for a in artists for p in a.portraits))}
        catalog = self.catalog
        try:
            changed = await catalog.db.run(
                catalog.ingest_album,
                meta.album, tracks, [a.artist for a in artists], list(images.values()),
            )  # fmt: skip
        except ValueError as exc:  # the catalog's own validation of ids and ownership
            raise DownloaderParseError(f"album {album_id} is inconsistent: {exc}") from exc
        except sqlite3.Error as exc:
            raise _catalog_failure(exc) from exc
        artist_name = artists[0].artist.name if artists else None
        children = [
            *(ChildSpec(ContentType.TRACK_AUDIO, t.id, t.name, artist_name) for t in tracks),
            *(ChildSpec(ContentType.ALBUM_IMAGE, c.id, meta.album.name) for c in meta.covers),
            *(
                ChildSpec(ContentType.ARTIST_IMAGE, p.id, a.artist.name)
                for a in artists
                for p in a.portraits
            ),
        ]
        children = await mark_present(self.catalog, self.media, album_id, children)
        return Ingested(children=tuple(children), catalog_changed=changed)

    async def _artist(self, artist_id: str) -> ArtistMeta | None:
        try:
            return await self.client.artist(artist_id)
        except DownloaderNotFound:
            log.warning("artist %s is unknown to the downloader; ingesting without it", artist_id)
            return None

    def receive(self, kind: str, ident: str) -> AbstractAsyncContextManager[Received]:
        """The file of a TRACK_AUDIO or image item, received into its temporary file
        (`receive_media`)."""
        if kind == ContentType.TRACK_AUDIO.value:
            url, cap = f"/track/{ident}/audio", self.max_file_bytes
            path_for = functools.partial(self._audio_path, ident)
        else:
            url, cap = f"/image/{ident}", min(MAX_IMAGE_BYTES, self.max_file_bytes)
            path_for = functools.partial(self._image_path, ident)
        return receive_media(self.client, self.media, url, cap, path_for)

    def _audio_path(self, track_id: str, media_type: str) -> Path:
        ext = AUDIO_TYPES.get(media_type)
        if ext is None:
            raise DownloaderParseError(f"unsupported audio content type {media_type[:64]!r}")
        return self.media.audio_path(track_id, ext)

    def _image_path(self, image: str, media_type: str) -> Path:
        if media_type not in IMAGE_TYPES:
            raise DownloaderParseError(f"unsupported image content type {media_type[:64]!r}")
        return self.media.image_path(image)

    async def publish(self, kind: str, ident: str, received: Received) -> Saved:
        """Publish a received file; a track's audio is then marked available in the catalog
        (the file first: no catalog row ever points to a file that is not there)."""
        saved = await received.publish()
        if kind != ContentType.TRACK_AUDIO.value:
            return saved
        try:
            await self.catalog.db.run(
                self.catalog.set_tracks_audio, [(ident, AUDIO_TYPES[saved.media_type])]
            )
        except sqlite3.Error as exc:  # published, not recorded: the retry records it
            raise _catalog_failure(exc) from exc
        return saved


@dataclass(frozen=True)
class Received:
    """A media body received whole into its temporary file, not yet published."""

    file: MediaFile
    size: int
    media_type: str

    async def publish(self) -> Saved:
        """Write what is left, fsync, rename into place, fsync the folder (one worker call);
        a disk error is the item's storage failure."""
        try:
            await self.file.publish()
        except OSError as exc:
            raise _storage_failure(exc) from exc
        return Saved(self.file.writer.final, self.size, self.media_type)


@asynccontextmanager
async def receive_media(
    client: DownloaderClient,
    media: MediaLayout,
    url: str,
    cap: int,
    path_for: Callable[[str], Path],
) -> AsyncIterator[Received]:
    """Receive `url` (at most `cap` bytes) into a temporary file for the file `path_for(media
    type)` names, and yield it to be published within the block (`Received.publish`). Whatever
    leaves the block before it is published (a failure, the deadline, a cancellation, while
    receiving or after) removes the temporary file; `path_for` raises `DownloaderParseError`
    for a type it does not take."""
    file: MediaFile | None = None
    try:
        try:
            async with client.media(url, cap) as body:
                file = MediaFile(media, path_for(body.media_type))
                size = await body.receive(_storing(file.write))
        except OSError as exc:
            raise _storage_failure(exc) from exc
        yield Received(file, size, body.media_type)
    finally:
        if file is not None and not file.writer.committed:
            await file.discard()


def _storage_failure(exc: OSError) -> StorageFailure:
    return StorageFailure(f"cannot write the file: {exc.strerror or exc}")


def _storing(write: Sink) -> Sink:
    """The sink `write`, its disk errors as the item's storage failure (a sink may raise only
    `ItemFailure`s: see `actors.downloader_stream.pump`)."""

    async def sink(chunk: bytes) -> None:
        try:
            await write(chunk)
        except OSError as exc:
            raise _storage_failure(exc) from exc

    return sink
