"""Notifications on the whole daemon (SPEC §16 rev 2): a user's targets, delivery through Apprise
to a real JSON receiver on loopback (allowed through `user_hosts_allowed`), retries, recorded
failures, the inbox and its live event, the operator events, secrets never shown.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.notify_urls import DEFAULT_USER_SCHEMES, NotificationSettings
from fake_downloader import CatalogSpec, Knobs, build_catalog
from storage.files import Faults
from storage.queue import QueueAdminStore
from tests.support.disk import full_for
from tests.support.live import daemon, fake, sign_in, until
from tests.support.openapi import assert_valid
from tests.support.receiver import Receiver, receiver
from tests.support.sse import stream

pytestmark = pytest.mark.process  # starts servers: not in `make check`

SPEC = CatalogSpec(
    seed=17, artists=2, albums_per_artist=3, tracks_per_album=3, audio_bytes=16 * 1024,
    image_bytes=1024,
)  # fmt: skip
FAKE = build_catalog(SPEC)
SECRET = "s3cr3t-t0ken-XYZ"


def settings(**extra: Any) -> NotificationSettings:
    """json:// allowed to loopback, quick retries, short timeouts."""
    values: dict[str, Any] = {
        "user_schemes": (*DEFAULT_USER_SCHEMES, "json"),
        "user_hosts_allowed": ("127.0.0.1",),
        "first_retry_sec": 0.2,
        "timeout_sec": 2.0,
        **extra,
    }
    return NotificationSettings(**values)


async def request(client: httpx.AsyncClient, index: int) -> str:
    body = {"album_id": FAKE.album_ids[index], "album_name": f"Album {index}", "artist_name": "B"}
    response = await client.post("/v1/download/request/album", json=body)
    assert response.status_code == 201, response.text
    request_id: str = response.json()["request_id"]
    return request_id


async def aim(client: httpx.AsyncClient, url: str) -> None:
    response = await client.put("/v1/user/notifications", json={"urls": [url]})
    assert response.status_code == 200, response.text


async def status_of(client: httpx.AsyncClient, request_id: str) -> str:
    response = await client.get(f"/v1/download/request/{request_id}")
    status: str = response.json()["status"]
    return status


async def ended(client: httpx.AsyncClient, request_id: str, within: float = 30) -> float:
    """Wait until the request has ended; when it was seen ended (trio time)."""
    with trio.fail_after(within):
        while await status_of(client, request_id) not in ("COMPLETED", "FAILED"):  # noqa: ASYNC110
            await trio.sleep(0.05)
    return trio.current_time()


async def test_completion_and_failure_reach_the_user_within_seconds(tmp_path: Path) -> None:
    knobs = Knobs(not_found_ids={FAKE.album_ids[1]})
    with receiver() as target:
        async with (
            fake(knobs, SPEC) as (url, _),
            daemon(tmp_path, url, SPEC, notifications=settings()) as live,
        ):
            alice = await sign_in(live, "alice")
            await aim(alice, target.url())
            done = await request(alice, 0)
            seen = await ended(alice, done)
            await until(lambda: len(target.received) == 1, within=5)
            assert trio.current_time() - seen < 5
            failed = await request(alice, 1)
            await ended(alice, failed)
            await until(lambda: len(target.received) == 2, within=5)
            assert target.titles() == ["Download complete", "Download failed"]
            assert "Album 0" in target.received[0]["message"]
            # Both landed in the inbox, unread.
            inbox = (await alice.get("/v1/user/inbox")).json()
            assert inbox["unread"] == 2
            assert [i["event"] for i in inbox["items"]] == ["request.failed", "request.completed"]
            assert {i["request_id"] for i in inbox["items"]} == {done, failed}
            await alice.aclose()


async def test_a_target_failing_twice_gets_exactly_one_delivery(tmp_path: Path) -> None:
    with receiver([500, 500]) as target:
        async with (
            fake(Knobs(), SPEC) as (url, _),
            daemon(tmp_path, url, SPEC, notifications=settings()) as live,
        ):
            alice = await sign_in(live, "alice")
            await aim(alice, target.url())
            await ended(alice, await request(alice, 0))
            await until(lambda: len(target.received) == 1, within=10)
            await trio.sleep(3)  # nothing more comes
            assert (target.attempts, len(target.received)) == (3, 1)
            metric = live.root.metrics.registry.get_sample_value
            assert metric("pezzottify_notifications_total", {"result": "retried"}) == 2
            assert metric("pezzottify_notifications_total", {"result": "sent"}) == 1
            await alice.aclose()


async def test_a_dead_target_is_recorded_failed_and_slows_nobody(tmp_path: Path) -> None:
    with receiver() as alive:
        dead = "json://127.0.0.1:9/dead"  # discard port: nothing listens
        async with (
            fake(Knobs(), SPEC) as (url, _),
            daemon(tmp_path, url, SPEC, notifications=settings(max_attempts=2)) as live,
        ):
            alice, bob = await sign_in(live, "alice"), await sign_in(live, "bob")
            await aim(alice, dead)
            await aim(bob, alive.url())
            first = await request(alice, 0)
            others = [await request(bob, index) for index in (1, 2, 3)]
            await ended(alice, first)
            for request_id in others:
                await ended(bob, request_id)
            await until(lambda: len(alive.received) == 3, within=10)
            with trio.fail_after(15):
                while not (  # noqa: ASYNC110
                    failed := (await live.http.get("/v1/admin/notifications/failed")).json()
                )["items"]:
                    await trio.sleep(0.1)
            [record] = failed["items"]
            assert (record["user"], record["event"], record["attempts"]) == (
                "alice", "request.completed", 2,
            )  # fmt: skip
            assert "127.0.0.1:9" in record["last_error"]
            # Regular users may not read it.
            assert (await bob.get("/v1/admin/notifications/failed")).status_code == 403
            await alice.aclose()
            await bob.aclose()


async def test_urls_a_user_may_not_aim_at(tmp_path: Path) -> None:
    with receiver() as target:
        async with (
            fake(Knobs(), SPEC) as (url, _),
            daemon(tmp_path, url, SPEC, notifications=settings(user_hosts_allowed=())) as live,
        ):
            alice = await sign_in(live, "alice")
            refused = [
                target.url(),  # loopback
                "json://10.20.30.40/hook",  # a private address
                "json://192.168.1.5:8080/",  # another
                "json://169.254.169.254/latest",  # link-local (cloud metadata)
                "json://localhost:8080/hook",  # a name that resolves to loopback
                "http://example.org/",  # not an allowed scheme
                "not a url",
            ]
            for bad in refused:
                response = await alice.put("/v1/user/notifications", json={"urls": [bad]})
                assert response.status_code == 400, (bad, response.text)
                assert response.json()["code"] == "BAD_URL"
            # Nothing was stored.
            assert (await alice.get("/v1/user/notifications")).json()["urls"] == []
            body = {"urls": ["discord://1234567890/" + SECRET], "events": ["request.failed"]}
            response = await alice.put("/v1/user/notifications", json=body)
            assert response.status_code == 200, response.text
            bad_event = {"urls": [], "events": ["request.sung"]}
            assert (await alice.put("/v1/user/notifications", json=bad_event)).status_code == 400
            await alice.aclose()
    # The operator allows a host: the loopback receiver is accepted.
    (tmp_path / "allowed").mkdir()
    with receiver() as target:
        async with (
            fake(Knobs(), SPEC) as (url, _),
            daemon(tmp_path / "allowed", url, SPEC, notifications=settings()) as live,
        ):
            alice = await sign_in(live, "alice2")
            await aim(alice, target.url())
            test = await alice.post("/v1/user/notifications/test")
            assert test.status_code == 200, test.text
            assert [r["delivered"] for r in test.json()["results"]] == [True]
            document = (await alice.get("/openapi.json")).json()
            assert_valid(document, "POST", "/v1/user/notifications/test", 200, test.json())
            assert target.titles() == ["Pezzottify test notification"]
            await alice.aclose()


async def test_secrets_are_never_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dead = f"json://user:{SECRET}@127.0.0.1:9/hook"
    async with (
        fake(Knobs(), SPEC) as (url, _),
        daemon(tmp_path, url, SPEC, notifications=settings(max_attempts=2)) as live,
    ):
        alice = await sign_in(live, "alice")
        body = {"urls": [dead, f"discord://1234567890/{SECRET}"]}
        put = await alice.put("/v1/user/notifications", json=body)
        got = await alice.get("/v1/user/notifications")
        test = await alice.post("/v1/user/notifications/test")
        await ended(alice, await request(alice, 0))
        with trio.fail_after(15):
            while not (await live.http.get("/v1/admin/notifications/failed")).json()["items"]:  # noqa: ASYNC110
                await trio.sleep(0.1)
        failed = await live.http.get("/v1/admin/notifications/failed")
        for response in (put, got, test, failed):
            assert response.status_code == 200, response.text
            assert SECRET not in response.text
        assert len(got.json()["urls"]) == 2
        await alice.aclose()
    assert caplog.records
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


async def test_the_inbox_counts_marks_read_and_streams(tmp_path: Path) -> None:
    async with (
        fake(Knobs(), SPEC) as (url, _),
        daemon(tmp_path, url, SPEC, notifications=settings()) as live,
    ):
        alice, bob = await sign_in(live, "alice"), await sign_in(live, "bob")
        async with stream(alice) as reader:
            ids = [await request(alice, index) for index in (0, 1, 2)]
            for request_id in ids:
                await ended(alice, request_id)
            await until(lambda: sum(e.name == "inbox" for e in reader.events) == 3, within=10)
            inboxed = [e.data for e in reader.events if e.name == "inbox"]
            assert {e["request_id"] for e in inboxed} == set(ids)
        page = (await alice.get("/v1/user/inbox", params={"limit": 2})).json()
        assert (len(page["items"]), page["unread"]) == (2, 3)
        first = page["items"][0]["id"]
        # Bob cannot mark Alice's; his own inbox is empty.
        assert (await bob.post("/v1/user/inbox/read", json={"ids": [first]})).json()["marked"] == 0
        assert (await bob.get("/v1/user/inbox")).json() == {"items": [], "unread": 0}
        marked = await alice.post("/v1/user/inbox/read", json={"ids": [first]})
        assert marked.json() == {"marked": 1, "unread": 2}
        unread = (await alice.get("/v1/user/inbox", params={"unread": "true"})).json()
        assert first not in [i["id"] for i in unread["items"]]
        assert len(unread["items"]) == 2
        assert (await alice.post("/v1/user/inbox/read", json={"all": True})).json()["unread"] == 0
        for bad in ({}, {"ids": [1], "all": True}, {"ids": "x"}, {"all": "yes"}):
            assert (await alice.post("/v1/user/inbox/read", json=bad)).status_code == 400
        assert (await alice.get("/v1/user/inbox", params={"limit": 0})).status_code == 400
        await alice.aclose()
        await bob.aclose()


def admin_settings(admins: Receiver) -> NotificationSettings:
    return settings(admin_urls=(admins.url(),))


async def told(admins: Receiver, title: str, within: float = 10) -> dict[str, Any]:
    """The admins' message titled `title`, once it arrived."""
    await until(lambda: title in admins.titles(), within=within)
    return next(body for body in admins.received if body["title"] == title)


async def test_capacity_reached_reaches_the_admin_urls(tmp_path: Path) -> None:
    with receiver() as admins:
        async with (
            fake(Knobs(), SPEC) as (url, _),
            daemon(
                tmp_path, url, SPEC, notifications=admin_settings(admins), max_albums_per_hour=1
            ) as live,
        ):
            # The one album this hour starts: the capacity is reached.
            await ended(live.http, await request(live.http, 0))
            reached = await told(admins, "Download capacity reached")
            assert "1 of 1 albums this hour" in reached["message"]


async def test_a_failed_request_reaches_the_admin_urls(tmp_path: Path) -> None:
    with receiver() as admins:
        async with (
            fake(Knobs(not_found_ids={FAKE.album_ids[1]}), SPEC) as (url, _),
            daemon(tmp_path, url, SPEC, notifications=admin_settings(admins)) as live,
        ):
            alice = await sign_in(live, "alice")
            await ended(alice, await request(alice, 1))
            failed = await told(admins, "Download failed")
            assert "Album 1" in failed["message"] and "(requested by alice)" in failed["message"]
            await alice.aclose()


async def test_a_pause_reaches_the_admin_urls(tmp_path: Path) -> None:
    with receiver() as admins:
        async with (
            fake(Knobs(), SPEC) as (url, _),
            daemon(tmp_path, url, SPEC, notifications=admin_settings(admins)) as live,
        ):
            body = {"reason": "moving the music disk"}
            response = await live.http.post("/v1/download/admin/pause", json=body)
            assert response.status_code == 200, response.text
            paused = await told(admins, "Download queue paused")
            assert "Reason: moving the music disk" in paused["message"]


async def test_stale_work_reaches_the_admin_urls(tmp_path: Path) -> None:
    """A track that streams for 4 s is stale past a 1 s threshold: the stale detector sees it
    IN_PROGRESS without activity, and the admins hear of it."""
    slow = Knobs(audio_bytes_per_sec=SPEC.audio_bytes // 4)
    with receiver() as admins:
        async with (
            fake(slow, SPEC) as (url, _),
            daemon(
                tmp_path, url, SPEC, notifications=admin_settings(admins),
                stale_in_progress_threshold_secs=1,
            ) as live,
        ):  # fmt: skip
            await request(live.http, 0)
            stuck = await told(admins, "Downloads stuck")
            assert "without activity for over 1 s" in stuck["message"]


async def test_a_failing_job_reaches_the_admin_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit cleanup job finds the disk full: its run fails, and the admins hear of it."""
    cleanup = QueueAdminStore.delete_audit_chunk
    monkeypatch.setattr(QueueAdminStore, "delete_audit_chunk", full_for(1, cleanup))
    with receiver() as admins:
        async with (
            fake(Knobs(), SPEC) as (url, _),
            daemon(tmp_path, url, SPEC, notifications=admin_settings(admins)) as live,
        ):
            response = await live.http.post("/v1/admin/jobs/audit_log_cleanup/trigger")
            assert response.status_code == 202, response.text
            run_id = response.json()["run_id"]
            failed = await told(admins, "Background job failed")
            assert f"Job audit_log_cleanup (run {run_id}) failed" in failed["message"]
            history = await live.http.get("/v1/admin/jobs/audit_log_cleanup/history")
            assert history.json()["history"][0]["status"] == "failed"


def disk_full_once() -> Faults:
    """The test hook of `storage.files`: the first file written finds the disk full."""
    left = [1]

    def faults(step: str) -> None:
        if step == "after_write" and left[0]:
            left[0] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return faults


async def test_a_full_disk_reaches_the_admin_urls(tmp_path: Path) -> None:
    with receiver() as admins:
        async with (
            fake(Knobs(), SPEC) as (url, _),
            daemon(
                tmp_path, url, SPEC, notifications=admin_settings(admins), faults=disk_full_once()
            ) as live,
        ):
            request_id = await request(live.http, 0)
            trouble = await told(admins, "Disk trouble")
            assert "No space left on device" in trouble["message"]
            # The file is retried and the album completes once there is room.
            await ended(live.http, request_id)
            assert await status_of(live.http, request_id) == "COMPLETED"
            assert admins.titles().count("Disk trouble") == 1
