"""Queue drain: albums processed end to end by the daemon against a plain sequential fetch.

Sides, over the same loopback fake downloader (its own process, no latency, albums of 20 tracks
of 256 KiB and two 16 KiB images, a cover and the artist's portrait):

- daemon: a real `pezzottify-server` process; the round's albums are requested over the API
  and the clock stops when every one of them is COMPLETED in download_queue.db (read by this
  process every few milliseconds, so the daemon's event loop is not disturbed). This includes
  everything the daemon does for an album: metadata calls, catalog ingestion, children, one
  claim and one completion per file, audit entries, catalog updates.
- baseline: the same 22 files per album fetched one after the other with one `httpx.Client`
  and written with the same `storage.files.AtomicWriter` (temporary file, fsync, rename, fsync
  of the directory), nothing else.

Figure: bytes of media per second, daemon / baseline. Each round uses new albums, the same ones
for both sides.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import services
from bench.common import Pairs, Row, Stats, Target, alternate
from fake_downloader import CatalogSpec, build_catalog
from storage.files import AtomicWriter, MediaLayout
from storage.users import Permission, Role

NAME = "queue_drain"
TARGET = Target(">=", 0.8)
POLL_S = 0.005
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Params:
    rounds: int = 7
    albums_per_round: int = 5
    tracks: int = 20
    audio_bytes: int = 256 * 1024
    image_bytes: int = 16 * 1024


DEFAULT = Params()
SMOKE = Params(rounds=1, albums_per_round=1, tracks=3, audio_bytes=16 * 1024)


def spec(params: Params) -> CatalogSpec:
    # One album per artist, so each album brings its own portrait: 2 images per album.
    albums = (params.rounds + 1) * params.albums_per_round
    return CatalogSpec(
        seed=11,
        artists=albums,
        albums_per_artist=1,
        tracks_per_album=params.tracks,
        audio_bytes=params.audio_bytes,
        image_bytes=params.image_bytes,
    )


def downloader_flags(s: CatalogSpec) -> list[str]:
    return [
        f"--seed={s.seed}",
        f"--artists={s.artists}",
        "--albums-per-artist=1",
        f"--tracks-per-album={s.tracks_per_album}",
        f"--audio-bytes={s.audio_bytes}",
        f"--image-bytes={s.image_bytes}",
    ]


class Daemon:
    """The daemon side: request albums over the API, wait until the queue says COMPLETED."""

    def __init__(self, url: str, token: str, queue_db: Path) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.queue_db = queue_db

    def drain(self, albums: list[tuple[str, str, str]]) -> float:
        """Seconds from the first request until every album is COMPLETED."""
        started = time.perf_counter()
        for album_id, name, artist in albums:
            body = {"album_id": album_id, "album_name": name, "artist_name": artist}
            response = self.client.post("/v1/download/request/album", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"request refused: {response.status_code} {response.text}")
        self._wait_completed([a[0] for a in albums])
        return time.perf_counter() - started

    def _wait_completed(self, album_ids: list[str]) -> None:
        marks = ",".join("?" for _ in album_ids)
        # Placeholders only: the ids are bound as parameters.
        sql = (
            "SELECT status FROM queue_items WHERE parent_id IS NULL "  # noqa: S608
            f"AND content_id IN ({marks})"
        )
        deadline = time.monotonic() + TIMEOUT_S
        with sqlite3.connect(f"file:{self.queue_db}?mode=ro", uri=True) as conn:
            while time.monotonic() < deadline:
                statuses = [row[0] for row in conn.execute(sql, album_ids)]
                if "FAILED" in statuses:
                    raise RuntimeError("an album failed during the drain benchmark")
                if len(statuses) == len(album_ids) and set(statuses) == {"COMPLETED"}:
                    return
                time.sleep(POLL_S)
        raise RuntimeError("albums did not complete in time")

    def close(self) -> None:
        self.client.close()


class Baseline:
    """The ceiling: the same files, one after the other, written atomically."""

    def __init__(self, url: str, root: Path) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.media = MediaLayout(root)

    def fetch(self, files: list[tuple[str, Path]]) -> float:
        started = time.perf_counter()
        for url_path, final in files:
            with self.client.stream("GET", url_path) as response:
                response.raise_for_status()
                with AtomicWriter(final) as writer:
                    for chunk in response.iter_bytes():
                        writer.write(chunk)
                    writer.commit()
        return time.perf_counter() - started

    def close(self) -> None:
        self.client.close()


def album_files(s: CatalogSpec, media: MediaLayout, index: int) -> list[tuple[str, Path]]:
    catalog = build_catalog(s)
    tracks = [catalog.track_ids[t] for t in catalog.album_tracks(index)]
    cover, portrait = catalog.cover_ids[index], catalog.portrait_ids[catalog.album_artist(index)]
    files = [(f"/track/{t}/audio", media.audio_path(t, "flac")) for t in tracks]
    files += [(f"/image/{i}", media.image_path(i)) for i in (cover, portrait)]
    return files


def measure(daemon: Daemon, baseline: Baseline, s: CatalogSpec, params: Params) -> Pairs:
    """Batch 0 warms both sides up; batch k (k >= 1) is round k's albums, for both sides."""
    catalog = build_catalog(s)
    per = params.albums_per_round
    round_bytes = per * (s.tracks_per_album * s.audio_bytes + 2 * s.image_bytes)

    def albums(k: int) -> list[tuple[str, str, str]]:
        return [(catalog.album_ids[i], catalog.album_names[i], catalog.artist_names[i])
                for i in range(k * per, (k + 1) * per)]  # fmt: skip

    def files(k: int) -> list[tuple[str, Path]]:
        return [f for i in range(k * per, (k + 1) * per) for f in album_files(s, baseline.media, i)]

    daemon.drain(albums(0))  # connections, caches, the first ingestion
    baseline.fetch(files(0))
    daemon_batches, baseline_batches = (
        iter(range(1, 1 + params.rounds)),
        iter(range(1, 1 + params.rounds)),
    )
    return alternate(
        lambda: round_bytes / daemon.drain(albums(next(daemon_batches))),
        lambda: round_bytes / baseline.fetch(files(next(baseline_batches))),
        params.rounds,
    )


def run(params: Params = DEFAULT) -> list[Row]:
    s = spec(params)
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        db_dir = Path(tmp) / "daemon"
        db_dir.mkdir()
        token = services.add_session(db_dir, "bench", Role.Regular, Permission.RequestContent)
        with services.fake_downloader(*downloader_flags(s)) as url:
            config = services.daemon_config(db_dir, url)
            with services.daemon(db_dir, config) as proc:
                daemon = Daemon(proc.url, token, db_dir / "download_queue.db")
                baseline = Baseline(url, Path(tmp) / "baseline")
                try:
                    pairs = measure(daemon, baseline, s, params)
                finally:
                    daemon.close()
                    baseline.close()
    album_bytes = s.tracks_per_album * s.audio_bytes + 2 * s.image_bytes
    a, b = pairs.side_a(), pairs.side_b()
    detail = (
        f"daemon {a.median / 2**20:.1f} MiB/s ({_files_per_s(a, album_bytes, s)} files/s), "
        f"baseline {b.median / 2**20:.1f} MiB/s; {params.albums_per_round} album(s) of "
        f"{s.tracks_per_album} x {s.audio_bytes // 1024} KiB + 2 images per round"
    )
    measure_ = "media bytes/s: daemon ÷ sequential httpx + atomic writes"
    return [Row(NAME, measure_, pairs.ratio(), TARGET, detail)]


def _files_per_s(stats: Stats, album_bytes: int, s: CatalogSpec) -> str:
    return f"{stats.median / album_bytes * (s.tracks_per_album + 2):.0f}"
