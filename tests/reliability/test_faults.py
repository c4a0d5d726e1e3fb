"""Hostile upstreams and failing disks against the whole daemon (SPEC §8.6, RELIABILITY F-2, F-4,
H-1, H-2, Q-5).

The daemon runs in-process (`run_daemon`, every actor, the real HTTP listener on loopback) against
an in-process fake downloader whose knobs the tests turn while it runs, and with the disk calls of
`storage.files` made to fail on demand. Each test requests an album over HTTP and checks how its
items end (state, error type, retries spent, audit), that the files and catalog satisfy the
reliability invariants, and that the daemon is still up: its HTTP API answers, no actor was
restarted, and a later album still completes.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from api.context import AppContext
from daemon.config import Config, DownloadManagerConfig
from daemon.metrics import Metrics
from daemon.services import build_context
from daemon.wiring import run_daemon
from fake_downloader import CatalogSpec, Knobs, build_catalog, serve
from storage import files
from storage.catalog import CatalogStore
from storage.users import Role
from tests.conftest import FAST_HASHER, make_user
from tests.reliability.harness import ADMIN, ADMIN_PASSWORD, DM_DEFAULTS, TERMINAL
from tests.reliability.invariants import audit_entries, check_settled, queue_items
from tests.support.disk import full_for

SPEC = CatalogSpec(
    seed=21, artists=2, albums_per_artist=2, tracks_per_album=3, audio_bytes=48 * 1024,
    image_bytes=4096,
)  # fmt: skip
FAKE = build_catalog(SPEC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Live:
    """A running in-process daemon, its HTTP client and its data directory."""

    context: AppContext
    http: httpx.AsyncClient
    db_dir: Path

    async def request(self, index: int) -> str:
        body = {"album_id": FAKE.album_ids[index], "album_name": "A", "artist_name": "B"}
        response = await self.http.post("/v1/download/request/album", json=body)
        assert response.status_code == 201, response.text
        return str(FAKE.album_ids[index])

    async def wait_idle(self, within: float = 30) -> None:
        with trio.fail_after(within):
            while True:
                query: dict[str, str | int] = {"top_level_only": "true", "limit": 500}
                response = await self.http.get("/v1/download/admin/requests", params=query)
                assert response.status_code == 200, response.text  # the API is still up
                items = response.json()["items"]
                if items and all(i["status"] in TERMINAL for i in items):
                    return
                await trio.sleep(0.05)

    async def settled(self, albums: list[str], expect: str = "COMPLETED") -> list[dict[str, Any]]:
        check = partial(check_settled, self.db_dir, SPEC, albums, expect)
        items: list[dict[str, Any]] = await trio.to_thread.run_sync(check)
        return items

    def retries(self, error_type: str) -> list[dict[str, Any]]:
        marker = f'"error_type": "{error_type}"'
        return [
            e for e in audit_entries(self.db_dir)
            if e["event_type"] == "RETRY_SCHEDULED" and marker in e["details"]
        ]  # fmt: skip

    def restarts(self) -> float:
        metric = "pezzottify_actor_restarts_total"
        registry = self.context.metrics.registry
        return sum(registry.get_sample_value(metric, {"actor": a}) or 0.0 for a in ACTORS)


ACTORS = ("processor", "scheduler", "watchdog", "stale_detector", "http", "metrics")


@asynccontextmanager
async def daemon(
    tmp_path: Path, downloader_url: str, *, read_timeout: float = 10, **dm: Any
) -> AsyncIterator[Live]:
    config = Config(
        db_dir=tmp_path, media_path=tmp_path, host="127.0.0.1", port=free_port(),
        metrics_port=free_port(), logging_level="none", downloader_url=downloader_url,
        downloader_timeout_sec=read_timeout, shutdown_timeout_sec=2,
        download_manager=DownloadManagerConfig(**{**DM_DEFAULTS, **dm}),
    )  # fmt: skip
    context = await trio.to_thread.run_sync(build_context, config, Metrics(), FAST_HASHER)
    await trio.to_thread.run_sync(
        partial(make_user, context, ADMIN, (Role.Admin,), password=ADMIN_PASSWORD)
    )
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_daemon, config, shutdown=shutdown, context=context))
        base = f"http://127.0.0.1:{config.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            login = {"user_handle": ADMIN, "password": ADMIN_PASSWORD}
            token = (await http.post("/v1/auth/login", json=login)).json()["token"]
            http.headers["Authorization"] = f"Bearer {token}"
            yield Live(context, http, tmp_path)
            assert (await http.get("/v1/auth/session")).status_code == 200
        shutdown.set()


@asynccontextmanager
async def fake(knobs: Knobs, port: int = 0) -> AsyncIterator[tuple[str, trio.CancelScope]]:
    """An in-process fake downloader; cancel the scope to take it down mid-response."""
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[str]) -> None:
            with scope:
                await serve(SPEC, knobs, port=port, task_status=task_status)

        url = await nursery.start(run)
        yield url, scope
        scope.cancel()


async def test_truncated_bodies_are_retried_and_never_published(tmp_path: Path) -> None:
    knobs = Knobs()
    knobs.fault("truncate", "audio", times=2)
    async with fake(knobs) as (url, _), daemon(tmp_path, url) as live:
        albums = [await live.request(0)]
        await live.wait_idle()
        items = await live.settled(albums)
        assert len(live.retries("parse")) == 2
        assert all("truncated" in e["details"] for e in live.retries("parse"))
        assert sum(i["retry_count"] for i in items) == 2
        assert live.restarts() == 0


async def test_a_stalled_upstream_frees_the_worker_within_the_timeout(tmp_path: Path) -> None:
    knobs = Knobs()
    knobs.fault("stall", "audio", times=1, stall_seconds=3600)
    async with fake(knobs) as (url, _), daemon(tmp_path, url, read_timeout=1) as live:
        albums = [await live.request(0)]
        await live.wait_idle()
        await live.settled(albums)
        (retry,) = live.retries("timeout")
        item_id = retry["queue_item_id"]
        started = [
            e["timestamp"] for e in audit_entries(live.db_dir)
            if e["queue_item_id"] == item_id and e["event_type"] == "DOWNLOAD_STARTED"
        ]  # fmt: skip
        assert retry["timestamp"] - started[0] <= 2, "the stall held the worker past the timeout"
        assert live.restarts() == 0


async def until(condition: Callable[[], bool], within: float) -> None:
    with trio.fail_after(within):
        while True:
            if condition():
                return
            await trio.sleep(0.02)


@pytest.mark.parametrize("mode", ["trickle", "stall_body"])
async def test_a_slow_body_is_cut_at_the_whole_request_deadline_and_the_queue_goes_on(
    tmp_path: Path, mode: str
) -> None:
    """SPEC §8.6 "Deadlines": `downloader_timeout_sec` bounds the whole request, body
    included. A body trickling at 512 bytes a second, or stalling halfway, is abandoned as
    `timeout` within the deadline (+1 s), never holding the one download slot for good, and the
    next album completes."""
    deadline = 2.0
    knobs = Knobs()
    knobs.fault(mode, "audio", times=1, stall_seconds=3600)
    async with fake(knobs) as (url, _), daemon(tmp_path, url, read_timeout=deadline) as live:
        albums = [await live.request(0), await live.request(1)]
        await until(lambda: knobs.counts["audio"] > 0, within=10)
        began = trio.current_time()  # the slow body's request has reached the downloader
        await until(lambda: bool(live.retries("timeout")), within=deadline + 5)
        assert trio.current_time() - began <= deadline + 1
        await live.wait_idle()
        items = await live.settled(albums)
        assert {i["status"] for i in items} == {"COMPLETED"}
        (retry,) = live.retries("timeout")
        assert "longer than 2 s" in retry["details"]
        assert live.restarts() == 0


async def test_an_endless_body_is_cut_at_max_file_bytes_and_fails_at_once_as_parse(
    tmp_path: Path,
) -> None:
    """`max_file_bytes` bounds one media file while it streams; a body over it fails as
    `parse` without a retry: the same bytes would come again."""
    cap = 256 * 1024
    knobs = Knobs()
    knobs.fault("endless", "audio")
    async with (
        fake(knobs) as (url, _),
        daemon(tmp_path, url, max_retries=1, max_file_bytes=cap) as live,
    ):
        failed = [await live.request(0)]
        await live.wait_idle()
        items = await live.settled(failed, expect="FAILED")
        tracks = [i for i in items if i["content_type"] == "TRACK_AUDIO"]
        assert {(t["status"], t["error_type"], t["retry_count"]) for t in tracks} == {
            ("FAILED", "parse", 0)
        }
        assert all("too large" in t["error_message"] for t in tracks)
        assert live.retries("parse") == []
        album = next(i for i in items if i["parent_id"] is None)
        assert album["error_message"] == "3 of 5 children failed"
        assert list((tmp_path / "audio").iterdir()) == []
        knobs.clear()  # the daemon is still up: the next album goes through
        await live.request(2)
        await live.wait_idle()
        assert [i["status"] for i in queue_items(tmp_path) if i["parent_id"] is None] == [
            "FAILED", "COMPLETED",
        ]  # fmt: skip
        assert live.restarts() == 0


class DiskFaults:
    """Makes the next matching disk call of the media writer fail, in the given order."""

    def __init__(self, plan: list[tuple[str, int]]) -> None:
        self.plan = plan
        self.raised: list[tuple[str, int]] = []

    def wrap(self, op: str, real: Callable[..., Any], applies: Callable[..., bool]) -> Any:
        def call(*args: Any) -> Any:
            if self.plan and self.plan[0][0] == op and applies(*args):
                fault = self.plan.pop(0)
                self.raised.append(fault)
                raise OSError(fault[1], os.strerror(fault[1]))
            return real(*args)

        return call


async def test_disk_errors_at_write_fsync_and_rename_are_retried_storage_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = [
        ("write", errno.ENOSPC), ("fsync", errno.EIO), ("replace", errno.ENOSPC),
        ("write", errno.EIO), ("fsync", errno.ENOSPC), ("replace", errno.EIO),
    ]  # fmt: skip
    disk = DiskFaults(list(plan))
    media = str(tmp_path)
    monkeypatch.setattr(
        files.AtomicWriter, "write", disk.wrap("write", files.AtomicWriter.write, lambda *a: True)
    )
    monkeypatch.setattr(os, "fsync", disk.wrap("fsync", os.fsync, lambda *a: True))
    monkeypatch.setattr(
        os, "replace", disk.wrap("replace", os.replace, lambda s, d: str(d).startswith(media))
    )
    async with fake(Knobs()) as (url, _), daemon(tmp_path, url) as live:
        albums = [await live.request(0)]
        await live.wait_idle()
        items = await live.settled(albums)
        assert disk.raised == plan
        messages = Counter(
            "full" if "No space left" in e["details"] else "eio"
            for e in live.retries("storage")
        )  # fmt: skip
        assert messages == {"full": 3, "eio": 3}
        assert sum(i["retry_count"] for i in items) == 6
        assert live.restarts() == 0


async def test_a_full_catalog_database_is_a_retried_storage_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog's disk is full when an album is ingested, then when its first tracks are
    recorded: each attempt fails as a storage failure and is retried, no actor is restarted, and
    the album completes once there is room, every track recorded with its file."""
    monkeypatch.setattr(CatalogStore, "ingest_album", full_for(1, CatalogStore.ingest_album))
    monkeypatch.setattr(
        CatalogStore, "set_tracks_audio", full_for(1, CatalogStore.set_tracks_audio)
    )
    async with fake(Knobs()) as (url, _), daemon(tmp_path, url) as live:
        albums = [await live.request(0)]
        await live.wait_idle()
        items = await live.settled(albums)
        failures = live.retries("storage")
        kinds = {e["content_type"] for e in failures}
        assert "ALBUM" in kinds and "TRACK_AUDIO" in kinds, failures
        assert all("database or disk is full" in e["details"] for e in failures)
        assert sum(i["retry_count"] for i in items) == len(failures)
        assert live.restarts() == 0


async def test_a_downloader_restart_mid_album_is_survived(tmp_path: Path) -> None:
    slow = Knobs(audio_bytes_per_sec=48 * 1024)  # a track streams for a second
    async with fake(slow) as (url, first), daemon(tmp_path, url) as live:
        albums = [await live.request(1)]
        with trio.fail_after(10):
            while slow.active_audio == 0:  # noqa: ASYNC110 (the fake exposes a counter)
                await trio.sleep(0.01)
        first.cancel()  # the downloader goes away mid-download
        await trio.sleep(1.5)
        port = int(url.rsplit(":", 1)[1])
        async with fake(Knobs(), port=port):
            await live.wait_idle()
        await live.settled(albums)
        lost = [e for kind in ("connection", "parse", "timeout") for e in live.retries(kind)]
        assert lost, "the outage was not noticed"
        assert live.restarts() == 0


async def test_a_429_storm_delays_but_spends_no_retry(tmp_path: Path) -> None:
    knobs = Knobs(retry_after_s=1, fail_seed=3)
    storm = [knobs.fail(endpoint, 429, rate=0.5, times=1000) for endpoint in ("audio", "image")]
    async with fake(knobs) as (url, _), daemon(tmp_path, url, max_retries=0) as live:
        albums = [await live.request(3)]
        await live.wait_idle(within=60)
        items = await live.settled(albums)
        served = sum(1000 - (rule.times or 0) for rule in storm)
        assert served >= 3, "the storm did not happen"
        assert len(live.retries("rate_limited")) == served
        assert {i["retry_count"] for i in items} == {0}
        assert live.restarts() == 0
