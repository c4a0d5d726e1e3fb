"""The integrity watchdog: what a scan finds and queues, one scan at a time, cancellation, jobs,
and giving up on what the downloader no longer has (across days of scans, with the processor).

These tests run on the real clock: the scan works in worker threads, and an autojump clock would
jump past every timeout while a thread runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import integrity_scan
from actors.downloader import DownloaderClient
from actors.jobs.base import ShutdownBehavior
from actors.jobs.download_jobs import (
    ScanFailed,
    audit_log_cleanup_job,
    download_jobs,
    integrity_watchdog_job,
)
from actors.messages import Hook, ScanRequest, WakeProcessor
from actors.processor import Processor
from actors.watchdog import IntegrityWatchdog
from api.app import create_app
from bench.seed import synthetic_bundles, synthetic_id, synthetic_image_id
from daemon.config import Config, DownloadManagerConfig, JobSettings
from daemon.root import Root
from daemon.services import close_root
from fake_downloader import CatalogSpec, Knobs, build_catalog
from fake_downloader import create_app as fake_downloader_app
from storage import catalog_read
from storage.catalog import AlbumBundle, ArtistRecord, CatalogStore, ImageRecord
from storage.files import MediaLayout
from storage.queue import AuditEvent, ErrorType, QueueAdminStore, QueueStore
from storage.queue.model import DAY, TERMINAL
from storage.queue.notices import NoticeStore
from storage.users import Role
from tests.conftest import login, make_user, open_test_root
from tests.support.queue_rows import BASE, audit, audit_rows, insert, open_store

TIMEOUT = 20
# The downloader's own catalog: none of the synthetic catalog's ids are in it (each is a 404).
FAKE_SPEC = CatalogSpec(seed=1, artists=1, albums_per_artist=1, tracks_per_album=1)


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
        "items_unavailable": 0,
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
    SELECT id, album_id FROM tracks WHERE (SELECT max(i) FROM n) >= 0"""


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


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b))
)
def test_a_listing_becomes_the_json_array_of_its_names(names: list[bytes]) -> None:
    """Any names: the fast path for plain ASCII names and the encoder for the rest."""
    assert json.loads(integrity_scan.json_array(names)) == [os.fsdecode(n) for n in names]


def test_a_folder_is_listed_in_slices_of_its_names(tmp_path: Path) -> None:
    names = {f"{n:04}.flac" for n in range(10)} | {"caf\u00e9.jpg", 'a"b.part'}
    for name in names:
        (tmp_path / name).write_bytes(b"")
    with patch.object(integrity_scan, "ENCODE_SLICE", 3):
        slices = [json.loads(text) for text in integrity_scan.list_folder(tmp_path)]
    assert [len(s) for s in slices] == [3, 3, 3, 3]
    assert {name for s in slices for name in s} == names
    with pytest.raises(FileNotFoundError):
        next(integrity_scan.list_folder(tmp_path / "unmounted"))


def test_a_listing_gives_the_interpreter_lock_away_every_few_hundred_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop's thread waits at most a few hundred names for the lock, not 5 ms."""
    for n in range(1000):
        (tmp_path / f"{n:04}.flac").write_bytes(b"")
    handovers: list[int] = []
    monkeypatch.setattr(integrity_scan.os, "sched_yield", lambda: handovers.append(1))
    monkeypatch.setattr(integrity_scan, "HANDOFF_EVERY", 100)
    slices = [json.loads(text) for text in integrity_scan.list_folder(tmp_path)]
    assert [len(s) for s in slices] == [1000]
    assert len(handovers) >= 10


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
    # The interrupted reader went back to the pool as it came: no progress handler, no pragma,
    # no temporary table.
    for conn in catalog.db._all_readers:
        assert conn.execute("PRAGMA temp_store").fetchone()[0] == 0
        assert conn.execute("SELECT name FROM temp.sqlite_master").fetchall() == []
        assert conn.execute(SLOW_TRACK_AUDIO.replace("30000000", "300000")).fetchall()


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


def seed_notices(admin: QueueAdminStore, rows: list[tuple[str, str, int]]) -> None:
    """Outbox rows `(event, state, age in days)` (finished that long ago, unless pending) and
    inbox rows `(event, "read"/"unread", age in days)`, straight into the tables."""
    day = 86400
    with admin.db.write() as conn:
        for event, state, age in rows:
            at = BASE - age * day
            if event == "inbox":
                conn.execute(
                    """INSERT INTO inbox (user, created_at, event, title, body, read)
                        VALUES ('alice', ?, 'request.completed', 't', 'b', ?)""",
                    (at, state == "read"),
                )
                continue
            conn.execute(
                """INSERT INTO outbox (created_at, event, user, title, body, state, attempts,
                    next_attempt_at, finished_at) VALUES (?, ?, 'alice', 't', 'b', ?, 1, ?, ?)""",
                (at, event, state, at, None if state == "pending" else at),
            )


def notice_ages(admin: QueueAdminStore) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    day = 86400
    with admin.db.read() as conn:
        outbox = conn.execute("SELECT state, created_at FROM outbox ORDER BY id").fetchall()
        inbox = conn.execute("SELECT read, created_at FROM inbox ORDER BY id").fetchall()
    return (
        [(state, (BASE - at) // day) for state, at in outbox],
        [("read" if read else "unread", (BASE - at) // day) for read, at in inbox],
    )


async def test_audit_cleanup_bounds_the_outbox_and_the_inbox(
    admin: QueueAdminStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivered notifications go after a week, failed ones with the audit retention, inbox
    items (read or not) after event_retention_days; pending ones stay whatever their age. In
    chunks: a chunk of 2 here, so several transactions."""
    monkeypatch.setattr("actors.jobs.download_jobs.NOTICE_CHUNK", 2)
    seed_notices(admin, [
        ("request.completed", "sent", 8), ("request.completed", "sent", 6),
        ("request.completed", "skipped", 9), ("request.completed", "sent", 10),
        ("request.failed", "failed", 31), ("request.failed", "failed", 29),
        ("request.completed", "pending", 400),
        ("inbox", "read", 31), ("inbox", "unread", 45), ("inbox", "read", 29),
        ("inbox", "unread", 1),
    ])  # fmt: skip
    notices = NoticeStore(admin.db, admin.dm)
    job = audit_log_cleanup_job(
        admin, 30, notices=notices, inbox_retention_days=30, clock=lambda: BASE
    )
    report = await job.run()
    assert report is not None
    assert (report["deleted_notifications"], report["deleted_inbox_items"]) == (4, 2)
    assert notice_ages(admin) == (
        [("sent", 6), ("failed", 29), ("pending", 400)],
        [("read", 29), ("unread", 1)],
    )
    assert "notifications delivered more than 7 days ago" in job.description
    assert "inbox items older than 30 days" in job.description
    # Retentions of 0 keep the failed ones and the inbox; delivered ones still go after a week.
    seed_notices(admin, [("request.completed", "sent", 8), ("request.failed", "failed", 900)])
    keep = audit_log_cleanup_job(admin, 0, notices=notices, clock=lambda: BASE)
    report = await keep.run()
    assert report is not None
    assert (report["deleted_notifications"], report["deleted_inbox_items"]) == (1, 0)
    outbox, inbox = notice_ages(admin)
    assert outbox == [("sent", 6), ("failed", 29), ("pending", 400), ("failed", 900)]
    assert inbox == [("read", 29), ("unread", 1)]


def test_download_jobs_follow_the_configuration(tmp_path: Path, admin: QueueAdminStore) -> None:
    send, _ = trio.open_memory_channel[ScanRequest](1)

    def jobs(**kw: Any) -> dict[str, Any]:
        config = Config(db_dir=tmp_path, media_path=tmp_path, **kw)
        notices = NoticeStore(admin.db, admin.dm)
        downloads = (
            SimpleNamespace(queue_admin=admin, notices=notices) if config.download_enabled else None
        )
        root = SimpleNamespace(config=config, downloads=downloads)
        return {job.id: job for job in download_jobs(root, send)}  # type: ignore[arg-type]

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


# -- giving up on what the downloader no longer has (SPEC §8.9) ----------------------------------


def give_up_on(admin: QueueAdminStore, content_type: str, content_id: str, at: int) -> str:
    """A repair of the content that failed not_found at `at`, as the processor records it."""
    item = insert(
        admin.db, status="IN_PROGRESS", priority=1, content_type=content_type,
        content_id=content_id, request_source="WATCHDOG", created_at=at,
    )  # fmt: skip
    QueueStore(admin.db, admin.dm).fail(item, ErrorType.NOT_FOUND, "no audio", at)
    return item


async def test_marked_content_is_counted_not_queued_and_marks_of_present_files_go(
    watchdog: Running, admin: QueueAdminStore, bundles: list[AlbumBundle]
) -> None:
    tracks = [t.id for b in bundles for t in b.tracks]
    give_up_on(admin, "TRACK_AUDIO", tracks[5], BASE - DAY)  # still missing
    give_up_on(admin, "TRACK_AUDIO", tracks[0], BASE - DAY)  # its file is back
    report = await run_job(watchdog.send)
    assert (report["missing_track_audio"], report["items_queued"]) == (4, 5)
    assert (report["items_skipped"], report["items_unavailable"]) == (0, 1)
    assert ("TRACK_AUDIO", tracks[5]) not in {
        (i["content_type"], i["content_id"]) for i in queued(admin) if i["status"] == "PENDING"
    }
    assert set(admin.repair_filter(BASE).marks) == {("TRACK_AUDIO", tracks[5])}
    completed = audit_rows(admin.db, "WATCHDOG_SCAN_COMPLETED")
    assert json.loads(completed[-1]["details"])["items_unavailable"] == 1


def availabilities(body: dict[str, Any]) -> Any:
    """The `availability` of a track's JSON, or those of an album's tracks."""
    return [t["availability"] for t in body["tracks"]] if "tracks" in body else body["availability"]


class Wall:
    """The wall clock (unix seconds) of the watchdog and the processor; only the test moves it.
    (The scan works in worker threads, so the autojump clock is not used: see the top.)"""

    def __init__(self) -> None:
        self.now = BASE

    def __call__(self) -> int:
        return self.now


@dataclass
class Journey:
    root: Root
    client: Any
    headers: dict[str, str]
    scans: trio.MemorySendChannel[ScanRequest]
    knobs: Knobs
    wall: Wall

    async def scan_on_day(self, day: int) -> dict[str, Any]:
        self.wall.now = BASE + day * DAY
        report = await run_job(self.scans)
        await self.settle()
        return report

    async def settle(self, advance: int = 0) -> None:
        """Wait until the processor has nothing left to do, moving the wall `advance` s a round:
        every item finished, and every failure recorded also counted (the processor counts it
        on the event loop just after the failure's commit)."""
        with trio.fail_after(TIMEOUT):
            while (
                self.rows("SELECT 1 FROM queue_items WHERE status NOT IN (?, ?, ?)", *TERMINAL)
                or self.failed_repairs() < self.failures_recorded()
            ):
                self.wall.now += advance
                await trio.sleep(0.03)

    def failures_recorded(self) -> int:
        failed = self.rows(
            "SELECT COUNT(*) FROM audit_log WHERE event_type = 'DOWNLOAD_FAILED' "
            "AND content_type = 'TRACK_AUDIO'"
        )
        return int(failed[0][0])

    def rows(self, sql: str, *params: Any) -> list[Any]:
        with self.root.downloads.queue_admin.db.read() as conn:
            return conn.execute(sql, params).fetchall()

    def failed_repairs(self) -> float:
        labels = {"content_type": "TRACK_AUDIO", "result": "failed"}
        value = self.root.metrics.registry.get_sample_value(
            "pezzottify_download_processed_total", labels
        )
        return value or 0.0

    def gave_up(self) -> list[dict[str, Any]]:
        return audit_rows(self.root.downloads.queue_admin.db, "WATCHDOG_GAVE_UP")

    async def availability(self, kind: str, ident: str) -> Any:
        response = await self.client.get(f"/v1/content/{kind}/{ident}", headers=self.headers)
        assert response.status_code == 200
        return availabilities(await response.get_json())


@asynccontextmanager
async def journey(tmp_path: Path, bundle: AlbumBundle) -> AsyncIterator[Journey]:
    """The daemon's stores, API, watchdog and processor, against a fake downloader that has
    none of `bundle`'s content (404): the bundle's first track has its file, the second not."""
    dm = DownloadManagerConfig(max_retries=1, initial_backoff_secs=60, process_interval_secs=0.02)
    config = Config(
        db_dir=tmp_path, media_path=tmp_path / "media", downloader_url="http://fake",
        download_manager=dm,
    )  # fmt: skip
    root = open_test_root(config)
    root.catalog.ingest_many([bundle])
    present = bundle.tracks[0].id
    root.catalog.set_track_audio(present, "flac")
    root.media.audio_path(present, "flac").write_bytes(b"audio")
    for image in (*bundle.album.image_ids, *bundle.artists[0].image_ids):
        root.media.image_path(image).write_bytes(b"jpeg")
    knobs = Knobs()
    transport = httpx.ASGITransport(fake_downloader_app(build_catalog(FAKE_SPEC), knobs))  # type: ignore[arg-type]
    downloader = DownloaderClient("http://fake", 30, transport=transport)
    wall = Wall()
    scan_send, scan_recv = trio.open_memory_channel[ScanRequest](1)
    wake_send, wake_recv = trio.open_memory_channel[WakeProcessor](1)
    shutdown = trio.Event()
    watchdog = IntegrityWatchdog(
        scan_recv, root.catalog, root.downloads.queue_admin, root.media, wake=wake_send, clock=wall
    )
    processor = Processor(
        root.downloads.queue, root.catalog, downloader, root.media, root.metrics, dm, wake_recv,
        None, shutdown=shutdown, shutdown_timeout=5, clock=wall,
    )  # fmt: skip
    make_user(root, "admin", (Role.Admin,))
    try:
        async with create_app(root).test_app() as app, trio.open_nursery() as nursery:
            client = app.test_client()
            headers = await login(client, "admin")
            await nursery.start(watchdog.run)
            await nursery.start(processor.run)
            yield Journey(root, client, headers, scan_send, knobs, wall)
            shutdown.set()
            nursery.cancel_scope.cancel()
    finally:
        await downloader.aclose()
        close_root(root)


async def test_a_permanently_missing_track_costs_one_failed_repair_per_recheck_period(
    tmp_path: Path,
) -> None:
    bundle = next(synthetic_bundles(1, 2, artists=1))
    album, (present, lost) = bundle.album.id, (t.id for t in bundle.tracks)
    async with journey(tmp_path, bundle) as j:
        first = await j.scan_on_day(0)
        assert (first["items_queued"], first["items_unavailable"]) == (1, 0)
        assert j.failed_repairs() == 1  # the downloader answered 404
        (decision,) = j.gave_up()
        assert (decision["content_type"], decision["content_id"]) == ("TRACK_AUDIO", lost)
        assert json.loads(decision["details"])["recheck_after"] == BASE + 7 * DAY
        assert await j.availability("track", lost) == "unavailable"
        assert await j.availability("album", album) == ["available", "unavailable"]

        # Four more daily scans: the track is counted, not asked for again.
        for day in (1, 2, 3, 4):
            report = await j.scan_on_day(day)
            assert (report["missing_track_audio"], report["items_queued"]) == (1, 0)
            assert (report["items_skipped"], report["items_unavailable"]) == (0, 1)
        assert j.failed_repairs() == 1
        assert len(j.gave_up()) == 1
        completed = audit_rows(j.root.downloads.queue_admin.db, "WATCHDOG_SCAN_COMPLETED")
        assert json.loads(completed[-1]["details"]) == report

        # A week on, one repair checks again; it fails the same way: a second decision.
        recheck = await j.scan_on_day(7)
        assert (recheck["items_queued"], recheck["items_unavailable"]) == (1, 0)
        assert j.failed_repairs() == 2
        second = j.gave_up()[-1]
        assert len(j.gave_up()) == 2 and second["queue_item_id"] != decision["queue_item_id"]
        assert (await j.scan_on_day(8))["items_unavailable"] == 1

        # An admin retries that repair: the mark goes at once. This time the downloader fails
        # otherwise (503, its retry spent), which says nothing about what it has: no mark.
        j.knobs.fail("audio", 503)
        retry = await j.client.post(
            f"/v1/download/admin/retry/{second['queue_item_id']}", headers=j.headers
        )
        assert retry.status_code == 200
        assert await j.availability("track", lost) == "missing"
        await j.settle(advance=60)
        assert j.failed_repairs() == 3
        failed = j.rows("SELECT error_type FROM queue_items WHERE id = ?", second["queue_item_id"])
        assert failed[0][0] == "connection"
        assert len(j.gave_up()) == 2
        assert await j.availability("album", album) == ["available", "missing"]

        # So the next scan asks again, and the downloader's 404 gives up on it once more.
        j.knobs.clear()
        again = await j.scan_on_day(9)
        assert (again["items_queued"], again["items_unavailable"]) == (1, 0)
        assert len(j.gave_up()) == 3
        assert await j.availability("track", lost) == "unavailable"
        assert await j.availability("track", present) == "available"
        assert j.failed_repairs() == 4  # over 9 days and 8 scans (5 the same week: 1 failure)
