"""A million-track library: startup, memory, the integrity scan and two pages at that size.

The library (`bench.library_seed`): 50,000 albums of 20 tracks (1,000,000 tracks, 5,000 artists)
with every audio file, cover and portrait in place, and a download history of 1,101,000 queue
items (the 50,000 albums COMPLETED with their 1,050,000 children, and 1,000 albums FAILED
`not_found`) requested by 300 users and by one listener with 50 requests. The smaller case is
the same at 1/100: 500 albums (10,000 tracks), 10,000-odd queue items, the listener's 50 requests.
Both are built once and kept between runs (see `bench.library_seed`); each run copies their
databases into a temporary folder (media folders linked), so the kept copy never changes.

- Time to ready: the real `pezzottify-server` process (default jobs) from `Popen` to its
  "listening on" line; idle RSS read from /proc once its startup integrity scan has completed and
  it has sat idle for a second (`bench.startup.start_once`). Figures are absolute (seconds, MiB):
  a user waits the seconds and the household's machine pays the memory whatever else runs. The
  10,000-track library's figures are beside them, measured in alternation.
- Integrity scan: the watchdog's own `scan()` on the million-track library (in this process, on
  a trio event loop, as the daemon runs it) against its listing floor (`bench.watchdog.floor`:
  list both media folders and read every track id in one thread). Figure: scan / floor.
- Pages: `GET /v1/content/album/{id}` and the listener's `GET /v1/download/my-requests`, each
  from `bench.load` (its own process, one keep-alive connection, so a latency is the daemon's
  alone), on a daemon holding the million-track library against one holding the 10,000-track
  library (both running, the watchdog job and the processor idle), side by side in alternation.
  The load cycles through 400 albums spread over the catalog, and through 400 page sizes of
  my-requests (`limit` 50 to 449: the same 50 requests each time), so the reads are spread over
  the catalog rather than on one album's pages. Figure: p99 latency, million / 10,000.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from bench import services
from bench.common import Pairs, Row, Stats, Target, alternate, ms
from bench.library_seed import LISTENER, Shape, library
from bench.seed import synthetic_id
from bench.startup import start_once
from bench.watchdog import scan_against_floor
from storage.users import Permission, Role

NAME = "million"
READY_TARGET = Target("<=", 3.0)  # seconds
RSS_TARGET = Target("<=", 200.0)  # MiB
SCAN_TARGET = Target("<=", 2.0)
P99_TARGET = Target("<=", 1.5)
MIB = 2**20
BIG = Shape(albums=50_000, artists=5_000, users=300, failed_albums=1_000)
SMALL = Shape(albums=500, artists=50, users=3, failed_albums=10)
DATABASES = ("catalog.db", "download_queue.db")


@dataclass(frozen=True)
class Params:
    big: Shape = BIG
    small: Shape = SMALL
    start_rounds: int = 3
    scan_rounds: int = 3
    api_rounds: int = 5
    duration: float = 3.0
    cycled: int = 400  # albums (and page sizes) the page loads go through
    cache: Path | None = field(default=None, compare=False)  # None: the system's temp dir


DEFAULT = Params()
SMOKE = Params(
    big=Shape(albums=40, artists=4, users=3, failed_albums=2, listener_requests=5),
    small=Shape(albums=4, artists=2, users=2, failed_albums=1, listener_requests=2),
    start_rounds=1, scan_rounds=1, api_rounds=1, duration=0.3, cycled=6,
)  # fmt: skip


def working_copy(source: Path, into: Path) -> Path:
    """The library's databases copied into `into`, its media folders linked."""
    into.mkdir()
    for name in DATABASES:
        shutil.copyfile(source / name, into / name)
    for folder in ("audio", "images"):
        (into / folder).symlink_to(source / folder, target_is_directory=True)
    return into


def startup(big: Path, small: Path, params: Params) -> list[Row]:
    figures: dict[Path, dict[str, list[float]]] = {
        db_dir: {"ready": [], "rss": []} for db_dir in (big, small)
    }
    for db_dir in (big, small):  # first start: the page cache; not counted
        start_once(db_dir, {"ready": [], "rss": []})
    alternate(
        lambda: start_once(big, figures[big]),
        lambda: start_once(small, figures[small]),
        params.start_rounds,
    )
    ready = {k: Stats.of(v["ready"]) for k, v in figures.items()}
    rss = {k: Stats.of([b / MIB for b in v["rss"]]) for k, v in figures.items()}
    n, m = f"{params.big.tracks:,}", f"{params.small.tracks:,}"
    return [
        Row(NAME, f"time to ready (s), {n} tracks", ready[big], READY_TARGET,
            f"{ms(ready[big].median)} vs {ms(ready[small].median)} with {m} tracks"),
        Row(NAME, f"idle RSS after the startup scan (MiB), {n} tracks", rss[big], RSS_TARGET,
            f"{rss[big].median:.0f} MiB vs {rss[small].median:.0f} MiB with {m} tracks"),
    ]  # fmt: skip


async def scan_cost(db_dir: Path, params: Params) -> Row:
    """The watchdog's scan of the big library against its listing floor."""
    pairs, reports = await scan_against_floor(db_dir, params.scan_rounds)
    missing = reports[-1]["missing_track_audio"]
    detail = (
        f"scan {ms(pairs.side_a().median)} vs floor {ms(pairs.side_b().median)} "
        f"({params.big.tracks:,} tracks; the scan reported {missing} missing)"
    )
    return Row(NAME, f"{params.big.tracks:,}-track scan ÷ listing + reading the track ids",
               pairs.ratio(), SCAN_TARGET, detail)  # fmt: skip


def page_paths(shape: Shape, cycled: int) -> dict[str, list[str]]:
    """Per route measured, the paths the load cycles through (see the module's docstring)."""
    step = max(shape.albums // cycled, 1)
    albums = [synthetic_id("L", k) for k in range(0, shape.albums, step)][:cycled]
    return {
        "GET /v1/content/album/{id}": [f"/v1/content/album/{a}" for a in albums],
        "GET /v1/download/my-requests": [
            f"/v1/download/my-requests?limit={shape.listener_requests + n}" for n in range(cycled)
        ],
    }


def pages(big: Path, small: Path, params: Params) -> list[Row]:
    tokens = {
        db_dir: services.add_session(db_dir, LISTENER, Role.Regular, Permission.RequestContent)
        for db_dir in (big, small)
    }
    configs = {
        db_dir: services.daemon_config(
            db_dir, "http://127.0.0.1:9", albums_per_hour=0, jobs_off=["integrity_watchdog"]
        )
        for db_dir in (big, small)
    }
    with (
        services.daemon(big, configs[big]) as big_proc,
        services.daemon(small, configs[small]) as small_proc,
    ):
        urls = {big: big_proc.url, small: small_proc.url}
        rows = []
        for label in page_paths(params.big, params.cycled):
            rows.append(_compare(label, urls, tokens, big, small, params))
    return rows


def _compare(
    label: str,
    urls: dict[Path, str],
    tokens: dict[Path, str],
    big: Path,
    small: Path,
    params: Params,
) -> Row:
    shapes = {big: params.big, small: params.small}
    runs: dict[Path, list[dict[str, Any]]] = {big: [], small: []}

    def side(db_dir: Path, duration: float, keep: bool = True) -> float:
        result = services.load(
            urls[db_dir], page_paths(shapes[db_dir], params.cycled)[label],
            headers=[f"Authorization: Bearer {tokens[db_dir]}"], connections=1,
            duration=duration,
        )  # fmt: skip
        if keep:
            runs[db_dir].append(result)
        p99: float = result["p99"]
        return p99

    for db_dir in (big, small):  # warm the connections and the pages read
        side(db_dir, min(params.duration, 1.0), keep=False)
    pairs: Pairs = alternate(
        lambda: side(big, params.duration), lambda: side(small, params.duration), params.api_rounds
    )

    def med(db_dir: Path, key: str) -> float:
        return Stats.of([r[key] for r in runs[db_dir]]).median

    detail = (
        f"p99 {ms(pairs.side_a().median)} vs {ms(pairs.side_b().median)}; p50 "
        f"{ms(med(big, 'p50'))} vs {ms(med(small, 'p50'))}; "
        f"{med(big, 'rps'):.0f} vs {med(small, 'rps'):.0f} req/s (1 connection)"
    )
    measure = f"{label} p99: {params.big.tracks:,} tracks ÷ {params.small.tracks:,}"
    return Row(NAME, measure, pairs.ratio(), P99_TARGET, detail)


def run(params: Params = DEFAULT) -> list[Row]:
    sources = {shape: library(shape, params.cache) for shape in (params.big, params.small)}
    with tempfile.TemporaryDirectory(prefix="bench-million-") as tmp:
        big = working_copy(sources[params.big], Path(tmp) / "big")
        small = working_copy(sources[params.small], Path(tmp) / "small")
        rows = startup(big, small, params)
        rows.append(trio.run(scan_cost, big, params))
        rows += pages(big, small, params)
    return rows
