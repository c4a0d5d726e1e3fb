"""The JSON documents of the downloader service users actually run (SPEC §12.1).

They carry the same catalog as `fake_downloader.payloads` (the plan's shapes), bent the ways the
real service bends them: image sizes are classes ("small", "large"), images come in `covers`
and/or `cover_group` (`portraits` and/or `portrait_group`) with overlaps, artists carry `genre`,
an album's label may be absent or empty and its date absent, disc names are empty, many fields
nobody needs ride along, and `/search` answers `{"albums": {"items": …}}` or
`{"artists": {"items": …}}`. Which variant an entity gets follows its index, so every variant
appears in any catalog of three or more albums and artists. The discography keeps the plan's
shape, as the real service does.
"""

from __future__ import annotations

from fake_downloader import payloads
from fake_downloader.catalog import Catalog
from fake_downloader.payloads import JsonDict

LARGE, SMALL = ("large", payloads.IMAGE_SIDE), ("small", 64)


def _image(image_id: str, size: tuple[str, int]) -> JsonDict:
    return {"id": image_id, "size": size[0], "width": size[1], "height": size[1]}


def _grouped(doc: JsonDict, key: str, big: JsonDict, small: JsonDict, variant: int) -> None:
    """Put the two images under `key` and/or `<key minus s>_group`, overlapping by id."""
    group = key.removesuffix("s") + "_group"
    if variant == 0:
        doc[key], doc[group] = [big], [big, small]
    elif variant == 1:
        doc[group] = [small, big]
    else:
        doc[key] = [big, small]


def _release_date(catalog: Catalog, album: int) -> str | None:
    year = payloads.album_year(catalog, album)
    return (f"{year}-03-14", f"{year}-03", str(year), None)[album % 4]


def artist(catalog: Catalog, artist: int) -> JsonDict:
    doc: JsonDict = {
        "id": catalog.artist_ids[artist],
        "name": catalog.artist_names[artist],
        "genre": payloads.artist_genres(catalog, artist),
        "activity_periods": [{"decade": 1990 + 10 * (artist % 3)}],
        "related": [catalog.artist_ids[(artist + 1) % len(catalog.artist_ids)]],
    }
    big = _image(catalog.portrait_ids[artist], LARGE)
    small = _image(catalog.small_portrait_ids[artist], SMALL)
    _grouped(doc, "portraits", big, small, artist % 3)
    return doc


def album(catalog: Catalog, album: int) -> JsonDict:
    doc = payloads.album(catalog, album)
    del doc["covers"]
    if album % 4 == 1:
        del doc["label"]
    elif album % 4 == 2:
        doc["label"] = ""
    if album % 3 == 2:
        del doc["date"]
    for disc in doc["discs"]:
        disc["name"] = ""
    doc |= {
        "related": [],
        "original_title": doc["name"],
        "version_title": "",
        "type_str": "ALBUM",
    }
    big = _image(catalog.cover_ids[album], LARGE)
    small = _image(catalog.small_cover_ids[album], SMALL)
    _grouped(doc, "covers", big, small, album % 3)
    return doc


def track(catalog: Catalog, track: int) -> JsonDict:
    doc = payloads.track(catalog, track)
    owner = catalog.album_artist(catalog.track_album(track))
    return doc | {
        "files": {"OGG_VORBIS_320": "f" * 40},
        "alternatives": [],
        "tags": [],
        "has_lyrics": track % 2 == 0,
        "language_of_performance": ["en"],
        "original_title": doc["name"],
        "version_title": "",
        "earliest_live_timestamp": 0,
        "artists_with_role": [
            {
                "artist_id": catalog.artist_ids[owner],
                "name": catalog.artist_names[owner],
                "role": "ARTIST_ROLE_MAIN_ARTIST",
            }
        ],
    }


def album_tracks(catalog: Catalog, album: int) -> list[JsonDict]:
    return [track(catalog, t) for t in catalog.album_tracks(album)]


def _images(image_id: str) -> list[JsonDict]:
    side = payloads.IMAGE_SIDE
    return [{"url": payloads.image_url(image_id), "width": side, "height": side}]


def album_item(catalog: Catalog, album: int) -> JsonDict:
    owner = catalog.album_artist(album)
    return {
        "id": catalog.album_ids[album],
        "name": catalog.album_names[album],
        "album_type": "album",
        "total_tracks": catalog.spec.tracks_per_album,
        "release_date": _release_date(catalog, album),
        "images": _images(catalog.cover_ids[album]),
        "artists": [{"id": catalog.artist_ids[owner], "name": catalog.artist_names[owner]}],
    }


def artist_item(catalog: Catalog, artist: int) -> JsonDict:
    return {
        "id": catalog.artist_ids[artist],
        "name": catalog.artist_names[artist],
        "genres": payloads.artist_genres(catalog, artist),
        "images": _images(catalog.portrait_ids[artist]),
    }


def search(catalog: Catalog, query: str, kind: str, limit: int) -> JsonDict:
    """`{"artists": {"items": …}}` or `{"albums": {"items": …}}` (the other key absent)."""
    if kind == "artist":
        hits = catalog.artist_search.find(query, limit)
        return {"artists": {"items": [artist_item(catalog, i) for i in hits]}}
    hits = catalog.album_search.find(query, limit)
    return {"albums": {"items": [album_item(catalog, i) for i in hits]}}
