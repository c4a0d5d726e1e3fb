"""Download-manager user routes (SPEC §8.3, §8.4): search, requests, limits, auth, errors.

The downloader is `DownloaderClient` over `httpx.MockTransport`, answering like the downloader
API of SPEC §12 for a small fixed catalog and failing on demand.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.downloader import DownloaderClient
from actors.messages import WakeProcessor
from api.app import create_app
from bench.seed import seed_catalog, synthetic_id
from daemon.config import Config, DownloadManagerConfig
from daemon.root import Root
from daemon.services import close_root
from storage.queue import ErrorType, RequestStore, now
from storage.queue.model import FAILURES
from storage.users import Permission, Role
from tests.conftest import login, make_user, open_test_root
from tests.support.openapi import assert_documented

ARTIST = "ArtistArtistArtistAr01"
CATALOG_ALBUM = synthetic_id("L", 0)
CATALOG_ARTIST = synthetic_id("R", 0)
ALBUMS = [f"AlbumAlbumAlbumAlbum{n:02d}" for n in range(1, 5)]
COVER = "c0" * 20
UNKNOWN = "Z" * 22
ROUTES = [
    ("GET", "/v1/download/search?q=x", None),
    ("GET", f"/v1/download/search/discography/{ARTIST}", None),
    ("POST", "/v1/download/request/album",
     {"album_id": ALBUMS[0], "album_name": "One", "artist_name": "Band"}),
    ("POST", "/v1/download/request/discography", {"artist_id": ARTIST, "artist_name": "Band"}),
    ("GET", "/v1/download/my-requests", None),
    ("GET", "/v1/download/request/00000000-0000-4000-8000-000000000000", None),
    ("GET", "/v1/download/limits", None),
]  # fmt: skip


def result(
    content: str, kind: str = "album", name: str = "Name", image_url: str | None = None
) -> dict[str, Any]:
    found = {"id": content, "type": kind, "name": name, "artist_name": "Band", "year": 2001}
    return found if image_url is None else found | {"image_url": image_url}


class Upstream:
    """The downloader's answers; `failure` makes every call answer that status."""

    def __init__(self) -> None:
        self.failure: int | None = None
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.failure is not None:
            return httpx.Response(self.failure, json={"error": "x", "code": "X", "message": "no"})
        path = request.url.path
        if path == "/search":
            if request.url.params["q"] == "garbage":
                return httpx.Response(200, content=b"{not json")
            if request.url.params["q"] == "pictures":
                urls = [
                    f"/image/{COVER}",
                    "https://cdn.example/a.jpg",
                    "/covers/x.jpg",
                    "/image/XY",
                ]
                found = [result(a, image_url=u) for a, u in zip(ALBUMS, urls, strict=True)]
                return httpx.Response(200, json={"results": found})
            if request.url.params["type"] == "artist":
                found = [result(CATALOG_ARTIST, "artist"), result(ARTIST, "artist")]
            else:
                found = [result(CATALOG_ALBUM), result(ALBUMS[0]), result(ALBUMS[1])]
            return httpx.Response(200, json={"results": found})
        if path == f"/artist/{ARTIST}/discography":
            albums = [result(a, name=f"Album {a[-2:]}") for a in (CATALOG_ALBUM, *ALBUMS)]
            return httpx.Response(200, json={"artist": result(ARTIST, "artist"), "albums": albums})
        return httpx.Response(404, json={"error": "not found", "code": "NOT_FOUND", "message": ""})


@pytest.fixture
def config(tmp_path: Path) -> Config:
    limits = DownloadManagerConfig(user_max_queue_size=3, user_max_requests_per_day=100)
    return Config(
        db_dir=tmp_path, media_path=tmp_path, downloader_url="http://127.0.0.1:9",
        download_manager=limits,
    )  # fmt: skip


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def root(config: Config, upstream: Upstream, wake_channel: Any) -> AsyncIterator[Root]:
    """The root with the downloader answering from `upstream` and the wake-up channel's
    receiving end left to `wake`."""
    opened = open_test_root(config, wake=wake_channel[0])
    assert opened.downloads is not None
    await opened.downloads.downloader.aclose()  # the real client built from config, replaced
    client = DownloaderClient("http://127.0.0.1:9", 5.0, transport=httpx.MockTransport(upstream))
    yield replace(opened, downloads=replace(opened.downloads, downloader=client))
    await client.aclose()
    close_root(opened)


@pytest.fixture
def wake(root: Root, wake_channel: Any) -> Any:
    """Seed the catalog with a whole album (its audio files too: "in the catalog" means
    complete); yield the processor's receiving end of the wake-up channel."""
    seed_catalog(root.config.db_dir, root.config.media_path, 1)
    return wake_channel[1]


@pytest.fixture
async def alice(root: Root, client: Any, wake: Any) -> dict[str, str]:
    make_user(root, "alice", (Role.Regular,), extra=(Permission.RequestContent,))
    return await login(client, "alice")


async def call(
    client: Any, method: str, path: str, headers: dict[str, str], body: Any = None
) -> Any:
    if method == "GET":
        return await client.get(path, headers=headers)
    return await client.post(path, headers=headers, json=body)


async def request_album(client: Any, headers: dict[str, str], album: str) -> Any:
    body = {"album_id": album, "album_name": f"Album {album[-2:]}", "artist_name": "Band"}
    return await client.post("/v1/download/request/album", headers=headers, json=body)


def add_child(root: Root, parent: str) -> str:
    """A track the processor would create for an album it started."""
    child = str(uuid.uuid4())
    with store(root).db.write() as conn:
        conn.execute("UPDATE queue_items SET status = 'IN_PROGRESS' WHERE id = ?", (parent,))
        conn.execute(
            """INSERT INTO queue_items (id, parent_id, status, priority, content_type, content_id,
                request_source, requested_by, created_at, max_retries)
                SELECT ?, id, 'PENDING', priority, 'TRACK_AUDIO', ?, request_source,
                requested_by, created_at, max_retries FROM queue_items WHERE id = ?""",
            (child, "TrackTrackTrackTrack01", parent),
        )
    return child


def store(root: Root) -> RequestStore:
    requests: RequestStore = root.downloads.requests
    return requests


def my_requests(root: Root, user: str) -> list[dict[str, Any]]:
    """The user's first page of requests, as `my-requests` reads it."""
    return store(root).my_requests_and_limits(user, None, 50, 0, now())[0]


# -- search ------------------------------------------------------------------------------------


async def test_search_images_are_given_as_urls_a_client_can_load(
    client: Any, alice: dict[str, str], upstream: Upstream
) -> None:
    """SPEC §12.1: the downloader's `/image/{id}` becomes this API's route, an absolute URL
    passes as it is, and any other path (which a client could not load) becomes null."""
    r = await client.get("/v1/download/search?q=pictures", headers=alice)
    assert [x["image_url"] for x in (await r.get_json())["results"]] == [
        f"/v1/download/image/{COVER}", "https://cdn.example/a.jpg", None, None,
    ]  # fmt: skip


async def test_search_marks_catalog_and_queue(
    client: Any, alice: dict[str, str], upstream: Upstream
) -> None:
    assert (await request_album(client, alice, ALBUMS[0])).status_code == 201
    r = await client.get("/v1/download/search?q=%20best%20of&type=album", headers=alice)
    assert r.status_code == 200
    body = await r.get_json()
    assert body["total"] == 3
    assert body["results"][0] == {
        "id": CATALOG_ALBUM, "type": "album", "name": "Name", "artist_name": "Band",
        "image_url": None, "year": 2001, "in_catalog": True, "in_queue": False,
    }  # fmt: skip
    marks = [(x["in_catalog"], x["in_queue"]) for x in body["results"]]
    assert marks == [(True, False), (False, True), (False, False)]
    assert upstream.seen[-1].url.params["q"] == "best of"
    r = await client.get("/v1/download/search?q=band&type=artist", headers=alice)
    artists = (await r.get_json())["results"]
    assert [(x["id"], x["in_catalog"]) for x in artists] == [
        (CATALOG_ARTIST, True),
        (ARTIST, False),
    ]
    r = await client.get("/v1/download/search?q=band", headers=alice)
    assert (await r.get_json())["total"] == 3
    assert upstream.seen[-1].url.params["type"] == "album"


@pytest.mark.parametrize(
    "query", ["", "?q=", "?q=%20%20", "?type=album", "?q=x&type=track", "?q=x&page=2"]
)
async def test_search_refuses_bad_queries(client: Any, alice: dict[str, str], query: str) -> None:
    r = await client.get(f"/v1/download/search{query}", headers=alice)
    assert r.status_code == 400
    assert set(await r.get_json()) >= {"error", "code"}


@pytest.mark.parametrize("failure", [500, 503, 504, 429, 400])
async def test_search_downloader_failures_are_502(
    client: Any, alice: dict[str, str], upstream: Upstream, failure: int
) -> None:
    upstream.failure = failure
    r = await client.get("/v1/download/search?q=x", headers=alice)
    assert r.status_code == 502
    assert (await r.get_json())["code"] == "DOWNLOADER_ERROR"


async def test_search_with_unparseable_answer_is_502(client: Any, alice: dict[str, str]) -> None:
    r = await client.get("/v1/download/search?q=garbage", headers=alice)
    assert r.status_code == 502


async def test_discography_search(client: Any, alice: dict[str, str], upstream: Upstream) -> None:
    r = await client.get(f"/v1/download/search/discography/{ARTIST}", headers=alice)
    assert r.status_code == 200
    body = await r.get_json()
    assert body["artist"]["id"] == ARTIST and body["artist"]["in_catalog"] is False
    assert [(a["id"], a["in_catalog"]) for a in body["albums"]] == [
        (CATALOG_ALBUM, True), *((a, False) for a in ALBUMS),
    ]  # fmt: skip
    assert (
        await client.get("/v1/download/search/discography/../x", headers=alice)
    ).status_code == 400
    r = await client.get(f"/v1/download/search/discography/{UNKNOWN}", headers=alice)
    assert r.status_code == 404
    upstream.failure = 500
    r = await client.get(f"/v1/download/search/discography/{ARTIST}", headers=alice)
    assert r.status_code == 502


# -- album requests ----------------------------------------------------------------------------


async def test_request_album_queues_wakes_and_counts(
    client: Any, alice: dict[str, str], root: Root, wake: Any
) -> None:
    r = await request_album(client, alice, ALBUMS[0])
    assert r.status_code == 201
    body = await r.get_json()
    assert set(body) == {"request_id", "status", "queue_position"}
    assert (body["status"], body["queue_position"]) == ("PENDING", 1)
    assert isinstance(wake.receive_nowait(), WakeProcessor)
    second = await request_album(client, alice, ALBUMS[1])
    assert (await second.get_json())["queue_position"] == 2
    third = await request_album(client, alice, ALBUMS[2])  # the wake channel is full: still fine
    assert third.status_code == 201
    assert root.metrics.user_requests.labels("album")._value.get() == 3
    mine = my_requests(root, "alice")
    assert [m["content_id"] for m in mine] == ALBUMS[2::-1]
    assert mine[-1]["id"] == body["request_id"] and mine[-1]["requested_by"] == "alice"


async def test_request_album_conflicts(client: Any, alice: dict[str, str], root: Root) -> None:
    r = await request_album(client, alice, CATALOG_ALBUM)
    assert r.status_code == 409
    assert (await r.get_json())["code"] == "ALREADY_IN_CATALOG"
    await request_album(client, alice, ALBUMS[0])
    make_user(root, "bob", (Role.Admin,))
    r = await request_album(client, await login(client, "bob"), ALBUMS[0])
    assert r.status_code == 409
    assert (await r.get_json())["code"] == "ALREADY_IN_QUEUE"
    assert len(my_requests(root, "alice")) == 1
    assert my_requests(root, "bob") == []


async def test_request_album_over_the_limit_is_429_with_limits(
    client: Any, alice: dict[str, str], root: Root
) -> None:
    for album in ALBUMS[:3]:
        assert (await request_album(client, alice, album)).status_code == 201
    r = await request_album(client, alice, ALBUMS[3])
    assert r.status_code == 429
    body = await r.get_json()
    assert body["code"] == "RATE_LIMITED"
    assert body["limits"] == {
        "requests_today": 3, "max_per_day": 100, "in_queue": 3, "max_queue": 3,
        "can_request": False, "resets_at": None,
    }  # fmt: skip
    assert len(my_requests(root, "alice")) == 3
    assert root.metrics.user_requests.labels("album")._value.get() == 3


async def test_daily_limit_429_says_when_it_resets(client: Any, root: Root, wake: Any) -> None:
    make_user(root, "erin", (Role.Admin,))
    erin = await login(client, "erin")
    albums = [(synthetic_id("E", n), f"E{n}") for n in range(100)]
    roomy = DownloadManagerConfig(user_max_queue_size=1000, user_max_requests_per_day=1000)
    moment = now()
    RequestStore(store(root).db, roomy).request_discography("erin", albums, "B", moment, set())
    r = await request_album(client, erin, ALBUMS[0])
    assert r.status_code == 429
    limits = (await r.get_json())["limits"]
    assert (limits["requests_today"], limits["can_request"]) == (100, False)
    midnight = moment - moment % 86400 + 86400
    assert limits["resets_at"] == midnight
    assert 0 < int(r.headers["Retry-After"]) <= midnight - moment


@pytest.mark.parametrize(
    "body",
    [
        {"album_id": "short", "album_name": "A", "artist_name": "B"},
        {"album_id": ALBUMS[0], "album_name": "A"},
        {"album_id": ALBUMS[0], "album_name": "A", "artist_name": "B", "priority": 1},
        {"album_id": ALBUMS[0], "album_name": "", "artist_name": "B"},
        {"album_id": 5, "album_name": "A", "artist_name": "B"},
        ["not", "an", "object"],
    ],
)
async def test_request_album_bad_bodies_are_400(
    client: Any, alice: dict[str, str], root: Root, body: Any
) -> None:
    r = await client.post("/v1/download/request/album", headers=alice, json=body)
    assert r.status_code == 400
    assert my_requests(root, "alice") == []


async def test_request_album_needs_json(client: Any, alice: dict[str, str]) -> None:
    r = await client.post("/v1/download/request/album", headers=alice, data="album_id=x")
    assert r.status_code == 415


# -- discography requests ----------------------------------------------------------------------


async def test_request_discography_queues_and_reports_skips(
    client: Any, alice: dict[str, str], root: Root, wake: Any
) -> None:
    await request_album(client, alice, ALBUMS[0])
    wake.receive_nowait()
    body = {"artist_id": ARTIST, "artist_name": "Band"}
    r = await client.post("/v1/download/request/discography", headers=alice, json=body)
    assert r.status_code == 201
    answer = await r.get_json()
    assert answer["status"] == "PENDING"
    assert (answer["albums_queued"], answer["albums_skipped"]) == (2, 3)
    assert answer["skipped"] == [
        {"album_id": CATALOG_ALBUM, "reason": "in_catalog"},
        {"album_id": ALBUMS[0], "reason": "in_queue"},
        {"album_id": ALBUMS[3], "reason": "rate_limited"},
    ]
    mine = my_requests(root, "alice")
    assert sorted(m["id"] for m in mine[:2]) == sorted(answer["request_ids"])
    assert {m["content_name"] for m in mine[:2]} == {"Album 02", "Album 03"}
    assert isinstance(wake.receive_nowait(), WakeProcessor)
    assert root.metrics.user_requests.labels("discography")._value.get() == 1
    # Nothing left that the limits allow: 429, with the skips and the limits.
    r = await client.post("/v1/download/request/discography", headers=alice, json=body)
    assert r.status_code == 429
    refused = await r.get_json()
    assert refused["code"] == "RATE_LIMITED" and refused["limits"]["in_queue"] == 3
    assert {"album_id": ALBUMS[3], "reason": "rate_limited"} in refused["skipped"]


async def test_request_discography_with_nothing_new_queues_nothing(
    client: Any, alice: dict[str, str], root: Root
) -> None:
    await request_album(client, alice, ALBUMS[3])
    make_user(root, "carol", (Role.Admin,))
    carol = await login(client, "carol")
    body = {"artist_id": ARTIST, "artist_name": "Band"}
    assert (
        await client.post("/v1/download/request/discography", headers=carol, json=body)
    ).status_code == 201
    r = await client.post("/v1/download/request/discography", headers=carol, json=body)
    assert r.status_code == 201
    answer = await r.get_json()
    assert (answer["albums_queued"], answer["status"], answer["request_ids"]) == (
        0, "NOTHING_QUEUED", [],
    )  # fmt: skip
    assert {s["reason"] for s in answer["skipped"]} == {"in_catalog", "in_queue"}


async def test_request_discography_errors(
    client: Any, alice: dict[str, str], upstream: Upstream, root: Root
) -> None:
    path = "/v1/download/request/discography"
    r = await client.post(path, headers=alice, json={"artist_id": "bad", "artist_name": "B"})
    assert r.status_code == 400
    r = await client.post(path, headers=alice, json={"artist_id": ARTIST})
    assert r.status_code == 400
    r = await client.post(path, headers=alice, json={"artist_id": UNKNOWN, "artist_name": "B"})
    assert r.status_code == 404
    upstream.failure = 502
    r = await client.post(path, headers=alice, json={"artist_id": ARTIST, "artist_name": "B"})
    assert r.status_code == 502
    assert my_requests(root, "alice") == []


# -- reading requests and limits ---------------------------------------------------------------


async def test_my_requests_shows_own_items_newest_first_with_stats(
    client: Any, alice: dict[str, str], root: Root
) -> None:
    first = (await (await request_album(client, alice, ALBUMS[0])).get_json())["request_id"]
    second = (await (await request_album(client, alice, ALBUMS[1])).get_json())["request_id"]
    make_user(root, "bob", (Role.Admin,))
    bob = await login(client, "bob")
    await request_album(client, bob, ALBUMS[2])
    r = await client.get("/v1/download/my-requests", headers=alice)
    assert r.status_code == 200
    body = await r.get_json()
    # Same second: insertion order breaks the tie, newest first.
    assert [item["id"] for item in body["requests"]] == [second, first]
    assert [item["queue_position"] for item in body["requests"]] == [2, 1]
    assert {item["requested_by"] for item in body["requests"]} == {"alice"}
    assert body["requests"][0]["status"] == "PENDING"
    assert body["requests"][0]["progress"] is None
    assert body["stats"]["requests_today"] == 2 and body["stats"]["can_request"] is True
    r = await client.get("/v1/download/my-requests?status=PENDING&limit=1&offset=1", headers=alice)
    assert len((await r.get_json())["requests"]) == 1
    r = await client.get("/v1/download/my-requests?status=FAILED", headers=alice)
    assert (await r.get_json())["requests"] == []


@pytest.mark.parametrize("error_type", list(ErrorType))
async def test_a_failure_is_told_in_words_with_the_technical_message_beside(
    client: Any, alice: dict[str, str], root: Root, error_type: ErrorType
) -> None:
    """SPEC §8.2 `failure`: every error type reads as a reason and a hint for a person; an
    album that failed through its children says so; anything not FAILED has none."""
    failed = (await (await request_album(client, alice, ALBUMS[0])).get_json())["request_id"]
    waiting = (await (await request_album(client, alice, ALBUMS[1])).get_json())["request_id"]
    with store(root).db.write() as conn:
        conn.execute(
            """UPDATE queue_items SET status = 'FAILED', error_type = ?, children_created = 1,
                error_message = '1 of 3 children failed' WHERE id = ?""",
            (error_type.value, failed),
        )
    r = await client.get("/v1/download/my-requests", headers=alice)
    items = {item["id"]: item for item in (await r.get_json())["requests"]}
    reason, hint = FAILURES[error_type]
    assert items[failed]["failure"] == {
        "reason": "Some of the album's tracks or images could not be downloaded. " + reason,
        "hint": hint,
    }
    assert items[failed]["error_message"] == "1 of 3 children failed"  # kept for admins
    assert items[waiting]["failure"] is None
    assert error_type.value not in reason.lower() and error_type.value not in hint.lower()


@pytest.mark.parametrize(
    "query", ["limit=abc", "limit=0", "limit=-3", "status=bogus", "offset=-1", "user=bob"]
)
async def test_my_requests_refuses_bad_queries(
    client: Any, alice: dict[str, str], query: str
) -> None:
    r = await client.get(f"/v1/download/my-requests?{query}", headers=alice)
    assert r.status_code == 400


async def test_my_requests_limit_is_clamped(client: Any, root: Root, wake: Any) -> None:
    make_user(root, "dave", (Role.Admin,))
    dave = await login(client, "dave")
    albums = [(synthetic_id("Q", n), f"Q{n}") for n in range(501)]
    roomy = DownloadManagerConfig(user_max_queue_size=1000, user_max_requests_per_day=1000)
    queued = RequestStore(store(root).db, roomy).request_discography(
        "dave", albums, "Band", now(), set()
    )
    assert len(queued.request_ids) == 501
    r = await client.get("/v1/download/my-requests?limit=100000", headers=dave)
    assert len((await r.get_json())["requests"]) == 500
    r = await client.get("/v1/download/my-requests", headers=dave)
    assert len((await r.get_json())["requests"]) == 50


async def test_request_detail_is_only_for_the_owner(
    client: Any, alice: dict[str, str], root: Root
) -> None:
    mine = (await (await request_album(client, alice, ALBUMS[0])).get_json())["request_id"]
    make_user(root, "bob", (Role.Admin,))
    bob = await login(client, "bob")
    theirs = (await (await request_album(client, bob, ALBUMS[1])).get_json())["request_id"]
    r = await client.get(f"/v1/download/request/{mine}", headers=alice)
    assert r.status_code == 200
    item = await r.get_json()
    assert (item["id"], item["content_id"], item["queue_position"]) == (mine, ALBUMS[0], 1)
    assert item["children"] == [] and item["progress"] is None
    child = add_child(root, mine)
    item = await (await client.get(f"/v1/download/request/{mine}", headers=alice)).get_json()
    assert [c["id"] for c in item["children"]] == [child]
    assert item["children"][0]["content_type"] == "TRACK_AUDIO"
    assert item["progress"]["total_children"] == 1 and item["progress"]["pending"] == 1
    r = await client.get(f"/v1/download/request/{child}", headers=alice)
    assert r.status_code == 404
    for other in (theirs, "00000000-0000-4000-8000-000000000000", "../../etc"):
        r = await client.get(f"/v1/download/request/{other}", headers=alice)
        assert r.status_code == 404
        assert (await r.get_json())["code"] == "NOT_FOUND"


async def test_limits(client: Any, alice: dict[str, str]) -> None:
    await request_album(client, alice, ALBUMS[0])
    r = await client.get("/v1/download/limits", headers=alice)
    assert r.status_code == 200
    body = await r.get_json()
    user = body["user"]
    assert (user["requests_today"], user["in_queue"], user["max_queue"]) == (1, 1, 3)
    assert user["can_request"] is True and user["resets_at"] % 86400 == 0
    assert set(body["global"]) == {
        "albums_this_hour", "max_per_hour", "albums_today", "max_per_day", "at_capacity",
        "resets_at",
    }  # fmt: skip
    assert (body["global"]["albums_today"], body["global"]["max_per_day"]) == (0, 60)


async def test_limits_and_requests_read_again_follow_every_change(
    client: Any, alice: dict[str, str], root: Root
) -> None:
    """Read again, the pages show each change at once, and one user's answer is never
    another's."""

    async def read(path: str, headers: dict[str, str]) -> Any:
        r = await client.get(path, headers=headers)
        assert r.status_code == 200
        return await r.get_json()

    assert (await read("/v1/download/limits", alice))["user"]["in_queue"] == 0
    assert (await read("/v1/download/my-requests", alice))["requests"] == []
    mine = (await (await request_album(client, alice, ALBUMS[0])).get_json())["request_id"]
    assert (await read("/v1/download/limits", alice))["user"]["in_queue"] == 1
    (item,) = (await read("/v1/download/my-requests", alice))["requests"]
    assert (item["id"], item["status"], item["progress"]) == (mine, "PENDING", None)
    assert await read("/v1/download/my-requests", alice) == {
        "requests": [item], "stats": (await read("/v1/download/limits", alice))["user"]
    }  # fmt: skip
    add_child(root, mine)  # the processor's work, written through the same store
    (item,) = (await read("/v1/download/my-requests", alice))["requests"]
    assert item["status"] == "IN_PROGRESS" and item["progress"]["pending"] == 1
    make_user(root, "bob", (Role.Admin,))
    bob = await login(client, "bob")
    assert (await read("/v1/download/limits", bob))["user"]["in_queue"] == 0
    assert (await read("/v1/download/my-requests", bob))["requests"] == []


# -- authentication, permissions, disabled download manager ------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_routes_need_request_content(
    app: Any, client: Any, user_headers: dict[str, str], root: Root, wake: Any,
    method: str, path: str, body: Any,
) -> None:  # fmt: skip
    anonymous = app.test_client()  # the logged-in client keeps the session cookie
    assert (await call(anonymous, method, path, {}, body)).status_code == 401
    assert (
        await call(client, method, path, {"Authorization": "Bearer nope"}, body)
    ).status_code == 401
    assert (await call(client, method, path, user_headers, body)).status_code == 403
    root.users.add_permission("regular", Permission.RequestContent)
    granted = await call(client, method, path, user_headers, body)
    # The request id in the route table is nobody's: 404 is the granted answer there.
    expected = 404 if "/request/0" in path else 201 if method == "POST" else 200
    assert granted.status_code == expected


async def _disabled_app(tmp_path: Path) -> tuple[Root, Any]:
    off = tmp_path / "off"
    off.mkdir()
    root = open_test_root(Config(db_dir=off, media_path=off))
    return root, create_app(root)


@pytest.mark.parametrize(
    ("method", "path", "body"), [*ROUTES, ("GET", "/v1/download/search", None)]
)
async def test_disabled_download_manager_answers_503_after_auth(
    tmp_path: Path, method: str, path: str, body: Any
) -> None:
    root, app = await _disabled_app(tmp_path)
    try:
        assert root.downloads is None
        make_user(root, "regular")
        make_user(root, "granted", extra=(Permission.RequestContent,))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            assert (await call(client, method, path, {}, body)).status_code == 401
            regular = await login(client, "regular")
            assert (await call(client, method, path, regular, body)).status_code == 403
            granted = await login(client, "granted")
            r = await call(client, method, path, granted, body if body is None else {"bad": 1})
            assert r.status_code == 503
            assert await r.get_json() == {
                "error": "the download manager is disabled", "code": "DOWNLOAD_MANAGER_DISABLED",
            }  # fmt: skip
    finally:
        close_root(root)


async def test_answers_are_as_the_document_says(
    client: Any, alice: dict[str, str], root: Root, wake: Any
) -> None:
    """Search results, requests with children, failures and limits: each answer is valid
    against its route's schema in /openapi.json."""
    base = "/v1/download"

    async def check(route: str, response: Any) -> Any:
        """A GET's answer, checked against the document."""
        assert response.status_code == 200, await response.get_data()
        answer = await response.get_json()
        await assert_documented(client, "GET", base + route, 200, answer)
        return answer

    await check("/search", await client.get(f"{base}/search?q=pictures", headers=alice))
    await check(
        "/search/discography/{artist_id}",
        await client.get(f"{base}/search/discography/{ARTIST}", headers=alice),
    )
    mine = (await (await request_album(client, alice, ALBUMS[0])).get_json())["request_id"]
    add_child(root, mine)
    body = {"artist_id": ARTIST, "artist_name": "Band"}
    r = await client.post(f"{base}/request/discography", headers=alice, json=body)
    answer = await r.get_json()
    assert r.status_code == 201 and answer["skipped"]
    await assert_documented(client, "POST", f"{base}/request/discography", 201, answer)
    failed = answer["request_ids"][0]
    with store(root).db.write() as conn:
        conn.execute(
            "UPDATE queue_items SET status = 'FAILED', error_type = 'timeout' WHERE id = ?",
            (failed,),
        )
    item = await check(
        "/request/{item_id}", await client.get(f"{base}/request/{mine}", headers=alice)
    )
    assert item["children"] and item["progress"]
    page = await check("/my-requests", await client.get(f"{base}/my-requests", headers=alice))
    assert any(i["failure"] for i in page["requests"])
    await check("/limits", await client.get(f"{base}/limits", headers=alice))
    r = await client.delete(f"{base}/request/{mine}", headers=alice)
    assert r.status_code == 200
    await assert_documented(
        client, "DELETE", f"{base}/request/{{item_id}}", 200, await r.get_json()
    )


async def test_openapi_documents_the_user_routes(client: Any) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    paths = (await r.get_json())["paths"]
    for documented in (
        "/v1/download/search", "/v1/download/search/discography/{artist_id}",
        "/v1/download/request/album", "/v1/download/request/discography",
        "/v1/download/my-requests", "/v1/download/request/{item_id}", "/v1/download/limits",
    ):  # fmt: skip
        assert documented in paths
    assert "album_id" in json.dumps(paths["/v1/download/request/album"])
