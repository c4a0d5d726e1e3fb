"""What of an album is here (SPEC §8.3 rev 2): an album is complete with the audio of every
track, as the catalog records it and as the media folder holds it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.seed import synthetic_bundles, synthetic_id, synthetic_image_id
from storage import catalog_read
from storage.catalog import CatalogStore
from storage.files import MediaLayout
from storage.presence import complete_album_ids, mark_present
from storage.queue import ChildSpec, ContentType

ALBUMS = [synthetic_id("L", k) for k in range(3)]
UNKNOWN = "Z" * 22


def track(album: int, n: int) -> str:
    return synthetic_id("T", album * 2 + n)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[CatalogStore]:
    store = CatalogStore.open(tmp_path / "catalog.db")
    store.ingest_many(synthetic_bundles(3, 2, artists=1))  # two tracks each, one artist
    yield store
    store.db.close()


@pytest.fixture
def media(tmp_path: Path) -> MediaLayout:
    return MediaLayout(tmp_path / "media")


def have_audio(catalog: CatalogStore, media: MediaLayout, track_id: str) -> None:
    catalog.set_track_audio(track_id, "flac")
    media.audio_path(track_id, "flac").write_bytes(b"audio")


async def test_an_album_is_complete_only_with_the_audio_of_every_track(
    catalog: CatalogStore, media: MediaLayout
) -> None:
    for n in (0, 1):
        have_audio(catalog, media, track(0, n))  # album 0: whole
    have_audio(catalog, media, track(1, 0))  # album 1: one track never downloaded
    for n in (0, 1):
        have_audio(catalog, media, track(2, n))
    media.audio_path(track(2, 1), "flac").unlink()  # album 2: a file lost since
    assert await complete_album_ids(catalog, media, [*ALBUMS, UNKNOWN]) == {ALBUMS[0]}
    assert await complete_album_ids(catalog, media, []) == set()


async def test_children_are_marked_present_by_their_files(
    catalog: CatalogStore, media: MediaLayout
) -> None:
    have_audio(catalog, media, track(1, 0))
    catalog.set_track_audio(track(1, 1), "flac")  # recorded, but the file is gone
    cover, portrait = synthetic_image_id("L", 1), synthetic_image_id("R", 0)
    media.image_path(portrait).write_bytes(b"jpeg")
    children = [
        ChildSpec(ContentType.TRACK_AUDIO, track(1, 0)),
        ChildSpec(ContentType.TRACK_AUDIO, track(1, 1)),
        ChildSpec(ContentType.ALBUM_IMAGE, cover),
        ChildSpec(ContentType.ARTIST_IMAGE, portrait),
    ]
    marked = await mark_present(catalog, media, ALBUMS[1], children)
    assert [(c.content_id, c.present) for c in marked] == [
        (track(1, 0), True), (track(1, 1), False), (cover, False), (portrait, True),
    ]  # fmt: skip


def test_an_albums_tracks_are_read_by_key_not_by_scanning(catalog: CatalogStore) -> None:
    """The read stays flat as the catalog grows: the albums by key, their tracks by index."""
    with catalog.db.read() as conn:
        steps = conn.execute("EXPLAIN QUERY PLAN " + catalog_read._ALBUMS_AUDIO, ('["x"]',))
        plan = " / ".join(step[3] for step in steps)
    assert "SCAN a" not in plan and "SCAN t" not in plan, plan
    assert "tracks_album" in plan, plan
