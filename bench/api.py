"""API throughput: three authenticated routes against a bare route on the same stack.

Sides: the daemon (a real `pezzottify-server` process) answering `GET /v1/download/limits`,
`GET /v1/content/album/{id}` (an album of 10 tracks) and `GET /v1/download/my-requests` (20
pending requests, each with its queue position), against `bench.bare_server` (one route, no
authentication, no database). Load: `bench.load` in its own process, 32 keep-alive
connections in a closed loop for a few seconds per side. Figure: requests per second of the
route / of the bare route, per pair; p50 and p99 of the route's latency are reported beside it.
The daemon runs with its default logging (one line per request) and metrics; the processor and
the integrity watchdog are kept idle (global capacity 0, watchdog job off) so that only the
requests are measured. Every request reads SQLite: the daemon keeps no answers in memory.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import services
from bench.common import Pairs, Row, Stats, Target, alternate
from bench.seed import synthetic_bundles, synthetic_id
from daemon.config import DownloadManagerConfig
from storage.catalog import CatalogStore
from storage.db import Database
from storage.queue import MIGRATIONS, RequestStore, now
from storage.users import Permission, Role

NAME = "api"
TARGET = Target(">=", 0.6)
USER = "bench-user"


@dataclass(frozen=True)
class Params:
    rounds: int = 5
    duration: float = 2.0
    connections: int = 32
    requests: int = 20


DEFAULT = Params()
SMOKE = Params(rounds=1, duration=0.5, connections=4, requests=3)


def seed(db_dir: Path, params: Params) -> tuple[str, str]:
    """A small catalog, `params.requests` pending requests of the user; return (token, album)."""
    catalog = CatalogStore.open(db_dir / "catalog.db")
    try:
        catalog.ingest_many(synthetic_bundles(100))
    finally:
        catalog.db.close()
    queue_db = Database(db_dir / "download_queue.db", MIGRATIONS)
    try:
        requests = RequestStore(queue_db, DownloadManagerConfig(user_max_requests_per_day=10**6))
        for k in range(params.requests):
            album = synthetic_id("L", 10_000 + k)
            requests.request_album(USER, album, f"Album {k}", "Artist", now(), False)
    finally:
        queue_db.close()
    token = services.add_session(db_dir, USER, Role.Regular, Permission.RequestContent)
    return token, synthetic_id("L", 42)


def measure(url: str, path: str, headers: list[str], params: Params) -> dict[str, float]:
    result = services.load(
        url, [path], headers=headers, connections=params.connections, duration=params.duration
    )
    return {"rps": result["rps"], "p50": result["p50"], "p99": result["p99"]}


def compare(daemon_url: str, bare_url: str, path: str, token: str, params: Params) -> Row:
    headers = [f"Authorization: Bearer {token}"]
    runs: dict[str, list[dict[str, float]]] = {"route": [], "bare": []}

    def side(kind: str, url: str, route: str, hdrs: list[str]) -> float:
        figures = measure(url, route, hdrs, params)
        runs[kind].append(figures)
        return figures["rps"]

    pairs: Pairs = alternate(
        lambda: side("route", daemon_url, path, headers),
        lambda: side("bare", bare_url, "/bare", []),
        params.rounds,
    )

    def med(kind: str, key: str) -> float:
        return Stats.of([r[key] for r in runs[kind]]).median

    detail = (
        f"{med('route', 'rps'):.0f} vs {med('bare', 'rps'):.0f} req/s; "
        f"p50 {med('route', 'p50') * 1000:.1f} ms, p99 {med('route', 'p99') * 1000:.1f} ms "
        f"(bare p50 {med('bare', 'p50') * 1000:.1f}, p99 {med('bare', 'p99') * 1000:.1f} ms)"
    )
    label = path.replace(path.rsplit("/", 1)[1], "{id}") if "/album/" in path else path
    return Row(NAME, f"GET {label}: req/s ÷ bare route", pairs.ratio(), TARGET, detail)


def run(params: Params = DEFAULT) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        db_dir = Path(tmp)
        token, album = seed(db_dir, params)
        config = services.daemon_config(
            db_dir, "http://127.0.0.1:9", albums_per_hour=0, jobs_off=["integrity_watchdog"]
        )
        with services.daemon(db_dir, config) as proc, services.bare_server() as bare:
            paths = [
                "/v1/download/limits",
                f"/v1/content/album/{album}",
                "/v1/download/my-requests",
            ]
            warm = Params(rounds=1, duration=min(params.duration, 1.0), connections=4)
            for path in paths:  # warm up caches and connections
                measure(proc.url, path, [f"Authorization: Bearer {token}"], warm)
            measure(bare, "/bare", [], warm)
            rows = [compare(proc.url, bare, path, token, params) for path in paths]
    return rows
