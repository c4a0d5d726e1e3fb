"""The integrity watchdog: a 100,000-track scan, and the API while one runs.

Scan cost. Sides, on a catalog of 10,000 albums (100,000 tracks, 10,100 images) with every file
in place: the watchdog's own `scan()` (in this process, on a trio event loop, as the daemon runs
it: both folders listed, one comparison statement per kind of file, the scan audited) against a
floor that does the least a scan must: list both media folders and read every track id with its
audio format in one query, in one thread. Figure: seconds, scan / floor.

API during a scan. A real daemon on the same catalog answers `GET /v1/download/limits`,
`GET /v1/content/album/{id}` and `GET /v1/content/popular` in turn over one keep-alive
connection from `bench.load` (its own process; each request reads SQLite in a worker thread)
while this process triggers the `integrity_watchdog` job over the admin API and waits for its
run to end; an idle window of the same length follows (or precedes: the order flips every
round), with the same polling of the job's state. Figure: p99 latency of the requests started
during the scan / during the idle window.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.messages import ScanRequest, SchedulerMessage, WakeProcessor
from actors.watchdog import IntegrityWatchdog
from bench import seed, services
from bench.common import Pairs, Row, Target, alternate_async, ms, percentile
from bench.seed import synthetic_id
from daemon.config import Config
from daemon.services import close_root, open_root
from storage.users import Role

NAME = "watchdog"
SCAN_TARGET = Target("<=", 2.0)
P99_TARGET = Target("<=", 2.0)
JOB = "integrity_watchdog"
POLL_S = 0.05


@dataclass(frozen=True)
class Params:
    albums: int = 10_000
    rounds: int = 5
    api_rounds: int = 4
    connections: int = 1


DEFAULT = Params()
SMOKE = Params(albums=20, rounds=1, api_rounds=1)


def floor(db_dir: Path) -> float:
    """List both media folders and read every track id: the least a scan must do."""
    started = time.perf_counter()
    audio = set(os.listdir(db_dir / "audio"))
    images = set(os.listdir(db_dir / "images"))
    with sqlite3.connect(f"file:{db_dir / 'catalog.db'}?mode=ro", uri=True) as conn:
        tracks = conn.execute("SELECT id, audio_format FROM tracks").fetchall()
    if not (audio and images and tracks):
        raise RuntimeError("the seeded catalog is empty")
    return time.perf_counter() - started


async def scan_against_floor(db_dir: Path, rounds: int) -> tuple[Pairs, list[dict[str, Any]]]:
    """The watchdog's `scan()` of the catalog in `db_dir`, alternated with its listing floor
    (after one scan to warm the page cache): the pairs of times, and every scan's report."""
    config = Config(db_dir=db_dir, media_path=db_dir, downloader_url="http://127.0.0.1:9")
    inbox, _ = trio.open_memory_channel[SchedulerMessage](1)  # no scheduler runs here
    wake, _ = trio.open_memory_channel[WakeProcessor](1)
    root = await trio.to_thread.run_sync(
        functools.partial(open_root, config, scheduler_inbox=inbox, wake=wake)
    )
    try:
        assert root.downloads is not None  # the download manager is on
        _, recv = trio.open_memory_channel[ScanRequest](1)
        actor = IntegrityWatchdog(recv, root.catalog, root.downloads.queue_admin, root.media)
        reports: list[dict[str, Any]] = []

        async def scan() -> float:
            started = time.perf_counter()
            reports.append(await actor.scan())
            return time.perf_counter() - started

        async def floor_side() -> float:
            return floor(db_dir)

        await scan()  # warm the page cache and the folder listings
        pairs = await alternate_async(scan, floor_side, rounds)
    finally:
        await trio.to_thread.run_sync(close_root, root)
    return pairs, reports


async def scan_cost(db_dir: Path, params: Params) -> Row:
    pairs, reports = await scan_against_floor(db_dir, params.rounds)
    tracks = params.albums * 10
    detail = (
        f"scan {ms(pairs.side_a().median)} vs floor {ms(pairs.side_b().median)} "
        f"({tracks:,} tracks; the scan reported {reports[-1]['missing_track_audio']} missing)"
    )
    return Row(NAME, f"{tracks:,}-track scan ÷ listing + reading the track ids",
               pairs.ratio(), SCAN_TARGET, detail)  # fmt: skip


class JobClient:
    """Triggers the watchdog job and waits for its run to end, over the admin API."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def state(self) -> dict[str, Any]:
        response = self.client.get(f"/v1/admin/jobs/{JOB}")
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        return job

    def wait_idle(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.state()["is_running"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the watchdog job did not finish")
            time.sleep(POLL_S)

    def scan_window(self) -> tuple[float, float]:
        started = time.monotonic()
        response = self.client.post(f"/v1/admin/jobs/{JOB}/trigger")
        response.raise_for_status()
        run_id = response.json()["run_id"]
        while True:
            job = self.state()
            if not job["is_running"] and (job["last_run"] or {}).get("run_id") == run_id:
                if job["last_run"]["status"] != "completed":
                    raise RuntimeError(f"watchdog run ended {job['last_run']['status']}")
                return started, time.monotonic()
            time.sleep(POLL_S)

    def idle_window(self, length: float) -> tuple[float, float]:
        started = time.monotonic()
        while time.monotonic() - started < length:
            self.state()  # the same polling as during a scan
            time.sleep(POLL_S)
        return started, time.monotonic()


def _p99(samples: list[list[float]], window: tuple[float, float]) -> float:
    lo, hi = window
    latencies = [latency for start, latency, _ in samples if lo <= start < hi]
    if len(latencies) < 20:
        raise RuntimeError("too few requests in a window to take a p99")
    return percentile(latencies, 99)


def api_during_scan(db_dir: Path, params: Params) -> Row:
    token = services.add_session(db_dir, "bench-admin", Role.Admin)
    config = services.daemon_config(db_dir, "http://127.0.0.1:9")
    # The load's report goes to a file: a pipe would fill (the samples pass 64 KiB) and, should
    # the load end before the windows do, leave it blocked mid-write when it is stopped.
    with services.daemon(db_dir, config) as proc, tempfile.TemporaryFile("w+") as report:
        jobs = JobClient(proc.url, token)
        jobs.wait_idle()  # the scan the daemon runs at startup
        scan_s = jobs.scan_window()
        # A bound only: the load is stopped (SIGTERM) as soon as the windows are measured.
        budget = 4 * params.api_rounds * (scan_s[1] - scan_s[0]) + 30
        paths = [
            "/v1/download/limits",
            f"/v1/content/album/{synthetic_id('L', 7)}",
            "/v1/content/popular",
        ]
        load = subprocess.Popen(
            [sys.executable, "-m", "bench.load", "--port", str(services.port_of(proc.url)),
             *(f"--path={p}" for p in paths), f"--header=Authorization: Bearer {token}",
             "--connections", str(params.connections), "--duration", f"{min(budget, 120):.1f}",
             "--samples"],
            stdout=report, text=True,
        )  # fmt: skip
        time.sleep(1.0)  # the load's connections are open and warm
        windows: list[tuple[tuple[float, float], tuple[float, float]]] = []
        for round_ in range(params.api_rounds):
            if round_ % 2 == 0:
                scan = jobs.scan_window()
                idle = jobs.idle_window(scan[1] - scan[0])
            else:
                idle = jobs.idle_window(scan_s[1] - scan_s[0])
                scan = jobs.scan_window()
            windows.append((scan, idle))
        outlived = load.poll() is not None
        load.terminate()  # the load stops and reports what it measured
        load.wait(timeout=60)
        report.seek(0)
        out = report.read()
    if outlived:
        raise RuntimeError("the load ended before the windows did: scans took too long")
    return _p99_row(out, windows, params)


def _p99_row(
    out: str, windows: list[tuple[tuple[float, float], tuple[float, float]]], params: Params
) -> Row:
    samples = json.loads(out)["samples"]
    pairs = Pairs(
        [_p99(samples, scan) for scan, _ in windows], [_p99(samples, idle) for _, idle in windows]
    )
    detail = (
        f"p99 {ms(pairs.side_a().median)} during vs {ms(pairs.side_b().median)} idle "
        f"({params.connections} connection, {len(samples):,} requests)"
    )
    return Row(NAME, "API p99 during a scan ÷ idle", pairs.ratio(), P99_TARGET, detail)


def run(params: Params = DEFAULT) -> list[Row]:
    db_dir = seed.shared_catalog(params.albums)
    with tempfile.TemporaryDirectory(prefix="bench-watchdog-") as tmp:
        work = Path(tmp)
        for name in ("catalog.db",):
            (work / name).write_bytes((db_dir / name).read_bytes())
        os.symlink(db_dir / "audio", work / "audio")
        os.symlink(db_dir / "images", work / "images")
        rows = [trio.run(scan_cost, work, params)]
        rows.append(api_during_scan(work, params))
    return rows
