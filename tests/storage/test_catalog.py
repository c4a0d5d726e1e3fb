"""The catalog store (SPEC §3, §5): idempotent ingestion, JSON shapes, scan reads, schema."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.seed import synthetic_bundles
from storage import catalog_read
from storage.catalog import (
    MIGRATIONS,
    AlbumBundle,
    AlbumRecord,
    ArtistRecord,
    CatalogStore,
    DiscRecord,
    ImageRecord,
    TrackRecord,
)
from storage.db import Database, SchemaTooNew
from storage.ids import InvalidId

ALBUM = "AlbumAlbumAlbumAlbum01"
SINGER = "ArtistArtistArtistAr01"
GUEST = "ArtistArtistArtistAr02"
TRACKS = ("TrackTrackTrackTrack01", "TrackTrackTrackTrack02", "TrackTrackTrackTrack03")
COVER = "c" * 40
PORTRAIT = "d" * 40
LINK_TABLES = ("album_artists", "track_artists", "album_images", "artist_images")


def sample() -> AlbumBundle:
    album = AlbumRecord(
        id=ALBUM, name="First Light", album_type="album", label="Indie", release_date=1_600_000_000,
        genres=("rock", "indie"), artist_ids=(SINGER,), image_ids=(COVER,),
        discs=(DiscRecord(1, None, TRACKS[:2]), DiscRecord(2, "Bonus", TRACKS[2:])),
    )  # fmt: skip
    tracks = [
        TrackRecord(TRACKS[0], "Dawn", ALBUM, (SINGER,), 1, 1, 200_000, False),
        TrackRecord(TRACKS[1], "Noon", ALBUM, (SINGER, GUEST), 2, 1, 210_000, True),
        TrackRecord(TRACKS[2], "Dusk", ALBUM, (SINGER,), 1, 2, 220_000, False),
    ]
    artists = [
        ArtistRecord(SINGER, "The Singer", ("rock",), (PORTRAIT,)),
        ArtistRecord(GUEST, "A Guest", (), ()),
    ]
    images = [ImageRecord(COVER, "large", 640, 640), ImageRecord(PORTRAIT, "small", 300, 300)]
    return AlbumBundle(album, tracks, artists, images)


def ingest(store: CatalogStore, bundle: AlbumBundle) -> bool:
    return store.ingest_album(bundle.album, bundle.tracks, bundle.artists, bundle.images)


def row_counts(store: CatalogStore) -> dict[str, int]:
    with store.db.read() as conn:
        tables = ("artists", "albums", "tracks", "images", *LINK_TABLES)
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CatalogStore]:
    store = CatalogStore.open(tmp_path / "catalog.db")
    yield store
    store.db.close()


def test_ingest_builds_the_spec_shapes(store: CatalogStore) -> None:
    assert ingest(store, sample()) is True
    album = store.get_album(ALBUM)
    assert album is not None
    assert {k: v for k, v in album.items() if k not in ("tracks", "artists")} == {
        "id": ALBUM, "name": "First Light", "album_type": "album", "label": "Indie",
        "release_date": 1_600_000_000, "genres": ["rock", "indie"], "artist_ids": [SINGER],
        "image_ids": [COVER],
        "discs": [{"number": 1, "name": None, "track_ids": list(TRACKS[:2])},
                  {"number": 2, "name": "Bonus", "track_ids": [TRACKS[2]]}],
    }  # fmt: skip
    assert [t["id"] for t in album["tracks"]] == list(TRACKS)
    assert album["tracks"][1] == {
        "id": TRACKS[1], "name": "Noon", "album_id": ALBUM, "artist_ids": [SINGER, GUEST],
        "number": 2, "disc_number": 1, "duration_ms": 210_000, "is_explicit": True,
        "audio_available": False, "audio_format": None,
    }  # fmt: skip
    assert album["artists"] == [
        {"id": SINGER, "name": "The Singer", "genres": ["rock"], "image_ids": [PORTRAIT]},
        {"id": GUEST, "name": "A Guest", "genres": [], "image_ids": []},
    ]
    assert store.get_track(TRACKS[1]) == album["tracks"][1]
    assert store.get_artist(SINGER) == {
        "id": SINGER, "name": "The Singer", "genres": ["rock"], "image_ids": [PORTRAIT],
        "album_ids": [ALBUM],
    }  # fmt: skip
    assert store.get_artist(GUEST) == {
        "id": GUEST, "name": "A Guest", "genres": [], "image_ids": [], "album_ids": [],
    }  # fmt: skip
    assert store.get_image(COVER) == {"id": COVER, "size": "large", "width": 640, "height": 640}
    assert store.counts() == {"artists": 2, "albums": 1, "tracks": 3, "images": 2}


def test_unknown_ids_read_as_none(store: CatalogStore) -> None:
    ingest(store, sample())
    missing = "Z" * 22
    assert store.get_album(missing) is None
    assert store.get_artist(missing) is None
    assert store.get_track(missing) is None
    assert store.get_image("e" * 40) is None
    assert store.track_audio_format(missing) is None


def test_ingesting_twice_changes_and_duplicates_nothing(store: CatalogStore) -> None:
    assert ingest(store, sample()) is True
    before, album = row_counts(store), store.get_album(ALBUM)
    assert ingest(store, sample()) is False
    assert row_counts(store) == before
    assert store.get_album(ALBUM) == album
    assert before == {
        "artists": 2, "albums": 1, "tracks": 3, "images": 2,
        "album_artists": 1, "track_artists": 4, "album_images": 1, "artist_images": 1,
    }  # fmt: skip


def test_changed_metadata_updates_rows_and_replaces_links(store: CatalogStore) -> None:
    bundle = sample()
    ingest(store, bundle)
    album = replace(bundle.album, name="First Light (Remaster)", artist_ids=(GUEST, SINGER))
    tracks = [replace(bundle.tracks[0], artist_ids=(GUEST,)), *bundle.tracks[1:]]
    assert ingest(store, AlbumBundle(album, tracks, bundle.artists, bundle.images)) is True
    got = store.get_album(ALBUM)
    assert got is not None
    assert got["name"] == "First Light (Remaster)"
    assert got["artist_ids"] == [GUEST, SINGER]
    assert got["tracks"][0]["artist_ids"] == [GUEST]
    assert store.get_artist(GUEST)["album_ids"] == [ALBUM]  # type: ignore[index]
    assert row_counts(store)["track_artists"] == 4


def test_audio_format_survives_reingest(store: CatalogStore) -> None:
    ingest(store, sample())
    store.set_track_audio(TRACKS[0], "flac")
    assert store.track_audio_format(TRACKS[0]) == "flac"
    renamed = [replace(t, name=t.name + "!") for t in sample().tracks]
    assert ingest(store, replace(sample(), tracks=renamed)) is True
    track = store.get_track(TRACKS[0])
    assert track is not None
    assert (track["name"], track["audio_available"], track["audio_format"]) == (
        "Dawn!",
        True,
        "flac",
    )
    store.set_track_audio(TRACKS[0], None)
    assert store.get_track(TRACKS[0])["audio_available"] is False  # type: ignore[index]


def test_set_track_audio_refuses_unknown_formats(store: CatalogStore) -> None:
    ingest(store, sample())
    with pytest.raises(ValueError, match="unsupported audio format"):
        store.set_track_audio(TRACKS[0], "exe")
    assert store.track_audio_format(TRACKS[0]) is None


def test_several_tracks_are_recorded_together_or_not_at_all(store: CatalogStore) -> None:
    ingest(store, sample())
    with pytest.raises(ValueError, match="unsupported audio format"):
        store.set_tracks_audio([(TRACKS[0], "flac"), (TRACKS[1], "exe")])
    assert [store.track_audio_format(t) for t in TRACKS[:2]] == [None, None]
    store.set_tracks_audio([(TRACKS[0], "flac"), (TRACKS[1], "mp3"), ("unknown", "ogg")])
    assert [store.track_audio_format(t) for t in TRACKS[:2]] == ["flac", "mp3"]


@pytest.mark.parametrize(
    "spoil",
    [
        lambda b: replace(b, album=replace(b.album, id="../../etc/passwd")),
        lambda b: replace(b, tracks=[replace(b.tracks[0], id="short"), *b.tracks[1:]]),
        lambda b: replace(b, images=[ImageRecord("C" * 40, 1, 1, 1)]),
        lambda b: replace(b, tracks=[replace(b.tracks[0], album_id="Y" * 22)]),
    ],
)
def test_bad_bundle_is_refused_whole(
    store: CatalogStore, spoil: Callable[[AlbumBundle], AlbumBundle]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - InvalidId or a foreign track
        ingest(store, spoil(sample()))
    assert store.counts() == {"artists": 0, "albums": 0, "tracks": 0, "images": 0}


def test_failure_mid_batch_rolls_back_the_whole_batch(store: CatalogStore) -> None:
    good = list(synthetic_bundles(3))
    bad = replace(good[1], artists=[ArtistRecord("no", "x")])
    with pytest.raises(InvalidId):
        store.ingest_many([good[0], bad, good[2]])
    assert store.counts()["albums"] == 0


def test_ingest_many_and_existing_ids(store: CatalogStore) -> None:
    bundles = list(synthetic_bundles(50, 4, artists=5))
    assert store.ingest_many(bundles) == 50
    assert store.ingest_many(bundles) == 0
    assert store.counts() == {"artists": 5, "albums": 50, "tracks": 200, "images": 55}
    album_ids = [b.album.id for b in bundles[:3]]
    assert store.existing_album_ids([*album_ids, "Q" * 22]) == set(album_ids)
    artist_id = bundles[0].artists[0].id
    assert store.existing_artist_ids([artist_id, "Q" * 22]) == {artist_id}
    assert len(store.get_artist(artist_id)["album_ids"]) == 10  # type: ignore[index]


def test_schema_version_is_recorded_and_a_newer_db_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    CatalogStore.open(path).db.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer than this server supports"):
        CatalogStore.open(path)


def test_a_catalog_of_the_first_schema_gains_the_track_artist_index_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.db"
    first = CatalogStore(Database(path, MIGRATIONS[:1]))
    first.ingest_many(synthetic_bundles(3, 2, artists=1))
    first.db.close()
    store = CatalogStore.open(path)
    try:
        assert store.counts()["tracks"] == 6
    finally:
        store.db.close()
    conn = sqlite3.connect(path)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert "track_artists_artist" in indexes
    assert version == len(MIGRATIONS) == 3


def test_a_catalog_of_numeric_image_sizes_keeps_them_as_text(tmp_path: Path) -> None:
    """The plan's numbers, stored before sizes became text, survive the migration as text,
    next to an image whose size, width and height the downloader left out."""
    path = tmp_path / "catalog.db"
    second = CatalogStore(Database(path, MIGRATIONS[:2]))
    bundle = sample()
    numeric = [ImageRecord(COVER, 1234, 640, 640), ImageRecord(PORTRAIT, 999, 300, 300)]  # type: ignore[arg-type]
    ingest(second, replace(bundle, images=numeric))
    second.db.close()
    store = CatalogStore.open(path)
    try:
        assert store.get_image(COVER) == {"id": COVER, "size": "1234", "width": 640, "height": 640}
        assert store.get_image(PORTRAIT) == {
            "id": PORTRAIT,
            "size": "999",
            "width": 300,
            "height": 300,
        }
        assert store.counts() == {"artists": 2, "albums": 1, "tracks": 3, "images": 2}
        bare = [ImageRecord(COVER, None, None, None), ImageRecord(PORTRAIT, "xlarge", 1, 1)]
        assert ingest(store, replace(bundle, images=bare)) is True
        assert store.get_image(COVER) == {"id": COVER, "size": None, "width": None, "height": None}
        assert store.get_image(PORTRAIT)["size"] == "xlarge"  # type: ignore[index]
    finally:
        store.db.close()


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    first = CatalogStore.open(path)
    ingest(first, sample())
    first.db.close()
    second = CatalogStore.open(path)
    assert second.counts()["tracks"] == 3
    assert ingest(second, sample()) is False
    second.db.close()


@pytest.mark.slow
def test_hundred_thousand_tracks_seed_in_seconds(store: CatalogStore) -> None:
    started = time.perf_counter()
    assert store.ingest_many(synthetic_bundles(10_000, 10)) == 10_000
    elapsed = time.perf_counter() - started
    assert store.counts()["tracks"] == 100_000
    assert len(store.missing_files("track_audio", [], lambda: False)) == 100_000
    assert elapsed < 15, f"seeding took {elapsed:.1f} s"


def test_a_long_comparison_leaves_the_cpu_to_waiting_threads_as_it_goes(
    store: CatalogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each poll of the scan's statement yields the CPU, so a woken event loop gets a core."""
    assert store.ingest_many(synthetic_bundles(100, 10)) == 100
    handovers: list[int] = []
    monkeypatch.setattr(catalog_read.os, "sched_yield", lambda: handovers.append(1))
    monkeypatch.setattr(catalog_read, "PROGRESS_STEPS", 100)
    assert len(store.missing_files("track_audio", ['["a.flac"]'], lambda: False)) == 1_000
    assert len(handovers) >= 10
