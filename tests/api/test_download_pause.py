"""Pausing and resuming the download queue over HTTP (SPEC §8.10 rev 2 operator controls):
bodies, permissions, validation, the audit, the stats, the gauge, the wake-up, and the wait
every requester then sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.messages import WakeProcessor
from daemon.config import Config, DownloadManagerConfig
from daemon.root import Root
from daemon.services import close_root
from storage.queue import now
from storage.users import Permission, Role
from tests.conftest import login, make_user, open_test_root
from tests.support.queue_rows import cid, insert

ADMIN = "/v1/download/admin"
PAUSED_GAUGE = "pezzottify_download_paused"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        db_dir=tmp_path,
        media_path=tmp_path,
        downloader_url="http://127.0.0.1:9",
        download_manager=DownloadManagerConfig(),
    )


@pytest.fixture
def root(config: Config, wake_channel: Any) -> Iterator[Root]:
    root = open_test_root(config, wake=wake_channel[0])
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


async def post(client: Any, path: str, headers: dict[str, str], **kw: Any) -> tuple[int, Any]:
    response = await client.post(ADMIN + path, headers=headers, **kw)
    return response.status_code, await response.get_json()


async def get(client: Any, path: str, headers: dict[str, str]) -> Any:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


def gauge(root: Root) -> float | None:
    return root.metrics.registry.get_sample_value(PAUSED_GAUGE)


async def test_pause_and_resume_answer_their_state_audit_and_wake(
    root: Root, client: Any, headers: dict[str, dict[str, str]], wake_channel: Any
) -> None:
    wakes, admin = wake_channel[1], headers["admin"]
    mine = insert(root.downloads.queue_admin.db, requested_by="admin", created_at=now())
    before = now()
    code, body = await post(client, "/pause", admin, json={"reason": "  new disk  "})
    assert code == 200
    assert body == {
        "paused": True, "paused_by": "admin", "paused_at": body["paused_at"],
        "reason": "new disk",
    }  # fmt: skip
    assert before <= body["paused_at"] <= now()
    assert gauge(root) == 1
    assert (await get(client, f"{ADMIN}/stats", admin))["paused"] == body
    requests = (await get(client, "/v1/download/my-requests", admin))["requests"]
    assert [(r["id"], r["wait"]) for r in requests] == [(mine, {"reason": "paused", "until": None})]
    assert requests[0]["estimated_start_at"] is None
    # Pausing again: the first pause stands, nothing more is written.
    assert await post(client, "/pause", headers["editor"], json={"reason": "other"}) == (200, body)
    code, body = await post(client, "/resume", admin)
    assert (code, body) == (200, {"paused": False})
    assert isinstance(wakes.receive_nowait(), WakeProcessor)  # work starts at once
    assert gauge(root) == 0
    assert (await post(client, "/resume", admin)) == (200, {"paused": False})
    assert (await get(client, f"{ADMIN}/stats", admin))["paused"] == {
        "paused": False, "paused_by": None, "paused_at": None, "reason": None,
    }  # fmt: skip
    page = await get(client, f"{ADMIN}/audit?user=admin", admin)
    assert [e["event_type"] for e in page["entries"]] == ["QUEUE_RESUMED", "QUEUE_PAUSED"]
    assert page["entries"][1]["details"] == {"reason": "new disk"}


async def test_a_pause_needs_no_body(root: Root, client: Any, headers: dict[str, Any]) -> None:
    code, body = await post(client, "/pause", headers["editor"])
    assert (code, body["paused_by"], body["reason"]) == (200, "editor", None)
    code, body = await post(client, "/pause", headers["editor"], json={})
    assert (code, body["paused"]) == (200, True)


async def test_pause_and_resume_need_edit_catalog(
    root: Root, client: Any, headers: dict[str, dict[str, str]]
) -> None:
    expected = {"anonymous": 401, "regular": 403, "analyst": 403}
    for who, status in expected.items():
        for path in ("/pause", "/resume"):
            code, body = await post(client, path, headers[who], json={})
            assert code == status, (who, path, body)
    assert root.downloads.queue_admin.pause_state()["paused"] is False
    assert (await post(client, "/pause", headers["editor"]))[0] == 200


@pytest.mark.parametrize(
    "body",
    [
        {"reason": ""},
        {"reason": "   "},
        {"reason": "x" * 501},
        {"reason": 12},
        {"reason": ["a"]},
        {"reason": "fine", "paused_by": "someone-else"},
        {"reason": "nul\x00inside"},
    ],
    ids=["empty", "blank", "too-long", "number", "list", "unknown-field", "nul"],
)
async def test_a_bad_reason_is_400_and_pauses_nothing(
    root: Root, client: Any, headers: dict[str, dict[str, str]], body: dict[str, Any]
) -> None:
    code, answer = await post(client, "/pause", headers["admin"], json=body)
    assert code == 400, answer
    assert answer["code"] in {"VALIDATION_ERROR", "INVALID_TEXT"}
    assert root.downloads.queue_admin.pause_state()["paused"] is False
    assert gauge(root) in (None, 0)
    code, answer = await post(client, "/pause", headers["admin"], json={"reason": "x" * 500})
    assert (code, answer["reason"]) == (200, "x" * 500)


async def test_pause_and_resume_are_in_the_openapi_document(client: Any) -> None:
    paths = (await (await client.get("/openapi.json")).get_json())["paths"]
    assert "post" in paths[f"{ADMIN}/pause"] and "post" in paths[f"{ADMIN}/resume"]
    schema = paths[f"{ADMIN}/pause"]["post"]["requestBody"]["content"]["application/json"]
    assert "reason" in str(schema)


async def test_a_child_in_the_request_detail_carries_its_wait(
    root: Root, client: Any, headers: dict[str, dict[str, str]]
) -> None:
    db, t = root.downloads.queue_admin.db, now()
    album = insert(db, status="IN_PROGRESS", requested_by="admin", created_at=t, started_at=t,
                   children_created=1)  # fmt: skip
    insert(db, parent_id=album, status="RETRY_WAITING", content_type="TRACK_AUDIO",
           content_id=cid(1), error_type="rate_limited", next_retry_at=t + 30)  # fmt: skip
    detail = await get(client, f"/v1/download/request/{album}", headers["admin"])
    busy = {"reason": "downloader_busy", "until": t + 30}
    assert detail["wait"] == busy and detail["children"][0]["wait"] == busy
