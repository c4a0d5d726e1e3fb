"""The queue processor against the fake downloader: an album end to end, retries, 404s, 429s,
the global capacity, waking, recovery and a shutdown in the middle of a download.

The fake runs in-process behind `httpx.ASGITransport`, and the stores and the media folder run
their blocking calls on the event loop (`Offload.inline()`), so every test runs under trio's
autojump clock: latencies, throttled bodies, backoffs and graces pass in virtual time, and
`settle()` waits until the processor has nothing left to do but wait, with no polling. The
processor's wall clock is a `FakeWall` the tests move by hand (minutes of backoff, the next UTC
hour).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from actors.downloader import DownloaderClient
from actors.in_flight import InFlight
from actors.messages import Hook, HookFired, WakeProcessor
from actors.processor import Processor
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
)
from storage import catalog_schema
from storage.catalog import CatalogStore
from storage.db import Database
from storage.files import WRITE_BATCH_BYTES, MediaLayout
from storage.offload import Offload
from storage.queue import MIGRATIONS, QueueStore, RequestStore
from tests.support.asgi import StreamingASGITransport

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
    requests: RequestStore  # over the same database: how albums get queued
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
    in_flight: InFlight  # what the processor works on, for tests that cancel it

    async def request_album(self, index: int = 0) -> str:
        album_id = self.fake.album_ids[index]
        queued = await self.requests.db.run(
            self.requests.request_album, "alice", album_id, "Album", "Artist", self.wall(), False
        )
        with contextlib.suppress(trio.WouldBlock):  # a wake-up is already pending
            self.wake.send_nowait(WakeProcessor())
        return str(queued.request_id)

    async def wait_hook(self, hook: Hook, within: float = 10) -> None:
        with trio.fail_after(within):
            while (await self.hooks.receive()) != HookFired(hook):
                pass

    async def settle(self) -> None:
        """Wait until the processor has done all it can now and waits for a wake-up or a
        timer (no task can run: nothing is left to do without time passing)."""
        await wait_all_tasks_blocked()

    async def later(self, seconds: int) -> None:
        """Let `seconds` pass on the wall clock and the processor look again."""
        self.wall.now += seconds
        with contextlib.suppress(trio.WouldBlock):
            self.wake.send_nowait(WakeProcessor())
        await self.settle()

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        with self.queue.db.read() as conn:
            return conn.execute(sql, params).fetchall()

    def item(self, item_id: str) -> sqlite3.Row:
        return self.rows("SELECT * FROM queue_items WHERE id = ?", item_id)[0]

    def last_audit(self, item_id: str) -> sqlite3.Row:
        """The item's newest audit entry (event_type, details)."""
        return self.rows(
            "SELECT event_type, details FROM audit_log WHERE queue_item_id = ? "
            "ORDER BY id DESC LIMIT 1",
            item_id,
        )[0]

    def children(self, parent_id: str) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM queue_items WHERE parent_id = ? ORDER BY seq", parent_id)

    def processed(self, content_type: str, result: str) -> float:
        labels = {"content_type": content_type, "result": result}
        value = self.metrics.registry.get_sample_value(
            "pezzottify_download_processed_total", labels
        )
        return value or 0.0

    def failures(self, content_type: str, error_type: str) -> float:
        labels = {"content_type": content_type, "error_type": error_type}
        value = self.metrics.registry.get_sample_value("pezzottify_download_failures_total", labels)
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
    dm: DownloadManagerConfig = DM,
    shutdown_timeout: float = 30,
    before_start: Any = None,
    spec: CatalogSpec = SPEC,
    wall: FakeWall | None = None,
    disk: Offload | None = None,
) -> AsyncIterator[Rig]:
    """The processor at work; `disk` is the media folder's way off the loop (inline unless
    a test gives a slower one)."""
    knobs = knobs if knobs is not None else Knobs()
    fake = build_catalog(spec)
    transports = StreamingASGITransport.open(create_app(fake, knobs))
    inline = Offload.inline()
    queue_db = Database(tmp_path / "q.db", MIGRATIONS, synchronous="OFF", offload=inline)
    queue = QueueStore(queue_db, dm)
    catalog_db = Database(tmp_path / "catalog.db", catalog_schema.MIGRATIONS, offload=inline)
    catalog = CatalogStore(catalog_db)
    media = MediaLayout(tmp_path / "media", offload=disk if disk is not None else inline)
    metrics = Metrics()
    wake_send, wake_recv = trio.open_memory_channel[WakeProcessor](1)
    hook_send, hook_recv = trio.open_memory_channel[Any](64)
    shutdown, stopped = trio.Event(), trio.Event()
    wall = wall if wall is not None else FakeWall()
    requests = RequestStore(queue_db, dm)
    r = Rig(
        queue, requests, catalog, media, metrics, fake, knobs, wake_send, hook_recv, shutdown,
        stopped, wall, InFlight(),
    )  # fmt: skip
    if before_start is not None:
        before_start(r)

    async def run_processor(
        processor: Processor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await processor.run(task_status=task_status)
        stopped.set()

    try:
        async with transports as transport, trio.open_nursery() as nursery:
            client = DownloaderClient("http://fake", 30, transport=transport)
            processor = Processor(
                queue, catalog, client, media, metrics, dm, wake_recv, hook_send,
                shutdown=shutdown, shutdown_timeout=shutdown_timeout, clock=wall,
                in_flight=r.in_flight,
            )  # fmt: skip
            await nursery.start(run_processor, processor)
            yield r
            shutdown.set()
            with trio.fail_after(10):
                await stopped.wait()
            await client.aclose()
    finally:
        queue.db.close()
        catalog.db.close()


def album_total_bytes(fake: Catalog, index: int) -> int:
    tracks = fake.album_tracks(index)
    return len(tracks) * SPEC.audio_bytes + 2 * SPEC.image_bytes  # a cover and a portrait


def statuses(items: list[sqlite3.Row]) -> list[str]:
    return [i["status"] for i in items]


# -- an album end to end -----------------------------------------------------------------------


async def test_an_album_is_fetched_ingested_and_completed_end_to_end(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    async with rig(tmp_path) as r:
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


async def test_files_are_downloaded_one_after_the_other_in_claim_order(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    """One download at a time (the downloader refuses a second audio download with 429): the
    children in the order they were created, never two downloading at once."""
    knobs = Knobs(audio_bytes_per_sec=40_000)  # a second per track
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        await r.wait_hook(Hook.OnDownloadComplete, within=30)
        started = r.rows(
            "SELECT queue_item_id FROM audit_log WHERE event_type = 'DOWNLOAD_STARTED' "
            "AND queue_item_id <> ? ORDER BY id",
            album_item,
        )
        assert [s[0] for s in started] == [k["id"] for k in r.children(album_item)]
        assert knobs.count("audio") == SPEC.tracks_per_album  # no 429, no second attempt


async def test_a_new_request_wakes_an_idle_processor_at_once(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    sleepy = DownloadManagerConfig(process_interval_secs=3600)
    async with rig(tmp_path, dm=sleepy) as r:
        await r.settle()  # idle, with an hour to go before it would look again
        await r.request_album()
        await r.wait_hook(Hook.OnDownloadComplete, within=5)


# -- failures and retries ----------------------------------------------------------------------


async def test_server_errors_are_retried_after_their_backoff_until_success(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs()
    knobs.fail("album", 503, times=2)
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        await r.settle()
        first = r.item(album_item)
        assert first["status"] == "RETRY_WAITING"
        assert (first["retry_count"], first["next_retry_at"]) == (1, r.wall.now + 60)
        assert first["error_type"] == "connection" and "503" in first["error_message"]
        await trio.sleep(5)  # many idle rounds: not retried before it is due
        assert knobs.count("album") == 1
        await r.later(60)
        assert (r.item(album_item)["status"], r.item(album_item)["retry_count"]) == (
            "RETRY_WAITING", 2,
        )  # fmt: skip
        await r.later(120)  # retried when due
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
        assert r.failures("ALBUM", "connection") == 2


async def test_a_missing_track_fails_at_once_and_fails_its_album(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs()
    missing = build_catalog(SPEC).track_ids[1]
    knobs.not_found_ids.add(missing)
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        await r.settle()
        album = r.item(album_item)
        assert album["status"] == "FAILED"
        assert album["error_message"] == f"1 of {SPEC.tracks_per_album + 2} children failed"
        (failed,) = [k for k in r.children(album_item) if k["status"] == "FAILED"]
        assert (failed["content_id"], failed["error_type"], failed["retry_count"]) == (
            missing, "not_found", 0,
        )  # fmt: skip
        assert knobs.count("audio") == SPEC.tracks_per_album  # one attempt each
        assert r.processed("TRACK_AUDIO", "failed") == 1
        assert r.failures("TRACK_AUDIO", "not_found") == 1
        assert r.catalog.track_audio_format(missing) is None
        assert r.hooks.statistics().current_buffer_used == 1  # no OnDownloadComplete
        assert (await r.hooks.receive()) == HookFired(Hook.OnCatalogChange)


async def test_an_unsupported_audio_type_is_a_retried_parse_error(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs()
    knobs.fault("content_type", "audio", times=1, content_type="text/html")
    async with rig(tmp_path, knobs=knobs) as r:
        album_item = await r.request_album()
        await r.settle()
        waiting = r.rows("SELECT * FROM queue_items WHERE status = 'RETRY_WAITING'")
        assert (waiting[0]["content_type"], waiting[0]["error_type"]) == ("TRACK_AUDIO", "parse")
        assert "text/html" in waiting[0]["error_message"]
        await r.later(60)
        assert r.item(album_item)["status"] == "COMPLETED"
        assert [n for n in r.media_files() if n.endswith((".html", ".part"))] == []


async def test_rate_limited_downloads_wait_without_spending_retries(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(retry_after_s=7)
    knobs.fail("audio", 429, times=4)
    strict = DownloadManagerConfig(max_retries=1, process_interval_secs=0.02)
    async with rig(tmp_path, knobs=knobs, dm=strict) as r:
        album_item = await r.request_album()
        await r.settle()
        for _ in range(4):
            await r.later(7)
        assert r.item(album_item)["status"] == "COMPLETED"
        kids = r.children(album_item)
        assert {(k["status"], k["retry_count"]) for k in kids} == {("COMPLETED", 0)}
        assert r.processed("TRACK_AUDIO", "retry") == 4
        details = r.rows("SELECT details FROM audit_log WHERE event_type = 'RETRY_SCHEDULED'")
        assert len(details) == 4 and all('"rate_limited"' in d[0] for d in details)


async def test_new_albums_wait_while_the_global_capacity_is_used(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    one_per_hour = DownloadManagerConfig(max_albums_per_hour=1, process_interval_secs=0.02)
    async with rig(tmp_path, dm=one_per_hour) as r:
        first = await r.request_album(0)
        second = await r.request_album(2)
        await r.wait_hook(Hook.OnDownloadComplete)
        await trio.sleep(5)  # many claim rounds within the same hour
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
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
) -> None:
    seeded: dict[str, str] = {}

    def interrupted(r: Rig) -> None:
        item = r.requests.request_album("bob", r.fake.album_ids[0], "Album", "Artist", T0, False)
        r.queue.claim(T0)  # left IN_PROGRESS by a "dead" process
        (r.media.audio_dir / "leftover.flac.1234abcd.part").write_bytes(b"partial")
        seeded["item"] = str(item.request_id)

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
    ("audio_bytes", "rate", "into"),
    [
        (40_000, 20_000, 1.0),  # 2 s per track: halfway, the body is still in memory
        (WRITE_BATCH_BYTES + 400_000, 500_000, 2.5),  # a temporary file exists after 1 MiB
    ],
    ids=["in-memory", "on-disk"],
)
async def test_shutdown_mid_download_puts_the_item_back_and_leaves_no_file(
    autojump_clock: trio.abc.Clock, tmp_path: Path, audio_bytes: int, rate: int, into: float
) -> None:
    spec = dataclasses.replace(SPEC, audio_bytes=audio_bytes)
    knobs = Knobs(audio_bytes_per_sec=rate)
    async with rig(tmp_path, knobs=knobs, shutdown_timeout=0.2, spec=spec) as r:
        album_item = await r.request_album()
        await knobs.wait_until(lambda: knobs.active_audio > 0)
        await trio.sleep(into)  # well into the first track's body (in virtual time)
        if audio_bytes > WRITE_BATCH_BYTES:
            assert any(n.endswith(".part") for n in r.media_files())
        started = trio.current_time()
        r.shutdown.set()
        with trio.fail_after(5):
            await r.stopped.wait()
        assert trio.current_time() - started < 0.3  # the grace, then at once
        tracks = [k for k in r.children(album_item) if k["content_type"] == "TRACK_AUDIO"]
        (claimed,) = [k for k in tracks if k["started_at"] is not None]  # the one in flight
        assert (claimed["status"], claimed["retry_count"]) == ("PENDING", 0)
        last = r.last_audit(claimed["id"])
        assert last["event_type"] == "RECOVERED_AFTER_RESTART"
        assert "shutdown" in last["details"]
        assert r.item(album_item)["status"] == "IN_PROGRESS"
        assert [n for n in r.media_files() if not n.endswith(".jpg")] == []


async def test_shutdown_during_an_albums_calls_puts_it_back_and_ingests_nothing(
    autojump_clock: trio.abc.Clock,
    tmp_path: Path,
) -> None:
    knobs = Knobs(latency_ms=3000)  # every answer takes 3 s: the album's first call is waiting
    async with rig(tmp_path, knobs=knobs, shutdown_timeout=0.2) as r:
        album_item = await r.request_album()
        await knobs.wait_until(lambda: knobs.counts["album"] > 0)
        started = trio.current_time()
        r.shutdown.set()
        with trio.fail_after(5):
            await r.stopped.wait()
        assert trio.current_time() - started < 0.3
        item = r.item(album_item)
        assert (item["status"], item["retry_count"], item["children_created"]) == ("PENDING", 0, 0)
        await trio.sleep(3.5)  # when the downloader would have answered: nothing goes further
        assert r.catalog.get_album(r.fake.album_ids[0]) is None
        assert r.children(album_item) == []
        assert knobs.counts["album_tracks"] == 0


async def test_shutdown_lets_the_item_in_flight_finish_within_the_grace(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    knobs = Knobs(audio_bytes_per_sec=80_000)  # half a second per track
    async with rig(tmp_path, knobs=knobs, shutdown_timeout=30) as r:
        album_item = await r.request_album()
        await knobs.wait_until(lambda: knobs.active_audio > 0)
        r.shutdown.set()
        with trio.fail_after(5):
            await r.stopped.wait()
        tracks = [k for k in r.children(album_item) if k["content_type"] == "TRACK_AUDIO"]
        assert statuses(tracks).count("COMPLETED") == 1
        assert statuses(tracks).count("PENDING") == len(tracks) - 1
        (done,) = [k for k in tracks if k["status"] == "COMPLETED"]
        path = r.media.audio_path(done["content_id"], "flac")
        assert path.read_bytes() == audio_bytes(SPEC, done["content_id"])
