"""A realistic day: a household's clients against a daemon that downloads and scans meanwhile.

The server (a real `pezzottify-server` process) holds a 100,000-track catalog (10,000 albums,
`bench.seed`, every file in place; `stream_tracks` of them real 4 MiB files) and a queue
history (100 of the users have 3 completed requests each). `bench.day_load`, its own process,
plays the household for the whole benchmark, paced as real clients are: 200 users polling
`GET /v1/download/my-requests` every 5 s, 20 of them also playing a track at CD rate (176 KB/s)
through `GET /v1/content/stream/{id}` in 256 KiB `Range` requests, and 5 admins polling
`GET /v1/download/admin/stats` and `GET /v1/download/admin/requests` every 5 s. Every user and
session is made in user.db before the daemon starts (no password hashing).

Sides, alternated round by round over the same running load:

- busy day: 5 users request an album each (new albums every round) from the fake downloader
  of `bench.busy_downloader` at its real pace (30 ms before each answer, audio at 4 MiB/s, one
  audio download at a time), with files of 1 MiB so that the 100 files drain in about 27 s
  rather than 200 (the bytes per second written are the spec's; the work per file is 8 times
  as frequent, which weighs on the API more, not less); with the requests, this process
  triggers the `integrity_watchdog` job over the admin API: one 100,000-track scan, as the
  daily job runs it (a few hundred ms of the window). The window: from the first album
  request until the queue says every album COMPLETED. `python -m bench.realistic_day
  --rescan` runs a scan again as soon as one ends, all through the window: the worst case,
  in which every request of the busy side meets a scan.
- idle: the same load on the same daemon for a window of the same length, nothing queued,
  no scan; this process polls the job's state and the queue exactly as on the busy side.

Figures, per round: for each route, the p99 latency of the requests started in the busy
window ÷ that in the idle one (target ≤ 2); the slowest request of the busy window ÷ 1 s
(target ≤ 1); the requests of both windows that failed or did not answer 2xx (target 0).
Windows are short and admins few: the admin routes' p99 is close to their maximum.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import busy_downloader, day_load, seed, services
from bench.common import Pairs, Row, Stats, Target, format_table, ms, percentile
from bench.seed import synthetic_id
from daemon.config import DownloadManagerConfig
from fake_downloader import build_catalog
from storage.db import Database
from storage.queue import MIGRATIONS, RequestStore, now
from storage.users import Permission, Role, UserStore

NAME = "realistic_day"
P99_TARGET = Target("<=", 2.0)
SLOWEST_TARGET = Target("<=", 1.0)
ERRORS_TARGET = Target("<=", 0.0)
JOB = "integrity_watchdog"
POLL_S = 0.1
MiB = 2**20
DAY = 86_400


@dataclass(frozen=True)
class Params:
    rounds: int = 2
    users: int = 200
    streamers: int = 20
    admins: int = 5
    period: float = 5.0
    chunk: int = 256 * 1024
    catalog_albums: int = 10_000
    history_users: int = 100
    history_per_user: int = 3
    stream_tracks: int = 40
    stream_bytes: int = 4 * MiB
    albums: int = 5
    tracks: int = 20
    audio_bytes: int = 1 * MiB
    rate: int = 4 * MiB
    latency_ms: float = 30.0
    rescan: bool = False  # True: scans back to back all through a busy window
    min_window: float = 0.0  # a busy window lasts at least this long (for tiny drains)
    timeout: float = 300.0

    def downloader(self) -> busy_downloader.Params:
        return busy_downloader.Params(
            albums=self.albums, tracks=self.tracks, audio_bytes=self.audio_bytes,
            rate=self.rate, latency_ms=self.latency_ms, scale="",
        )  # fmt: skip


DEFAULT = Params()
SMOKE = Params(
    rounds=1, users=6, streamers=2, admins=1, period=0.5, chunk=64 * 1024, catalog_albums=20,
    history_users=3, history_per_user=2, stream_tracks=2, stream_bytes=256 * 1024, albums=1,
    tracks=3, audio_bytes=64 * 1024, rate=MiB, latency_ms=1.0, min_window=2.0, timeout=60.0,
)  # fmt: skip


@dataclass(frozen=True)
class People:
    users: list[str]  # tokens; user n's handle is f"user{n}"
    admins: list[str]
    bench_admin: str  # this process's, for the job


def seed_people(db_dir: Path, params: Params) -> People:
    """Users (Regular + RequestContent), admins and their sessions, straight into user.db."""
    store = UserStore.open(db_dir / "user.db")

    def person(handle: str, role: Role) -> str:
        user = store.create_user(handle, (role,))
        if role is Role.Regular:
            store.add_permission(handle, Permission.RequestContent)
        token = os.urandom(24).hex()
        store.create_session(user.id, token, {"device_name": "bench"})
        return token

    try:
        users = [person(f"user{n}", Role.Regular) for n in range(params.users)]
        admins = [person(f"admin{n}", Role.Admin) for n in range(params.admins)]
        return People(users, admins, person("bench-admin", Role.Admin))
    finally:
        store.db.close()


def seed_history(db_dir: Path, params: Params) -> None:
    """Completed requests of the first `history_users` users, spread over the last days."""
    queue_db = Database(db_dir / "download_queue.db", MIGRATIONS)
    try:
        config = DownloadManagerConfig(user_max_requests_per_day=10**6, user_max_queue_size=10**6)
        requests = RequestStore(queue_db, config)
        at = now()
        for n in range(params.history_users * params.history_per_user):
            album, user = synthetic_id("L", n), f"user{n // params.history_per_user}"
            created = at - (n % 7 + 1) * DAY
            requests.request_album(user, album, f"Album {n}", f"Artist {n}", created, False)
        with queue_db.write() as conn:
            conn.execute(
                "UPDATE queue_items SET status = 'COMPLETED', started_at = created_at + 60, "
                "completed_at = created_at + 300, last_activity_at = created_at + 300"
            )
    finally:
        queue_db.close()


def seed_streams(db_dir: Path, params: Params) -> list[tuple[str, int]]:
    """Give the first `stream_tracks` tracks real audio files; return (id, size) of each."""
    block = b"fLaC" + bytes(range(256)) * 4096
    tracks = []
    for n in range(params.stream_tracks):
        track = synthetic_id("T", n)
        with open(db_dir / "audio" / f"{track}.flac", "wb") as file:
            left = params.stream_bytes
            while left > 0:
                left -= file.write(block[: min(left, len(block))])
        tracks.append((track, params.stream_bytes))
    return tracks


class Jobs:
    """Runs the watchdog job over the admin API and follows it; `scan_ms` holds the scan
    duration each of this process's runs reported."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.triggered: set[str] = set()
        self.scan_ms: dict[str, float] = {}

    def running(self) -> bool:
        response = self.client.get(f"/v1/admin/jobs/{JOB}")
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        last = job.get("last_run") or {}
        if not job["is_running"] and last.get("status") not in (None, "completed"):
            raise RuntimeError(f"a watchdog run ended {last['status']}")
        if not job["is_running"] and last.get("run_id") in self.triggered:
            report = last.get("report") or {}
            self.scan_ms.setdefault(last["run_id"], float(report.get("scan_duration_ms", 0)))
        return bool(job["is_running"])

    def trigger(self) -> None:
        response = self.client.post(f"/v1/admin/jobs/{JOB}/trigger")
        if response.status_code == 409:  # still finishing the previous run
            return
        response.raise_for_status()
        self.triggered.add(response.json()["run_id"])

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise RuntimeError("the watchdog job did not finish")
            time.sleep(POLL_S)

    def forget(self) -> None:
        self.triggered.clear()
        self.scan_ms.clear()

    def close(self) -> None:
        self.client.close()


Window = tuple[float, float]


class Day:
    """The two sides: a busy window and an idle one, measured by this process's clock."""

    def __init__(
        self, requester: busy_downloader.Requester, jobs: Jobs, people: People, params: Params
    ) -> None:
        self.requester, self.jobs, self.people, self.params = requester, jobs, people, params
        self.next_album = 1  # album 0 warmed the daemon up
        self.last_busy = 0.0

    def busy(self) -> Window:
        p = self.params
        batch = range(self.next_album, self.next_album + p.albums)
        self.next_album += p.albums
        drain = self.requester.start(
            [(self.people.users[n % p.users], i) for n, i in enumerate(batch)]
        )
        deadline = drain.started + p.timeout
        scanning, scans = False, 0
        with self.requester.connect() as conn:
            while True:
                if not scanning and (p.rescan or scans == 0):
                    self.jobs.trigger()
                    scans += 1
                scanning = self.jobs.running()
                done = self.requester.poll(conn, drain)
                if done and time.monotonic() - drain.started >= p.min_window:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the albums did not complete in time")
                time.sleep(POLL_S)
        window = (drain.started, time.monotonic())
        self.jobs.wait_idle(p.timeout)  # a scan still running belongs to neither window
        self.last_busy = window[1] - window[0]
        return window

    def idle(self) -> Window:
        length = self.last_busy or self.params.min_window or 30.0
        started = time.monotonic()
        with self.requester.connect() as conn:
            while time.monotonic() - started < length:
                self.jobs.running()  # the same polling as the busy side
                conn.execute("SELECT COUNT(*) FROM queue_items WHERE parent_id IS NULL").fetchall()
                time.sleep(POLL_S)
        return started, time.monotonic()


def plan_file(folder: Path, people: People, tracks: list[tuple[str, int]]) -> Path:
    path = folder / "plan.json"
    path.write_text(json.dumps({"users": people.users, "admins": people.admins, "tracks": tracks}))
    return path


def windows(day: Day, rounds: int) -> list[tuple[Window, Window]]:
    """(busy, idle) per round, busy first in even rounds and idle first in odd ones."""
    pairs: list[tuple[Window, Window]] = []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            busy = day.busy()
            idle = day.idle()
        else:
            idle = day.idle()
            busy = day.busy()
        pairs.append((busy, idle))
    return pairs


Sample = list[Any]  # [route, start, latency, status]


def within(samples: list[Sample], window: Window, route: str | None = None) -> list[Sample]:
    lo, hi = window
    return [s for s in samples if lo <= s[1] < hi and (route is None or s[0] == route)]


def p99(samples: list[Sample]) -> float:
    latencies = [s[2] for s in samples if 200 <= s[3] < 300]
    if len(latencies) < 2:
        raise RuntimeError("too few answered requests in a window to take a p99")
    return percentile(latencies, 99)


def _p50(sides: list[list[Sample]]) -> float:
    """The median over the windows of each window's p50."""
    return Stats.of([percentile([s[2] for s in side], 50) for side in sides]).median


def failures(samples: list[Sample]) -> int:
    return sum(1 for s in samples if not 200 <= s[3] < 300)


def rows(
    samples: list[Sample], rounds: list[tuple[Window, Window]], jobs: Jobs, params: Params
) -> list[Row]:
    result = []
    for route in day_load.ROUTES:
        busy = [within(samples, b, route) for b, _ in rounds]
        idle = [within(samples, i, route) for _, i in rounds]
        pairs = Pairs([p99(s) for s in busy], [p99(s) for s in idle])
        detail = (
            f"p99 {ms(pairs.side_a().median)} busy vs {ms(pairs.side_b().median)} idle; p50 "
            f"{ms(_p50(busy))} vs {ms(_p50(idle))}; {sum(map(len, busy)):,} and "
            f"{sum(map(len, idle)):,} requests"
        )
        path = day_load.PATHS.get(route, "/v1/content/stream/{id} (256 KiB Range)")
        result.append(Row(NAME, f"GET {path} p99: busy day ÷ idle", pairs.ratio(), P99_TARGET,
                          detail))  # fmt: skip
    busy_all = [within(samples, b) for b, _ in rounds]
    slowest = [max(s[2] for s in side) for side in busy_all]
    window_s = Stats.of([b[1] - b[0] for b, _ in rounds]).median
    scan_ms = Stats.of(list(jobs.scan_ms.values()) or [0.0]).median
    shape = (
        f"{params.users} users, {params.streamers} streaming, {params.admins} admins; windows of "
        f"{window_s:.1f} s: {params.albums} albums x {params.tracks} x "
        f"{params.audio_bytes / MiB:g} MiB at {params.rate / MiB:g} MiB/s and "
        f"{len(jobs.scan_ms)} scans in all (median {ms(scan_ms / 1000)} each)"
    )
    result.append(Row(NAME, "slowest request of a busy window ÷ 1 s", Stats.of(slowest),
                      SLOWEST_TARGET, shape))  # fmt: skip
    errors = [float(failures(within(samples, b)) + failures(within(samples, i))) for b, i in rounds]
    every = sum(len(within(samples, b)) + len(within(samples, i)) for b, i in rounds)
    result.append(Row(NAME, "requests failed or not 2xx, busy and idle windows", Stats.of(errors),
                      ERRORS_TARGET, f"of {every:,} requests"))  # fmt: skip
    return result


def run(params: Params = DEFAULT) -> list[Row]:
    dl = params.downloader()
    s = busy_downloader.spec(dl, 1 + params.rounds * params.albums)
    catalog = build_catalog(s)
    with tempfile.TemporaryDirectory(prefix="bench-day-") as tmp:
        work = Path(tmp) / "daemon"
        work.mkdir()
        seed.seed_catalog(work, work, params.catalog_albums)
        tracks = seed_streams(work, params)
        seed_history(work, params)
        people = seed_people(work, params)
        plan = plan_file(Path(tmp), people, tracks)
        with services.fake_downloader(*busy_downloader.downloader_flags(s, dl, None)) as url:
            config = services.daemon_config(work, url)
            with services.daemon(work, config) as proc, tempfile.TemporaryFile("w+") as report:
                requester = busy_downloader.Requester(
                    proc.url, work / "download_queue.db", catalog, params.tracks
                )
                jobs = Jobs(proc.url, people.bench_admin)
                try:
                    jobs.wait_idle(params.timeout)  # the scan the daemon runs at startup
                    # One album and one scan first: connections, the first ingestion, caches.
                    requester.wait(requester.start([(people.users[0], 0)]), params.timeout)
                    jobs.trigger()
                    jobs.wait_idle(params.timeout)
                    jobs.forget()
                    load = start_load(proc.url, plan, params, report)
                    try:
                        time.sleep(params.period + 1)  # every client has polled once
                        day = Day(requester, jobs, people, params)
                        rounds = windows(day, params.rounds)
                    finally:
                        outlived = load.poll() is not None
                        load.terminate()  # the load stops and reports what it measured
                        load.wait(timeout=60)
                    if outlived:
                        raise RuntimeError("the load ended before the windows did")
                    report.seek(0)
                    samples = json.loads(report.read())["samples"]
                finally:
                    requester.close()
                    jobs.close()
    return rows(samples, rounds, jobs, params)


def start_load(url: str, plan: Path, params: Params, report: Any) -> subprocess.Popen[str]:
    """`bench.day_load` for long enough (a bound only: it is stopped once the windows end)."""
    budget = params.period + 1 + params.rounds * 2 * params.timeout
    args = [
        sys.executable, "-m", "bench.day_load", "--port", str(services.port_of(url)),
        "--plan", str(plan), "--duration", f"{min(budget, day_load.MAX_DURATION_S):.0f}",
        "--period", str(params.period), "--streamers", str(params.streamers),
        "--chunk", str(params.chunk),
    ]  # fmt: skip
    # The report goes to a file: a pipe would fill up before the load is stopped.
    return subprocess.Popen(args, stdout=report, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.realistic_day",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rescan", action="store_true", help="scans back to back while busy")
    parser.add_argument("--rounds", type=int, default=DEFAULT.rounds)
    args = parser.parse_args(argv)
    params = dataclasses.replace(DEFAULT, rescan=args.rescan, rounds=args.rounds)
    print(format_table(run(params)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
