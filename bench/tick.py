"""Against the original design: one 20-track album with continuous processing vs a fixed tick.

The original design processed one item every `process_interval_secs`. The processor now works
back to back while ready work exists. Sides, each in this process on the real stores, against
the fake downloader in its own process (loopback, no latency): the production `Processor`, and
`FixedTickProcessor`, a subclass that exists only here and restores the original behaviour
(claim one item at each tick, never sooner). Figure: seconds from the album's request to its
completion (the processor's `OnDownloadComplete` hook), tick / continuous.

The tick is measured at `tick_secs` (0.2 s) to keep the run short. The default 5 s tick of the
original design is not run: its row is computed from the same measurements, as the album's
items minus one times the tick plus the measured time of one item, since with a tick longer
than an item each item waits for its own tick.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from actors.messages import Hook, HookFired, SchedulerMessage, WakeProcessor
from actors.processor import Processor
from bench import services
from bench.common import Pairs, Row, Stats, alternate_async
from daemon.config import Config, DownloadManagerConfig
from daemon.services import close_root, open_root
from fake_downloader import CatalogSpec, build_catalog
from storage.queue import now

NAME = "tick"
DEFAULT_TICK_S = 5.0


class FixedTickProcessor(Processor):
    """The original design, for this comparison only: one item claimed per tick, never sooner."""

    _next_tick: float | None = None

    async def _claim(self) -> sqlite3.Row | None:
        interval = self.config.process_interval_secs
        if self._next_tick is None:
            self._next_tick = trio.current_time()
        await trio.sleep_until(self._next_tick)
        self._next_tick += interval
        return await super()._claim()

    async def _wait_for_work(self) -> None:
        """The next tick is the only wake-up."""


@dataclass(frozen=True)
class Params:
    rounds: int = 3
    tracks: int = 20
    tick_secs: float = 0.2
    audio_bytes: int = 256 * 1024


DEFAULT = Params()
SMOKE = Params(rounds=1, tracks=2, tick_secs=0.05, audio_bytes=8 * 1024)


class Side:
    """One processor on its own folder, fed one album at a time."""

    def __init__(self, db_dir: Path, url: str, ticking: bool, tick_secs: float) -> None:
        dm = DownloadManagerConfig(
            max_albums_per_hour=10**6, max_albums_per_day=10**7, user_max_requests_per_day=10**6,
            user_max_queue_size=10**6, process_interval_secs=tick_secs,
        )  # fmt: skip
        self.config = Config(db_dir=db_dir, media_path=db_dir, downloader_url=url,
                             download_manager=dm)  # fmt: skip
        self.kind = FixedTickProcessor if ticking else Processor
        self.wake_send, self.wake_recv = trio.open_memory_channel[WakeProcessor](1)
        self.hook_send, self.hook_recv = trio.open_memory_channel[HookFired](64)
        self.shutdown = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        inbox, _ = trio.open_memory_channel[SchedulerMessage](1)  # no scheduler runs here
        self.root = await trio.to_thread.run_sync(
            functools.partial(open_root, self.config, scheduler_inbox=inbox, wake=self.wake_send)
        )
        downloads = self.root.downloads
        assert downloads is not None  # the download manager is on
        self.requests = downloads.requests
        try:
            processor = self.kind(
                downloads.queue, self.root.catalog, downloads.downloader,
                self.root.media, self.root.metrics, self.config.download_manager,
                self.wake_recv, self.hook_send, shutdown=self.shutdown, shutdown_timeout=5,
            )  # fmt: skip
            async with trio.open_nursery() as nursery:
                await nursery.start(processor.run)
                task_status.started()
        finally:
            await downloads.downloader.aclose()
            await trio.to_thread.run_sync(close_root, self.root)

    async def album(self, album_id: str) -> float:
        """Seconds from the request to the album's completion."""
        requests = self.requests
        started = time.perf_counter()
        await requests.db.run(
            requests.request_album, "bench", album_id, "Album", "Artist", now(), False
        )
        with contextlib.suppress(trio.WouldBlock):  # a wake-up is already pending
            self.wake_send.send_nowait(WakeProcessor())
        with trio.fail_after(600):
            async for message in self.hook_recv:
                if message.hook is Hook.OnDownloadComplete:
                    return time.perf_counter() - started
        raise RuntimeError("the processor stopped")


async def measure(url: str, spec: CatalogSpec, root: Path, params: Params) -> Pairs:
    catalog = build_catalog(spec)
    albums = iter(catalog.album_ids)
    continuous = Side(root / "continuous", url, False, params.tick_secs)
    ticking = Side(root / "tick", url, True, params.tick_secs)
    async with trio.open_nursery() as nursery:
        for side in (continuous, ticking):
            side.config.db_dir.mkdir()
            await nursery.start(side.run)
        await continuous.album(next(albums))  # warm-up: connections, first ingestion
        pairs = await alternate_async(
            lambda: ticking.album(next(albums)), lambda: continuous.album(next(albums)),
            params.rounds,
        )  # fmt: skip
        for side in (continuous, ticking):
            side.shutdown.set()
            side.wake_send.close()
    return pairs


def run(params: Params = DEFAULT) -> list[Row]:
    spec = CatalogSpec(seed=5, artists=2 * params.rounds + 1, albums_per_artist=1,
                       tracks_per_album=params.tracks, audio_bytes=params.audio_bytes)  # fmt: skip
    flags = [
        f"--seed={spec.seed}", f"--artists={spec.artists}", "--albums-per-artist=1",
        f"--tracks-per-album={spec.tracks_per_album}", f"--audio-bytes={spec.audio_bytes}",
    ]  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="bench-tick-") as tmp,
        services.fake_downloader(*flags) as url,
    ):
        pairs = trio.run(measure, url, spec, Path(tmp), params)
    items = params.tracks + 3  # the album, its tracks, a cover and a portrait
    per_item = pairs.side_b().median / items
    projected = [(items - 1) * DEFAULT_TICK_S + per_item * (b / pairs.side_b().median)
                 for b in pairs.b]  # fmt: skip
    projection = Pairs(projected, pairs.b)
    cont = pairs.side_b().median
    return [
        Row(NAME, f"{params.tracks}-track album: {params.tick_secs:g} s tick (measured) ÷ "
            "continuous", pairs.ratio(), None,
            f"{pairs.side_a().median:.2f} s vs {cont:.2f} s ({items} items)"),
        Row(NAME, f"{params.tracks}-track album: original {DEFAULT_TICK_S:g} s tick (computed) "
            "÷ continuous", projection.ratio(), None,
            f"{Stats.of(projected).median:.0f} s vs {cont:.2f} s"),
    ]  # fmt: skip
