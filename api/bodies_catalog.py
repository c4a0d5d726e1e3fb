"""The success bodies of the catalog's JSON routes (SPEC §5) and of listening and popular content
(SPEC §6), for `document_response`.

Documentation only, as `api.bodies` (whose rules these follow: open bodies, a field nullable
exactly where the code can answer null): the shapes are built by `storage.catalog_read`, the
popular lists by the `popular_content` job (`actors.jobs.popular_content`). What the
downloader may leave out of an album (its type, label, release date, a disc's name) is null;
a track's `audio_format` is null until its file is written.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from api.bodies_admin import Rfc3339

# -- SPEC §5: artists, albums, tracks ----------------------------------------------------------


class ArtistSummary(BaseModel):
    """An artist as an album lists it."""

    id: str
    name: str
    genres: list[str]
    image_ids: list[str]


class Artist(ArtistSummary):
    """An artist and the albums the catalog holds of theirs, oldest release first, undated
    last."""

    album_ids: list[str]


class Track(BaseModel):
    """A track. `availability`: `available` when its audio is recorded, `unavailable` once the
    integrity watchdog has given up on it (SPEC §8.9), else `missing`."""

    id: str
    name: str
    album_id: str
    artist_ids: list[str]
    number: int
    disc_number: int
    duration_ms: int
    is_explicit: bool
    audio_available: bool
    audio_format: str | None
    availability: Literal["available", "missing", "unavailable"]


class Disc(BaseModel):
    number: int
    name: str | None
    track_ids: list[str]


class Album(BaseModel):
    """An album with its tracks in disc and track order, and every artist on it (the album's
    first, then those featured on its tracks) that the catalog holds. `release_date` is unix
    seconds."""

    id: str
    name: str
    album_type: str | None
    label: str | None
    release_date: int | None
    genres: list[str]
    artist_ids: list[str]
    image_ids: list[str]
    discs: list[Disc]
    tracks: list[Track]
    artists: list[ArtistSummary]


# -- SPEC §6: listening and popular content ----------------------------------------------------


class ListeningRecorded(BaseModel):
    """The recorded play's id."""

    id: int


class PopularAlbum(BaseModel):
    id: str
    name: str
    artist_names: list[str]
    play_count: int


class PopularArtist(BaseModel):
    id: str
    name: str
    play_count: int


class Popular(BaseModel):
    """The most played albums and artists of the last 30 days, as the `popular_content` job last
    computed them; empty lists and a null `computed_at` before its first run."""

    albums: list[PopularAlbum]
    artists: list[PopularArtist]
    computed_at: Rfc3339 | None
