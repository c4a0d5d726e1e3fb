"""The downloader's JSON in both shapes (SPEC §12.1), and hostile variants of the real ones."""

from __future__ import annotations

from typing import Any

import pytest

from actors.downloader_json import parse_album, parse_artist, parse_search
from actors.failures import DownloaderParseError
from storage.catalog import ImageRecord

ALBUM = "A" * 22
ARTIST = "B" * 22
BIG, SMALL, THIRD = "a" * 40, "b" * 40, "c" * 40


def image(ident: str, size: Any = "large", side: Any = 640) -> dict[str, Any]:
    return {"id": ident, "size": size, "width": side, "height": side}


def album(**fields: Any) -> dict[str, Any]:
    doc = {"id": ALBUM, "name": "An Album", "artists_ids": [ARTIST], "discs": []}
    return doc | fields


def test_covers_from_both_lists_are_merged_once_each_in_order() -> None:
    doc = album(
        covers=[image(BIG), image(SMALL, "small", 64)],
        cover_group=[image(SMALL, "small", 64), image(THIRD, "xlarge", 1280)],
    )
    meta = parse_album(doc, ALBUM)
    assert meta.covers == (
        ImageRecord(BIG, "large", 640, 640),
        ImageRecord(SMALL, "small", 64, 64),
        ImageRecord(THIRD, "xlarge", 1280, 1280),
    )
    assert meta.album.image_ids == (BIG, SMALL, THIRD)


def test_portraits_may_come_in_the_group_alone_and_genres_as_genre() -> None:
    doc = {"id": ARTIST, "name": "X", "genre": ["jazz"], "portrait_group": [image(BIG)]}
    meta = parse_artist(doc, ARTIST)
    assert meta.artist.genres == ("jazz",)
    assert meta.portraits == (ImageRecord(BIG, "large", 640, 640),)


@pytest.mark.parametrize(("size", "stored"), [("large", "large"), (300, "300"), (None, None)])
def test_an_image_size_is_stored_as_text(size: Any, stored: str | None) -> None:
    meta = parse_album(album(covers=[image(BIG, size)]), ALBUM)
    assert meta.covers[0].size == stored


@pytest.mark.parametrize("size", ["../etc", "x" * 33, "", 1.5, -1, True, ["large"]])
def test_a_size_that_is_neither_a_class_nor_a_count_is_refused(size: Any) -> None:
    with pytest.raises(DownloaderParseError, match="size"):
        parse_album(album(covers=[image(BIG, size)]), ALBUM)


def test_empty_label_and_disc_name_are_stored_as_null() -> None:
    doc = album(label="", discs=[{"number": 1, "name": "", "tracks": []}])
    meta = parse_album(doc, ALBUM)
    assert (meta.album.label, meta.album.discs[0].name) == (None, None)


def item(release_date: Any, **fields: Any) -> dict[str, Any]:
    return {
        "id": ALBUM, "name": "An Album", "album_type": "album", "total_tracks": 3,
        "release_date": release_date, "images": [{"url": "/image/" + BIG, "width": 1}],
        "artists": [{"id": ARTIST, "name": "One"}, {"id": "C" * 22, "name": "Two"}],
    } | fields  # fmt: skip


@pytest.mark.parametrize(
    ("release_date", "year"),
    [("2001-03-14", 2001), ("2001-03", 2001), ("2001", 2001), (None, None), ("soon", None)],
)
def test_a_real_album_item_is_normalized(release_date: Any, year: int | None) -> None:
    (result,) = parse_search({"albums": {"items": [item(release_date)]}}, "album")
    assert result == {
        "id": ALBUM, "type": "album", "name": "An Album", "artist_name": "One, Two",
        "image_url": "/image/" + BIG, "year": year,
    }  # fmt: skip


def test_a_real_artist_item_and_absent_sections() -> None:
    doc = {"artists": {"items": [{"id": ARTIST, "name": "One", "genres": [], "images": []}]}}
    assert parse_search(doc, "artist") == [
        {"id": ARTIST, "type": "artist", "name": "One", "artist_name": None, "image_url": None,
         "year": None}
    ]  # fmt: skip
    assert parse_search(doc, "album") == []
    assert parse_search({}, "album") == []


@pytest.mark.parametrize(
    "doc",
    [
        {"albums": []},
        {"albums": {"items": {}}},
        {"albums": {"items": [item(None, id="../../x")]}},
        {"albums": {"items": [item(None, images=[{"url": 5}])]}},
        {"albums": {"items": [item(None, artists=[{"id": ARTIST}])]}},
    ],
)
def test_a_malformed_real_search_answer_is_a_parse_error(doc: dict[str, Any]) -> None:
    with pytest.raises(DownloaderParseError):
        parse_search(doc, "album")
