"""Idle streams: what 1,000 open `/v1/events` streams cost the daemon in memory and latency.

A household's phones and browser tabs keep the events stream open all day (SPEC §14), mostly
with nothing to say. The daemon is `realistic_day`'s, set up the same way (a real process, a
100,000-track catalog, its 200 users, 5 admins, the same fake downloader), and its 200 users
hold 5 streams each, 1,000 in all, each on a session of its own (a phone, a tablet, tabs): a
user sees only their own requests' events, so these streams carry nothing but the `hello` and
a keep-alive comment every 15 s, except those of the few users whose albums download in a busy
window, which follow their progress. The streams are opened and read by `bench.event_streams`,
a process of its own, at most 64 being opened at once, so neither their sockets nor their
parsing weigh on the daemon's process.

1. Memory and keep-alive, on the idle daemon before the household's load starts: the daemon's
   RSS (`/proc`), then the 1,000 streams opened, held for 80 s (longer than hypercorn's
   keep-alive timeout of 75 s, which must not close a response in progress; five keep-alive
   comments), then closed. Figures: RSS with the streams open minus before (target < 50 MiB,
   checked as ≤), and the streams that failed to open or that the server closed, here and
   through the busy windows below (target 0), with the fewest keep-alive comments a stream
   received and, for any closed, how it ended and what the daemon logged.
2. Latency: `realistic_day`'s busy window (5 albums downloading, an integrity scan, the
   household's paced clients from `bench.day_load`) with the 1,000 streams open, against the
   same busy window without them, alternated round by round (new albums every window). The
   streams are opened 15 s before the window starts, under the day's load (a household's
   streams are open long before the day's work; what the opening cost the day's requests is
   given beside), and closed after it. Figures: p99 per route, with ÷ without (target ≤ 1.2),
   and the requests that failed in either (target 0); the RSS the streams added under load,
   per round, is given beside the memory figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import busy_downloader, day_load, realistic_day, seed, services
from bench.common import Pairs, Row, Stats, Target, ms, percentile, run_alone
from bench.event_streams import held
from bench.realistic_day import Sample, Window
from fake_downloader import build_catalog
from storage.users import UserStore
from tests.support.process import DaemonProcess

NAME = "idle_streams"
RSS_TARGET = Target("<=", 50.0)
CLOSED_TARGET = Target("<=", 0.0)
P99_TARGET = Target("<=", 1.2)
ERRORS_TARGET = Target("<=", 0.0)
MiB = 2**20
SETTLE_S = 2.0  # after opening or closing the streams, before RSS is read


@dataclass(frozen=True)
class Params:
    streams: int = 1000
    per_user: int = 5  # streams (sessions) of each user; streams ÷ per_user users hold them
    hold: float = 80.0
    settle: float = 15.0  # from opening the streams to the busy window, under the day's load
    # The admin routes are asked about 28 times a window, so a window's p99 is its slowest
    # request: five rounds a side, for a median that one slow request does not decide.
    rounds: int = 5
    day: realistic_day.Params = realistic_day.DEFAULT


DEFAULT = Params()
QUICK = Params(hold=20.0, rounds=1)
SMOKE = Params(streams=12, per_user=2, hold=2.0, settle=2.0, rounds=1, day=realistic_day.SMOKE)


def stream_tokens(db_dir: Path, params: Params) -> list[str]:
    """`per_user` new sessions for each of the first users of the day, straight into user.db."""
    users = UserStore.open(db_dir / "user.db")
    try:
        tokens = []
        for n in range(params.streams):
            user = users.require(f"user{n // params.per_user}")
            tokens.append(os.urandom(24).hex())
            users.create_session(user.id, tokens[-1], {"device_name": f"bench {n}"})
        return tokens
    finally:
        users.db.close()


def rss(proc: DaemonProcess) -> float:
    return services.rss_bytes(proc.proc.pid) / MiB


@dataclass(frozen=True)
class Memory:
    before: float  # MiB, no stream open
    opened: float  # the streams opened and settled
    held: float  # at the end of the hold
    after: float  # the streams closed and settled
    ready: dict[str, Any]  # the streams' process: opened, failed, seconds, why
    report: dict[str, Any]

    @property
    def added(self) -> float:
        return self.opened - self.before


def memory(proc: DaemonProcess, tokens: list[str], folder: Path, hold: float) -> Memory:
    time.sleep(SETTLE_S)
    before = rss(proc)
    with held(proc.url, tokens, folder) as holder:
        started = time.monotonic()
        time.sleep(SETTLE_S)
        opened = rss(proc)
        time.sleep(max(0.0, hold - (time.monotonic() - started)))
        at_end = rss(proc)
        report = holder.stop()
    time.sleep(SETTLE_S)
    return Memory(before, opened, at_end, rss(proc), holder.ready, report)


@dataclass
class Windows:
    """The busy windows with the streams open and without, and what the open ones saw."""

    day: realistic_day.Day
    proc: DaemonProcess
    tokens: list[str]
    folder: Path
    settle: float
    with_streams: list[Window] = dataclasses.field(default_factory=list)
    without: list[Window] = dataclasses.field(default_factory=list)
    added: list[float] = dataclasses.field(default_factory=list)  # MiB per opening, under load
    reports: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    openings: list[Window] = dataclasses.field(default_factory=list)  # opening to window start
    refused: int = 0  # streams that failed to open
    why: set[str] = dataclasses.field(default_factory=set)
    log: str = ""  # the daemon's

    def endings(self) -> dict[str, int]:
        """How the server ended the streams it closed while held, and what it logged."""
        out: dict[str, int] = {}
        for report in self.reports:
            for stream in report["streams"]:
                if stream["closed"]:
                    out[stream["ending"]] = out.get(stream["ending"], 0) + 1
        for said in ("fell behind", "its session ended"):
            if count := self.log.count(said):
                out[f"the daemon logged '{said}'"] = count
        return out

    def open_side(self) -> None:
        before = rss(self.proc)
        started = time.monotonic()
        with held(self.proc.url, self.tokens, self.folder) as holder:
            try:
                self.refused += holder.ready["failed"]
                self.why.update(holder.ready["why"])
                time.sleep(SETTLE_S)
                self.added.append(rss(self.proc) - before)
                time.sleep(max(0.0, self.settle - (time.monotonic() - started)))
                self.openings.append((started, time.monotonic()))
                self.with_streams.append(self.day.busy())
            finally:
                self.reports.append(holder.stop())

    def closed_side(self) -> None:
        self.without.append(self.day.busy())

    def run(self, rounds: int) -> None:
        for round_ in range(rounds):
            sides = (self.open_side, self.closed_side)
            for side in sides if round_ % 2 == 0 else reversed(sides):
                side()


def run(params: Params = DEFAULT) -> list[Row]:
    # One socket per stream on both ends: the daemon and the streams' process inherit this.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    day = params.day
    if params.streams > day.users * params.per_user:
        raise ValueError("more streams than the day's users hold")
    dl = day.downloader()
    s = busy_downloader.spec(dl, 1 + 2 * params.rounds * day.albums)
    catalog = build_catalog(s)
    with tempfile.TemporaryDirectory(prefix="bench-idle-streams-") as tmp:
        folder = Path(tmp)
        work = folder / "daemon"
        work.mkdir()
        seed.seed_catalog(work, work, day.catalog_albums)
        tracks = realistic_day.seed_streams(work, day)
        realistic_day.seed_history(work, day)
        people = realistic_day.seed_people(work, day)
        tokens = stream_tokens(work, params)
        plan = realistic_day.plan_file(folder, people, tracks)
        with services.fake_downloader(*busy_downloader.downloader_flags(s, dl, None)) as url:
            config = services.daemon_config(work, url)
            with services.daemon(work, config) as proc, tempfile.TemporaryFile("w+") as report:
                requester = busy_downloader.Requester(
                    proc.url, work / "download_queue.db", catalog, day.tracks
                )
                jobs = realistic_day.Jobs(proc.url, people.bench_admin)
                try:
                    jobs.wait_idle(day.timeout)  # the scan the daemon runs at startup
                    # One album and one scan first: connections, the first ingestion, caches.
                    requester.wait(requester.start([(people.users[0], 0)]), day.timeout)
                    jobs.trigger()
                    jobs.wait_idle(day.timeout)
                    jobs.forget()
                    mem = memory(proc, tokens, folder, params.hold)
                    load = realistic_day.start_load(
                        proc.url, plan, dataclasses.replace(day, rounds=2 * params.rounds), report
                    )
                    try:
                        time.sleep(day.period + 1)  # every client has polled once
                        windows = Windows(
                            realistic_day.Day(requester, jobs, people, day),
                            proc,
                            tokens,
                            folder,
                            params.settle,
                        )
                        windows.run(params.rounds)
                    finally:
                        outlived = load.poll() is not None
                        load.terminate()  # the load stops and reports what it measured
                        load.wait(timeout=60)
                    if outlived:
                        raise RuntimeError("the load ended before the windows did")
                    report.seek(0)
                    samples = json.loads(report.read())["samples"]
                    windows.log = proc.log
                finally:
                    requester.close()
                    jobs.close()
    return rows(mem, windows, samples, params)


def _closed(report: dict[str, Any]) -> int:
    return sum(1 for s in report["streams"] if s["closed"])


def memory_rows(mem: Memory, windows: Windows, params: Params) -> list[Row]:
    per_stream = mem.added * MiB / params.streams / 1024
    under_load = ", ".join(f"{x:+.1f}" for x in windows.added)
    rss_detail = (
        f"{mem.before:.0f} MiB without streams, {mem.opened:.0f} MiB with {params.streams:,} "
        f"open ({per_stream:.0f} KiB a stream), {mem.held:.0f} MiB after {params.hold:.0f} s, "
        f"{mem.after:.0f} MiB once closed; opened in {ms(mem.ready['open_s'])}; under the "
        f"day's load, each opening added {under_load} MiB"
    )
    streams = mem.report["streams"]
    comments = min(s["comments"] for s in streams if s["hello"])
    held_s = min(s["held_s"] for s in streams if s["hello"])
    refused = mem.ready["failed"] + windows.refused
    closed = _closed(mem.report) + sum(_closed(r) for r in windows.reports)
    why = sorted(set(mem.ready["why"]) | windows.why)
    endings = "; ".join(f"{k}: {v}" for k, v in windows.endings().items())
    events = sorted(s["events"] for r in windows.reports for s in r["streams"])
    reliability_detail = (
        f"{params.streams:,} streams held {held_s:.0f} s or more on the idle daemon (hypercorn's "
        f"keep-alive timeout: 75 s), each receiving {comments} keep-alive comments or more, and "
        f"through every busy window (a stream received {events[len(events) // 2]} events in "
        f"one, median, {events[-1]} at most): {closed} closed by the server"
        + (f" ({endings})" if endings else "")
        + f", {refused} failed to open"
        + (f" ({'; '.join(why)})" if why else "")
    )
    return [
        Row(NAME, f"daemon RSS (MiB): {params.streams:,} idle event streams open minus none",
            Stats.of([mem.added]), RSS_TARGET, rss_detail),
        Row(NAME, "idle event streams that failed to open or that the server closed",
            Stats.of([float(refused + closed)]), CLOSED_TARGET, reliability_detail),
    ]  # fmt: skip


def latency_rows(windows: Windows, samples: list[Sample], params: Params) -> list[Row]:
    result = []
    for route in day_load.ROUTES:
        with_ = [realistic_day.within(samples, w, route) for w in windows.with_streams]
        without = [realistic_day.within(samples, w, route) for w in windows.without]
        pairs = Pairs([realistic_day.p99(s) for s in with_],
                      [realistic_day.p99(s) for s in without])  # fmt: skip
        p50 = [Stats.of([percentile([x[2] for x in s], 50) for s in side]).median
               for side in (with_, without)]  # fmt: skip
        detail = (
            f"p99 {ms(pairs.side_a().median)} with the streams vs {ms(pairs.side_b().median)} "
            f"without; p50 {ms(p50[0])} vs {ms(p50[1])}; {sum(map(len, with_)):,} and "
            f"{sum(map(len, without)):,} requests"
        )
        path = day_load.PATHS.get(route, "/v1/content/stream/{id} (256 KiB Range)")
        label = f"realistic day, GET {path} p99: {params.streams:,} streams open ÷ none"
        result.append(Row(NAME, label, pairs.ratio(), P99_TARGET, detail))
    errors = [
        float(realistic_day.failures(realistic_day.within(samples, a))
              + realistic_day.failures(realistic_day.within(samples, b)))
        for a, b in zip(windows.with_streams, windows.without, strict=True)
    ]  # fmt: skip
    every = sum(len(realistic_day.within(samples, w))
                for w in windows.with_streams + windows.without)  # fmt: skip
    window_s = Stats.of([b - a for a, b in windows.with_streams + windows.without]).median
    opening = [x for w in windows.openings for x in realistic_day.within(samples, w)]
    result.append(Row(
        NAME, "realistic day with the streams open: requests failed or not 2xx",
        Stats.of(errors), ERRORS_TARGET,
        f"of {every:,} requests in {2 * params.rounds} busy windows of {window_s:.1f} s; while "
        f"the streams opened and settled ({params.settle:.0f} s before each window, not in "
        f"it): p99 {ms(realistic_day.p99(opening))}, slowest {ms(max(x[2] for x in opening))} "
        f"over {len(opening):,} requests, {realistic_day.failures(opening)} failed",
    ))  # fmt: skip
    return result


def rows(mem: Memory, windows: Windows, samples: list[Sample], params: Params) -> list[Row]:
    return memory_rows(mem, windows, params) + latency_rows(windows, samples, params)


def main(argv: Sequence[str] | None = None) -> int:
    return run_alone(
        argv,
        run,
        (DEFAULT, QUICK),
        quick_help="a 20 s hold and one round",
        knob="rounds",
    )


if __name__ == "__main__":
    raise SystemExit(main())
