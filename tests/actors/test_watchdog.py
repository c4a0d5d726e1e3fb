"""The integrity watchdog: what a scan finds and queues, one scan at a time, cancellation, jobs.

These tests run on the real clock: the scan works in worker threads, and an autojump clock would
jump past every timeout while a thread runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import integrity_scan
from actors import watchdog as watchdog_module
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
from storage import catalog_read
from storage.catalog import (
    AlbumBundle,
    ArtistRecord,
    CatalogStore,
    ImageRecord,
    synthetic_bundles,
    synthetic_id,
    synthetic_image_id,
)
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
    """A running watchdog actor queueing 2 repairs per transaction, so most kinds take several."""
    send, recv = trio.open_memory_channel[ScanRequest](1)
    wake_send, wake_recv = trio.open_memory_channel[WakeProcessor](1)
    actor = IntegrityWatchdog(
        recv, catalog, admin, media, wake=wake_send, batch_size=2, clock=lambda: BASE
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
    # Album 1's three tracks, its cover and its artist's portrait belong to the running download
    # (which has not created its children yet: a crash there, or a scan at that moment, must not
    # queue the portrait a second time beside the child the album will create).
    assert (report["items_queued"], report["items_skipped"]) == (1, 5)
    assert {i["content_type"] for i in queued(admin) if i["request_source"] == "WATCHDOG"} == {
        "TRACK_AUDIO",
    }


async def test_a_featured_artists_portrait_is_left_to_the_album_it_appears_on(
    watchdog: Running,
    catalog: CatalogStore,
    admin: QueueAdminStore,
    bundles: list[AlbumBundle],
) -> None:
    """An artist named only on a track (not as the album's artist) gets a portrait child of that
    album's download too: while the album runs, a scan must not queue the portrait beside it."""
    extra = next(synthetic_bundles(1, 3, artists=1, start=2))  # album 2, by the same artist
    guest = ArtistRecord(synthetic_id("R", 99), "Guest", (), (synthetic_image_id("R", 99),))
    featuring = dataclasses.replace(
        extra.tracks[0], artist_ids=(*extra.tracks[0].artist_ids, guest.id)
    )
    portrait = ImageRecord(guest.image_ids[0], 50_000, 640, 640)
    catalog.ingest_many(
        [
            AlbumBundle(
                extra.album,
                [featuring, *extra.tracks[1:]],
                [*extra.artists, guest],
                [*extra.images, portrait],
            )
        ]
    )
    insert(admin.db, status="IN_PROGRESS", content_id=extra.album.id)
    report = await run_job(watchdog.send)
    # Skipped: album 2's three tracks, its cover, its artist's portrait and the guest's portrait.
    assert (report["missing_artist_images"], report["items_skipped"]) == (2, 6)
    assert report["items_queued"] == 5  # the files of albums 0 and 1 that the fixture lacks
    repairs = {(i["content_type"], i["content_id"]) for i in queued(admin)}
    assert ("ARTIST_IMAGE", portrait.id) not in repairs


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


def missing_keys(admin: QueueAdminStore) -> set[tuple[str, str]]:
    return {(i["content_type"], i["content_id"]) for i in queued(admin)}


async def test_a_missing_audio_folder_fails_the_run_too(
    watchdog: Running, admin: QueueAdminStore, media: MediaLayout, bundles: list[AlbumBundle]
) -> None:
    for entry in media.audio_dir.iterdir():
        entry.unlink()
    media.audio_dir.rmdir()
    with pytest.raises(ScanFailed, match="audio"):
        await run_job(watchdog.send)
    assert queued(admin) == []


async def test_a_file_with_another_extension_than_the_catalogs_is_missing(
    watchdog: Running, admin: QueueAdminStore, catalog: CatalogStore, media: MediaLayout
) -> None:
    bundle = next(iter(synthetic_bundles(1, 3, artists=1)))
    catalog.ingest_many([bundle])
    first, second, third = (t.id for t in bundle.tracks)
    for track in (first, second, third):
        catalog.set_track_audio(track, "flac")
    media.audio_path(first, "flac").write_bytes(b"audio")
    media.audio_path(second, "mp3").write_bytes(b"audio")
    media.audio_path(third, "flac").write_bytes(b"audio")
    media.audio_path(third, "mp3").write_bytes(b"audio")  # a stray second copy is harmless
    report = await run_job(watchdog.send)
    assert report["missing_track_audio"] == 1
    assert ("TRACK_AUDIO", second) in missing_keys(admin)


async def test_part_leftovers_never_count_as_present(
    watchdog: Running, admin: QueueAdminStore, catalog: CatalogStore, media: MediaLayout
) -> None:
    bundle = next(iter(synthetic_bundles(1, 1, artists=1)))
    catalog.ingest_many([bundle])
    track, cover = bundle.tracks[0].id, bundle.album.image_ids[0]
    portrait = bundle.artists[0].image_ids[0]
    catalog.set_track_audio(track, "flac")
    (media.audio_dir / f"{track}.flac.1234abcd.part").write_bytes(b"partial")
    (media.images_dir / f"{cover}.jpg.1234abcd.part").write_bytes(b"partial")
    media.image_path(portrait).write_bytes(b"jpeg")
    report = await run_job(watchdog.send)
    assert (report["missing_track_audio"], report["missing_album_images"]) == (1, 1)
    assert report["missing_artist_images"] == 0
    assert missing_keys(admin) == {("TRACK_AUDIO", track), ("ALBUM_IMAGE", cover)}


# Counts to 30 million (about 10 s here) before returning the usual columns: a scan's statement
# that is still running when the job is cancelled.
SLOW_TRACK_AUDIO = """WITH RECURSIVE n(i) AS (
        SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 30000000)
    SELECT id, album_id FROM tracks WHERE (SELECT max(i) FROM n) >= 0 AND ? IS NOT NULL"""


class WatchedCatalog:
    """The real catalog, telling the test when a statement first checks whether to stop."""

    def __init__(self, inner: CatalogStore, token: trio.lowlevel.TrioToken) -> None:
        self.inner = inner
        self.db = inner.db
        self.token = token
        self.polled = trio.Event()

    def missing_files(
        self, kind: str, names: str, stop: Callable[[], bool]
    ) -> list[tuple[str, str | None]]:
        def watched() -> bool:
            if not self.polled.is_set():
                trio.from_thread.run_sync(self.polled.set, trio_token=self.token)
            return stop()

        return self.inner.missing_files(kind, names, watched)


class PolicyCatalog:
    """The real catalog, noting the scheduling policy of each thread that compares."""

    def __init__(self, inner: CatalogStore, policies: list[int]) -> None:
        self.inner = inner
        self.db = inner.db
        self.policies = policies

    def missing_files(
        self, kind: str, names: str, stop: Callable[[], bool]
    ) -> list[tuple[str, str | None]]:
        self.policies.append(os.sched_getscheduler(0))
        return self.inner.missing_files(kind, names, stop)


@pytest.mark.skipif(sys.platform != "linux", reason="scheduling classes are Linux's")
async def test_a_scan_runs_in_the_idle_class_and_leaves_the_other_threads_as_they_were(
    catalog: CatalogStore,
    admin: QueueAdminStore,
    media: MediaLayout,
    bundles: list[AlbumBundle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The listings and comparisons take only the CPU nothing else wants; the event loop's and
    the API's worker threads keep their normal priority."""
    policies: list[int] = []

    def listing(folder: Path) -> str:
        policies.append(os.sched_getscheduler(0))
        return integrity_scan.list_folder(folder)

    monkeypatch.setattr(watchdog_module, "list_folder", listing)
    send, recv = trio.open_memory_channel[ScanRequest](1)
    actor = IntegrityWatchdog(recv, PolicyCatalog(catalog, policies), admin, media)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        report = await run_job(send)
        nursery.cancel_scope.cancel()
    assert report["missing_track_audio"] == 4
    assert policies == [os.SCHED_IDLE] * 5  # two listings, three comparisons
    worker = await trio.to_thread.run_sync(os.sched_getscheduler, 0)
    assert (os.sched_getscheduler(0), worker) == (os.SCHED_OTHER, os.SCHED_OTHER)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b))
)
def test_a_listing_becomes_the_json_array_of_its_names(names: list[bytes]) -> None:
    """Any names, in slices: the fast path for plain ASCII names and the encoder for the rest."""
    with patch.object(integrity_scan, "ENCODE_SLICE", 3):
        assert json.loads(integrity_scan.json_array(names)) == [os.fsdecode(n) for n in names]


async def test_cancelling_the_job_stops_the_statement_promptly(
    catalog: CatalogStore,
    admin: QueueAdminStore,
    media: MediaLayout,
    bundles: list[AlbumBundle],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(catalog_read.MISSING_FILES, "track_audio", SLOW_TRACK_AUDIO)
    watched = WatchedCatalog(catalog, trio.lowlevel.current_trio_token())
    send, recv = trio.open_memory_channel[ScanRequest](1)
    actor = IntegrityWatchdog(recv, watched, admin, media, batch_size=2)
    job = integrity_watchdog_job(send)
    assert job.shutdown is ShutdownBehavior.CANCELLABLE
    assert job.schedule.interval_secs == 86400 and job.schedule.hooks == (Hook.OnStartup,)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            with trio.CancelScope() as job_scope:
                async with trio.open_nursery() as inner:
                    inner.start_soon(job.run)
                    await watched.polled.wait()
                    cancelled_at = trio.current_time()
                    job_scope.cancel()
            # The actor stays serial: the next request waits for the abandoned scan to stop.
            monkeypatch.undo()
            report = await run_job(send)
            stopped_after = trio.current_time() - cancelled_at
            nursery.cancel_scope.cancel()
    assert stopped_after < 1.0, f"the cancelled scan took {stopped_after:.2f} s to stop"
    assert report["items_queued"] == 6
    events = [e["event_type"] for e in audit_rows(admin.db) if "SCAN" in e["event_type"]]
    assert events == ["WATCHDOG_SCAN_STARTED", "WATCHDOG_SCAN_STARTED", "WATCHDOG_SCAN_COMPLETED"]
    assert "integrity scan failed" not in caplog.text  # a cancel is not a failure
    # The interrupted reader went back to the pool as it came: no progress handler, no pragma.
    for conn in catalog.db._all_readers:
        assert conn.execute("PRAGMA temp_store").fetchone()[0] == 0
        assert conn.execute(SLOW_TRACK_AUDIO.replace("30000000", "300000"), ("[]",)).fetchall()


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
