"""Queue drain with a dead notification target: does a target that cannot be reached slow the
queue (SPEC §16: "a slow or dead target never slows the queue")?

One real `pezzottify-server` process, one loopback fake downloader (its own process, no
latency; albums of 5 tracks of 32 KiB and two 4 KiB images, many small files so the per-album
work, where the completion and its notification are written, weighs as much as it can). Two
users request albums over the API:

- dead: their notification URL is `json://127.0.0.1:PORT/hook` on a port where nothing listens
  (allowed through `[notifications] user_hosts_allowed`), and they hear of every completion:
  each album's completion writes a notification the notifier tries to deliver at once, fails
  (connection refused) and retries 5 s, 20 s, ... later, `max_attempts` times in all;
- quiet: no URL; the same rows are written (the inbox item and the outbox row, recorded
  skipped), nothing is sent.

Each round one user's batch of albums is requested and the clock stops when every one of them
is COMPLETED in download_queue.db (read by this process every few milliseconds); the sides
alternate (A B, B A, ...), each batch new albums. Figure: drain seconds, dead ÷ quiet; target
≤ 1.05. Retries of earlier rounds' notifications fall in later rounds of both sides alike, as
they would on a server. The row says how many notifications went to the dead target and how
many attempts they took, so a run where nothing was tried is seen.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import services
from bench.common import Pairs, Row, Target, alternate, ms
from bench.queue_drain import Daemon, downloader_flags
from fake_downloader import CatalogSpec, build_catalog
from storage.users import Permission, Role

NAME = "notify_drain"
TARGET = Target("<=", 1.05)


@dataclass(frozen=True)
class Params:
    rounds: int = 16
    albums_per_round: int = 30
    tracks: int = 5
    audio_bytes: int = 32 * 1024
    image_bytes: int = 4 * 1024


DEFAULT = Params()
SMOKE = Params(rounds=2, albums_per_round=2, tracks=2, audio_bytes=4 * 1024)


def spec(params: Params) -> CatalogSpec:
    # One album per artist; a warm-up batch and `rounds` batches for each side.
    albums = 2 * (params.rounds + 1) * params.albums_per_round
    return CatalogSpec(
        seed=31, artists=albums, albums_per_artist=1, tracks_per_album=params.tracks,
        audio_bytes=params.audio_bytes, image_bytes=params.image_bytes,
    )  # fmt: skip


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


NOTIFICATIONS = [
    "[notifications]",
    'user_schemes = ["ntfys", "discord", "json"]',
    'user_hosts_allowed = ["127.0.0.1"]',
]


def aim(url: str, token: str, target: str) -> None:
    body = {"urls": [target], "events": ["request.completed", "request.failed"]}
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.put(f"{url}/v1/user/notifications", json=body, headers=headers, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"notification URL refused: {response.status_code} {response.text}")


def tried(queue_db: Path, user: str) -> tuple[int, int, int]:
    """Notifications for `user`, the delivery attempts they took so far, and how many of them
    were delivered."""
    with contextlib.closing(sqlite3.connect(f"file:{queue_db}?mode=ro", uri=True)) as conn:
        count, attempts, sent = conn.execute(
            """SELECT COUNT(*), COALESCE(SUM(attempts), 0), COUNT(*) FILTER (WHERE state = 'sent')
                FROM outbox WHERE user = ?""",
            (user,),
        ).fetchone()
    return int(count), int(attempts), int(sent)


def measure(dead: Daemon, quiet: Daemon, s: CatalogSpec, params: Params) -> Pairs:
    """Batch 0 of each side warms it up; then each round a new batch for each side."""
    catalog = build_catalog(s)
    per = params.albums_per_round

    def albums(k: int) -> list[tuple[str, str, str]]:
        return [(catalog.album_ids[i], catalog.album_names[i], catalog.artist_names[i])
                for i in range(k * per, (k + 1) * per)]  # fmt: skip

    batches = iter(range(2 * (params.rounds + 1)))
    dead.drain(albums(next(batches)))
    quiet.drain(albums(next(batches)))
    return alternate(
        lambda: dead.drain(albums(next(batches))),
        lambda: quiet.drain(albums(next(batches))),
        params.rounds,
    )


def run(params: Params = DEFAULT) -> list[Row]:
    s = spec(params)
    with tempfile.TemporaryDirectory(prefix="bench-notify-") as tmp:
        db_dir = Path(tmp)
        tokens = {
            user: services.add_session(db_dir, user, Role.Regular, Permission.RequestContent)
            for user in ("dead", "quiet")
        }
        queue_db = db_dir / "download_queue.db"
        with services.fake_downloader(*downloader_flags(s)) as url:
            config = services.daemon_config(
                db_dir, url, jobs_off=["integrity_watchdog"], sections=NOTIFICATIONS
            )
            with services.daemon(db_dir, config) as proc:
                target = f"json://127.0.0.1:{dead_port()}/hook"
                aim(proc.url, tokens["dead"], target)
                dead, quiet = (Daemon(proc.url, tokens[u], queue_db) for u in ("dead", "quiet"))
                try:
                    pairs = measure(dead, quiet, s, params)
                finally:
                    dead.close()
                    quiet.close()
                notices, attempts, sent = tried(queue_db, "dead")
    a, b = pairs.side_a(), pairs.side_b()
    detail = (
        f"{ms(a.median)} vs {ms(b.median)} a round of {params.albums_per_round} albums of "
        f"{params.tracks} x {params.audio_bytes // 1024} KiB + 2 images; {notices} "
        f"notifications to the dead target, {attempts} attempts, {sent} delivered"
    )
    measure_ = "drain time: every completion notified to a dead target ÷ no target"
    return [Row(NAME, measure_, pairs.ratio(), TARGET, detail)]
