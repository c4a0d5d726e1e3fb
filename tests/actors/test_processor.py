"""The queue processor against the fake downloader: an album end to end, retries, 404s, 429s,
the global capacity, waking, recovery and a shutdown in the middle of a download.

Most tests run the fake in-process through `httpx.ASGITransport`; the end-to-end and shutdown
tests serve it over loopback HTTP, as the daemon sees it. Trio time is real and short (the idle
interval is 20 ms); the processor's wall clock is a `FakeWall` the tests move by hand, so backoffs
of minutes and the next UTC hour arrive at once. (`autojump_clock` is avoided here: it jumps
while SQLite and file writes run in worker threads, which would fire deadlines spuriously.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.downloader import DownloaderClient
from actors.downloader_stream import WRITE_BATCH_BYTES
from actors.messages import Hook, HookFired, WakeProcessor
from actors.processor import CLAIM_BATCH, FINISHER_NICE, Processor
from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from fake_downloader import (
    Catalog,
    CatalogSpec,
    Knobs,
    audio_bytes,
    build_catalog,
    create_app,
    image_bytes,
    open_fake_downloader,
)
from storage.catalog import CatalogStore
from storage.db import Database
from storage.files import MediaLayout
from storage.queue import QueueStore
from storage.queue_schema import MIGRATIONS, ContentType
from tests.support.bridge import TrioBridge

SPEC = CatalogSpec(
    seed=3, artists=2, albums_per_artist=2, tracks_per_album=3, audio_bytes=40_000,
    image_bytes=2_000,
)  # fmt: skip
T0 = 1_700_000_000 - 1_700_000_000 % 86400
DM = DownloadManagerConfig(
    initial_backoff_secs=60, max_backoff_secs=600, process_interval_secs=0.02
)


class FakeWall:
    """The processor's wall clock (unix seconds); only the test moves it."""

    def __init__(self) -> None:
        self.now = T0 + 10

    def __call__(self) -> int:
        return self.now


@dataclass
class Rig:
    queue: QueueStore
    catalog: CatalogStore
    media: MediaLayout
    metrics: Metrics
    fake: Catalog
    knobs: Knobs
    wake: trio.MemorySendChannel[WakeProcessor]
    hooks: trio.MemoryReceiveChannel[Any]
    shutdown: trio.Event
    stopped: trio.Event
    wall: FakeWall

    async def request_album(self, index: int = 0) -> str:
        album_id = self.fake.album_ids[index]
        row = await self.queue.db.run(
            self.queue.enqueue, ContentType.ALBUM, album_id, self.wall(), requested_by="alice"
        )
        with contextlib.suppress(trio.WouldBlock):  # a wake-up is already pending
            self.wake.send_nowait(WakeProcessor())
        return str(row["id"])

    async def wait_hook(self, hook: Hook, within: float = 10) -> None:
        with trio.fail_after(within):
            while (await self.hooks.receive()) != HookFired(hook):
                pass

    async def wait_status(self, item_id: str, status: str, *, advance: int = 0) -> None:
        """Wait for the item to reach `status`, moving the wall clock `advance` s each round."""
        with trio.fail_after(10):
            while self.item(item_id)["status"] != status:
                self.wall.now += advance
                await trio.sleep(0.03)

    async def wait_rows(self, sql: str) -> list[sqlite3.Row]:
        """Wait until `sql` returns rows; return them."""
        with trio.fail_after(10):
            while True:
                if found := self.rows(sql):
                    return found
                await trio.sleep(0.02)

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with self.queue.db.read() as conn:
            return conn.execute(sql, params).fetchall()

    def item(self, item_id: str) -> sqlite3.Row:
        return self.rows("SELECT * FROM queue_items WHERE id = ?", item_id)[0]

    def children(self, parent_id: str) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM queue_items WHERE parent_id = ? ORDER BY seq", parent_id)

    def processed(self, content_type: str, result: str) -> float:
        labels = {"content_type": content_type, "result": result}
        value = self.metrics.registry.get_sample_value(
            "pezzottify_download_processed_total", labels
        )
        return value or 0.0

    def media_files(self) -> list[str]:
        return sorted(
            p.name for d in (self.media.audio_dir, self.media.images_dir) for p in d.iterdir()
        )


@asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    knobs: Knobs | None = None,
    base_url: str | None = None,
    dm: DownloadManagerConfig = DM,
    shutdown_timeout: float = 30,
    before_start: Any = None,
    spec: CatalogSpec = SPEC,
) -> AsyncIterator[Rig]:
    knobs = knobs if knobs is not None else Knobs()
    fake = build_catalog(spec)
    transport = None if base_url else httpx.ASGITransport(create_app(fake, knobs))  # type: ignore[arg-type]
    bridge = None if transport is None else TrioBridge(transport)
    client = DownloaderClient(
        base_url or "http://fake", 30, transport=transport, media_transport=bridge
    )
    queue = QueueStore(Database(tmp_path / "q.db", MIGRATIONS, synchronous="OFF"), dm)
    catalog = CatalogStore.open(tmp_path / "catalog.db")
    media = MediaLayout(tmp_path / "media")
    metrics = Metrics()
    wake_send, wake_recv = trio.open_memory_channel[WakeProcessor](1)
    hook_send, hook_recv = trio.open_memory_channel[Any](64)
    shutdown, stopped = trio.Event(), trio.Event()
    wall = FakeWall()
    r = Rig(
        queue, catalog, media, metrics, fake, knobs, wake_send, hook_recv, shutdown, stopped, wall
    )
    if before_start is not None:
        before_start(r)
    processor = Processor(
        queue, catalog, client, media, metrics, dm, wake_recv, hook_send,
        shutdown=shutdown, shutdown_timeout=shutdown_timeout, clock=wall,
    )  # fmt: skip

    async def run_processor(task_status: trio.TaskStatus[None]) -> None:
        await processor.run(task_status=task_status)
        stopped.set()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_processor)
            yield r
            shutdown.set()
            with trio.fail_after(10):
                await stopped.wait()
    finally:
        await client.aclose()
        queue.db.close()
        catalog.db.close()


async def audio_streaming(knobs: Knobs) -> None:
    """Wait until the fake is sending audio (it exposes a counter, not an event)."""
    with trio.fail_after(10):
        while knobs.active_audio == 0:  # noqa: ASYNC110
            await trio.sleep(0.01)


def album_total_bytes(fake: Catalog, index: int) -> int:
    tracks = fake.album_tracks(index)
    return len(tracks) * SPEC.audio_bytes + 2 * SPEC.image_bytes  # a cover and a portrait


# -- an album end to end -----------------------------------------------------------------------


async def test_an_album_is_fetched_ingested_and_completed_end_to_end(tmp_path: Path) -> None:
    async with open_fake_downloader(SPEC) as fake, rig(tmp_path, base_url=fake.base_url) as r:
        album_item = await r.request_album(1)
        await r.wait_hook(Hook.OnCatalogChange, within=20)
        await r.wait_hook(Hook.OnDownloadComplete, within=20)

        album = r.item(album_item)
        assert (album["status"], album["bytes_downloaded"]) == (
            "COMPLETED",
            album_total_bytes(r.fake, 1),
        )
        kids = r.children(album_item)
        kinds = sorted((k["content_type"], k["content_id"]) for k in kids)
        assert len(kinds) == len(set(kinds)) == SPEC.tracks_per_album + 2
        assert {k["status"] for k in kids} == {"COMPLETED"}
        album_id = r.fake.album_ids[1]
        catalog_album = r.catalog.get_album(album_id)
        assert catalog_album is not None
        assert [t["id"] for t in catalog_album["tracks"]] == [
            r.fake.track_ids[i] for i in r.fake.album_tracks(1)
        ]
        for track in catalog_album["tracks"]:
            assert (track["audio_available"], track["audio_format"]) == (True, "flac")
            path = r.media.audio_path(track["id"], "flac")
            assert path.read_bytes() == audio_bytes(SPEC, track["id"])
        cover = r.fake.cover_ids[1]
        assert r.media.image_path(cover).read_bytes() == image_bytes(SPEC, cover)
        artist = r.catalog.get_artist(r.fake.artist_ids[0])
        assert artist is not None and artist["album_ids"] == [album_id]
        assert not [name for name in r.media_files() if name.endswith(".part")]
        assert r.processed("TRACK_AUDIO", "success") == SPEC.tracks_per_album
        assert r.processed("ALBUM", "success") == 1
        sample = r.metrics.registry.get_sample_value
        assert sample("pezzottify_download_capacity_used", {"period": "hour"}) == 1
        assert sample("pezzottify_download_capacity_used", {"period": "day"}) == 1
        seconds = "pezzottify_download_processing_seconds_count"
        assert sample(seconds, {"content_type": "TRACK_AUDIO"}) == SPEC.tracks_per_album


async def test_files_that_wait_for_a_slow_disk_are_recorded_together(tmp_path: Path) -> None:
    batches: list[list[str]] = []

    def slow_catalog(r: Rig) -> None:
        record = r.catalog.set_tracks_audio

        def slow(formats: list[tuple[str, str]]) -> None:
            if formats:
                batches.append([track for track, _ in formats])
                time.sleep(0.5)  # the loop fetches the next files meanwhile
            record(formats)

        r.catalog.set_tracks_audio = slow  # type: ignore[method-assign]

    async with rig(tmp_path, before_start=slow_catalog) as r:
        album_item = await r.request_album()
        await r.wait_hook(Hook.OnDownloadComplete, within=20)
        assert r.item(album_item)["status"] == "COMPLETED"
        tracks = [r.fake.track_ids[i] for i in r.fake.album_tracks(0)]
        assert sorted(t for batch in batches for t in batch) == sorted(tracks)
        assert len(batches) < len(tracks), "every file was recorded on its own"
        for track in tracks:
            assert r.media.audio_path(track, "flac").read_bytes() == audio_bytes(SPEC, track)
        assert r.processed("TRACK_AUDIO", "success") == len(tracks)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")
async def test_files_are_published_by_a_thread_of_lower_priority_than_the_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finisher's work gives way to the download on its way and to the event loop; the
    threads that receive the files, and every other, keep the daemon's priority."""
    receiving: set[tuple[int, int]] = set()  # (thread, nice)
    publishing: set[tuple[int, int]] = set()

    def nice() -> tuple[int, int]:
        thread = threading.get_native_id()
        return thread, os.getpriority(os.PRIO_PROCESS, thread)

    receive = DownloaderClient.receive_now

    def noted_receive(self: DownloaderClient, *args: Any) -> Any:
        receiving.add(nice())
        return receive(self, *args)

    monkeypatch.setattr(DownloaderClient, "receive_now", noted_receive)

    def noted_catalog(r: Rig) -> None:
        record = r.catalog.set_tracks_audio

        def noted(formats: list[tuple[str, str]]) -> None:
            publishing.add(nice())
            record(formats)

        r.catalog.set_tracks_audio = noted  # type: ignore[method-assign]

    base = os.getpriority(os.PRIO_PROCESS, 0)
    async with rig(tmp_path, before_start=noted_catalog) as r:
        await r.request_album()
        await r.wait_hook(Hook.OnDownloadComplete, within=20)
        worker = await trio.to_thread.run_sync(nice)
    assert {n for _, n in publishing} == {min(19, base + FINISHER_NICE)}
    assert len(publishing) == 1, "the finisher runs in one thread of its own"
    assert receiving and {n for _, n in receiving} == {base}
    assert (worker[1], nice()[1]) == (base, base)


async def test_a_new_request_wakes_an_idle_processor_at_once(tmp_path: Path) -> None:
    sleepy = DownloadManagerConfig(process_interval_secs=3600)
    async with rig(tmp_path, dm=sleepy) as r:
        await trio.sleep(0.1)  # idle, with an hour to go before it would look again
        await r.request_album()
        await r.wait_hook(Hook.OnDownloadComplete, within=5)


# -- failures and retries ----------------------------------------------------------------------


async def test_server_errors_are_retried_after_their_backoff_until_success(tmp_path: Path) -> None:
    knobs = Knobs()
    knobs.fail("album", 503, times=2)
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        await r.wait_status(album_item, "RETRY_WAITING")
        first = r.item(album_item)
        assert (first["retry_count"], first["next_retry_at"]) == (1, r.wall.now + 60)
        assert first["error_type"] == "connection" and "503" in first["error_message"]
        await trio.sleep(0.2)  # many idle rounds: not retried before it is due
        assert knobs.count("album") == 1
        r.wall.now += 60
        await r.wait_status(album_item, "RETRY_WAITING")  # failed again: 120 s this time
        await r.wait_status(album_item, "COMPLETED", advance=10)  # retried when due
        await r.wait_hook(Hook.OnDownloadComplete)
        album = r.item(album_item)
        assert (album["status"], album["retry_count"]) == ("COMPLETED", 2)
        events = [
            e[0]
            for e in r.rows(
                "SELECT event_type FROM audit_log WHERE queue_item_id = ? ORDER BY id", album_item
            )
        ]
        assert events.count("RETRY_SCHEDULED") == 2
        assert r.processed("ALBUM", "retry") == 2


async def test_a_missing_track_fails_at_once_and_fails_its_album(tmp_path: Path) -> None:
    knobs = Knobs()
    missing = build_catalog(SPEC).track_ids[1]
    knobs.not_found_ids.add(missing)
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        await r.wait_status(album_item, "FAILED")
        album = r.item(album_item)
        assert album["error_message"] == f"1 of {SPEC.tracks_per_album + 2} children failed"
        (failed,) = [k for k in r.children(album_item) if k["status"] == "FAILED"]
        assert (failed["content_id"], failed["error_type"], failed["retry_count"]) == (
            missing, "not_found", 0,
        )  # fmt: skip
        assert knobs.count("audio") == SPEC.tracks_per_album  # one attempt each
        assert r.processed("TRACK_AUDIO", "failed") == 1
        assert r.catalog.track_audio_format(missing) is None
        assert r.hooks.statistics().current_buffer_used == 1  # no OnDownloadComplete
        assert (await r.hooks.receive()) == HookFired(Hook.OnCatalogChange)


async def test_an_unsupported_audio_type_is_a_retried_parse_error(tmp_path: Path) -> None:
    knobs = Knobs()
    knobs.fault("content_type", "audio", times=1, content_type="text/html")
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        waiting = await r.wait_rows("SELECT * FROM queue_items WHERE status = 'RETRY_WAITING'")
        assert (waiting[0]["content_type"], waiting[0]["error_type"]) == ("TRACK_AUDIO", "parse")
        assert "text/html" in waiting[0]["error_message"]
        await r.wait_status(album_item, "COMPLETED", advance=60)
        assert [n for n in r.media_files() if n.endswith((".html", ".part"))] == []


async def test_rate_limited_downloads_wait_without_spending_retries(tmp_path: Path) -> None:
    knobs = Knobs(retry_after_s=7)
    knobs.fail("audio", 429, times=4)
    strict = DownloadManagerConfig(max_retries=1, process_interval_secs=0.02)
    async with rig(tmp_path, knobs=knobs, dm=strict) as r:
        album_item = await r.request_album()
        await r.wait_status(album_item, "COMPLETED", advance=7)
        kids = r.children(album_item)
        assert {(k["status"], k["retry_count"]) for k in kids} == {("COMPLETED", 0)}
        assert r.processed("TRACK_AUDIO", "retry") == 4
        details = r.rows("SELECT details FROM audit_log WHERE event_type = 'RETRY_SCHEDULED'")
        assert len(details) == 4 and all('"rate_limited"' in d[0] for d in details)


async def test_new_albums_wait_while_the_global_capacity_is_used(tmp_path: Path) -> None:
    one_per_hour = DownloadManagerConfig(max_albums_per_hour=1, process_interval_secs=0.02)
    async with rig(tmp_path, dm=one_per_hour) as r:
        first = await r.request_album(0)
        second = await r.request_album(2)
        await r.wait_hook(Hook.OnDownloadComplete)
        await trio.sleep(0.2)  # many claim rounds within the same hour
        assert r.item(first)["status"] == "COMPLETED"
        assert (r.item(second)["status"], r.item(second)["started_at"]) == ("PENDING", None)
        sample = r.metrics.registry.get_sample_value
        assert sample("pezzottify_download_capacity_used", {"period": "hour"}) == 1
        size = "pezzottify_download_queue_size"
        assert sample(size, {"status": "COMPLETED", "priority": "2"}) == SPEC.tracks_per_album + 3
        assert sample(size, {"status": "PENDING", "priority": "2"}) == 1
        r.wall.now += 3600  # the next UTC hour
        await r.wait_hook(Hook.OnDownloadComplete)
        assert r.item(second)["status"] == "COMPLETED"


# -- recovery and shutdown ---------------------------------------------------------------------


async def test_start_up_recovers_interrupted_items_and_sweeps_partial_files(
    tmp_path: Path,
) -> None:
    seeded: dict[str, str] = {}

    def interrupted(r: Rig) -> None:
        item = r.queue.enqueue(ContentType.ALBUM, r.fake.album_ids[0], T0, requested_by="bob")
        r.queue.claim_next(T0, albums_allowed=True)  # left IN_PROGRESS by a "dead" process
        (r.media.audio_dir / "leftover.flac.1234abcd.part").write_bytes(b"partial")
        seeded["item"] = item["id"]

    async with rig(tmp_path, before_start=interrupted) as r:
        assert not (r.media.audio_dir / "leftover.flac.1234abcd.part").exists()
        await r.wait_hook(Hook.OnDownloadComplete)
        item_id = seeded["item"]
        events = [
            e[0]
            for e in r.rows(
                "SELECT event_type FROM audit_log WHERE queue_item_id = ? ORDER BY id", item_id
            )
        ]
        assert events[:3] == ["REQUEST_CREATED", "DOWNLOAD_STARTED", "RECOVERED_AFTER_RESTART"]
        assert r.item(item_id)["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("audio_bytes", "rate"),
    [
        (40_000, 20_000),  # about 2 s per track, the body is still in memory
        (WRITE_BATCH_BYTES + 400_000, 1_000_000),  # a temporary file exists after 1 MiB
    ],
    ids=["in-memory", "on-disk"],
)
async def test_shutdown_mid_download_puts_the_item_back_and_leaves_no_file(
    tmp_path: Path, audio_bytes: int, rate: int
) -> None:
    spec = dataclasses.replace(SPEC, audio_bytes=audio_bytes)
    knobs = Knobs(audio_bytes_per_sec=rate)
    async with (
        open_fake_downloader(spec, knobs) as fake,
        rig(tmp_path, base_url=fake.base_url, shutdown_timeout=0.2, spec=spec) as r,
    ):
        album_item = await r.request_album()
        await audio_streaming(knobs)
        await trio.sleep(0.3)  # well into the body
        if audio_bytes > WRITE_BATCH_BYTES:
            with trio.fail_after(5):
                while not any(n.endswith(".part") for n in r.media_files()):  # noqa: ASYNC110
                    await trio.sleep(0.02)
        started = trio.current_time()
        r.shutdown.set()
        with trio.fail_after(5):
            await r.stopped.wait()
        assert trio.current_time() - started < 2
        tracks = [k for k in r.children(album_item) if k["content_type"] == "TRACK_AUDIO"]
        # The one being fetched and the files claimed with it, waiting their turn.
        claimed = [k for k in tracks if k["started_at"] is not None]
        assert 1 < len(claimed) <= CLAIM_BATCH
        for item in claimed:
            assert (item["status"], item["retry_count"]) == ("PENDING", 0)
            last = r.rows(
                "SELECT event_type, details FROM audit_log WHERE queue_item_id = ? "
                "ORDER BY id DESC LIMIT 1",
                item["id"],
            )[0]
            assert last["event_type"] == "RECOVERED_AFTER_RESTART"
            assert "shutdown" in last["details"]
        assert r.item(album_item)["status"] == "IN_PROGRESS"
        assert [n for n in r.media_files() if not n.endswith(".jpg")] == []


async def test_a_shutdown_past_its_grace_mid_run_releases_the_run_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    # 1.4 MB per track at 2 MB/s: the run's first track is received whole (a temporary file, as
    # it is over one batch) and the second is streaming when the grace runs out.
    spec = dataclasses.replace(SPEC, audio_bytes=WRITE_BATCH_BYTES + 400_000)
    knobs = Knobs(audio_bytes_per_sec=2_000_000)
    async with (
        open_fake_downloader(spec, knobs) as fake,
        rig(tmp_path, base_url=fake.base_url, shutdown_timeout=0.2, spec=spec) as r,
    ):
        album_item = await r.request_album()
        with trio.fail_after(10):
            while knobs.counts["audio"] < 2:  # noqa: ASYNC110
                await trio.sleep(0.01)
        r.shutdown.set()
        with trio.fail_after(5):
            await r.stopped.wait()
        tracks = [k for k in r.children(album_item) if k["content_type"] == "TRACK_AUDIO"]
        claimed = [k for k in tracks if k["started_at"] is not None]
        assert 1 < len(claimed) <= CLAIM_BATCH
        assert {(k["status"], k["retry_count"]) for k in claimed} == {("PENDING", 0)}
        assert [n for n in r.media_files() if n.endswith(".part")] == []
        # Received in full before the grace ran out: taken again on the next run, in one piece.
        assert [n for n in r.media_files() if not n.endswith(".jpg")] == []


async def test_shutdown_during_an_albums_calls_puts_it_back_and_ingests_nothing(
    tmp_path: Path,
) -> None:
    knobs = Knobs(latency_ms=3000)  # every answer takes 3 s: the album's first call is waiting
    async with (
        open_fake_downloader(SPEC, knobs) as fake,
        rig(tmp_path, base_url=fake.base_url, shutdown_timeout=0.2) as r,
    ):
        album_item = await r.request_album()
        with trio.fail_after(5):
            while knobs.counts["album"] == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
        started = trio.current_time()
        r.shutdown.set()
        with trio.fail_after(5):
            await r.stopped.wait()
        assert trio.current_time() - started < 2  # the grace, then a bounded wait on the thread
        item = r.item(album_item)
        assert (item["status"], item["retry_count"], item["children_created"]) == ("PENDING", 0, 0)
        await trio.sleep(3.5)  # the downloader answers the abandoned call: it goes no further
        assert r.catalog.get_album(r.fake.album_ids[0]) is None
        assert r.children(album_item) == []
        assert knobs.counts["album_tracks"] == 0


async def test_shutdown_lets_the_item_in_flight_finish_within_the_grace(tmp_path: Path) -> None:
    knobs = Knobs(audio_bytes_per_sec=80_000)  # half a second per track
    async with (
        open_fake_downloader(SPEC, knobs) as fake,
        rig(tmp_path, base_url=fake.base_url, shutdown_timeout=30) as r,
    ):
        album_item = await r.request_album()
        await audio_streaming(knobs)
        r.shutdown.set()
        with trio.fail_after(5):
            await r.stopped.wait()
        tracks = [k for k in r.children(album_item) if k["content_type"] == "TRACK_AUDIO"]
        assert [k["status"] for k in tracks].count("COMPLETED") == 1
        assert [k["status"] for k in tracks].count("PENDING") == len(tracks) - 1
        (done,) = [k for k in tracks if k["status"] == "COMPLETED"]
        path = r.media.audio_path(done["content_id"], "flac")
        assert path.read_bytes() == audio_bytes(SPEC, done["content_id"])
