"""Synthetic catalog: determinism, id formats, names, byte generators and build speed."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_downloader import (
    Catalog,
    CatalogSpec,
    audio_bytes,
    build_catalog,
    image_bytes,
    iter_audio,
)
from fake_downloader.content import PERIOD_BYTES, cyclic_slice, iter_cyclic
from fake_downloader.knobs import FailRule, Fault, parse_fail, parse_fault

CONTENT_ID = re.compile(r"[0-9A-Za-z]{22}")
IMAGE_ID = re.compile(r"[0-9a-f]{40}")


def test_same_seed_same_catalog_and_bytes() -> None:
    first, second = Catalog(CatalogSpec(seed=3)), Catalog(CatalogSpec(seed=3))
    assert first.artist_ids == second.artist_ids
    assert first.album_ids == second.album_ids
    assert first.track_ids == second.track_ids
    assert first.cover_ids == second.cover_ids
    assert first.album_names == second.album_names
    track = first.track_ids[5]
    assert audio_bytes(first.spec, track) == audio_bytes(second.spec, track)


def test_different_seed_different_ids() -> None:
    first, second = Catalog(CatalogSpec(seed=1)), Catalog(CatalogSpec(seed=2))
    assert not set(first.track_ids) & set(second.track_ids)
    assert not set(first.cover_ids) & set(second.cover_ids)


def test_id_formats_and_uniqueness() -> None:
    catalog = build_catalog(CatalogSpec())
    content = catalog.artist_ids + catalog.album_ids + catalog.track_ids
    assert all(CONTENT_ID.fullmatch(cid) for cid in content)
    assert len(set(content)) == len(content) == 10 + 30 + 300
    images = catalog.cover_ids + catalog.portrait_ids
    assert all(IMAGE_ID.fullmatch(iid) for iid in images)
    assert len(set(images)) == 40


def test_relations_and_names() -> None:
    catalog = build_catalog(CatalogSpec())
    assert catalog.artist_names[3].startswith("Artist 4 ")
    assert catalog.album_names[7].startswith("Album 3-2 ")
    assert list(catalog.artist_albums(2)) == [6, 7, 8]
    assert list(catalog.album_tracks(1)) == list(range(10, 20))
    assert catalog.track_album(25) == 2
    assert catalog.track_number(25) == 6
    assert catalog.track_name(25).startswith("Track 6 ")


def test_every_adjective_is_searchable_in_default_catalog() -> None:
    catalog = build_catalog(CatalogSpec())
    for word in ("midnight", "velvet", "golden", "neon"):
        assert catalog.album_search.find(word, 5), word


def test_name_index_finds_each_name_once_in_order() -> None:
    catalog = build_catalog(CatalogSpec())
    hits = catalog.album_search.find("ALBUM 1-", 100)
    assert hits == [0, 1, 2]
    assert catalog.artist_search.find("artist", 3) == [0, 1, 2]
    assert catalog.artist_search.find("no such thing", 10) == []
    assert catalog.artist_search.find("", 2) == [0, 1]


def test_missing_every() -> None:
    catalog = Catalog(CatalogSpec(missing_every=4))
    missing = catalog.missing_track_ids
    assert missing[:2] == [catalog.track_ids[3], catalog.track_ids[7]]
    assert len(missing) == 300 // 4
    assert len(catalog.available_track_ids) == 300 - len(missing)
    assert Catalog(CatalogSpec()).missing_track_ids == []


def test_audio_and_image_bytes_shape() -> None:
    spec = CatalogSpec(audio_bytes=200_000, image_bytes=5000)
    catalog = build_catalog(spec)
    track = catalog.track_ids[0]
    data = audio_bytes(spec, track)
    assert len(data) == 200_000
    assert data.startswith(b"fLaC")
    assert data[PERIOD_BYTES : 2 * PERIOD_BYTES] == data[:PERIOD_BYTES]
    assert b"".join(iter_audio(spec, track, chunk_bytes=7777)) == data
    assert audio_bytes(spec, catalog.track_ids[1]) != data
    image = image_bytes(spec, catalog.cover_ids[0])
    assert len(image) == 5000
    assert image.startswith(b"\xff\xd8\xff")


def test_byte_generation_is_cheap() -> None:
    spec = CatalogSpec()
    catalog = build_catalog(spec)
    started = time.perf_counter()
    for track in catalog.track_ids:
        audio_bytes(spec, track)
    assert time.perf_counter() - started < 2.0


@settings(max_examples=60, deadline=None)
@given(
    period=st.binary(min_size=1, max_size=50),
    start=st.integers(0, 300),
    length=st.integers(0, 300),
    chunk=st.integers(1, 40),
)
def test_cyclic_slice_matches_naive_repetition(
    period: bytes, start: int, length: int, chunk: int
) -> None:
    naive = (period * (1 + (start + length) // len(period)))[start : start + length]
    assert cyclic_slice(period, start, start + length) == naive
    assert b"".join(iter_cyclic(period, start, start + length, chunk)) == naive


def test_large_catalog_builds_fast() -> None:
    started = time.perf_counter()
    catalog = Catalog(CatalogSpec(artists=500, albums_per_artist=10, tracks_per_album=20))
    elapsed = time.perf_counter() - started
    assert len(catalog.track_ids) == 100_000
    assert catalog.track_index(catalog.track_ids[99_999]) == 99_999
    assert elapsed < 2.0


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="artists"):
        CatalogSpec(artists=0)
    with pytest.raises(ValueError, match="audio_bytes"):
        CatalogSpec(audio_bytes=-1)


def test_parse_fail_and_fault() -> None:
    assert parse_fail("audio:503:0.25") == FailRule("audio", 503, 0.25)
    assert parse_fail("*:429") == FailRule("*", 429, 1.0)
    assert parse_fault("truncate:audio:2") == Fault("truncate", "audio", 2)
    typed = parse_fault("content_type=text/html:audio")
    assert (typed.mode, typed.content_type, typed.times) == ("content_type", "text/html", None)
    for bad in ("nope:audio", "truncate:nowhere", "truncate", "content_type:audio"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_fault(bad)
    for bad in ("audio:999:1", "audio:503:2", "x:503:1"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_fail(bad)
