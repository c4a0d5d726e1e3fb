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
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import trio

from fake_downloader import CatalogSpec, Knobs, build_catalog
from storage import files
from storage.catalog import CatalogStore
from tests.reliability.invariants import audit_entries, queue_items
from tests.support.disk import full_for
from tests.support.live import Live, until
from tests.support.live import daemon as live_daemon
from tests.support.live import fake as live_fake

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=21, artists=2, albums_per_artist=2, tracks_per_album=3, audio_bytes=48 * 1024,
    image_bytes=4096,
)  # fmt: skip
FAKE = build_catalog(SPEC)


def daemon(tmp_path: Path, url: str, **kwargs: Any) -> AbstractAsyncContextManager[Live]:
    return live_daemon(tmp_path, url, SPEC, **kwargs)


def fake(knobs: Knobs, port: int = 0) -> AbstractAsyncContextManager[tuple[str, trio.CancelScope]]:
    return live_fake(knobs, SPEC, port)


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
