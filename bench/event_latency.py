"""Event latency: from a change's commit to the client, with 200 streams at an event a second.

SPEC §14's events are made from the queue's audit log after commit, stored, and handed to every
open stream that may see them. This benchmark measures how long that takes while 200 streams
each receive about one event a second, as they do while the downloader works at its real pace.

Setup: a real `pezzottify-server` process and the fake downloader (its own process) paced as
the real one is, at an eighth of its bytes: 30 ms before every answer, one audio download at a
time, audio files of 1 MiB at 512 KiB/s, so a track takes 2 s as an 8 MiB one does at 4 MiB/s
(the images, 16 KiB, are not throttled); it logs when every body went out (`--log-responses`).
200 users with ViewAnalytics (a household's admins with the queue's page open, or a wall of
dashboards) each hold a `GET /v1/events` stream, opened and read by `bench.event_streams` in a
process of its own, which notes the `time.monotonic()` at which each event's bytes were read.
They see every item's change (`queue.item`): a track's start and its completion, about one event
a second for each stream. A user requests one album per round over the API; the round ends when
download_queue.db says it COMPLETED.

Figure: for every `queue.item` of a file's DOWNLOAD_COMPLETED, and every stream, the time from
the moment the downloader handed over the last chunk of that file's body to the moment the
stream read the event. The commit comes later than that moment (the daemon still receives the
chunk, fsyncs and renames the file and commits the transition), so this is an upper bound of
commit-to-client latency, over by the daemon's own turnaround per file (`busy_downloader`
measures it: about 10 ms). p99 per round (target ≤ 250 ms), median over the rounds; p50 and
the slowest beside, and whether every stream received every event.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import busy_downloader, services
from bench.common import Row, Stats, Target, ms, percentile, run_alone
from bench.event_streams import held
from fake_downloader import build_catalog
from storage.users import Permission, Role, UserStore

NAME = "event_latency"
TARGET = Target("<=", 250.0)
MiB = 2**20
COMPLETED = "DOWNLOAD_COMPLETED"


@dataclass(frozen=True)
class Params:
    rounds: int = 2
    streams: int = 200
    tracks: int = 20
    audio_bytes: int = 1 * MiB
    rate: int = MiB // 2  # a track every 2 s: with its start, an event a second per stream
    latency_ms: float = 30.0
    timeout: float = 300.0

    def downloader(self) -> busy_downloader.Params:
        return busy_downloader.Params(
            albums=1, tracks=self.tracks, audio_bytes=self.audio_bytes, rate=self.rate,
            latency_ms=self.latency_ms, scale="",
        )  # fmt: skip


DEFAULT = Params()
QUICK = Params(rounds=1, tracks=8)
SMOKE = Params(rounds=1, streams=5, tracks=3, audio_bytes=64 * 1024, rate=256 * 1024,
               latency_ms=1.0, timeout=60.0)  # fmt: skip


@dataclass(frozen=True)
class Round:
    started: float
    ended: float
    latencies: list[float]  # seconds, one per (file completion, stream)


def tokens_of(db_dir: Path, count: int) -> list[str]:
    """`count` users with ViewAnalytics (admins), a session each, straight into user.db."""
    users = UserStore.open(db_dir / "user.db")
    try:
        tokens = []
        for n in range(count):
            user = users.create_user(f"viewer{n}", (Role.Admin,))
            tokens.append(secrets.token_urlsafe(32))
            users.create_session(user.id, tokens[-1], {"device_name": "bench"})
        return tokens
    finally:
        users.db.close()


def latencies(
    report: dict[str, Any], records: list[dict[str, Any]], windows: list[tuple[float, float]]
) -> tuple[list[Round], int]:
    """Each round's latencies, and the completion events some stream did not receive."""
    body_end = {
        r["id"]: r["end"]
        for r in records
        if r["status"] == 200 and r["end"] is not None and r["endpoint"] in ("audio", "image")
    }
    completions = {
        int(event_id): body_end[content_id]
        for event_id, (name, content_id, change) in report["seen"].items()
        if name == "queue.item" and change == COMPLETED and content_id in body_end
    }
    rounds = [Round(lo, hi, []) for lo, hi in windows]
    missed = 0
    for stream in report["streams"]:
        got = {event_id: at for event_id, at in stream["received"]}
        missed += sum(1 for event_id in completions if event_id not in got)
        for event_id, end in completions.items():
            if event_id in got:
                for r in rounds:
                    if r.started <= end <= r.ended:
                        r.latencies.append(got[event_id] - end)
    return rounds, missed


def rate_per_stream(report: dict[str, Any], windows: list[tuple[float, float]]) -> float:
    """Median over the streams of the events read per second within the rounds."""
    length = sum(hi - lo for lo, hi in windows)
    counts = [
        sum(1 for _, at in s["received"] if any(lo <= at <= hi for lo, hi in windows))
        for s in report["streams"]
    ]
    return statistics.median(counts) / length


def run(params: Params = DEFAULT) -> list[Row]:
    dl = params.downloader()
    s = busy_downloader.spec(dl, 1 + params.rounds)
    catalog = build_catalog(s)
    with tempfile.TemporaryDirectory(prefix="bench-event-latency-") as tmp:
        db_dir = Path(tmp) / "daemon"
        db_dir.mkdir()
        log = Path(tmp) / "responses.jsonl"
        token = services.add_session(db_dir, "bench", Role.Regular, Permission.RequestContent)
        viewers = tokens_of(db_dir, params.streams)
        flags = busy_downloader.downloader_flags(s, dl, log)
        with services.fake_downloader(*flags) as url:
            config = services.daemon_config(db_dir, url, jobs_off=["integrity_watchdog"])
            with services.daemon(db_dir, config) as proc:
                requester = busy_downloader.Requester(
                    proc.url, db_dir / "download_queue.db", catalog, s.tracks_per_album
                )
                try:
                    # One album first: connections, the first ingestion, the page cache.
                    requester.wait(requester.start([(token, 0)]), params.timeout)
                    with held(proc.url, viewers, Path(tmp), record=True) as holder:
                        windows = []
                        for k in range(1, 1 + params.rounds):
                            drain = requester.wait(requester.start([(token, k)]), params.timeout)
                            windows.append((drain.started, drain.ended))
                        time.sleep(0.5)  # the last completion's events reach every stream
                        report = holder.stop()
                finally:
                    requester.close()
        records = busy_downloader.read_log(log, windows[0][0])
    rounds, missed = latencies(report, records, windows)
    return [row(rounds, missed, rate_per_stream(report, windows), holder.ready, params)]


def row(
    rounds: list[Round], missed: int, rate: float, ready: dict[str, Any], params: Params
) -> Row:
    p99 = Stats.of([percentile(r.latencies, 99) * 1000 for r in rounds])
    every = [x for r in rounds for x in r.latencies]
    detail = (
        f"p50 {ms(statistics.median(every))}, slowest {ms(max(every))}; {len(every):,} "
        f"deliveries of {len(every) // max(1, params.streams):,} file completions to "
        f"{params.streams} streams, {rate:.2f} events a second per stream (median); "
        f"{missed} completion events missing from a stream; "
        f"{params.tracks} tracks of {params.audio_bytes / MiB:g} MiB at "
        f"{params.rate / MiB:g} MiB/s a round; the {params.streams} streams opened in "
        f"{ms(ready['open_s'])}; timed from the downloader's last chunk of the file "
        "(before the daemon's fsync and commit: an upper bound)"
    )
    label = f"commit-to-client p99 (ms), {params.streams} streams at about an event a second"
    return Row(NAME, label, p99, TARGET, detail)


def main(argv: Sequence[str] | None = None) -> int:
    return run_alone(
        argv,
        run,
        (DEFAULT, QUICK),
        quick_help="one round of 8 tracks",
        knob="streams",
    )


if __name__ == "__main__":
    raise SystemExit(main())
