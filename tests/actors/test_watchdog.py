"""The integrity watchdog: what a scan finds and queues, one scan at a time, cancellation, jobs.

These tests run on the real clock: the scan works in worker threads, and an autojump clock would
jump past every timeout while a thread runs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from actors.jobs.base import ShutdownBehavior
from actors.jobs.download_jobs import (
    ScanFailed,
    audit_log_cleanup_job,
    download_jobs,
    integrity_watchdog_job,
)
from actors.messages import Hook, ScanRequest, WakeProcessor
from actors.watchdog import IntegrityWatchdog
from daemon.config import Config, DownloadManagerConfig, JobSettings
from storage.catalog import AlbumBundle, CatalogStore, synthetic_bundles
from storage.files import MediaLayout
from storage.queue_admin import QueueAdminStore
from storage.queue_schema import AuditEvent
from tests.support.queue_rows import BASE, audit, audit_rows, insert, open_store

TIMEOUT = 20


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[CatalogStore]:
    store = CatalogStore.open(tmp_path / "catalog.db")
    yield store
    store.db.close()


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[QueueAdminStore]:
    store = open_store(tmp_path)
    yield store
    store.db.close()


@pytest.fixture
def media(tmp_path: Path) -> MediaLayout:
    return MediaLayout(tmp_path / "media")


@pytest.fixture
def bundles(catalog: CatalogStore, media: MediaLayout) -> list[AlbumBundle]:
    """Two albums of three tracks by one artist; some files present, some not.

    Track 0 (flac) and 1 (mp3) have audio; track 2 has a file the catalog does not know about;
    track 3 is marked flac but only an .ogg file exists; tracks 4 and 5 were never downloaded
    (track 4 has a leftover .part file). Album 0's cover exists; album 1's cover and the
    portrait do not.
    """
    found = list(synthetic_bundles(2, 3, artists=1))
    catalog.ingest_many(found)
    tracks = [t.id for b in found for t in b.tracks]
    for k, ext in ((0, "flac"), (1, "mp3"), (3, "flac")):
        catalog.set_track_audio(tracks[k], ext)
    for k, ext in ((0, "flac"), (1, "mp3"), (2, "flac"), (3, "ogg")):
        media.audio_path(tracks[k], ext).write_bytes(b"audio")
    (media.audio_dir / f"{tracks[4]}.flac.1234abcd.part").write_bytes(b"partial")
    media.image_path(found[0].album.image_ids[0]).write_bytes(b"jpeg")
    return found


class Running(SimpleNamespace):
    send: trio.MemorySendChannel[ScanRequest]
    wakes: trio.MemoryReceiveChannel[WakeProcessor]


@pytest.fixture
async def watchdog(
    catalog: CatalogStore, admin: QueueAdminStore, media: MediaLayout
) -> AsyncIterator[Running]:
    """A running watchdog actor with page size 2, so every listing spans several pages."""
    send, recv = trio.open_memory_channel[ScanRequest](1)
    wake_send, wake_recv = trio.open_memory_channel[WakeProcessor](1)
    actor = IntegrityWatchdog(
        recv, catalog, admin, media, wake=wake_send, page_size=2, clock=lambda: BASE
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        yield Running(send=send, wakes=wake_recv, actor=actor)
        nursery.cancel_scope.cancel()


async def run_job(send: trio.MemorySendChannel[ScanRequest]) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        report = await integrity_watchdog_job(send).run()
    assert report is not None
    return report


def queued(admin: QueueAdminStore) -> list[dict[str, Any]]:
    return admin.requests(limit=500)[0]


async def test_scan_queues_one_repair_per_missing_file(
    watchdog: Running, admin: QueueAdminStore, bundles: list[AlbumBundle]
) -> None:
    report = await run_job(watchdog.send)
    assert {k: v for k, v in report.items() if k != "scan_duration_ms"} == {
        "missing_track_audio": 4,
        "missing_album_images": 1,
        "missing_artist_images": 1,
        "items_queued": 6,
        "items_skipped": 0,
    }
    assert isinstance(report["scan_duration_ms"], int)
    tracks = [t.id for b in bundles for t in b.tracks]
    items = queued(admin)
    assert {(i["content_type"], i["content_id"]) for i in items} == {
        *(("TRACK_AUDIO", tracks[k]) for k in (2, 3, 4, 5)),
        ("ALBUM_IMAGE", bundles[1].album.image_ids[0]),
        ("ARTIST_IMAGE", bundles[0].artists[0].image_ids[0]),
    }
    assert {(i["priority"], i["request_source"], i["parent_id"]) for i in items} == {
        (1, "WATCHDOG", None)
    }
    reasons = [json.loads(e["details"])["reason"] for e in audit_rows(admin.db, "WATCHDOG_QUEUED")]
    assert (
        sorted(reasons) == ["missing_album_image", "missing_artist_image"] + ["missing_audio"] * 4
    )
    started, completed = (
        audit_rows(admin.db, e) for e in ("WATCHDOG_SCAN_STARTED", "WATCHDOG_SCAN_COMPLETED")
    )
    assert len(started) == len(completed) == 1
    assert json.loads(completed[0]["details"]) == report
    assert completed[0]["request_source"] == "WATCHDOG"
    assert isinstance(watchdog.wakes.receive_nowait(), WakeProcessor)


async def test_second_scan_while_repairs_are_active_queues_nothing_new(
    watchdog: Running, admin: QueueAdminStore, bundles: list[AlbumBundle]
) -> None:
    await run_job(watchdog.send)
    watchdog.wakes.receive_nowait()
    again = await run_job(watchdog.send)
    assert (again["items_queued"], again["items_skipped"], again["missing_track_audio"]) == (
        0,
        6,
        4,
    )
    assert len(queued(admin)) == 6
    assert len(audit_rows(admin.db, "WATCHDOG_QUEUED")) == 6
    with pytest.raises(trio.WouldBlock):
        watchdog.wakes.receive_nowait()  # nothing new to process
    # Once a repair has ended (here: failed for good) the file is fair game again.
    with admin.db.write() as conn:
        conn.execute("UPDATE queue_items SET status = 'FAILED' WHERE content_type = 'ARTIST_IMAGE'")
    third = await run_job(watchdog.send)
    assert (third["items_queued"], third["items_skipped"]) == (1, 5)


async def test_files_of_an_album_being_downloaded_are_left_to_it(
    watchdog: Running, admin: QueueAdminStore, bundles: list[AlbumBundle]
) -> None:
    insert(admin.db, status="IN_PROGRESS", content_id=bundles[1].album.id)
    report = await run_job(watchdog.send)
    # Album 1's three tracks and its cover belong to the running download.
    assert (report["items_queued"], report["items_skipped"]) == (2, 4)
    assert {i["content_type"] for i in queued(admin) if i["request_source"] == "WATCHDOG"} == {
        "TRACK_AUDIO",
        "ARTIST_IMAGE",
    }


async def test_a_missing_media_folder_fails_the_run_not_the_actor(
    watchdog: Running, admin: QueueAdminStore, media: MediaLayout, bundles: list[AlbumBundle]
) -> None:
    for entry in media.images_dir.iterdir():
        entry.unlink()
    media.images_dir.rmdir()
    with pytest.raises(ScanFailed, match="images"):
        await run_job(watchdog.send)
    assert queued(admin) == []  # an unmounted disk must not queue the whole catalog
    media.images_dir.mkdir()
    report = await run_job(watchdog.send)
    assert report["missing_album_images"] == 2


async def test_scans_run_one_at_a_time(
    watchdog: Running, admin: QueueAdminStore, bundles: list[AlbumBundle]
) -> None:
    reports: list[dict[str, Any]] = []

    async def one() -> None:
        reports.append(await run_job(watchdog.send))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    events = [e["event_type"] for e in audit_rows(admin.db) if "SCAN" in e["event_type"]]
    assert events == ["WATCHDOG_SCAN_STARTED", "WATCHDOG_SCAN_COMPLETED"] * 2
    assert sorted(r["items_queued"] for r in reports) == [0, 6]


class GatedCatalog:
    """A catalog whose first track page waits until the test lets it go."""

    def __init__(self, inner: CatalogStore, token: trio.lowlevel.TrioToken) -> None:
        self.inner = inner
        self.db = inner.db
        self.token = token
        self.reached = trio.Event()
        self.release = threading.Event()
        self.track_pages = 0
        self.album_image_page = inner.album_image_page
        self.artist_image_page = inner.artist_image_page

    def track_audio_page(self, after: str, limit: int) -> list[tuple[str, str | None, str]]:
        self.track_pages += 1
        if self.track_pages == 1:
            trio.from_thread.run_sync(self.reached.set, trio_token=self.token)
            self.release.wait(TIMEOUT)
        return self.inner.track_audio_page(after, limit)


async def test_cancelling_the_job_cancels_the_scan(
    catalog: CatalogStore, admin: QueueAdminStore, media: MediaLayout, bundles: list[AlbumBundle]
) -> None:
    gated = GatedCatalog(catalog, trio.lowlevel.current_trio_token())
    send, recv = trio.open_memory_channel[ScanRequest](1)
    actor = IntegrityWatchdog(recv, gated, admin, media, page_size=2)
    job = integrity_watchdog_job(send)
    assert job.shutdown is ShutdownBehavior.CANCELLABLE
    assert job.schedule.interval_secs == 86400 and job.schedule.hooks == (Hook.OnStartup,)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            with trio.CancelScope() as job_scope:
                async with trio.open_nursery() as inner:
                    inner.start_soon(job.run)
                    await gated.reached.wait()
                    job_scope.cancel()
            gated.release.set()
            # The actor stays serial: this scan starts only after the abandoned one stopped.
            report = await run_job(send)
            nursery.cancel_scope.cancel()
    assert report["items_queued"] == 6
    events = [e["event_type"] for e in audit_rows(admin.db) if "SCAN" in e["event_type"]]
    assert events == ["WATCHDOG_SCAN_STARTED", "WATCHDOG_SCAN_STARTED", "WATCHDOG_SCAN_COMPLETED"]
    # 6 tracks in pages of 2: the cancelled scan stopped after its first page.
    assert gated.track_pages == 1 + 4


async def test_a_request_cancelled_before_it_is_served_is_skipped(
    catalog: CatalogStore, admin: QueueAdminStore, media: MediaLayout
) -> None:
    send, recv = trio.open_memory_channel[ScanRequest](1)
    reply_send, reply_recv = trio.open_memory_channel[tuple[str, Any]](1)
    request = ScanRequest(reply_send)
    request.cancel.set()
    send.send_nowait(request)
    send.close()
    with trio.fail_after(TIMEOUT):
        await IntegrityWatchdog(recv, catalog, admin, media).run()
        with pytest.raises(trio.EndOfChannel):
            await reply_recv.receive()
    assert audit_rows(admin.db) == []


# -- audit_log_cleanup and job registration ---------------------------------------------------


async def test_audit_cleanup_deletes_entries_past_retention(admin: QueueAdminStore) -> None:
    day = 86400
    for age_days in (0, 1, 29, 31, 400):
        audit(admin.db, AuditEvent.WATCHDOG_SCAN_STARTED, None, BASE - age_days * day)
    job = audit_log_cleanup_job(admin, 30, clock=lambda: BASE)
    assert job.shutdown is ShutdownBehavior.WAIT_FOR_COMPLETION
    assert job.schedule.interval_secs == day
    report = await job.run()
    assert report is not None and report["deleted_entries"] == 2
    assert [e["timestamp"] for e in audit_rows(admin.db)] == [BASE - k * day for k in (0, 1, 29)]
    keep_all = await audit_log_cleanup_job(admin, 0, clock=lambda: BASE + 10**9).run()
    assert keep_all == {"deleted_entries": 0, "retention_days": 0}
    assert len(audit_rows(admin.db)) == 3


def test_download_jobs_follow_the_configuration(tmp_path: Path, admin: QueueAdminStore) -> None:
    send, _ = trio.open_memory_channel[ScanRequest](1)

    def jobs(**kw: Any) -> dict[str, Any]:
        config = Config(db_dir=tmp_path, media_path=tmp_path, **kw)
        context = SimpleNamespace(
            config=config, queue_admin=admin if config.download_enabled else None
        )
        return {job.id: job for job in download_jobs(context, send)}  # type: ignore[arg-type]

    assert jobs() == {}
    both = jobs(downloader_url="http://127.0.0.1:9")
    assert set(both) == {"integrity_watchdog", "audit_log_cleanup"}
    tuned = jobs(
        downloader_url="http://127.0.0.1:9",
        download_manager=DownloadManagerConfig(audit_log_retention_days=7),
        background_jobs={
            "integrity_watchdog": JobSettings(interval_hours=6),
            "audit_log_cleanup": JobSettings(enabled=False),
        },
    )
    assert set(tuned) == {"integrity_watchdog"}
    assert tuned["integrity_watchdog"].schedule.interval_secs == 6 * 3600
