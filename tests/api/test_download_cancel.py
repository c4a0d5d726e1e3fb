"""Cancelling requests over the API (SPEC §8.3 rev 2, §8.10): the user's DELETE of their own
request, the admin's DELETE of any item, refusals, the item in flight abandoned, the published
OpenAPI document; and "in the catalog" meaning complete, in search results and requests.

No actor runs: the processor is stood in for by a task working on an item in the root's
`InFlight`, and the queue is moved on through its stores where a test needs children.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.downloader import DownloaderClient
from actors.messages import Hook, HookFired
from bench.seed import seed_catalog, synthetic_id
from daemon.config import Config, DownloadManagerConfig
from daemon.root import Downloads, Root
from daemon.services import close_root
from storage.queue import ChildSpec, ContentType, now
from storage.users import Permission, Role
from tests.conftest import login, make_user, open_test_root, serve

ALBUMS = [f"AlbumAlbumAlbumAlbum{n:02d}" for n in range(1, 5)]
WHOLE = synthetic_id("L", 0)  # seeded with every track's audio on disk
COVER = "c0" * 20
ADMIN = "/v1/download/admin"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    limits = DownloadManagerConfig(user_max_queue_size=2, user_max_requests_per_day=100)
    return Config(
        db_dir=tmp_path, media_path=tmp_path, downloader_url="http://127.0.0.1:9",
        download_manager=limits,
    )  # fmt: skip


def searched(request: httpx.Request) -> httpx.Response:
    """The downloader: a search finds the seeded album and the first of ALBUMS."""
    if request.url.path != "/search":
        return httpx.Response(404, json={"error": "x", "code": "NOT_FOUND", "message": ""})
    found = [{"id": a, "type": "album", "name": "N", "artist_name": "B"} for a in (WHOLE, *ALBUMS)]
    return httpx.Response(200, json={"results": found})


@pytest.fixture
async def hooks_and_root(
    config: Config,
) -> AsyncIterator[tuple[trio.MemoryReceiveChannel[Any], Root]]:
    """The root with a scheduler inbox the test reads and a downloader answering searches."""
    inbox, hooks = trio.open_memory_channel[Any](16)
    opened = open_test_root(config, scheduler_inbox=inbox)
    assert opened.downloads is not None
    await opened.downloads.downloader.aclose()
    client = DownloaderClient("http://127.0.0.1:9", 5.0, transport=httpx.MockTransport(searched))
    seed_catalog(config.db_dir, config.media_path, 1)
    replaced = dataclasses.replace(opened.downloads, downloader=client)
    yield hooks, dataclasses.replace(opened, downloads=replaced)
    await client.aclose()
    close_root(opened)


@pytest.fixture
def root(hooks_and_root: tuple[Any, Root]) -> Root:
    return hooks_and_root[1]


@pytest.fixture
def hooks(hooks_and_root: tuple[trio.MemoryReceiveChannel[Any], Root]) -> Any:
    return hooks_and_root[0]


@pytest.fixture
async def who(root: Root, client: Any) -> dict[str, dict[str, str]]:
    """Headers per caller: two requesters, an editor, an analyst, a plain user, nobody."""
    for handle in ("alice", "bob"):
        make_user(root, handle, (Role.Regular,), extra=(Permission.RequestContent,))
    make_user(root, "editor", (Role.Regular,), extra=(Permission.EditCatalog,))
    make_user(root, "analyst", (Role.Regular,), extra=(Permission.ViewAnalytics,))
    make_user(root, "regular", (Role.Regular,))
    handles = ("alice", "bob", "editor", "analyst", "regular")
    found = {h: await login(client, h) for h in handles}
    client.cookie_jar.clear()  # each caller is identified by its header alone
    return {"anonymous": {}, **found}


def downloads(root: Root) -> Downloads:
    assert root.downloads is not None
    return root.downloads


async def request(client: Any, headers: dict[str, str], album: str) -> tuple[int, Any]:
    body = {"album_id": album, "album_name": "Album", "artist_name": "Artist"}
    response = await client.post("/v1/download/request/album", json=body, headers=headers)
    return response.status_code, await response.get_json()


async def call(client: Any, method: str, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    response = await client.open(path, method=method, headers=headers)
    return response.status_code, await response.get_json()


async def search_marks(client: Any, headers: dict[str, str]) -> dict[str, tuple[bool, bool]]:
    code, body = await call(client, "GET", "/v1/download/search?q=x", headers)
    assert code == 200, body
    return {r["id"]: (r["in_catalog"], r["in_queue"]) for r in body["results"]}


# -- the user's cancel -------------------------------------------------------------------------


async def test_a_user_cancels_a_request_which_leaves_the_queue_at_once(
    client: Any, who: dict[str, dict[str, str]]
) -> None:
    alice = who["alice"]
    first = (await request(client, alice, ALBUMS[0]))[1]["request_id"]
    await request(client, alice, ALBUMS[1])
    assert (await request(client, alice, ALBUMS[2]))[0] == 429  # two in the queue: full
    assert (await search_marks(client, alice))[ALBUMS[0]] == (False, True)

    code, item = await call(client, "DELETE", f"/v1/download/request/{first}", alice)

    assert code == 200, item
    assert (item["id"], item["status"], item["queue_position"]) == (first, "CANCELLED", None)
    assert item["completed_at"] is not None and item["progress"] is None
    limits = (await call(client, "GET", "/v1/download/limits", alice))[1]["user"]
    assert (limits["in_queue"], limits["requests_today"]) == (1, 2)  # still counted today
    assert (await search_marks(client, alice))[ALBUMS[0]] == (False, False)
    shown = (await call(client, "GET", f"/v1/download/request/{first}", alice))[1]
    assert shown["status"] == "CANCELLED"
    listed = (await call(client, "GET", "/v1/download/my-requests?status=CANCELLED", alice))[1]
    assert [r["id"] for r in listed["requests"]] == [first]
    # Room again, and the same album may be requested again.
    assert (await request(client, alice, ALBUMS[0]))[0] == 201


async def test_refused_cancels_answer_json_and_change_nothing(
    client: Any, who: dict[str, dict[str, str]]
) -> None:
    mine = (await request(client, who["alice"], ALBUMS[0]))[1]["request_id"]
    path = f"/v1/download/request/{mine}"
    assert (await call(client, "DELETE", path, who["anonymous"]))[0] == 401
    assert (await call(client, "DELETE", path, who["regular"]))[0] == 403
    code, body = await call(client, "DELETE", path, who["bob"])  # not bob's
    assert (code, body["code"]) == (404, "NOT_FOUND")
    for bad in ("nope", "0" * 5000, "00000000-0000-4000-8000-000000000000", "a/b/../c", "%20"):
        code, body = await call(client, "DELETE", f"/v1/download/request/{bad}", who["alice"])
        assert (code, body["code"]) == (404, "NOT_FOUND"), bad
    code, body = await call(client, "DELETE", "/v1/download/request/%00", who["alice"])
    assert code == 400 and body["error"]
    shown = (await call(client, "GET", path, who["alice"]))[1]
    assert shown["status"] == "PENDING"
    assert (await call(client, "DELETE", path, who["alice"]))[0] == 200
    code, body = await call(client, "DELETE", path, who["alice"])
    assert (code, body["code"]) == (409, "ALREADY_FINISHED")


async def test_a_cancel_abandons_the_item_the_processor_works_on(
    root: Root, client: Any, who: dict[str, dict[str, str]]
) -> None:
    album = (await request(client, who["alice"], ALBUMS[0]))[1]["request_id"]
    abandoned = trio.Event()

    async def processor() -> None:  # stands in for the processor working on the album
        with downloads(root).in_flight.working_on(album) as scope:
            await trio.sleep_forever()
        if scope.cancelled_caught:
            abandoned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(processor)
        await trio.testing.wait_all_tasks_blocked()
        code, _ = await call(client, "DELETE", f"/v1/download/request/{album}", who["alice"])
        assert code == 200
        with trio.fail_after(1):
            await abandoned.wait()


# -- the admin's cancel ------------------------------------------------------------------------


async def test_the_admin_cancels_anyones_item_and_a_child_alone(
    root: Root, client: Any, who: dict[str, dict[str, str]], hooks: Any
) -> None:
    queue = downloads(root).queue
    album = (await request(client, who["alice"], ALBUMS[0]))[1]["request_id"]
    other = (await request(client, who["bob"], ALBUMS[1]))[1]["request_id"]
    path = f"{ADMIN}/item/{other}"
    expected = {"anonymous": 401, "regular": 403, "analyst": 403, "alice": 403}
    for caller, status in expected.items():
        assert (await call(client, "DELETE", path, who[caller]))[0] == status, caller
    code, item = await call(client, "DELETE", path, who["editor"])
    assert (code, item["status"], item["requested_by"]) == (200, "CANCELLED", "bob")
    code, body = await call(client, "DELETE", path, who["editor"])
    assert (code, body["code"]) == (409, "ALREADY_FINISHED")
    code, body = await call(client, "DELETE", f"{ADMIN}/item/nope", who["editor"])
    assert (code, body["code"]) == (404, "NOT_FOUND")

    # Alice's album has a track done and its cover left: cancelling the cover alone ends it.
    claimed = queue.claim(now()).item
    assert claimed is not None and claimed["id"] == album
    track = synthetic_id("T", 999)
    children = [
        ChildSpec(ContentType.TRACK_AUDIO, track),
        ChildSpec(ContentType.ALBUM_IMAGE, COVER),
    ]
    queue.create_children(album, children, now())
    child = queue.claim(now()).item
    assert child is not None and child["content_id"] == track
    queue.complete(child["id"], 10, 1, now())
    shown = (await call(client, "GET", f"/v1/download/request/{album}", who["alice"]))[1]
    (cover,) = [c["id"] for c in shown["children"] if c["content_type"] == "ALBUM_IMAGE"]

    code, item = await call(client, "DELETE", f"{ADMIN}/item/{cover}", who["editor"])

    assert (code, item["status"], item["parent_id"]) == (200, "CANCELLED", album)
    shown = (await call(client, "GET", f"/v1/download/request/{album}", who["alice"]))[1]
    assert shown["status"] == "COMPLETED"
    assert (shown["progress"]["completed"], shown["progress"]["cancelled"]) == (1, 1)
    assert hooks.receive_nowait() == HookFired(Hook.OnDownloadComplete)


async def test_disabled_download_manager_answers_503_after_auth(tmp_path: Path) -> None:
    root = open_test_root(Config(db_dir=tmp_path, media_path=tmp_path))
    try:
        make_user(root, "admin", (Role.Admin, Role.Regular), extra=(Permission.RequestContent,))
        async with serve(root) as client:
            admin = await login(client, "admin")
            client.cookie_jar.clear()
            for path in ("/v1/download/request/x", f"{ADMIN}/item/x"):
                assert (await call(client, "DELETE", path, {}))[0] == 401
                code, body = await call(client, "DELETE", path, admin)
                assert (code, body["code"]) == (503, "DOWNLOAD_MANAGER_DISABLED")
    finally:
        close_root(root)


async def test_the_openapi_document_lists_both_cancel_routes(client: Any) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    assert "delete" in document["paths"]["/v1/download/request/{item_id}"]
    assert "delete" in document["paths"]["/v1/download/admin/item/{item_id}"]


# -- "in the catalog" means complete -----------------------------------------------------------


async def test_an_album_in_the_catalog_in_part_can_be_requested_again(
    root: Root, client: Any, who: dict[str, dict[str, str]]
) -> None:
    alice = who["alice"]
    assert (await search_marks(client, alice))[WHOLE] == (True, False)
    code, body = await request(client, alice, WHOLE)
    assert (code, body["code"]) == (409, "ALREADY_IN_CATALOG")
    lost = root.media.audio_path(synthetic_id("T", 3), "flac")
    lost.unlink()  # one of its files is lost
    assert (await search_marks(client, alice))[WHOLE] == (False, False)
    code, body = await request(client, alice, WHOLE)
    assert code == 201, body
    assert (await search_marks(client, alice))[WHOLE] == (False, True)
