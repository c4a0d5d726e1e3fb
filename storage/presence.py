"""Whether an album is here whole, and which of its files are (SPEC §8.3 rev 2: "in the catalog"
means complete, and a request for an album there in part fetches only what is missing).

The integrity scan's rule (`actors.integrity_scan`), asked of a few albums rather than of the
whole catalog: a track's audio is here iff the catalog records its format and
`audio/<id>.<format>` exists; an image iff `images/<id>.jpg` exists. An album is complete when
the catalog holds it with the audio of every track (its images do not count: the watchdog
repairs a lost cover). A question costs one catalog read by key for the albums asked about and
a `stat` per file, in the media folder's Offload, so it does not grow with the catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from storage.catalog import CatalogStore
from storage.files import MediaLayout
from storage.queue import ChildSpec, ContentType


async def complete_album_ids(
    catalog: CatalogStore, media: MediaLayout, album_ids: Sequence[str]
) -> set[str]:
    """The albums among `album_ids` that the catalog holds with the audio of every track."""
    if not album_ids:
        return set()
    albums = await catalog.db.run(catalog.albums_audio, album_ids)

    def complete() -> set[str]:
        return {
            album
            for album, tracks in albums.items()
            if all(media.has_audio(track, fmt) for track, fmt in tracks.items())
        }

    return await media.offload.run(complete)


async def mark_present(
    catalog: CatalogStore, media: MediaLayout, album_id: str, children: Sequence[ChildSpec]
) -> list[ChildSpec]:
    """The album's `children`, each `present` if its file is already here."""
    formats = (await catalog.db.run(catalog.albums_audio, [album_id])).get(album_id, {})

    def here(child: ChildSpec) -> bool:
        if child.content_type is ContentType.TRACK_AUDIO:
            return media.has_audio(child.content_id, formats.get(child.content_id))
        return media.has_image(child.content_id)

    def marked() -> list[ChildSpec]:
        return [replace(child, present=here(child)) for child in children]

    return await media.offload.run(marked)
