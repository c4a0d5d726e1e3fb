"""Notification routes (SPEC §16 rev 2) through the app: targets, a test send, the inbox and the
admins' failed list, in the states their answers can take. Delivery itself, and a test send that
arrives, are tested on the whole daemon (tests/daemon/test_notifications.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.notify_urls import DEFAULT_USER_SCHEMES, NotificationSettings
from daemon.config import Config, DownloadManagerConfig
from daemon.root import Root
from storage.queue import ErrorType
from storage.queue.notices import Outcome
from tests.support.live import free_port
from tests.support.openapi import assert_documented
from tests.support.queue_rows import BASE, cid, insert


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The download manager on (the inbox lives with the queue); json:// to loopback allowed."""
    notifications = NotificationSettings(
        user_schemes=(*DEFAULT_USER_SCHEMES, "json"), user_hosts_allowed=("127.0.0.1",),
        timeout_sec=2.0,
    )  # fmt: skip
    return Config(
        db_dir=tmp_path, media_path=tmp_path, downloader_url="http://127.0.0.1:9",
        download_manager=DownloadManagerConfig(), notifications=notifications,
    )  # fmt: skip


def end_requests(root: Root, user: str) -> None:
    """One of `user`'s albums completed, another failed for good: two inbox items, and
    notifications for the user and the admins."""
    downloads = root.downloads
    assert downloads is not None
    db = downloads.queue_admin.db
    done = insert(db, status="IN_PROGRESS", requested_by=user, content_name="One",
                  artist_name="Band", children_created=1)  # fmt: skip
    lost = insert(db, status="IN_PROGRESS", requested_by=user, content_id=cid(1),
                  children_created=1)  # fmt: skip
    assert downloads.queue.complete(done, 10, 5, BASE)
    downloads.queue.fail(lost, ErrorType.NOT_FOUND, "gone", BASE, permanent=True)


async def answer(client: Any, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
    """The JSON of a 200, after checking it against the document (`path` is its route too)."""
    response = await client.open(path, method=method, headers=headers, **kw)
    assert response.status_code == 200, await response.get_data()
    body = await response.get_json()
    await assert_documented(client, method, path, 200, body)
    return body


async def test_targets_and_a_test_send_are_as_the_document_says(
    client: Any, user_headers: dict[str, str]
) -> None:
    path = "/v1/user/notifications"
    assert (await answer(client, "GET", path, user_headers))["urls"] == []
    port = free_port()  # nothing listens there: a test send fails at once
    dead = [f"json://user:secret@127.0.0.1:{port}/hook", f"json://127.0.0.1:{port}/other"]
    body = {"urls": dead, "events": ["request.failed"]}
    shown = await answer(client, "PUT", path, user_headers, json=body)
    assert len(shown["urls"]) == 2 and "secret" not in str(shown)
    assert (await answer(client, "GET", path, user_headers)) == shown
    tried = await answer(client, "POST", f"{path}/test", user_headers)
    assert [(r["delivered"], bool(r["error"])) for r in tried["results"]] == [(False, True)] * 2


async def test_the_inbox_and_the_failed_list_are_as_the_document_says(
    root: Root, client: Any, user_headers: dict[str, str], admin_headers: dict[str, str]
) -> None:
    end_requests(root, "regular")
    downloads = root.downloads
    assert downloads is not None
    notices = downloads.notices
    assert notices.alarm("stale_work", "Stale work", "An item is stuck.", BASE + 1)
    outbox = notices.due(BASE + 10, 10)
    for row in outbox:  # every notification given up on, one without an error recorded
        error = None if row["event"] == "request.completed" else "refused"
        notices.record(row["id"], Outcome("failed", [], error), BASE + 20)
    inbox = await answer(client, "GET", "/v1/user/inbox", user_headers)
    assert (len(inbox["items"]), inbox["unread"]) == (2, 2)
    first = inbox["items"][0]["id"]
    marked = await answer(
        client, "POST", "/v1/user/inbox/read", user_headers, json={"ids": [first]}
    )
    assert marked == {"marked": 1, "unread": 1}
    inbox = await answer(client, "GET", "/v1/user/inbox", user_headers)
    assert [item["read"] for item in inbox["items"]] == [True, False]
    failed = await answer(client, "GET", "/v1/admin/notifications/failed", admin_headers)
    assert failed["total"] == len(outbox) == 4
    items = failed["items"]
    assert {item["user"] for item in items} == {"regular", None}
    assert {item["request_id"] is None for item in items} == {True, False}
    assert {item["last_error"] for item in items} == {"refused", None}
