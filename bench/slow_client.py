"""A slow client: the queue's drain with an event stream that stopped reading, against without.

SPEC §14: "a slow client never slows the daemon". The setup is `queue_drain`'s: a real
`pezzottify-server` process, the loopback fake downloader (its own process, no latency), albums
of 20 tracks of 256 KiB and two 16 KiB images requested over the API, the clock stopped when
download_queue.db says every album of the round COMPLETED (read by this process).

Sides, alternated round by round, new albums every drain:

- stuck: before the round's requests, an admin (ViewAnalytics: every item's change reaches
  them as a `queue.item`, hundreds a round) opens `GET /v1/events` on a raw socket whose receive
  buffer is 4 KiB (`SO_RCVBUF`), reads the response head and the `hello`, and then reads
  nothing. The server's socket buffer fills, then the stream's buffer of 256 events, and the
  stream is dropped; the drain goes on meanwhile.
- none: the same drain with no event stream open.

Figure: drain time, stuck ÷ none (target ≤ 1.05). Whether the stuck stream was dropped is read
twice: the daemon's log line for the drop before the round's last album completed, and, once the
round is over, the socket read to its end: a dropped stream ends (the server closes it), one that
was not goes on with keep-alive comments.
"""

from __future__ import annotations

import socket
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import queue_drain, services
from bench.common import Pairs, Row, Target, alternate, ms, run_alone
from fake_downloader import CatalogSpec, build_catalog
from storage.users import Permission, Role
from tests.support.process import DaemonProcess

NAME = "slow_client"
TARGET = Target("<=", 1.05)
WATCHER = "watcher"
DROP_LOG = f"dropped a stream of {WATCHER}"
RCVBUF = 4096
HEAD_TIMEOUT_S = 10.0
QUIET_S = 2.0  # a stream still open sends nothing for this long after its backlog is read


@dataclass(frozen=True)
class Params:
    rounds: int = 7
    albums_per_round: int = 10
    tracks: int = 20
    audio_bytes: int = 256 * 1024
    image_bytes: int = 16 * 1024


DEFAULT = Params()
QUICK = Params(rounds=3)
SMOKE = Params(rounds=1, albums_per_round=2, tracks=3, audio_bytes=16 * 1024)


def spec(params: Params) -> CatalogSpec:
    # One album per artist; one batch to warm up, then a new batch for every drain of each side.
    return CatalogSpec(
        seed=17,
        artists=(1 + 2 * params.rounds) * params.albums_per_round,
        albums_per_artist=1,
        tracks_per_album=params.tracks,
        audio_bytes=params.audio_bytes,
        image_bytes=params.image_bytes,
    )


@dataclass(frozen=True)
class Outcome:
    dropped_in_drain: bool  # the daemon logged the drop before the round's albums completed
    ended: bool  # read to its end afterwards, the stream had been closed by the server
    events: int  # events the client had let in when the round was over


class Stuck:
    """An admin's event stream on a raw socket that stops reading after the `hello`."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Set before connecting, so the window the server sees is small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.settimeout(HEAD_TIMEOUT_S)
        self.sock.connect((host, int(port.split("/")[0])))
        self.sock.sendall(
            f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode("latin-1")
        )
        self.read = b""
        while b"event: hello" not in self.read or not self.read.endswith(b"\r\n"):
            data = self.sock.recv(256)  # small reads: no more than the hello is taken in
            if not data:
                raise RuntimeError("the event stream closed before its hello")
            self.read += data
        if not self.read.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the event stream was refused: {self.read[:200]!r}")
        self.hello = len(self.read)

    def finish(self) -> tuple[bool, int]:
        """Read what the server had sent, to the end; (whether it ended, events let in)."""
        self.sock.settimeout(QUIET_S)
        ended = False
        try:
            while data := self.sock.recv(65536):
                self.read += data
            ended = True
        except TimeoutError:
            pass  # still open: nothing came for a while and the server did not close it
        except ConnectionResetError:
            ended = True
        finally:
            self.sock.close()
        return ended, self.read[self.hello :].count(b"\nevent: ")


class Drains:
    """The two sides over one daemon: each drain takes the next batch of albums."""

    def __init__(
        self, proc: DaemonProcess, daemon: queue_drain.Daemon, watcher: str, spec: CatalogSpec
    ) -> None:
        self.proc, self.daemon, self.watcher = proc, daemon, watcher
        self.catalog = build_catalog(spec)
        self.next = 0
        self.outcomes: list[Outcome] = []

    def batch(self, per: int) -> list[tuple[str, str, str]]:
        c = self.catalog
        albums = [(c.album_ids[i], c.album_names[i], c.artist_names[i])
                  for i in range(self.next, self.next + per)]  # fmt: skip
        self.next += per
        return albums

    def none(self, per: int) -> float:
        return self.daemon.drain(self.batch(per))

    def stuck(self, per: int) -> float:
        logged = self.proc.log.count(DROP_LOG)
        client = Stuck(self.proc.url, self.watcher)
        albums = self.batch(per)
        took = self.daemon.drain(albums)  # the clock starts at the first request, as for `none`
        dropped = self.proc.log.count(DROP_LOG) > logged
        ended, events = client.finish()
        self.outcomes.append(Outcome(dropped, ended, events))
        return took


def measure(
    proc: DaemonProcess, token: str, watcher: str, s: CatalogSpec, params: Params
) -> tuple[Pairs, list[Outcome]]:
    daemon = queue_drain.Daemon(proc.url, token, proc.db_dir / "download_queue.db")
    try:
        drains = Drains(proc, daemon, watcher, s)
        per = params.albums_per_round
        drains.stuck(per)  # warm-up, with a stuck stream: every path taken once
        drains.outcomes.clear()
        pairs = alternate(lambda: drains.stuck(per), lambda: drains.none(per), params.rounds)
        return pairs, drains.outcomes
    finally:
        daemon.close()


def run(params: Params = DEFAULT) -> list[Row]:
    s = spec(params)
    with tempfile.TemporaryDirectory(prefix="bench-slow-client-") as tmp:
        db_dir = Path(tmp)
        token = services.add_session(db_dir, "bench", Role.Regular, Permission.RequestContent)
        watcher = services.add_session(db_dir, WATCHER, Role.Admin)
        with services.fake_downloader(*queue_drain.downloader_flags(s)) as url:
            config = services.daemon_config(db_dir, url, jobs_off=["integrity_watchdog"])
            with services.daemon(db_dir, config) as proc:
                pairs, outcomes = measure(proc, token, watcher, s, params)
    return [row(pairs, outcomes, params)]


def row(pairs: Pairs, seen: list[Outcome], params: Params) -> Row:
    a, b = pairs.side_a(), pairs.side_b()
    in_drain = sum(o.dropped_in_drain for o in seen)
    ended = sum(o.ended for o in seen)
    events = statistics.median(o.events for o in seen)
    detail = (
        f"drain {ms(a.median)} with the stuck stream vs {ms(b.median)} without; "
        f"{params.albums_per_round} album(s) of {params.tracks} x "
        f"{params.audio_bytes // 1024} KiB + 2 images per drain; the stuck stream (4 KiB "
        f"receive buffer) was dropped during the drain in {in_drain} of {len(seen)} rounds and "
        f"found closed by the server after it in {ended} of {len(seen)}, having let in "
        f"{events:.0f} events (median)"
    )
    measure_ = "queue drain time: an admin's event stream that stopped reading ÷ none"
    return Row(NAME, measure_, pairs.ratio(), TARGET, detail)


def main(argv: Sequence[str] | None = None) -> int:
    return run_alone(
        argv,
        run,
        (DEFAULT, QUICK),
        quick_help=f"{QUICK.rounds} rounds",
        knob="rounds",
    )


if __name__ == "__main__":
    raise SystemExit(main())
