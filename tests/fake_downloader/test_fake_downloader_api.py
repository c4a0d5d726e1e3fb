"""Fake downloader HTTP API: every endpoint's shape, validation and error documents."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from fake_downloader import (
    CatalogSpec,
    FakeDownloader,
    Knobs,
    audio_bytes,
    image_bytes,
    open_fake_downloader,
)

pytestmark = pytest.mark.trio

SPEC = CatalogSpec(
    seed=7, artists=4, albums_per_artist=2, tracks_per_album=3, audio_bytes=200_000,
    image_bytes=5000, missing_every=5,
)  # fmt: skip
CONTENT_ID = re.compile(r"[0-9A-Za-z]{22}")


@asynccontextmanager
async def running(
    knobs: Knobs | None = None,
) -> AsyncIterator[tuple[FakeDownloader, httpx.AsyncClient]]:
    async with (
        open_fake_downloader(SPEC, knobs) as fake,
        httpx.AsyncClient(base_url=fake.base_url, timeout=10) as client,
    ):
        yield fake, client


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert isinstance(body["message"], str)


async def test_base_url_reports_real_port() -> None:
    async with running() as (fake, client):
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", fake.base_url)
        assert not fake.base_url.endswith(":0")
        assert (await client.get("/search", params={"q": "a"})).status_code == 200


async def test_search_albums_and_artists() -> None:
    async with running() as (fake, client):
        catalog = fake.catalog
        body = (await client.get("/search", params={"q": "ALBUM 2-"})).json()
        assert [r["id"] for r in body["results"]] == catalog.album_ids[2:4]
        first = body["results"][0]
        assert set(first) == {"id", "type", "name", "artist_name", "image_url", "year"}
        assert first["type"] == "album"
        assert first["artist_name"] == catalog.artist_names[1]
        assert first["image_url"] == f"/image/{catalog.cover_ids[2]}"
        word = catalog.artist_names[2].split()[-1].lower()
        params = {"q": word, "type": "artist", "limit": "50"}
        artists = (await client.get("/search", params=params)).json()["results"]
        assert catalog.artist_ids[2] in [r["id"] for r in artists]
        assert set(artists[0]) == {"id", "type", "name", "image_url"}
        limited = await client.get("/search", params={"q": "album", "limit": "3"})
        assert len(limited.json()["results"]) == 3
        default = await client.get("/search", params={"q": "a"})
        assert len(default.json()["results"]) == SPEC.album_count


async def test_search_bad_requests() -> None:
    async with running() as (_, client):
        assert_error(await client.get("/search"), 400, "BAD_REQUEST")
        bad_type = await client.get("/search", params={"q": "a", "type": "track"})
        assert_error(bad_type, 400, "BAD_REQUEST")
        bad_limit = await client.get("/search", params={"q": "a", "limit": "x"})
        assert_error(bad_limit, 400, "BAD_REQUEST")


async def test_artist_and_discography() -> None:
    async with running() as (fake, client):
        catalog = fake.catalog
        artist_id = catalog.artist_ids[1]
        artist = (await client.get(f"/artist/{artist_id}")).json()
        assert artist["id"] == artist_id
        assert artist["name"] == catalog.artist_names[1]
        assert artist["genres"]
        assert all(isinstance(g, str) for g in artist["genres"])
        assert artist["portraits"] == [
            {"id": catalog.portrait_ids[1], "size": 5000, "width": 640, "height": 640}
        ]
        disco = (await client.get(f"/artist/{artist_id}/discography")).json()
        assert disco["artist"]["id"] == artist_id
        assert disco["artist"]["type"] == "artist"
        assert [a["id"] for a in disco["albums"]] == catalog.album_ids[2:4]


async def test_album_and_tracks() -> None:
    async with running() as (fake, client):
        catalog = fake.catalog
        album_id = catalog.album_ids[3]
        album: dict[str, Any] = (await client.get(f"/album/{album_id}")).json()
        assert album["id"] == album_id
        assert album["album_type"] == "album"
        assert album["artists_ids"] == [catalog.artist_ids[1]]
        assert isinstance(album["label"], str)
        assert isinstance(album["date"], int)
        assert album["covers"][0]["id"] == catalog.cover_ids[3]
        assert album["discs"] == [
            {"number": 1, "name": "Disc 1", "tracks": catalog.track_ids[9:12]}
        ]
        tracks = (await client.get(f"/album/{album_id}/tracks")).json()
        assert isinstance(tracks, list)
        assert [t["id"] for t in tracks] == catalog.track_ids[9:12]
        assert [t["number"] for t in tracks] == [1, 2, 3]
        single = (await client.get(f"/track/{tracks[1]['id']}")).json()
        assert single == tracks[1]
        assert set(single) == {
            "id", "name", "album_id", "artists_ids", "number", "disc_number", "duration",
            "is_explicit",
        }  # fmt: skip
        assert single["album_id"] == album_id
        assert single["artists_ids"] == [catalog.artist_ids[1]]
        assert single["disc_number"] == 1
        assert isinstance(single["duration"], int)
        assert single["duration"] > 0
        assert isinstance(single["is_explicit"], bool)


async def test_audio_and_image_bytes_match_generators() -> None:
    async with running() as (fake, client):
        track_id = fake.catalog.track_ids[0]
        audio = await client.get(f"/track/{track_id}/audio")
        assert audio.status_code == 200
        assert audio.headers["content-type"] == "audio/flac"
        assert audio.headers["content-length"] == "200000"
        assert audio.content == audio_bytes(SPEC, track_id)
        image_id = fake.catalog.cover_ids[1]
        image = await client.get(f"/image/{image_id}")
        assert image.headers["content-type"] == "image/jpeg"
        assert image.headers["content-length"] == "5000"
        assert image.content == image_bytes(SPEC, image_id)
        head = await client.head(f"/track/{track_id}/audio")
        assert head.headers["content-length"] == "200000"
        assert head.content == b""


async def test_malformed_ids_are_400_and_unknown_ids_404() -> None:
    unknown = "A" * 22
    async with running() as (_, client):
        for path in ("artist", "album", "track"):
            for bad in ("short", "A" * 23, "A" * 21 + "-", "A" * 21 + "\u0663"):
                response = await client.get(f"/{path}/{bad}")
                assert_error(response, 400, "BAD_REQUEST")
            assert_error(await client.get(f"/{path}/{unknown}"), 404, "NOT_FOUND")
        for suffix in ("/artist/{}/discography", "/album/{}/tracks", "/track/{}/audio"):
            assert_error(await client.get(suffix.format(unknown)), 404, "NOT_FOUND")
            assert_error(await client.get(suffix.format("bad")), 400, "BAD_REQUEST")
        assert_error(await client.get("/image/" + "A" * 40), 400, "BAD_REQUEST")
        assert_error(await client.get("/image/" + "ab" * 19), 400, "BAD_REQUEST")
        assert_error(await client.get("/image/" + "0" * 40), 404, "NOT_FOUND")


async def test_unknown_routes_and_methods() -> None:
    async with running() as (fake, client):
        assert_error(await client.get("/"), 404, "NOT_FOUND")
        assert_error(await client.get("/nope/thing"), 404, "NOT_FOUND")
        assert_error(await client.get("/album/x/y/z"), 404, "NOT_FOUND")
        post = await client.post(f"/track/{fake.catalog.track_ids[0]}")
        assert_error(post, 405, "METHOD_NOT_ALLOWED")
        assert fake.knobs.count("unknown") == 3


async def test_missing_every_and_not_found_ids() -> None:
    async with running() as (fake, client):
        missing = fake.catalog.missing_track_ids[0]
        assert (await client.get(f"/track/{missing}")).status_code == 200
        assert_error(await client.get(f"/track/{missing}/audio"), 404, "NOT_FOUND")
        album_id = fake.catalog.album_ids[0]
        assert (await client.get(f"/album/{album_id}")).status_code == 200
        fake.knobs.not_found_ids.add(album_id)
        assert_error(await client.get(f"/album/{album_id}"), 404, "NOT_FOUND")
        assert_error(await client.get(f"/album/{album_id}/tracks"), 404, "NOT_FOUND")


async def test_request_counters() -> None:
    async with running() as (fake, client):
        track_id = fake.catalog.track_ids[0]
        for _ in range(3):
            await client.get(f"/track/{track_id}")
        await client.get(f"/track/{track_id}/audio")
        await client.get("/search", params={"q": "x"})
        knobs = fake.knobs
        assert (knobs.count("track"), knobs.count("audio"), knobs.count("search")) == (3, 1, 1)
        assert knobs.count() == 5
        knobs.reset_counts()
        assert knobs.count() == 0
