"""What processing one queue item does, per content type (SPEC §8.5).

ALBUM: fetch the album, its tracks and every artist named by the album or a track; validate;
ingest everything into the catalog in one transaction; describe the children to create (one
TRACK_AUDIO per track, one ALBUM_IMAGE per cover, one ARTIST_IMAGE per portrait). An artist the
downloader does not know (404) is left out rather than failing the album: the album and its
tracks are still worth having, and the catalog tolerates links to absent artists.
TRACK_AUDIO: stream `/track/{id}/audio` to `audio/<id>.<ext>` (ext from the Content-Type), then
mark the track available. ALBUM_IMAGE / ARTIST_IMAGE: stream `/image/{id}` to `images/<id>.jpg`.

An album is one step (`fetch_album`). Files take two: `fetch_files` receives a claimed run of
them, `finish_now` publishes them and records them in the catalog, so the processor can finish
some files while it receives the next ones.
Every step is idempotent: catalog rows are upserts keyed by id and file paths are a pure
function of the id, so running an item twice (after a crash or a retry) changes nothing more.
Files are published before the queue records the completion. Failures leave as
`DownloaderError`; anything else is a bug and propagates.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
    """An album ingested: the children to create."""

    children: tuple[ChildSpec, ...] = ()
    catalog_changed: bool = False  # the ingestion changed the catalog


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

    async def fetch_album(self, item: sqlite3.Row) -> StepResult:
        """An album's step, done whole here (its children must exist before the next claim, or
        a new album could overtake them): one worker call, see `album_now`. Raises
        `DownloaderError` for a per-item failure."""
        return await in_worker(functools.partial(self.album_now, _checked_id(item)))

    async def fetch_files(
        self, items: Sequence[sqlite3.Row], halted: Callable[[], bool]
    ) -> list[Outcome]:
        """Receive a claimed run of files one after the other, in one worker call: what each
        one came to, in order, for the files begun. None is begun once `halted()` (shutdown).

        One call for the run rather than one per file saves two thread crossings per file on
        the path from one download to the next (`docs/benchmarks.md`). If cancelled, the thread
        stops at its next chunk and the bodies received are discarded (see `in_worker`).
        """
        work = functools.partial(self._files_now, items, halted)
        return await in_worker(work, _discard_outcomes)

    def _files_now(
        self, items: Sequence[sqlite3.Row], halted: Callable[[], bool], stopped: Callable[[], bool]
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        try:
            for item in items:
                if halted() or stopped():
                    break
                began = time.perf_counter()
                try:
                    outcomes.append(Outcome(self.file_now(item, stopped), began))
                except DownloaderError as error:
                    outcomes.append(Outcome(error, began))
        except BaseException:
            _discard_outcomes(outcomes)
            raise
        return outcomes

    def file_now(self, item: sqlite3.Row, stopped: Callable[[], bool]) -> Fetched:
        """Blocking: receive one file (TRACK_AUDIO or an image), not yet published."""
        ident = _checked_id(item)
        if item["content_type"] == ContentType.TRACK_AUDIO.value:

            def audio_path(media_type: str) -> Path:
                ext = AUDIO_TYPES.get(media_type)
                if ext is None:
                    raise DownloaderParseError(
                        f"unsupported audio content type {media_type[:64]!r}"
                    )
                return self.media.audio_path(ident, ext)

            url, limit = f"/track/{ident}/audio", self.max_audio_bytes
            body = self.client.receive_now(audio_path, url, limit, stopped)
            return Fetched(body, (ident, AUDIO_TYPES[body.media_type]))

        def image_path(media_type: str) -> Path:
            if media_type not in IMAGE_TYPES:
                raise DownloaderParseError(f"unsupported image content type {media_type[:64]!r}")
            return self.media.image_path(ident)

        body = self.client.receive_now(image_path, f"/image/{ident}", self.max_image_bytes, stopped)
        return Fetched(body)

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
            try:
                fetched.body.publish_now(sync_dir=False)
                errors.append(None)
            except StorageFailure as exc:
                errors.append(exc)
        published = [f for f, e in zip(batch, errors, strict=True) if e is None]
        try:
            sync_dirs({f.body.writer.final.parent for f in published})
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


@dataclass(frozen=True)
class Fetched:
    """A file received, not yet published: what is left is publishing its body and recording
    the track (`Steps.finish_now`); `discard` instead removes its temporary file."""

    body: Received
    track: tuple[str, str] | None = None  # (track id, audio format) for the catalog

    @property
    def size(self) -> int:
        return self.body.size

    async def discard(self) -> None:
        await self.body.discard()


class Outcome(NamedTuple):
    """What receiving one file of a run came to, and when it began (`time.perf_counter`)."""

    value: Fetched | DownloaderError
    began: float


def _discard_outcomes(outcomes: Sequence[Outcome]) -> None:
    for outcome in outcomes:
        if isinstance(outcome.value, Fetched):
            outcome.value.body.discard_now()


def _checked_id(item: sqlite3.Row) -> str:
    kind = ContentType(item["content_type"])
    try:
        check = image_id if kind in IMAGE_KINDS else content_id
        return check(item["content_id"])
    except InvalidId as exc:
        raise DownloaderBadRequest(f"queue item has a bad id: {exc}") from exc
