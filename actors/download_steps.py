"""What processing one queue item does, per content type (SPEC §8.5).

ALBUM: fetch the album, its tracks and every artist named by the album or a track; validate;
ingest everything into the catalog in one transaction; describe the children to create (one
TRACK_AUDIO per track, one ALBUM_IMAGE per cover, one ARTIST_IMAGE per portrait). An artist the
downloader does not know (404) is left out rather than failing the album: the album and its
tracks are still worth having, and the catalog tolerates links to absent artists.
TRACK_AUDIO: stream `/track/{id}/audio` to `audio/<id>.<ext>` (ext from the Content-Type), then
mark the track available. ALBUM_IMAGE / ARTIST_IMAGE: stream `/image/{id}` to `images/<id>.jpg`.

Each item runs in two steps, `fetch` (the downloader calls) and `Fetched.finish` (publish the
file, record it in the catalog), so the processor can finish one file while it fetches the next.
Every step is idempotent: catalog rows are upserts keyed by id and file paths are a pure
function of the id, so running an item twice (after a crash or a retry) changes nothing more.
Files are published before the queue records the completion. Failures leave as
`DownloaderError`; anything else is a bug and propagates.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from actors.downloader import (
    ArtistMeta,
    DownloaderBadRequest,
    DownloaderClient,
    DownloaderError,
    DownloaderNotFound,
    DownloaderParseError,
)
from actors.downloader_errors import StorageFailure
from actors.downloader_stream import Received, Stopped, in_worker
from storage.catalog import CatalogStore
from storage.db import disk_trouble
from storage.files import AUDIO_TYPES, MediaLayout, sync_dirs
from storage.ids import InvalidId, content_id, image_id
from storage.queue import ChildSpec
from storage.queue_schema import ContentType

log = logging.getLogger("pezzottify.processor")

MAX_AUDIO_BYTES = 2 * 1024**3
MAX_IMAGE_BYTES = 50 * 1024**2
# Images are stored as .jpg; anything else announced would be mislabelled on disk.
IMAGE_TYPES = frozenset({"image/jpeg", "image/jpg", "image/pjpeg"})
IMAGE_KINDS = (ContentType.ALBUM_IMAGE, ContentType.ARTIST_IMAGE)


@dataclass(frozen=True)
class StepResult:
    size: int = 0  # bytes written
    children: tuple[ChildSpec, ...] = ()  # ALBUM only
    catalog_changed: bool = False  # ALBUM only: the ingestion changed the catalog


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
    max_audio_bytes: int = MAX_AUDIO_BYTES
    max_image_bytes: int = MAX_IMAGE_BYTES

    async def fetch(self, item: sqlite3.Row) -> Fetched:
        """Do an item's downloader calls; raises `DownloaderError` for a per-item failure.

        An album is done whole here (its children must exist before the next claim, or a new
        album could overtake them); a file is received but left for `Fetched.finish`.
        """
        kind = ContentType(item["content_type"])
        try:
            check = image_id if kind in IMAGE_KINDS else content_id
            ident = check(item["content_id"])
        except InvalidId as exc:
            raise DownloaderBadRequest(f"queue item has a bad id: {exc}") from exc
        if kind is ContentType.ALBUM:
            return Fetched(await self.album(ident))
        if kind is ContentType.TRACK_AUDIO:
            return await self.track_audio(ident)
        return await self.image(ident)

    def finish_now(self, batch: Sequence[Fetched]) -> list[DownloaderError | None]:
        """Blocking: publish fetched files and record their tracks in the catalog.

        Each file is written and fsynced on its own, then their folders are fsynced once and
        the tracks recorded in one catalog transaction: a batch costs less than its files one
        by one. Returns, per file, None or the `StorageFailure` that kept it from being
        published (a file whose folder could not be synced counts as not published) or, for a
        track, recorded (the catalog's disk is full or failing).
        """
        errors: list[DownloaderError | None] = []
        for fetched in batch:
            assert fetched.body is not None, "an album has nothing to publish"
            try:
                fetched.body.publish_now(sync_dir=False)
                errors.append(None)
            except StorageFailure as exc:
                errors.append(exc)
        published = [f for f, e in zip(batch, errors, strict=True) if e is None]
        try:
            sync_dirs({f.body.writer.final.parent for f in published if f.body is not None})
        except OSError as exc:
            failure = StorageFailure(f"cannot sync the media folder: {exc.strerror or exc}")
            return [error or failure for error in errors]
        try:
            self.catalog.set_tracks_audio([f.track for f in published if f.track is not None])
        except sqlite3.Error as exc:
            # Published but not recorded: the retry publishes the file again, then records it.
            failure = _catalog_failure(exc)
            return [
                error or (failure if f.track is not None else None)
                for f, error in zip(batch, errors, strict=True)
            ]
        return errors

    async def album(self, album_id: str) -> StepResult:
        """The album's calls and its ingestion, in one worker thread (see `album_now`)."""
        return await in_worker(functools.partial(self.album_now, album_id))

    def album_now(self, album_id: str, stopped: Callable[[], bool]) -> StepResult:
        """Blocking: fetch the album, its tracks and its artists, ingest them in one catalog
        transaction and describe the children. One worker call for the whole step: made from
        the event loop, the three calls and the ingestion cost more hops and more CPU per album
        than the step itself (`docs/benchmarks.md`). Stops before ingesting once `stopped()`.
        """
        client = self.client
        meta = client.album_now(album_id, stopped)
        tracks = client.album_tracks_now(album_id, stopped)
        named = [*meta.album.artist_ids, *(a for t in tracks for a in t.artist_ids)]
        artists: list[ArtistMeta] = []
        for artist_id in dict.fromkeys(named):
            if (artist := self._artist(artist_id, stopped)) is not None:
                artists.append(artist)
        images = {i.id: i for i in (*meta.covers, *(p for a in artists for p in a.portraits))}
        if stopped():
            raise Stopped
        try:
            changed = self.catalog.ingest_album(
                meta.album, tracks, [a.artist for a in artists], list(images.values())
            )
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
        return StepResult(children=tuple(children), catalog_changed=changed)

    def _artist(self, artist_id: str, stopped: Callable[[], bool]) -> ArtistMeta | None:
        try:
            return self.client.artist_now(artist_id, stopped)
        except DownloaderNotFound:
            log.warning("artist %s is unknown to the downloader; ingesting without it", artist_id)
            return None

    async def track_audio(self, track_id: str) -> Fetched:
        def path_for(media_type: str) -> Path:
            ext = AUDIO_TYPES.get(media_type)
            if ext is None:
                raise DownloaderParseError(f"unsupported audio content type {media_type[:64]!r}")
            return self.media.audio_path(track_id, ext)

        body = await self.client.receive(path_for, f"/track/{track_id}/audio", self.max_audio_bytes)
        return Fetched(StepResult(size=body.size), body, (track_id, AUDIO_TYPES[body.media_type]))

    async def image(self, ident: str) -> Fetched:
        def path_for(media_type: str) -> Path:
            if media_type not in IMAGE_TYPES:
                raise DownloaderParseError(f"unsupported image content type {media_type[:64]!r}")
            return self.media.image_path(ident)

        body = await self.client.receive(path_for, f"/image/{ident}", self.max_image_bytes)
        return Fetched(StepResult(size=body.size), body)


@dataclass(frozen=True)
class Fetched:
    """An item whose downloader calls are done. For a file, what is left is publishing the body
    it received and recording the track (`Steps.finish_now`); `discard` instead removes its
    temporary file. An album has nothing left (`body` is None)."""

    result: StepResult
    body: Received | None = None
    track: tuple[str, str] | None = None  # (track id, audio format) for the catalog

    async def discard(self) -> None:
        if self.body is not None:
            await self.body.discard()
