"""The downloader kept busy: how much of the time the one-at-a-time downloader spends sending.

The real downloader serves one audio download at a time (a second one gets 429) at a few MiB/s,
so the most a server can get from it is the downloader sending audio all the time work is
ready. This benchmark sets the fake downloader (its own process) as the spec describes it,
30 ms before every answer and audio at 4 MiB/s, one audio download at a time; requests 5 albums
of 20 tracks of 8 MiB (and their cover and portrait) at once over the API of a real daemon
process (capacity unbounded); and reads the fake downloader's log of every response
(`--log-responses`, `fake_downloader.response_log`: when each body started and ended, on the
monotonic clock this process reads too), while this process reads download_queue.db every
10 ms to note when each album and the last TRACK_AUDIO item are COMPLETED.

Figures:

- sending ÷ wall time: the union of the intervals during which the fake downloader streams an
  audio body, over the time work is ready (from the first request to the queue's last
  TRACK_AUDIO completion). The ceiling is 1.0; with one request at a time, the 30 ms latency
  before each file alone keeps a perfect client to T / (T + 30 ms) of it (T, a file's
  transfer), which the row gives beside the figure. The row also splits the time without
  audio: the downloader's latency, the turnaround per file (from the end of one audio body to
  the next audio request's arrival), the time between albums (images, the next album's
  metadata and ingestion), the first and last moments. For scale, the median turnaround of a
  bare loop (one `httpx.Client` fetching 8 of the files one after the other into a file,
  nothing else, once the rounds are over) is given beside the daemon's.
- album completion ÷ its transfer times, per album: from the album's processing start (its
  first request reaching the downloader, `/album/{id}`) to its COMPLETED in the queue, over the
  sum of its audio and image transfer intervals in the log. Median over the albums of every
  round, with min and max.

Scale. At the spec's size a round takes 5 x 20 x 8 MiB ÷ 4 MiB/s ≈ 200 s, too long to repeat.
By default every time of the downloader is divided by 8 and nothing else changes: the same
8 MiB files at 32 MiB/s (0.25 s each) after 3.75 ms, so the ratio of transfer to latency is
the spec's (2 s to 30 ms) and the body goes out in the same 128 chunks of 64 KiB (the fake
downloader hands the last one over one chunk's time early, 1/128 of a file, as at full size).
A round takes about 27 s; 3 rounds after a one-album warm-up. The daemon's own cost per file
does not shrink, so it weighs 8 times more than at full size: the scaled figures are a bound
below the full-size ones. `make bench` (`run`) measures the spec's size, one round of about
200 s; `python -m bench.busy_downloader` alone runs the scaled rounds, `--full` the spec's.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import services
from bench.common import Row, Stats, Target, format_table, ms
from fake_downloader import Catalog, CatalogSpec, build_catalog
from storage.users import Permission, Role

NAME = "busy_downloader"
SENDING_TARGET = Target(">=", 0.97)
ALBUM_TARGET = Target("<=", 1.05)
POLL_S = 0.01
MiB = 2**20


@dataclass(frozen=True)
class Params:
    rounds: int = 3
    albums: int = 5
    tracks: int = 20
    audio_bytes: int = 8 * MiB
    rate: int = 32 * MiB  # bytes per second of audio
    latency_ms: float = 3.75
    image_bytes: int = 16 * 1024
    scale: str = "the spec's times ÷ 8"
    timeout: float = 900.0

    @property
    def file_s(self) -> float:
        return self.audio_bytes / self.rate


DEFAULT = Params()
FULL = Params(rounds=1, rate=4 * MiB, latency_ms=30.0, scale="the spec's size")
SMOKE = Params(
    rounds=1, albums=2, tracks=3, audio_bytes=256 * 1024, rate=8 * MiB, latency_ms=1.0,
    scale="toy", timeout=60.0,
)  # fmt: skip


def spec(params: Params, albums: int) -> CatalogSpec:
    """One album per artist (each album brings its own portrait), `albums` of them."""
    return CatalogSpec(
        seed=23,
        artists=albums,
        albums_per_artist=1,
        tracks_per_album=params.tracks,
        audio_bytes=params.audio_bytes,
        image_bytes=params.image_bytes,
    )


def downloader_flags(s: CatalogSpec, params: Params, log: Path | None) -> list[str]:
    flags = [
        f"--seed={s.seed}",
        f"--artists={s.artists}",
        "--albums-per-artist=1",
        f"--tracks-per-album={s.tracks_per_album}",
        f"--audio-bytes={s.audio_bytes}",
        f"--image-bytes={s.image_bytes}",
        f"--latency-ms={params.latency_ms}",
        f"--audio-bytes-per-sec={params.rate}",
    ]
    return [*flags, f"--log-responses={log}"] if log is not None else flags


@dataclass
class Drain:
    """One batch of albums through the daemon, as this process saw it (monotonic times)."""

    started: float
    album_ids: list[str]
    completed: dict[str, float] = field(default_factory=dict)  # album id -> COMPLETED seen
    audio_done: float = 0.0  # every TRACK_AUDIO of the batch COMPLETED

    @property
    def ended(self) -> float:
        return max(self.completed.values())


class Requester:
    """Requests albums over the API and follows them in download_queue.db (read-only)."""

    def __init__(self, url: str, queue_db: Path, catalog: Catalog, tracks: int) -> None:
        self.url = url
        self.queue_db = queue_db
        self.catalog = catalog
        self.tracks = tracks
        self.clients: dict[str, httpx.Client] = {}

    def request(self, token: str, index: int) -> None:
        client = self.clients.get(token)
        if client is None:
            headers = {"Authorization": f"Bearer {token}"}
            client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
            self.clients[token] = client
        c = self.catalog
        body = {
            "album_id": c.album_ids[index],
            "album_name": c.album_names[index],
            "artist_name": c.artist_names[c.album_artist(index)],
        }
        response = client.post("/v1/download/request/album", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"request refused: {response.status_code} {response.text}")

    def start(self, requests: Sequence[tuple[str, int]]) -> Drain:
        """Request the albums `(token, album index)` one after the other, starting the clock."""
        drain = Drain(time.monotonic(), [self.catalog.album_ids[i] for _, i in requests])
        for token, index in requests:
            self.request(token, index)
        return drain

    def poll(self, conn: sqlite3.Connection, drain: Drain) -> bool:
        """Note what completed since the last poll; True once every album has."""
        marks = ",".join("?" for _ in drain.album_ids)
        # Placeholders only: the ids are bound as parameters.
        sql = (
            "SELECT a.content_id, a.status, (SELECT COUNT(*) FROM queue_items c "  # noqa: S608
            "WHERE c.parent_id = a.id AND c.content_type = 'TRACK_AUDIO' "
            "AND c.status = 'COMPLETED') FROM queue_items a "
            f"WHERE a.parent_id IS NULL AND a.content_id IN ({marks})"
        )
        rows = conn.execute(sql, drain.album_ids).fetchall()
        seen = time.monotonic()
        audio = 0
        for album_id, status, tracks_done in rows:
            if status == "FAILED":
                raise RuntimeError(f"album {album_id} failed during the benchmark")
            if status == "COMPLETED":
                drain.completed.setdefault(album_id, seen)
            audio += tracks_done
        if not drain.audio_done and audio == len(drain.album_ids) * self.tracks:
            drain.audio_done = seen
        return len(drain.completed) == len(drain.album_ids)

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.queue_db}?mode=ro", uri=True)

    def wait(self, drain: Drain, timeout: float) -> Drain:
        deadline = time.monotonic() + timeout
        with self.connect() as conn:
            while not self.poll(conn, drain):
                if time.monotonic() > deadline:
                    raise RuntimeError("albums did not complete in time")
                time.sleep(POLL_S)
        return drain

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def read_log(path: Path, since: float) -> list[dict[str, Any]]:
    """The fake downloader's responses to requests received at or after `since`."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["received"] >= since]


def union_within(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of `intervals`, clipped to `[lo, hi]`."""
    total, reach = 0.0, lo
    for start, end in sorted(intervals):
        start, end = max(start, reach), min(end, hi)
        if end > start:
            total += end - start
            reach = end
    return total


@dataclass(frozen=True)
class Idle:
    """Where the window's time without audio went, in seconds."""

    latency: float = 0.0  # an audio request received, its answer not begun (the downloader's)
    turnaround: float = 0.0  # one audio body ended, the next audio request not yet received
    between_albums: float = 0.0  # from an album's last audio to the next one's first
    ends: float = 0.0  # before the first audio, after the last until the queue says COMPLETED

    def __add__(self, other: Idle) -> Idle:
        return Idle(*(getattr(self, f) + getattr(other, f) for f in _IDLE_FIELDS))

    def scaled(self, k: float) -> Idle:
        return Idle(*(getattr(self, f) * k for f in _IDLE_FIELDS))


_IDLE_FIELDS = ("latency", "turnaround", "between_albums", "ends")


@dataclass(frozen=True)
class RoundFigures:
    sending: float  # fraction of the window
    window: float
    albums: list[float]  # completion ÷ transfer, per album
    album_s: list[float]  # completion, per album
    file_s: float  # mean audio transfer interval
    turnaround_s: float  # median end of one audio body -> next audio request received
    idle: Idle
    refused: int  # 429s


def album_files(catalog: Catalog, index: int) -> set[str]:
    """Ids of every file an album brings: its audio, its cover, its artist's portrait."""
    artist = catalog.album_artist(index)
    files = {catalog.track_ids[t] for t in catalog.album_tracks(index)}
    files |= {catalog.cover_ids[index], catalog.small_cover_ids[index]}
    return files | {catalog.portrait_ids[artist], catalog.small_portrait_ids[artist]}


def idle_time(drain: Drain, audio: list[dict[str, Any]], catalog: Catalog) -> Idle:
    """Split the window's time without audio between its causes (`audio` sorted by start)."""
    album_of = {
        catalog.track_ids[t]: a for a in range(catalog.spec.album_count)
        for t in catalog.album_tracks(a)
    }  # fmt: skip
    latency = turnaround = between = 0.0
    for a, b in itertools.pairwise(audio):
        if album_of[a["id"]] != album_of[b["id"]]:
            between += max(0.0, b["start"] - a["end"])
            continue
        latency += b["start"] - b["received"]
        turnaround += max(0.0, b["received"] - a["end"])
    ends = (audio[0]["start"] - drain.started) + max(0.0, drain.audio_done - audio[-1]["end"])
    return Idle(latency, turnaround, between, ends)


def figures(drain: Drain, records: list[dict[str, Any]], catalog: Catalog) -> RoundFigures:
    ok = [r for r in records if r["status"] == 200 and r["start"] is not None]
    audio = sorted((r for r in ok if r["endpoint"] == "audio"), key=lambda r: r["start"])
    spans = [(r["start"], r["end"]) for r in audio]
    window = drain.audio_done - drain.started
    sending = union_within(spans, drain.started, drain.audio_done) / window
    turns = [b["received"] - a["end"] for a, b in itertools.pairwise(audio)]
    ratios, album_s = [], []
    for album_id in drain.album_ids:
        index = catalog.album_index(album_id)
        assert index is not None
        files = album_files(catalog, index)
        transfer = sum(r["end"] - r["start"] for r in ok if r["id"] in files)
        begun = min(r["received"] for r in records if r["id"] == album_id)
        took = drain.completed[album_id] - begun
        ratios.append(took / transfer)
        album_s.append(took)
    return RoundFigures(
        sending=sending,
        window=window,
        albums=ratios,
        album_s=album_s,
        file_s=statistics.mean(e - s for s, e in spans),
        turnaround_s=statistics.median(turns) if turns else 0.0,
        idle=idle_time(drain, audio, catalog),
        refused=sum(1 for r in records if r["endpoint"] == "audio" and r["status"] == 429),
    )


BARE_FILES = 8


def bare_loop(url: str, catalog: Catalog, index: int, folder: Path) -> float:
    """Fetch `BARE_FILES` audio files of album `index` one after the other with one
    `httpx.Client`, each written to a file and nothing else; return when it started."""
    started = time.monotonic()
    tracks = list(catalog.album_tracks(index))[:BARE_FILES]
    with httpx.Client(base_url=url, timeout=60) as client:
        for t in tracks:
            with client.stream("GET", f"/track/{catalog.track_ids[t]}/audio") as response:
                response.raise_for_status()
                with open(folder / "bare.part", "wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
    return started


def median_turnaround(records: list[dict[str, Any]]) -> float:
    audio = sorted(
        (r for r in records if r["endpoint"] == "audio" and r["status"] == 200),
        key=lambda r: r["start"],
    )
    return float(statistics.median(b["received"] - a["end"] for a, b in itertools.pairwise(audio)))


@dataclass(frozen=True)
class Measured:
    rounds: list[RoundFigures]
    bare_turnaround_s: float  # the same downloader, a bare sequential httpx loop


def measure(params: Params, keep_log: Path | None = None) -> Measured:
    """Run the rounds, then the bare loop; with `keep_log`, the fake downloader's log is
    copied there."""
    s = spec(params, 1 + params.rounds * params.albums)
    catalog = build_catalog(s)
    rounds: list[RoundFigures] = []
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as tmp:
        db_dir = Path(tmp) / "daemon"
        db_dir.mkdir()
        log = Path(tmp) / "responses.jsonl"
        token = services.add_session(db_dir, "bench", Role.Regular, Permission.RequestContent)
        with services.fake_downloader(*downloader_flags(s, params, log)) as url:
            config = services.daemon_config(db_dir, url, jobs_off=["integrity_watchdog"])
            with services.daemon(db_dir, config) as proc:
                requester = Requester(
                    proc.url, db_dir / "download_queue.db", catalog, s.tracks_per_album
                )
                try:
                    # One album first: connections, the first ingestion, the page cache.
                    requester.wait(requester.start([(token, 0)]), params.timeout)
                    for k in range(params.rounds):
                        batch = range(1 + k * params.albums, 1 + (k + 1) * params.albums)
                        drain = requester.start([(token, i) for i in batch])
                        requester.wait(drain, params.timeout)
                        rounds.append(figures(drain, read_log(log, drain.started), catalog))
                finally:
                    requester.close()
            # The daemon is idle now: the downloader's own turnaround, with the least client.
            bare = median_turnaround(read_log(log, bare_loop(url, catalog, 0, Path(tmp))))
        if keep_log is not None:
            shutil.copyfile(log, keep_log)
    return Measured(rounds, bare)


def rows(measured: Measured, params: Params) -> list[Row]:
    rounds = measured.rounds
    sending = Stats.of([r.sending for r in rounds])
    albums = Stats.of([x for r in rounds for x in r.albums])
    file_s = statistics.median(r.file_s for r in rounds)
    ceiling = file_s / (file_s + params.latency_ms / 1000)
    idle = sum((r.idle for r in rounds), Idle()).scaled(1 / len(rounds))
    shape = (
        f"{params.albums} albums x {params.tracks} x {params.audio_bytes / MiB:g} MiB at "
        f"{params.rate / MiB:g} MiB/s, {params.latency_ms:g} ms latency ({params.scale})"
    )
    refused = sum(r.refused for r in rounds)
    sending_detail = (
        f"{shape}; a file {ms(file_s)}, ceiling with one latency per file {ceiling:.3f}; "
        f"without audio {ms(sum(getattr(idle, f) for f in _IDLE_FIELDS))} of a "
        f"{statistics.median(r.window for r in rounds):.1f} s window: latency "
        f"{ms(idle.latency)}, turnaround {ms(idle.turnaround)} (median "
        f"{ms(statistics.median(r.turnaround_s for r in rounds))} a file; a bare httpx loop "
        f"{ms(measured.bare_turnaround_s)}), between albums "
        f"{ms(idle.between_albums)}, first and last {ms(idle.ends)}; {refused} audio 429s"
    )
    album_detail = (
        f"median {albums.median:.3f}, max {albums.high:.3f} over {albums.n} albums; an album "
        f"{statistics.median(x for r in rounds for x in r.album_s):.2f} s ({params.scale})"
    )
    return [
        Row(NAME, "audio sending ÷ wall time while work is ready", sending, SENDING_TARGET,
            sending_detail),
        Row(NAME, "album completion ÷ its own transfer times", albums, ALBUM_TARGET,
            album_detail),
    ]  # fmt: skip


def run(params: Params = FULL) -> list[Row]:
    """`make bench`'s row: the spec's size. At the scaled size the daemon's own cost per file
    (an fsync of 8 MiB, three commits) weighs 8 times more than a user meets it."""
    return rows(measure(params), params)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.busy_downloader",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--full", action="store_true", help="the spec's size (~200 s a round)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 3 scaled, 1 full)")
    parser.add_argument("--keep-log", type=Path, metavar="PATH",
                        help="copy the fake downloader's response log to PATH")  # fmt: skip
    args = parser.parse_args(argv)
    params = FULL if args.full else DEFAULT
    if args.rounds is not None:
        params = dataclasses.replace(params, rounds=args.rounds)
    print(format_table(rows(measure(params, args.keep_log), params)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
