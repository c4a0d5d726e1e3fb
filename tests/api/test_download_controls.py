"""An admin's priority change and bulk actions over HTTP (SPEC §8.10 rev 2 operator controls):
answers, permissions, validation that changes nothing, the audit entries with the admin's
handle, and what the processor is told (a wake-up after a retry, an abandon after a cancel)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.messages import Hook, HookFired, SchedulerMessage, WakeProcessor
from daemon.config import Config, DownloadManagerConfig
from daemon.root import Root
from daemon.services import close_root
from storage.users import Permission, Role
from tests.conftest import login, make_user, open_test_root, serve
from tests.support.queue_rows import BASE, audit_rows, cid, insert, insert_many, row

ADMIN = "/v1/download/admin"
FAILED = {"status": "FAILED", "error_type": "timeout", "completed_at": BASE, "retry_count": 5}


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        db_dir=tmp_path,
        media_path=tmp_path,
        downloader_url="http://127.0.0.1:9",
        download_manager=DownloadManagerConfig(),
    )


@pytest.fixture
def inbox_channel() -> tuple[Any, trio.MemoryReceiveChannel[SchedulerMessage]]:
    return trio.open_memory_channel[SchedulerMessage](8)


@pytest.fixture
def root(config: Config, wake_channel: Any, inbox_channel: Any) -> Iterator[Root]:
    root = open_test_root(config, wake=wake_channel[0], scheduler_inbox=inbox_channel[0])
    yield root
    close_root(root)


@pytest.fixture
async def headers(root: Root, client: Any) -> dict[str, dict[str, str]]:
    make_user(root, "admin", (Role.Admin,))
    make_user(root, "regular", (Role.Regular,))
    make_user(root, "analyst", (Role.Regular,), extra=(Permission.ViewAnalytics,))
    make_user(root, "editor", (Role.Regular,), extra=(Permission.EditCatalog,))
    found = {h: await login(client, h) for h in ("admin", "regular", "analyst", "editor")}
    client.cookie_jar.clear()  # each caller is identified by its header alone
    return {"anonymous": {}, **found}


async def call(client: Any, method: str, path: str, who: dict[str, str], **kw: Any) -> Any:
    response = await client.open(ADMIN + path, method=method, headers=who, **kw)
    return response.status_code, await response.get_json()


def entries(root: Root, event: str) -> list[tuple[str, str]]:
    assert root.downloads is not None
    return [
        (e["queue_item_id"], e["user"]) for e in audit_rows(root.downloads.queue_admin.db, event)
    ]


# -- priority ---------------------------------------------------------------------------------


async def test_a_priority_change_answers_the_item_in_its_new_place(
    root: Root, client: Any, headers: dict[str, dict[str, str]]
) -> None:
    db = root.downloads.queue_admin.db
    first, second = (insert(db, content_id=cid(k), created_at=BASE + k) for k in range(2))
    album = insert(db, status="IN_PROGRESS", children_created=1, content_id=cid(5))
    child = insert(db, parent_id=album, content_type="TRACK_AUDIO", content_id=cid(6))
    code, body = await call(client, "PATCH", f"/item/{second}", headers["editor"],
                            json={"priority": 1})  # fmt: skip
    assert code == 200, body
    assert (body["id"], body["priority"], body["queue_position"]) == (second, 1, 1)
    code, body = await call(client, "GET", f"/audit/item/{first}", headers["admin"])
    assert body["queue_item"]["queue_position"] == 2
    code, body = await call(client, "PATCH", f"/item/{album}", headers["admin"],
                            json={"priority": 9})  # fmt: skip
    assert (code, body["priority"], body["status"]) == (200, 9, "IN_PROGRESS")
    assert row(db, child)["priority"] == 9
    assert entries(root, "PRIORITY_CHANGED") == [(second, "editor"), (album, "admin"),
                                                 (child, "admin")]  # fmt: skip
    code, page = await call(client, "GET", "/audit?event_type=PRIORITY_CHANGED", headers["admin"])
    assert page["entries"][0]["details"] == {"old_priority": 2, "new_priority": 9,
                                             "with_parent": album}  # fmt: skip


async def test_a_priority_change_is_404_409_or_400_and_changes_nothing(
    root: Root, client: Any, headers: dict[str, dict[str, str]]
) -> None:
    db, admin = root.downloads.queue_admin.db, headers["admin"]
    done = insert(db, status="COMPLETED")
    album = insert(db, status="IN_PROGRESS", children_created=1, content_id=cid(1))
    child = insert(db, parent_id=album, content_type="TRACK_AUDIO", content_id=cid(2))
    waiting = insert(db, content_id=cid(3))
    cases = [
        ("no-such-item", {"priority": 3}, 404, "NOT_FOUND"),
        (done, {"priority": 3}, 409, "ALREADY_FINISHED"),
        (child, {"priority": 3}, 409, "CHILD_ITEM"),
        *((waiting, body, 400, "VALIDATION_ERROR") for body in (
            {"priority": 0}, {"priority": 10}, {"priority": "3"}, {"priority": 3.0},
            {"priority": True}, {"priority": None}, {}, {"priority": 3, "status": "PENDING"},
            {"priority": 2**70},
        )),
    ]  # fmt: skip
    for item, body, status, code in cases:
        answer = await call(client, "PATCH", f"/item/{item}", admin, json=body)
        assert answer[0] == status and answer[1]["code"] == code, (item, body, answer)
    response = await client.patch(f"{ADMIN}/item/{waiting}", headers=admin, data=b"priority=3")
    assert response.status_code == 415
    assert [row(db, i)["priority"] for i in (done, album, child, waiting)] == [2, 2, 2, 2]
    assert audit_rows(db) == []


async def test_priority_and_bulk_need_edit_catalog(
    root: Root, client: Any, headers: dict[str, dict[str, str]]
) -> None:
    item = insert(root.downloads.queue_admin.db, **FAILED)
    bulk = {"action": "retry", "filter": {"status": "FAILED"}}
    for who, status in {"anonymous": 401, "regular": 403, "analyst": 403}.items():
        assert (await call(client, "PATCH", f"/item/{item}", headers[who],
                           json={"priority": 1}))[0] == status  # fmt: skip
        assert (await call(client, "POST", "/bulk", headers[who], json=bulk))[0] == status
    assert row(root.downloads.queue_admin.db, item)["status"] == "FAILED"
    assert await call(client, "POST", "/bulk", headers["editor"], json=bulk) == (
        200, {"matched": 1, "changed": 1},
    )  # fmt: skip


async def test_a_disabled_download_manager_answers_503(tmp_path: Path) -> None:
    root = open_test_root(Config(db_dir=tmp_path, media_path=tmp_path))
    try:
        make_user(root, "admin", (Role.Admin,))
        async with serve(root) as client:
            admin = await login(client, "admin")
            for method, path, body in (("PATCH", "/item/x", {"priority": 0}),
                                       ("POST", "/bulk", {})):  # fmt: skip
                code, answer = await call(client, method, path, admin, json=body)
                assert (code, answer["code"]) == (503, "DOWNLOAD_MANAGER_DISABLED")
    finally:
        close_root(root)


# -- bulk -------------------------------------------------------------------------------------


async def test_a_bulk_retry_answers_counts_audits_and_wakes_the_processor(
    root: Root, client: Any, headers: dict[str, dict[str, str]], wake_channel: Any
) -> None:
    db = root.downloads.queue_admin.db
    failed = insert_many(db, 30, requested_by="alice", **FAILED)
    other = insert(db, requested_by="bob", content_id=cid(99), **FAILED)
    body = {"action": "retry", "filter": {"user": "alice", "error_type": "timeout"}}
    code, answer = await call(client, "POST", "/bulk", headers["admin"], json=body)
    assert (code, answer) == (200, {"matched": 30, "changed": 30})
    assert {row(db, i)["status"] for i in failed} == {"PENDING"}
    assert row(db, other)["status"] == "FAILED"
    assert sorted(entries(root, "ADMIN_RETRY")) == sorted((i, "admin") for i in failed)
    assert isinstance(wake_channel[1].receive_nowait(), WakeProcessor)
    # Nothing left to retry: the same call matches nothing, and wakes nobody.
    code, answer = await call(client, "POST", "/bulk", headers["admin"], json=body)
    assert (code, answer) == (200, {"matched": 0, "changed": 0})
    with pytest.raises(trio.WouldBlock):
        wake_channel[1].receive_nowait()


async def test_a_bulk_cancel_abandons_the_item_in_flight_and_completes_an_album(
    root: Root, client: Any, headers: dict[str, dict[str, str]], inbox_channel: Any
) -> None:
    db = root.downloads.queue_admin.db
    album = insert(db, status="IN_PROGRESS", children_created=1, requested_by="carol")
    fetching = insert(db, parent_id=album, status="IN_PROGRESS", content_type="TRACK_AUDIO",
                      content_id=cid(1), requested_by="carol")  # fmt: skip
    body = {"action": "cancel", "filter": {"user": "carol", "content_type": "TRACK_AUDIO"}}
    abandoned = trio.Event()

    async def fetch() -> None:  # the processor, fetching the track
        with root.downloads.in_flight.working_on(fetching):
            await trio.sleep_forever()
        abandoned.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        await trio.testing.wait_all_tasks_blocked()
        code, answer = await call(client, "POST", "/bulk", headers["admin"], json=body)
        assert (code, answer) == (200, {"matched": 1, "changed": 1})
        with trio.fail_after(5):
            await abandoned.wait()
    assert (row(db, fetching)["status"], row(db, album)["status"]) == ("CANCELLED", "COMPLETED")
    assert entries(root, "REQUEST_CANCELLED") == [(fetching, "admin")]
    message = inbox_channel[1].receive_nowait()
    assert isinstance(message, HookFired) and message.hook is Hook.OnDownloadComplete


async def test_a_bulk_priority_change_and_its_dry_run(
    root: Root, client: Any, headers: dict[str, dict[str, str]], wake_channel: Any
) -> None:
    db = root.downloads.queue_admin.db
    repairs = insert_many(db, 5, request_source="WATCHDOG", content_type="TRACK_AUDIO",
                          priority=1)  # fmt: skip
    body = {"action": "set_priority", "priority": 6, "filter": {"request_source": "WATCHDOG"},
            "dry_run": True}  # fmt: skip
    assert await call(client, "POST", "/bulk", headers["admin"], json=body) == (
        200, {"matched": 5, "changed": 5},
    )  # fmt: skip
    assert {row(db, i)["priority"] for i in repairs} == {1}
    assert audit_rows(db) == []
    body["dry_run"] = False
    assert await call(client, "POST", "/bulk", headers["admin"], json=body) == (
        200, {"matched": 5, "changed": 5},
    )  # fmt: skip
    assert {row(db, i)["priority"] for i in repairs} == {6}
    assert sorted(entries(root, "PRIORITY_CHANGED")) == sorted((i, "admin") for i in repairs)
    with pytest.raises(trio.WouldBlock):  # a new order makes nothing newly claimable
        wake_channel[1].receive_nowait()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"action": "retry", "filter": {}}, "EMPTY_FILTER"),
        ({"action": "retry", "filter": {"status": None, "user": None}}, "EMPTY_FILTER"),
        ({"action": "cancel", "filter": {}, "dry_run": True}, "EMPTY_FILTER"),
        ({"action": "set_priority", "filter": {"status": "FAILED"}}, "BAD_PRIORITY"),
        ({"action": "retry", "filter": {"status": "FAILED"}, "priority": 3}, "BAD_PRIORITY"),
        ({"action": "retry"}, "VALIDATION_ERROR"),
        ({"filter": {"status": "FAILED"}}, "VALIDATION_ERROR"),
        ({"action": "delete", "filter": {"status": "FAILED"}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"status": "DONE"}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"content_type": "SONG"}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"error_type": "TIMEOUT"}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"request_source": "ADMIN"}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"created_after": -1}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"created_before": "today"}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"user": ""}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"priority": 2}}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": "FAILED"}, "VALIDATION_ERROR"),
        ({"action": "set_priority", "filter": {"user": "x"}, "priority": 10}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"user": "x"}, "dry_run": "yes"}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"user": "x"}, "everything": True}, "VALIDATION_ERROR"),
        ({"action": "retry", "filter": {"user": "nul\x00"}}, "INVALID_TEXT"),
    ],
)
async def test_a_bad_bulk_body_is_400_and_changes_nothing(
    root: Root, client: Any, headers: dict[str, dict[str, str]], body: Any, code: str
) -> None:
    db = root.downloads.queue_admin.db
    failed = insert_many(db, 3, requested_by="x", **FAILED)
    status, answer = await call(client, "POST", "/bulk", headers["admin"], json=body)
    assert (status, answer["code"]) == (400, code), answer
    assert {row(db, i)["status"] for i in failed} == {"FAILED"}
    assert audit_rows(db) == []


async def test_priority_and_bulk_are_in_the_openapi_document(client: Any) -> None:
    paths = (await (await client.get("/openapi.json")).get_json())["paths"]
    assert "patch" in paths[f"{ADMIN}/item/{{item_id}}"]
    assert "delete" in paths[f"{ADMIN}/item/{{item_id}}"]
    schema = str(paths[f"{ADMIN}/bulk"]["post"]["requestBody"])
    assert "dry_run" in schema
