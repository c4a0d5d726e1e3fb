"""Listening events and popular content (SPEC §6), with the popular_content job (§7.4)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from actors.jobs.popular_content import popular_content_job
from bench.seed import synthetic_bundles, synthetic_id
from daemon.root import Root
from tests.conftest import login, make_user
from tests.support.openapi import assert_documented

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def seed(root: Root) -> None:
    """Three albums of two tracks; albums 0 and 2 by artist 0, album 1 by artist 1."""
    root.catalog.ingest_many(synthetic_bundles(3, tracks_per_album=2, artists=2))


def track(album: int, n: int = 0) -> str:
    return synthetic_id("T", album * 2 + n)


async def play(client: Any, headers: dict[str, str], track_id: str, **extra: Any) -> Any:
    return await client.post(
        "/v1/user/listening", json={"track_id": track_id, **extra}, headers=headers
    )


async def test_record_listening(root: Root, client: Any, user_headers: dict[str, str]) -> None:
    seed(root)
    before = int(time.time())
    response = await play(client, user_headers, track(0), duration_ms=180_000)
    assert response.status_code == 201
    first = (await response.get_json())["id"]
    assert isinstance(first, int)
    response = await play(client, user_headers, track(0), played_at=1_700_000_000)
    assert response.status_code == 201
    assert (await response.get_json())["id"] == first + 1
    assert root.users.play_counts_since(before) == {track(0): 1}
    assert root.users.play_counts_since(1_700_000_000) == {track(0): 2}


async def test_listening_rejects_bad_input(
    root: Root, client: Any, user_headers: dict[str, str]
) -> None:
    seed(root)
    unknown = await play(client, user_headers, synthetic_id("T", 999))
    assert unknown.status_code == 404
    bad_bodies: list[dict[str, Any]] = [
        {"track_id": "../../etc/passwd"},
        {"track_id": 5},
        {"track_id": track(0), "duration_ms": "long"},
        {"track_id": track(0), "duration_ms": -1},
        {"track_id": track(0), "played_at": "2024-01-01T00:00:00Z"},
        {"track_id": track(0), "played_at": 2**70},
        {"track_id": track(0), "played_at": int(time.time()) + 3600},  # in the future
        {"track_id": track(0), "user_id": 1},
        {},
    ]
    for body in bad_bodies:
        response = await client.post("/v1/user/listening", json=body, headers=user_headers)
        assert response.status_code == 400, body
        assert "error" in await response.get_json()
    text = await client.post("/v1/user/listening", data="x", headers=user_headers)
    assert text.status_code == 415
    assert root.users.play_counts_since(0) == {}


async def test_listening_needs_access_catalog(root: Root, app: Any, client: Any) -> None:
    seed(root)
    make_user(root, "nobody", roles=())
    headers = await login(client, "nobody")
    assert (await play(client, headers, track(0))).status_code == 403
    assert (await play(app.test_client(), {}, track(0))).status_code == 401
    assert (await app.test_client().get("/v1/content/popular")).status_code == 401
    assert root.users.play_counts_since(0) == {}


async def test_popular_is_empty_before_the_first_run(
    root: Root, client: Any, user_headers: dict[str, str]
) -> None:
    response = await client.get("/v1/content/popular", headers=user_headers)
    assert response.status_code == 200
    assert await response.get_json() == {"albums": [], "artists": [], "computed_at": None}
    assert response.headers["Cache-Control"] == "max-age=3600"


async def test_popular_content_job_ranks_the_last_30_days(
    root: Root, client: Any, user_headers: dict[str, str]
) -> None:
    seed(root)
    recent = int((NOW - timedelta(days=1)).timestamp())
    plays = [track(2, 0), track(2, 1), track(2, 0), track(0, 0), track(0, 1), track(1, 0)]
    for track_id in plays:
        assert (await play(client, user_headers, track_id, played_at=recent)).status_code == 201
    old = int((NOW - timedelta(days=31)).timestamp())
    for _ in range(5):  # older than the window: not counted
        assert (await play(client, user_headers, track(1, 1), played_at=old)).status_code == 201

    spec = popular_content_job(root.users, root.catalog, root.jobs, wall_clock=lambda: NOW)
    assert spec.schedule.interval_secs == 6 * 3600
    report = await spec.run()
    assert report == {"plays_counted": 6, "albums": 3, "artists": 2}

    response = await client.get("/v1/content/popular", headers=user_headers)
    assert response.status_code == 200
    body = await response.get_json()
    artist0, artist1 = synthetic_id("R", 0), synthetic_id("R", 1)
    assert body["albums"] == [
        {"id": synthetic_id("L", 2), "name": "Album 2", "artist_names": ["Artist 0"],
         "play_count": 3},
        {"id": synthetic_id("L", 0), "name": "Album 0", "artist_names": ["Artist 0"],
         "play_count": 2},
        {"id": synthetic_id("L", 1), "name": "Album 1", "artist_names": ["Artist 1"],
         "play_count": 1},
    ]  # fmt: skip
    assert body["artists"] == [
        {"id": artist0, "name": "Artist 0", "play_count": 5},
        {"id": artist1, "name": "Artist 1", "play_count": 1},
    ]
    assert body["computed_at"] == "2024-06-01T12:00:00Z"

    limited = await client.get(
        "/v1/content/popular?albums_limit=1&artists_limit=0", headers=user_headers
    )
    limited_body = await limited.get_json()
    assert [a["name"] for a in limited_body["albums"]] == ["Album 2"]
    assert limited_body["artists"] == []
    clamped = await client.get("/v1/content/popular?albums_limit=500", headers=user_headers)
    assert clamped.status_code == 200 and len((await clamped.get_json())["albums"]) == 3


async def test_popular_bad_limits_are_400(
    root: Root, client: Any, user_headers: dict[str, str]
) -> None:
    for query in ("albums_limit=-1", "artists_limit=x", "albums_limit=1.5", "top=3"):
        response = await client.get(f"/v1/content/popular?{query}", headers=user_headers)
        assert response.status_code == 400, query
        assert "error" in await response.get_json()


async def test_popular_skips_tracks_missing_from_the_catalog(
    root: Root, client: Any, user_headers: dict[str, str]
) -> None:
    seed(root)
    recent = int((NOW - timedelta(hours=1)).timestamp())
    user = root.users.get("regular")
    assert user is not None
    # A play of a track the catalog no longer has (stored directly: the API would refuse it).
    root.users.record_listening(user.id, synthetic_id("T", 777), None, recent)
    root.users.record_listening(user.id, track(1), None, recent)
    spec = popular_content_job(root.users, root.catalog, root.jobs, wall_clock=lambda: NOW)
    assert await spec.run() == {"plays_counted": 2, "albums": 1, "artists": 1}
    body = await (await client.get("/v1/content/popular", headers=user_headers)).get_json()
    assert [(a["name"], a["play_count"]) for a in body["albums"]] == [("Album 1", 1)]


async def test_answers_are_as_the_document_says(
    root: Root, client: Any, user_headers: dict[str, str]
) -> None:
    """A play, and popular content before and after the job's first run: each answer is valid
    against its route's schema in /openapi.json."""

    async def popular() -> Any:
        response = await client.get("/v1/content/popular", headers=user_headers)
        assert response.status_code == 200
        answer = await response.get_json()
        await assert_documented(client, "GET", "/v1/content/popular", 200, answer)
        return answer

    seed(root)
    assert (await popular())["computed_at"] is None
    response = await play(client, user_headers, track(1), played_at=int(NOW.timestamp()) - 60)
    assert response.status_code == 201
    await assert_documented(client, "POST", "/v1/user/listening", 201, await response.get_json())
    spec = popular_content_job(root.users, root.catalog, root.jobs, wall_clock=lambda: NOW)
    await spec.run()
    answer = await popular()
    assert answer["computed_at"] == "2024-06-01T12:00:00Z"
    assert [a["artist_names"] for a in answer["albums"]] == [["Artist 1"]]
