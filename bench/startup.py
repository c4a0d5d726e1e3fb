"""Startup and memory: time to ready and idle RSS with a 100,000-track catalog.

Sides: the real `pezzottify-server` process (download manager on, default jobs) on a folder
holding a catalog of 10,000 albums (100,000 tracks) with every media file in place, against the
same daemon on an empty folder. Time to ready runs from `Popen` to the line announcing the API
(the HTTP actor starts last, so this is when every actor is ready). Idle RSS is read from /proc
once the startup jobs are done (the integrity watchdog scans the whole catalog at startup) and
the daemon has sat idle for a second. Figures: 100k-track catalog / empty, for each.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import seed, services
from bench.common import Pairs, Row, Stats, alternate, ms

NAME = "startup"
SETTLE_S = 1.0
TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Params:
    albums: int = 10_000
    rounds: int = 5


DEFAULT = Params()
SMOKE = Params(albums=20, rounds=1)


def _scans_completed(db_dir: Path) -> int:
    path = db_dir / "download_queue.db"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        try:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM audit_log WHERE event_type = 'WATCHDOG_SCAN_COMPLETED'"
                ).fetchone()[0]
            )
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0


def start_once(db_dir: Path, results: dict[str, list[float]]) -> float:
    """Start the daemon, record time to ready and idle RSS, stop it; return time to ready."""
    config = services.daemon_config(db_dir, "http://127.0.0.1:9")
    before = _scans_completed(db_dir)
    started = time.perf_counter()
    with services.daemon(db_dir, config) as proc:
        ready = time.perf_counter() - started
        deadline = time.monotonic() + TIMEOUT_S
        while _scans_completed(db_dir) <= before:  # the startup scan
            if time.monotonic() > deadline:
                raise RuntimeError("the startup integrity scan did not finish")
            time.sleep(0.05)
        time.sleep(SETTLE_S)
        results["rss"].append(services.rss_bytes(proc.proc.pid))
    results["ready"].append(ready)
    return ready


def run(params: Params = DEFAULT) -> list[Row]:
    full = seed.shared_catalog(params.albums)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        empty = Path(tmp)
        big: dict[str, list[float]] = {"ready": [], "rss": []}
        small: dict[str, list[float]] = {"ready": [], "rss": []}
        start_once(full, {"ready": [], "rss": []})  # first start: migrations, page cache
        start_once(empty, {"ready": [], "rss": []})
        ready = alternate(
            lambda: start_once(full, big), lambda: start_once(empty, small), params.rounds
        )
    for name in ("user.db", "server.db", "download_queue.db", "bench.toml"):  # leave the
        for path in full.glob(f"{name}*"):  # shared catalog as the other benchmarks expect it
            path.unlink()
    tracks = params.albums * 10
    rss = Pairs(big["rss"], small["rss"]).ratio()
    mib = 2**20
    return [
        Row(NAME, f"time to ready: {tracks:,}-track catalog ÷ empty", ready.ratio(), None,
            f"{ms(ready.side_a().median)} vs {ms(ready.side_b().median)}"),
        Row(NAME, f"idle RSS after the startup scan: {tracks:,}-track catalog ÷ empty", rss,
            None, f"{Stats.of(big['rss']).median / mib:.0f} MiB vs "
                  f"{Stats.of(small['rss']).median / mib:.0f} MiB"),
    ]  # fmt: skip
