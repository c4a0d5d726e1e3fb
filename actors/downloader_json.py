"""Validation of the downloader's JSON (SPEC §12, §12.1) into catalog records and search results.

The downloader is untrusted: every document is checked field by field before anything reaches
the catalog or a path. Unknown fields are ignored; a missing required field, a value of the
wrong type or a malformed id raises `DownloaderParseError` naming the field. Optional fields
(album `album_type`/`label`/`date`, `genres`, images, track `disc_number` and `is_explicit`,
search `artist_name`/`image_url`/`year`) default to null, empty, 1 or false.

Both the plan's shapes and those of the service users actually run are accepted (SPEC §12.1);
where they differ, the comment at the spot says which behaviour of the real service it follows.
What is stored is one shape: empty labels and disc names become null, an image's size is a
string (a size class such as "large", or the plan's number written as text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actors.failures import DownloaderParseError
from storage.catalog import AlbumRecord, ArtistRecord, DiscRecord, ImageRecord, TrackRecord
from storage.ids import is_content_id, is_image_id

SEARCH_TYPES = ("album", "artist")


@dataclass(frozen=True)
class AlbumMeta:
    """`/album/{id}`: the catalog record and its cover images."""

    album: AlbumRecord
    covers: tuple[ImageRecord, ...]


@dataclass(frozen=True)
class ArtistMeta:
    """`/artist/{id}`: the catalog record and its portrait images."""

    artist: ArtistRecord
    portraits: tuple[ImageRecord, ...]


# SQLite's INTEGER: every number read here may be stored in the catalog.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _fail(what: str, problem: str) -> DownloaderParseError:
    return DownloaderParseError(f"downloader sent an invalid {what}: {problem}")


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(what, f"expected an object, got {type(value).__name__}")
    return value


def _list(doc: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> list[Any]:
    if key not in doc and not required:
        return []
    value = _field(doc, key, what)
    if not isinstance(value, list):
        raise _fail(what, f"{key} must be a list")
    return value


def _field(doc: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in doc:
        raise _fail(what, f"missing field {key!r}")
    return doc[key]


def _str(doc: Mapping[str, Any], key: str, what: str) -> str:
    value = _field(doc, key, what)
    if not isinstance(value, str):
        raise _fail(what, f"{key} must be a string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str, what: str) -> str | None:
    return None if doc.get(key) is None else _str(doc, key, what)


def _int(
    doc: Mapping[str, Any], key: str, what: str, default: int | None = None, *, signed: bool = False
) -> int:
    if key not in doc and default is not None:
        return default
    value = _field(doc, key, what)
    if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and not signed):
        raise _fail(what, f"{key} must be {'an' if signed else 'a non-negative'} integer")
    if not INT64_MIN <= value <= INT64_MAX:  # beyond what SQLite can store
        raise _fail(what, f"{key} is out of range")
    return value


def _opt_int(doc: Mapping[str, Any], key: str, what: str) -> int | None:
    """Dates and years: may be null, and may predate 1970."""
    return None if doc.get(key) is None else _int(doc, key, what, signed=True)


def _content_id(value: Any, what: str, key: str = "id") -> str:
    if not is_content_id(value):
        raise _fail(what, f"{key} is not a content id: {str(value)[:64]!r}")
    assert isinstance(value, str)
    return value


def _id_list(doc: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    return tuple(_content_id(v, what, key) for v in _list(doc, key, what))


def _genres(doc: Mapping[str, Any], what: str) -> tuple[str, ...]:
    # The real service's artists carry `genre`; its albums and the plan's entities `genres`.
    key = "genres" if "genres" in doc or "genre" not in doc else "genre"
    values = _list(doc, key, what, required=False)
    if not all(isinstance(v, str) for v in values):
        raise _fail(what, f"{key} must be a list of strings")
    return tuple(values)


# A size class as the real service sends it ("small", "large", …): a short plain token.
_SIZE_CLASS = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _image_size(doc: Mapping[str, Any]) -> str | None:
    """The real service sends a size class ("large"); the plan a number. Stored as text."""
    value = doc.get("size")
    if value is None:
        return None
    if isinstance(value, str):
        if not _SIZE_CLASS.fullmatch(value):
            raise _fail("image", f"size is not a size class: {value[:32]!r}")
        return value
    return str(_int(doc, "size", "image"))


def _opt_pixels(doc: Mapping[str, Any], key: str) -> int | None:
    return None if doc.get(key) is None else _int(doc, key, "image")


def parse_image(value: Any) -> ImageRecord:
    doc = _object(value, "image")
    if not is_image_id(doc.get("id")):
        raise _fail("image", f"id is not an image id: {str(doc.get('id'))[:64]!r}")
    return ImageRecord(
        id=doc["id"],
        size=_image_size(doc),
        width=_opt_pixels(doc, "width"),
        height=_opt_pixels(doc, "height"),
    )


def _images(doc: Mapping[str, Any], key: str, what: str) -> tuple[ImageRecord, ...]:
    """The images under `key` and `<key>_group` merged, each id once, in order of appearance.

    The real service lists an album's covers in `covers` and/or `cover_group` and an artist's
    portraits in `portraits` and/or `portrait_group`, often the same image in both.
    """
    group = key.removesuffix("s") + "_group"
    merged: dict[str, ImageRecord] = {}
    for name in (key, group):
        for value in _list(doc, name, what, required=False):
            image = parse_image(value)
            merged.setdefault(image.id, image)
    return tuple(merged.values())


def _opt_text(doc: Mapping[str, Any], key: str, what: str) -> str | None:
    """An optional string where the real service sends "" for none (labels, disc names)."""
    return _opt_str(doc, key, what) or None


def _disc(value: Any) -> DiscRecord:
    doc = _object(value, "disc")
    return DiscRecord(
        number=_int(doc, "number", "disc"),
        name=_opt_text(doc, "name", "disc"),
        track_ids=_id_list(doc, "tracks", "disc"),
    )


def _requested(value: Any, what: str, expected_id: str) -> tuple[Mapping[str, Any], str]:
    """The JSON object of the entity asked for, and its id; another entity's answer is refused."""
    doc = _object(value, what)
    found = _content_id(_field(doc, "id", what), what)
    if found != expected_id:
        raise _fail(what, f"asked for {expected_id}, got {found}")
    return doc, found


def parse_album(value: Any, expected_id: str) -> AlbumMeta:
    doc, album_id = _requested(value, "album", expected_id)
    covers = _images(doc, "covers", "album")
    record = AlbumRecord(
        id=album_id,
        name=_str(doc, "name", "album"),
        album_type=_opt_str(doc, "album_type", "album"),
        label=_opt_text(doc, "label", "album"),
        release_date=_opt_int(doc, "date", "album"),
        genres=_genres(doc, "album"),
        artist_ids=_id_list(doc, "artists_ids", "album"),
        image_ids=tuple(c.id for c in covers),
        discs=tuple(_disc(d) for d in _list(doc, "discs", "album")),
    )
    return AlbumMeta(record, covers)


def parse_track(value: Any, album_id: str) -> TrackRecord:
    doc = _object(value, "track")
    track = TrackRecord(
        id=_content_id(_field(doc, "id", "track"), "track"),
        name=_str(doc, "name", "track"),
        album_id=_content_id(_field(doc, "album_id", "track"), "track", "album_id"),
        artist_ids=_id_list(doc, "artists_ids", "track"),
        number=_int(doc, "number", "track"),
        disc_number=_int(doc, "disc_number", "track", default=1),
        duration_ms=_int(doc, "duration", "track"),
        is_explicit=_bool(doc, "is_explicit", "track"),
    )
    if track.album_id != album_id:
        raise _fail("track", f"track {track.id} belongs to album {track.album_id}, not {album_id}")
    return track


def _bool(doc: Mapping[str, Any], key: str, what: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise _fail(what, f"{key} must be true or false")
    return value


def parse_tracks(value: Any, album_id: str) -> list[TrackRecord]:
    """A bare array of tracks, or `{"tracks": [...]}`."""
    items = _list(value, "tracks", "track list") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise _fail("track list", "expected an array of tracks")
    return [parse_track(item, album_id) for item in items]


def parse_artist(value: Any, expected_id: str) -> ArtistMeta:
    doc, artist_id = _requested(value, "artist", expected_id)
    portraits = _images(doc, "portraits", "artist")
    record = ArtistRecord(
        id=artist_id,
        name=_str(doc, "name", "artist"),
        genres=_genres(doc, "artist"),
        image_ids=tuple(p.id for p in portraits),
    )
    return ArtistMeta(record, portraits)


def parse_search_result(value: Any) -> dict[str, Any]:
    """The plan's SearchResult: `{id, type, name, artist_name, image_url, year}`, absent
    optionals as null."""
    doc = _object(value, "search result")
    kind = _str(doc, "type", "search result")
    if kind not in SEARCH_TYPES:
        raise _fail("search result", f"type must be album or artist, got {kind[:32]!r}")
    return {
        "id": _content_id(_field(doc, "id", "search result"), "search result"),
        "type": kind,
        "name": _str(doc, "name", "search result"),
        "artist_name": _opt_str(doc, "artist_name", "search result"),
        "image_url": _opt_str(doc, "image_url", "search result"),
        "year": _opt_int(doc, "year", "search result"),
    }


def parse_search(value: Any, kind: str) -> list[dict[str, Any]]:
    """Search results of `kind`, from the plan's `{"results": [...]}` or the real service's
    `{"albums": {"items": [...]}, "artists": {"items": [...]}}` (either key may be absent)."""
    doc = _object(value, "search answer")
    if "results" in doc:
        return [parse_search_result(v) for v in _list(doc, "results", "search answer")]
    section = doc.get(kind + "s")
    if section is None:
        return []
    items = _list(_object(section, "search answer"), "items", "search answer")
    return [_search_item(item, kind) for item in items]


def _search_item(value: Any, kind: str) -> dict[str, Any]:
    """A real AlbumItem or ArtistItem as the plan's SearchResult (SPEC §12.1): the artists'
    names joined, the first image's url, the release date's year."""
    what = f"{kind} search item"
    doc = _object(value, what)
    artists = [_object(a, what) for a in _list(doc, "artists", what, required=False)]
    names = [_str(a, "name", what) for a in artists]
    images = [_object(i, what) for i in _list(doc, "images", what, required=False)]
    return {
        "id": _content_id(_field(doc, "id", what), what),
        "type": kind,
        "name": _str(doc, "name", what),
        "artist_name": ", ".join(names) if names else None,
        "image_url": _opt_str(images[0], "url", what) if images else None,
        "year": _release_year(doc, what),
    }


# "YYYY-MM-DD", "YYYY-MM" or "YYYY", as the real service writes release dates.
_RELEASE_DATE = re.compile(r"([0-9]{4})(?:-[0-9]{2}(?:-[0-9]{2})?)?")


def _release_year(doc: Mapping[str, Any], what: str) -> int | None:
    raw = _opt_str(doc, "release_date", what)
    if raw is None:
        return None
    match = _RELEASE_DATE.fullmatch(raw)
    return None if match is None else int(match.group(1))  # a date of another form: no year


def parse_discography(value: Any) -> dict[str, Any]:
    doc = _object(value, "discography")
    return {
        "artist": parse_search_result(_field(doc, "artist", "discography")),
        "albums": [parse_search_result(v) for v in _list(doc, "albums", "discography")],
    }
