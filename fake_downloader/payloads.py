"""JSON documents of the downloader API, derived on demand from a `Catalog` index.

Each function does O(1) work for a single entity (O(n) for the n albums or tracks it lists),
never O(catalog).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fake_downloader.catalog import GENRES, Catalog

JsonDict = dict[str, Any]
IMAGE_SIDE = 640


def image_url(image_id: str) -> str:
    """Where the service serves `image_id`, relative to its base URL."""
    return f"/image/{image_id}"


def image_json(catalog: Catalog, image_id: str) -> JsonDict:
    return {
        "id": image_id,
        "size": catalog.spec.image_bytes,
        "width": IMAGE_SIDE,
        "height": IMAGE_SIDE,
    }


def artist_genres(catalog: Catalog, artist: int) -> list[str]:
    mixed = catalog.mix(catalog.artist_ids[artist])
    first = GENRES[mixed % len(GENRES)]
    second = GENRES[(mixed >> 8) % len(GENRES)]
    return [first] if first == second else [first, second]


def album_year(catalog: Catalog, album: int) -> int:
    return 1965 + catalog.mix(catalog.album_ids[album]) % 60


def album_date(catalog: Catalog, album: int) -> int:
    """Release date of `album` as unix seconds (midnight UTC)."""
    mixed = catalog.mix(catalog.album_ids[album]) >> 8
    month, day = 1 + mixed % 12, 1 + (mixed >> 4) % 28
    return int(datetime(album_year(catalog, album), month, day, tzinfo=UTC).timestamp())


def artist_result(catalog: Catalog, artist: int) -> JsonDict:
    return {
        "id": catalog.artist_ids[artist],
        "type": "artist",
        "name": catalog.artist_names[artist],
        "image_url": image_url(catalog.portrait_ids[artist]),
    }


def album_result(catalog: Catalog, album: int) -> JsonDict:
    return {
        "id": catalog.album_ids[album],
        "type": "album",
        "name": catalog.album_names[album],
        "artist_name": catalog.artist_names[catalog.album_artist(album)],
        "image_url": image_url(catalog.cover_ids[album]),
        "year": album_year(catalog, album),
    }


def search(catalog: Catalog, query: str, kind: str, limit: int) -> JsonDict:
    """`{"results": [...]}` for a case-insensitive substring match on names."""
    if kind == "artist":
        hits = catalog.artist_search.find(query, limit)
        return {"results": [artist_result(catalog, i) for i in hits]}
    hits = catalog.album_search.find(query, limit)
    return {"results": [album_result(catalog, i) for i in hits]}


def discography(catalog: Catalog, artist: int) -> JsonDict:
    return {
        "artist": artist_result(catalog, artist),
        "albums": [album_result(catalog, i) for i in catalog.artist_albums(artist)],
    }


def artist(catalog: Catalog, artist: int) -> JsonDict:
    return {
        "id": catalog.artist_ids[artist],
        "name": catalog.artist_names[artist],
        "genres": artist_genres(catalog, artist),
        "portraits": [image_json(catalog, catalog.portrait_ids[artist])],
    }


def album(catalog: Catalog, album: int) -> JsonDict:
    album_id = catalog.album_ids[album]
    owner = catalog.album_artist(album)
    label_noun = catalog.artist_names[owner].split()[-1]
    return {
        "id": album_id,
        "name": catalog.album_names[album],
        "album_type": "album",
        "artists_ids": [catalog.artist_ids[owner]],
        "label": f"{label_noun} Records",
        "date": album_date(catalog, album),
        "genres": artist_genres(catalog, owner),
        "covers": [image_json(catalog, catalog.cover_ids[album])],
        "discs": [
            {
                "number": 1,
                "name": "Disc 1",
                "tracks": [catalog.track_ids[t] for t in catalog.album_tracks(album)],
            }
        ],
    }


def track(catalog: Catalog, track: int) -> JsonDict:
    track_id = catalog.track_ids[track]
    owner = catalog.track_album(track)
    mixed = catalog.mix(track_id)
    return {
        "id": track_id,
        "name": catalog.track_name(track),
        "album_id": catalog.album_ids[owner],
        "artists_ids": [catalog.artist_ids[catalog.album_artist(owner)]],
        "number": catalog.track_number(track),
        "disc_number": 1,
        "duration": 120_000 + mixed % 300_000,
        "is_explicit": mixed % 7 == 0,
    }


def album_tracks(catalog: Catalog, album: int) -> list[JsonDict]:
    return [track(catalog, t) for t in catalog.album_tracks(album)]
