"""Validation of the downloader's JSON (SPEC §12) into catalog records and search results.

The downloader is untrusted: every document is checked field by field before anything reaches
the catalog or a path. Unknown fields are ignored; a missing required field, a value of the
wrong type or a malformed id raises `DownloaderParseError` naming the field. Optional fields
(album `album_type`/`label`/`date`, `genres`, `covers`, `portraits`, track `disc_number` and
`is_explicit`, search `artist_name`/`image_url`/`year`) default to null, empty, 1 or false.
Artists accept `genres` or `genre`; `/album/{id}/tracks` may be a bare array or `{"tracks": …}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from actors.downloader_errors import DownloaderParseError
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
    key = "genres" if "genres" in doc or "genre" not in doc else "genre"
    values = _list(doc, key, what, required=False)
    if not all(isinstance(v, str) for v in values):
        raise _fail(what, f"{key} must be a list of strings")
    return tuple(values)


def parse_image(value: Any) -> ImageRecord:
    doc = _object(value, "image")
    if not is_image_id(doc.get("id")):
        raise _fail("image", f"id is not an image id: {str(doc.get('id'))[:64]!r}")
    return ImageRecord(
        id=doc["id"],
        size=_int(doc, "size", "image"),
        width=_int(doc, "width", "image"),
        height=_int(doc, "height", "image"),
    )


def _images(doc: Mapping[str, Any], key: str, what: str) -> tuple[ImageRecord, ...]:
    return tuple(parse_image(v) for v in _list(doc, key, what, required=False))


def _disc(value: Any) -> DiscRecord:
    doc = _object(value, "disc")
    return DiscRecord(
        number=_int(doc, "number", "disc"),
        name=_opt_str(doc, "name", "disc"),
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
        label=_opt_str(doc, "label", "album"),
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
    """`{id, type, name, artist_name, image_url, year}` with absent optionals as null."""
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


def parse_search(value: Any) -> list[dict[str, Any]]:
    doc = _object(value, "search answer")
    return [parse_search_result(v) for v in _list(doc, "results", "search answer")]


def parse_discography(value: Any) -> dict[str, Any]:
    doc = _object(value, "discography")
    return {
        "artist": parse_search_result(_field(doc, "artist", "discography")),
        "albums": [parse_search_result(v) for v in _list(doc, "albums", "discography")],
    }
