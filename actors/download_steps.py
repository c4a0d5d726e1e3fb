"""What processing one queue item does, per content type (SPEC §8.5).

ALBUM: fetch the album, its tracks and every artist named by the album or a track; validate;
ingest everything into the catalog in one transaction; describe the children to create (one
TRACK_AUDIO per track, one ALBUM_IMAGE per cover, one ARTIST_IMAGE per portrait). An artist the
downloader does not know (404) is left out rather than failing the album: the album and its
tracks are still worth having, and the catalog tolerates links to absent artists.
TRACK_AUDIO: stream `/track/{id}/audio` to `audio/<id>.<ext>` (ext from the Content-Type), then
mark the track available. ALBUM_IMAGE / ARTIST_IMAGE: stream `/image/{id}` to `images/<id>.jpg`.

Every step is idempotent: catalog rows are upserts keyed by id and file paths are a pure
function of the id, so running an item twice (after a crash or a retry) changes nothing more.
Files are published before the queue records the completion. Failures leave as
`DownloaderError`; anything else is a bug and propagates.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from actors.downloader import (
    ArtistMeta,
    DownloaderBadRequest,
    DownloaderClient,
    DownloaderNotFound,
    DownloaderParseError,
)
from storage.catalog import CatalogStore
from storage.files import AUDIO_TYPES, MediaLayout
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


@dataclass(frozen=True)
class Steps:
    """Everything a step needs; built once by the processor."""

    client: DownloaderClient
    catalog: CatalogStore
    media: MediaLayout
    max_audio_bytes: int = MAX_AUDIO_BYTES
    max_image_bytes: int = MAX_IMAGE_BYTES

    async def run(self, item: sqlite3.Row) -> StepResult:
        """Process one claimed item; raises `DownloaderError` for a per-item failure."""
        kind = ContentType(item["content_type"])
        try:
            check = image_id if kind in IMAGE_KINDS else content_id
            ident = check(item["content_id"])
        except InvalidId as exc:
            raise DownloaderBadRequest(f"queue item has a bad id: {exc}") from exc
        if kind is ContentType.ALBUM:
            return await self.album(ident)
        if kind is ContentType.TRACK_AUDIO:
            return await self.track_audio(ident)
        return await self.image(ident)

    async def album(self, album_id: str) -> StepResult:
        meta = await self.client.album(album_id)
        tracks = await self.client.album_tracks(album_id)
        named = [*meta.album.artist_ids, *(a for t in tracks for a in t.artist_ids)]
        artists: list[ArtistMeta] = []
        for artist_id in dict.fromkeys(named):
            if (artist := await self._artist(artist_id)) is not None:
                artists.append(artist)
        images = {i.id: i for i in (*meta.covers, *(p for a in artists for p in a.portraits))}
        try:
            changed = await self.catalog.db.run(
                self.catalog.ingest_album,
                meta.album,
                tracks,
                [a.artist for a in artists],
                list(images.values()),
            )
        except ValueError as exc:  # the catalog's own validation of ids and ownership
            raise DownloaderParseError(f"album {album_id} is inconsistent: {exc}") from exc
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

    async def _artist(self, artist_id: str) -> ArtistMeta | None:
        try:
            return await self.client.artist(artist_id)
        except DownloaderNotFound:
            log.warning("artist %s is unknown to the downloader; ingesting without it", artist_id)
            return None

    async def track_audio(self, track_id: str) -> StepResult:
        def path_for(media_type: str) -> Path:
            ext = AUDIO_TYPES.get(media_type)
            if ext is None:
                raise DownloaderParseError(f"unsupported audio content type {media_type[:64]!r}")
            return self.media.audio_path(track_id, ext)

        url = f"/track/{track_id}/audio"
        result = await self.client.download(path_for, url, self.max_audio_bytes)
        await self.catalog.db.run(
            self.catalog.set_track_audio, track_id, AUDIO_TYPES[result.media_type]
        )
        return StepResult(size=result.size)

    async def image(self, ident: str) -> StepResult:
        def path_for(media_type: str) -> Path:
            if media_type not in IMAGE_TYPES:
                raise DownloaderParseError(f"unsupported image content type {media_type[:64]!r}")
            return self.media.image_path(ident)

        result = await self.client.download(path_for, f"/image/{ident}", self.max_image_bytes)
        return StepResult(size=result.size)
