"""Shutdown of a real `pezzottify-server` (SPEC §10, RELIABILITY S-1, S-2).

SIGTERM or SIGINT in the middle of a download: exit 0 within `shutdown_timeout_sec` + 5 s; a
download that cannot finish in the grace is cancelled, leaves no file and its item goes back to
PENDING without spending a retry (and completes after a restart); one that can finish does, and
nothing new is claimed. A second signal stops at once and the state stays consistent. Jobs: a
cancellable run is cancelled at once and recorded so; a wait-for-completion run finishes within
the grace, or is cut at its end and recorded `cancelled` with the work done so far kept. An idle
keep-alive connection does not hold the shutdown up.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.seed import synthetic_bundles
from fake_downloader import CatalogSpec
from storage.catalog import CatalogStore
from storage.db import Database
from storage.queue import MIGRATIONS as QUEUE_MIGRATIONS
from storage.users import UserStore
from tests.reliability.harness import (
    ADMIN,
    ADMIN_PASSWORD,
    FakeDownloaderProcess,
    Rig,
    create_admin,
    rig,
    running_fake,
)
from tests.reliability.invariants import (
    audit_entries,
    check_integrity,
    check_safe,
    check_settled,
    rows,
)
from tests.support.process import DaemonProcess, wait_until

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

# Tracks of 2 MiB: the processor keeps the first MiB of a body in memory, so a temporary
# file exists from then on (after 2 s with SLOW, 0.7 s with MEDIUM).
SPEC = CatalogSpec(
    seed=5, artists=2, albums_per_artist=1, tracks_per_album=2, audio_bytes=2 * 1024 * 1024,
    image_bytes=4096,
)  # fmt: skip
SLOW = ("--audio-bytes-per-sec", str(512 * 1024))  # 4 s a track: not done within the grace
MEDIUM = ("--audio-bytes-per-sec", str(1536 * 1024))  # 1.3 s a track


@pytest.fixture(scope="module")
def slow_fake() -> Iterator[FakeDownloaderProcess]:
    with running_fake(SPEC, *SLOW) as fake:
        yield fake


@pytest.fixture(scope="module")
def fast_fake() -> Iterator[FakeDownloaderProcess]:
    with running_fake(SPEC) as fake:
        yield fake


def wait_mid_download(r: Rig) -> list[dict[str, Any]]:
    """Wait until the first track's audio is streaming into a temporary file; return the tracks
    in flight (IN_PROGRESS), in claim order: the one streaming first."""
    found: list[dict[str, Any]] = []

    def streaming() -> bool:
        parts = list((r.db_dir / "audio").glob("*.part"))
        tracks = [i for i in r.items() if i["content_type"] == "TRACK_AUDIO"]
        claimed = [
            e["queue_item_id"] for e in audit_entries(r.db_dir)
            if e["event_type"] == "DOWNLOAD_STARTED"
        ]  # fmt: skip
        found[:] = sorted(
            (t for t in tracks if t["status"] == "IN_PROGRESS"),
            key=lambda t: claimed.index(t["id"]),
        )
        return bool(parts) and bool(found) and all(t["status"] != "COMPLETED" for t in tracks)

    r.wait_for(streaming, 20, "no download started")
    return found


def item(r: Rig, item_id: str) -> dict[str, Any]:
    return next(i for i in r.items() if i["id"] == item_id)


def finish_elsewhere(r: Rig, fake: FakeDownloaderProcess, albums: list[str]) -> None:
    """Restart against a fast fake: the album left behind completes, nothing duplicated."""
    r.write_config(downloader_url=fake.url)
    r.start()
    r.wait_idle(30)
    assert r.stop() == 0, r.log_tail()
    check_settled(r.db_dir, SPEC, albums)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_download_releases_the_item_and_exits_0(
    tmp_path: Path,
    slow_fake: FakeDownloaderProcess,
    fast_fake: FakeDownloaderProcess,
    signum: signal.Signals,
) -> None:
    grace = 1.0
    with rig(tmp_path, slow_fake, top={"shutdown_timeout_sec": grace}) as r:
        r.start()
        r.request_albums([0])
        in_flight = wait_mid_download(r)
        r.signal(signum)
        started = time.monotonic()
        assert r.wait_exit(grace + 5) == 0, r.log_tail()
        assert time.monotonic() - started <= grace + 5
        for track in in_flight:
            released = item(r, track["id"])
            assert (released["status"], released["retry_count"]) == ("PENDING", 0)
            events = [e for e in audit_entries(r.db_dir) if e["queue_item_id"] == track["id"]]
            assert events[-1]["event_type"] == "RECOVERED_AFTER_RESTART"
            assert '"shutdown"' in events[-1]["details"]
        assert sorted((r.db_dir / "audio").iterdir()) == [], "a partial or cut file was left"
        check_safe(r.db_dir, SPEC, [track_album(r)])
        finish_elsewhere(r, fast_fake, [track_album(r)])


def track_album(r: Rig) -> str:
    return str(next(i["content_id"] for i in r.items() if i["parent_id"] is None))


def test_the_file_in_flight_finishes_within_the_grace_and_nothing_new_starts(
    tmp_path: Path,
) -> None:
    grace = 10.0
    with (
        running_fake(SPEC, *MEDIUM) as fake,
        rig(tmp_path, fake, top={"shutdown_timeout_sec": grace}) as r,
    ):
        r.start()
        r.request_albums([0, 1])
        track, *_ = wait_mid_download(r)
        r.signal(signal.SIGTERM)
        started = time.monotonic()
        assert r.wait_exit(grace + 5) == 0, r.log_tail()
        assert time.monotonic() - started < grace, "waited out the grace instead of the file"
        assert item(r, track["id"])["status"] == "COMPLETED"
        children = [i for i in r.items() if i["parent_id"] is not None]
        assert [c["status"] for c in children].count("COMPLETED") == 1
        assert {c["status"] for c in children} == {"COMPLETED", "PENDING"}
        second = next(i for i in r.items() if i["parent_id"] is None and i["status"] == "PENDING")
        assert second["started_at"] is None, "a new album was claimed after the signal"
        check_safe(r.db_dir, SPEC, [i["content_id"] for i in r.items() if i["parent_id"] is None])


def test_a_second_signal_stops_at_once_and_the_state_stays_consistent(
    tmp_path: Path, slow_fake: FakeDownloaderProcess, fast_fake: FakeDownloaderProcess
) -> None:
    with rig(tmp_path, slow_fake, top={"shutdown_timeout_sec": 60}) as r:
        r.start()
        r.request_albums([1])
        wait_mid_download(r)
        r.signal(signal.SIGTERM)
        time.sleep(0.5)
        r.signal(signal.SIGTERM)
        started = time.monotonic()
        status = r.wait_exit(10)
        assert time.monotonic() - started < 3, "the second signal did not stop at once"
        assert status == 0, r.log_tail()
        check_safe(r.db_dir, SPEC, [track_album(r)])
        assert not list((r.db_dir / "audio").iterdir())
        finish_elsewhere(r, fast_fake, [track_album(r)])


def test_an_idle_keep_alive_connection_does_not_hold_up_the_shutdown(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "--shutdown-timeout-sec", "30", "--logging-level", "none")
    try:
        with httpx.Client(base_url=daemon.url, timeout=10) as client:
            assert client.get("/openapi.json").status_code == 200  # the connection stays open
            daemon.signal(signal.SIGTERM)
            started = time.monotonic()
            assert daemon.wait(35) == 0
            assert time.monotonic() - started < 5, "shutdown waited for an idle connection"
    finally:
        daemon.kill()


def test_fifty_open_event_streams_do_not_hold_up_the_shutdown(tmp_path: Path) -> None:
    create_admin(tmp_path)
    daemon = DaemonProcess(tmp_path, "--shutdown-timeout-sec", "30", "--logging-level", "none")
    try:
        login = {"user_handle": ADMIN, "password": ADMIN_PASSWORD}
        token = httpx.post(daemon.url + "/v1/auth/login", json=login).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        with contextlib.ExitStack() as open_streams:
            for _ in range(50):
                client = open_streams.enter_context(httpx.Client(base_url=daemon.url, timeout=10))
                response = open_streams.enter_context(
                    client.stream("GET", "/v1/events", headers=headers)
                )
                assert response.status_code == 200
                assert next(response.iter_lines()).startswith("event: hello")
            daemon.signal(signal.SIGTERM)
            started = time.monotonic()
            assert daemon.wait(35) == 0
            assert time.monotonic() - started < 5, "shutdown waited for the event streams"
    finally:
        daemon.kill()


# -- jobs ----------------------------------------------------------------------------------------


def job_runs(db_dir: Path, job_id: str) -> list[dict[str, Any]]:
    return rows(db_dir / "server.db", "SELECT * FROM job_runs WHERE job_id = ? ORDER BY id", job_id)


def seed_listening(db_dir: Path, albums: int) -> None:
    """A catalog of `albums` x 10 tracks, each played once: popular_content takes a while."""
    catalog = CatalogStore.open(db_dir / "catalog.db")
    catalog.ingest_many(synthetic_bundles(albums, tracks_per_album=10, artists=500))
    catalog.db.close()
    users = UserStore.open(db_dir / "user.db")
    users.create_user("listener", ())
    with users.db.write() as conn:
        conn.execute("ATTACH DATABASE ? AS catalog", (str(db_dir / "catalog.db"),))
        conn.execute(
            """INSERT INTO listening_events (user_id, track_id, duration_ms, played_at)
                SELECT (SELECT id FROM users WHERE handle = 'listener'), id, 1000, ?
                FROM catalog.tracks""",
            (int(time.time()) - 60,),
        )
    users.db.close()


def test_sigterm_cancels_a_running_cancellable_job_at_once(tmp_path: Path) -> None:
    seed_listening(tmp_path, 6000)
    daemon = DaemonProcess(tmp_path, "--shutdown-timeout-sec", "30", "--logging-level", "none")
    try:
        # popular_content (cancellable) runs at startup; it is still counting now.
        wait_until(lambda: job_runs(tmp_path, "popular_content"), timeout=5)
        assert [r["status"] for r in job_runs(tmp_path, "popular_content")] == ["running"]
        daemon.signal(signal.SIGTERM)
        started = time.monotonic()
        assert daemon.wait(35) == 0, daemon.log
        assert time.monotonic() - started < 5, "a cancellable job held the shutdown up"
    finally:
        daemon.kill()
    (run,) = job_runs(tmp_path, "popular_content")
    assert (run["status"], run["error_message"]) == ("cancelled", "Cancelled at shutdown")
    assert rows(tmp_path / "server.db", "SELECT * FROM popular_content") == []
    check_integrity(tmp_path)


OLD = 1_000_000  # a timestamp far beyond any retention


def seed_old_audit(db_dir: Path, count: int) -> None:
    db = Database(db_dir / "download_queue.db", QUEUE_MIGRATIONS, synchronous="OFF")
    with db.write() as conn:
        conn.execute(
            """WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                INSERT INTO audit_log (timestamp, event_type, queue_item_id, content_type,
                    content_id, user, request_source, details)
                SELECT ? + i, 'REQUEST_CREATED', 'item-' || i, 'ALBUM', 'x', 'alice', 'USER',
                    '{}' FROM n""",
            (count, OLD),
        )
    db.close()


def old_audit_left(db_dir: Path) -> int:
    path = db_dir / "download_queue.db"
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        left: int = conn.execute(
            "SELECT COUNT(*) FROM audit_log WHERE timestamp < ?", (OLD * 2,)
        ).fetchone()[0]
    conn.close()
    return left


@pytest.mark.parametrize(("grace", "finishes"), [(20.0, True), (0.3, False)])
def test_a_wait_for_completion_job_finishes_in_the_grace_or_is_cut_at_its_end(
    tmp_path: Path, fast_fake: FakeDownloaderProcess, grace: float, finishes: bool
) -> None:
    entries = 300_000
    top = {"shutdown_timeout_sec": grace}
    with rig(tmp_path, fast_fake, top=top, dm={"audit_log_retention_days": 1}) as r:
        seed_old_audit(r.db_dir, entries)
        r.start()
        response = r.client().post("/v1/admin/jobs/audit_log_cleanup/trigger")
        assert response.status_code == 202, response.text
        signalled = time.time()
        assert r.stop(timeout=grace + 5) == 0, r.log_tail()
        (run,) = job_runs(r.db_dir, "audit_log_cleanup")
        left = old_audit_left(r.db_dir)
        assert run["finished_at"] > signalled, "the job was not running at the signal"
        if finishes:
            assert (run["status"], left) == ("completed", 0), (run, r.log_tail())
        else:
            assert run["status"] == "cancelled", (run, r.log_tail())
            assert run["error_message"] == f"Cancelled at shutdown after waiting {grace:g} s"
            assert 0 < left < entries, "deleted chunks must stay deleted, the rest intact"
        check_integrity(r.db_dir)
