"""Concurrency stress on a real `pezzottify-server` (SPEC §3, §8.4; RELIABILITY DB-3, SEC-6).

API writers (listening events, user creation, job triggers, admin readers) run in threads while
users flood the request endpoint concurrently and the processor downloads albums. Afterwards:
not one "database is locked" (or any other error) in the log, no 5xx, every accepted write
present exactly once, and the limits exact — each user got exactly `user_max_requests_per_day`
requests in, the rest 429 `RATE_LIMITED`; eight concurrent requests for one album queued it once
(the rest 409 `ALREADY_IN_QUEUE`); exactly `max_albums_per_day` albums started and completed while
the others wait in PENDING.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bench.seed import synthetic_bundles
from fake_downloader import CatalogSpec, build_catalog
from storage.catalog import CatalogStore
from tests.reliability.harness import Rig, auth, rig, running_fake
from tests.reliability.invariants import (
    Expected,
    check_files,
    check_integrity,
    check_queue,
    queue_items,
    rows,
)
from tests.support.process import DaemonProcess

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=31, artists=25, albums_per_artist=3, tracks_per_album=2, audio_bytes=16 * 1024,
    image_bytes=2048,
)  # fmt: skip
FAKE = build_catalog(SPEC)
FLOODERS = [f"flooder{n}" for n in range(6)]
RACER = "racer"
PASSWORD = "stress-password-1"
PER_DAY = 5  # user_max_requests_per_day
ASKED = 12  # albums each flooder asks for at once
CAPACITY = 7  # max_albums_per_day
RACE = 8  # concurrent requests for the racer's one album
# The writers keep going at least this long (`STRESS_SECONDS=60` for a long soak).
LOAD_SECONDS = float(os.environ.get("STRESS_SECONDS", "4"))
Answer = tuple[int, str | None]  # status, error code
Step = Callable[[httpx.Client, int], tuple[str, httpx.Response]]  # one writer request


class Load:
    """Threads hammering the API until stopped; every answer is recorded."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[str, int, str | None]] = []
        self.threads: list[threading.Thread] = []

    def record(self, kind: str, response: httpx.Response) -> None:
        code = response.json().get("code") if response.status_code >= 400 else None
        with self.lock:
            self.answers.append((kind, response.status_code, code))

    def loop(self, token: str, step: Step) -> None:
        def run() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=self.base_url, headers=headers, timeout=30) as client:
                for n in itertools.count():
                    if self.stop.is_set():
                        return
                    self.record(*step(client, n))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self.threads), "a writer hung"

    def statuses(self, kind: str) -> Counter[int]:
        return Counter(status for k, status, _ in self.answers if k == kind)


def login(base_url: str, handle: str, password: str) -> str:
    response = httpx.post(
        f"{base_url}/v1/auth/login", json={"user_handle": handle, "password": password}, timeout=30
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def seed_tracks(db_dir: Path) -> list[str]:
    """A few catalog tracks for the listening writers (none of them downloadable)."""
    store = CatalogStore.open(db_dir / "catalog.db")
    bundles = list(synthetic_bundles(10, tracks_per_album=5, artists=5))
    store.ingest_many(bundles)
    store.db.close()
    return [t.id for b in bundles for t in b.tracks]


def start_writers(load: Load, admin: str, listener: str, tracks: list[str]) -> None:
    def listen(client: httpx.Client, n: int) -> tuple[str, httpx.Response]:
        body = {"track_id": tracks[n % len(tracks)], "duration_ms": 1000}
        return "listen", client.post("/v1/user/listening", json=body)

    def create_user(client: httpx.Client, n: int) -> tuple[str, httpx.Response]:
        body = {"user_handle": f"extra-{threading.get_ident()}-{n}", "roles": ["Regular"]}
        return "create_user", client.post("/v1/admin/users", json=body)

    def trigger(client: httpx.Client, n: int) -> tuple[str, httpx.Response]:
        time.sleep(0.05)
        return "trigger", client.post("/v1/admin/jobs/popular_content/trigger")

    def read(client: httpx.Client, n: int) -> tuple[str, httpx.Response]:
        path = ("/v1/download/admin/stats", "/v1/download/admin/requests")[n % 2]
        return "read", client.get(path)

    for _ in range(4):
        load.loop(listener, listen)
    for _ in range(2):
        load.loop(admin, create_user)
    load.loop(admin, trigger)
    load.loop(admin, read)


def request_album(base_url: str, token: str, index: int) -> tuple[str, int, str | None]:
    body = {"album_id": FAKE.album_ids[index], "album_name": "A", "artist_name": "B"}
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.post(
        f"{base_url}/v1/download/request/album", json=body, headers=headers, timeout=30
    )
    code = response.json().get("code") if response.status_code >= 400 else None
    return token, response.status_code, code


def flood(base_url: str, tokens: dict[str, str]) -> dict[str, Counter[Answer]]:
    """Every flooder asks for ASKED albums and the racer RACE times for one, all at once."""
    jobs = [(tokens[u], n * ASKED + k) for n, u in enumerate(FLOODERS) for k in range(ASKED)]
    jobs += [(tokens[RACER], len(FLOODERS) * ASKED)] * RACE
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(lambda job: request_album(base_url, *job), jobs))
    by_user = {token: user for user, token in tokens.items()}
    result: dict[str, Counter[Answer]] = {u: Counter() for u in tokens}
    for token, status, code in answers:
        result[by_user[token]][(status, code)] += 1
    return result


def capacity_used_up(r: Rig) -> bool:
    items = queue_items(r.db_dir)
    albums = [i for i in items if i["parent_id"] is None]
    busy = [i for i in items if i["status"] in ("IN_PROGRESS", "RETRY_WAITING")]
    return not busy and sum(a["status"] == "COMPLETED" for a in albums) == CAPACITY


def test_writers_request_floods_and_the_processor_together(tmp_path: Path) -> None:
    dm = {"user_max_requests_per_day": PER_DAY, "max_albums_per_day": CAPACITY}
    jobs = {"integrity_watchdog": {"enabled": False}}  # it would queue repairs for the seed
    with (
        running_fake(SPEC, "--latency-ms", "5") as fake,
        rig(tmp_path, fake, dm=dm, jobs=jobs) as r,
    ):
        tracks = seed_tracks(r.db_dir)
        auth(r.db_dir, [
            line for user in [*FLOODERS, RACER] for line in (
                f"add-user {user}", f"add-login {user} {PASSWORD}",
                f"add-permission {user} RequestContent",
            )
        ])  # fmt: skip
        daemon = r.start()
        with ThreadPoolExecutor(8) as pool:
            handles = [*FLOODERS, RACER]
            logged_in = pool.map(lambda u: login(daemon.url, u, PASSWORD), handles)
            tokens = dict(zip(handles, logged_in, strict=True))
        admin = r.client().headers["Authorization"].removeprefix("Bearer ")
        load = Load(daemon.url)
        start_writers(load, admin, tokens[RACER], tracks)
        started = time.monotonic()
        try:
            outcome = flood(daemon.url, tokens)
            r.wait_for(lambda: capacity_used_up(r), 60, "the processor did not use the capacity")
            time.sleep(max(0.0, LOAD_SECONDS - (time.monotonic() - started)))
        finally:
            load.join()
        check_limits(r, daemon, outcome, tokens)
        check_writers(r, daemon, load)
    log = r.logs[-1]
    for bad in ("database is locked", "OperationalError", "Traceback", " ERROR "):
        assert bad not in log, f"{bad!r} in the daemon log\n{r.log_tail()}"
    check_integrity(r.db_dir)
    albums = [i["content_id"] for i in queue_items(r.db_dir) if i["parent_id"] is None]
    want = Expected.of(SPEC, albums)
    check_queue(r.db_dir, want)
    check_files(r.db_dir, SPEC, want)


def check_limits(
    r: Rig, daemon: DaemonProcess, outcome: dict[str, Counter[Answer]], tokens: dict[str, str]
) -> None:
    """Per-user and global limits held exactly under the flood."""
    for user in FLOODERS:
        assert outcome[user] == {(201, None): PER_DAY, (429, "RATE_LIMITED"): ASKED - PER_DAY}
        headers = {"Authorization": f"Bearer {tokens[user]}"}
        limits = httpx.get(f"{daemon.url}/v1/download/limits", headers=headers, timeout=10)
        user_limits = limits.json()["user"]
        assert (user_limits["requests_today"], user_limits["can_request"]) == (PER_DAY, False)
    assert outcome[RACER] == {(201, None): 1, (409, "ALREADY_IN_QUEUE"): RACE - 1}
    capacity = r.client().get("/v1/download/admin/stats").json()["capacity"]
    assert (capacity["albums_today"], capacity["at_capacity"]) == (CAPACITY, True)
    albums = [i for i in queue_items(r.db_dir) if i["parent_id"] is None]
    assert len(albums) == len(FLOODERS) * PER_DAY + 1
    started = [a for a in albums if a["started_at"] is not None]
    assert len(started) == CAPACITY and all(a["status"] == "COMPLETED" for a in started)
    assert {a["status"] for a in albums if a["started_at"] is None} == {"PENDING"}


def check_writers(r: Rig, daemon: DaemonProcess, load: Load) -> None:
    """No server error, every accepted write stored once, no actor restarted; then a clean
    stop."""
    assert not [a for a in load.answers if a[1] >= 500], Counter(load.answers)
    listened = load.statuses("listen")
    assert set(listened) == {201} and listened[201] > 0
    events = rows(r.db_dir / "user.db", "SELECT COUNT(*) AS n FROM listening_events")
    assert events[0]["n"] == listened[201]
    created = load.statuses("create_user")
    assert set(created) == {201} and created[201] > 0
    extra = "SELECT COUNT(*) AS n FROM users WHERE handle LIKE 'extra-%'"
    assert rows(r.db_dir / "user.db", extra)[0]["n"] == created[201]
    assert set(load.statuses("trigger")) <= {202, 409}
    assert set(load.statuses("read")) == {200}
    metrics = httpx.get(daemon.metrics_url, timeout=10).text.splitlines()
    restarts = [line for line in metrics if line.startswith("pezzottify_actor_restarts")]
    assert all(line.endswith(" 0.0") for line in restarts), restarts
    assert r.stop() == 0, r.log_tail()
