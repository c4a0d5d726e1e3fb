"""A household's clients, run as their own process: ``python -m bench.day_load``.

Unlike `bench.load` (a closed loop, as fast as the server answers), this one paces every client
as a real one is paced, so the server's latency is measured at the load it sees on a busy day:

- every user polls `GET /v1/download/my-requests` every `--period` seconds, on its own
  keep-alive connection, the users' first polls spread evenly over the first period;
- `--streamers` of the users also play tracks at real-time rate on a second connection:
  `GET /v1/content/stream/{id}` with a `Range` of `--chunk` bytes, the next chunk asked for when
  the audio received so far has played (`--chunk` ÷ `--stream-rate` seconds), the next track of
  the list when one ends;
- every admin polls `GET /v1/download/admin/stats` then `GET /v1/download/admin/requests`
  every `--period` seconds on its own connection.

Who is who comes from `--plan`, a JSON file: ``{"users": [token, ...], "admins": [token, ...],
"tracks": [[track_id, size], ...]}`` (tokens stay out of the command line). The load runs for
`--duration` seconds or until SIGTERM, then prints one JSON object: ``{"samples": [[route,
start, latency, status], ...]}``, `start` on `time.monotonic()` (comparable across processes on
Linux), `latency` in seconds to the whole answer, `status` 0 when the request failed without an
answer (the connection is then opened again). Only loopback addresses are accepted; requests
are written and answers read by hand over trio sockets (`bench.load.Reader`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from bench.load import ProtocolError, Reader

MY_REQUESTS = "my-requests"
STREAM = "stream"
ADMIN_STATS = "admin/stats"
ADMIN_REQUESTS = "admin/requests"
ROUTES = (MY_REQUESTS, STREAM, ADMIN_STATS, ADMIN_REQUESTS)
PATHS = {
    MY_REQUESTS: "/v1/download/my-requests",
    ADMIN_STATS: "/v1/download/admin/stats",
    ADMIN_REQUESTS: "/v1/download/admin/requests",
}
RECONNECT_PAUSE_S = 0.1
MAX_DURATION_S = 900.0

Sample = tuple[str, float, float, int]


@dataclass(frozen=True)
class Plan:
    users: list[str]
    admins: list[str]
    tracks: list[tuple[str, int]]


@dataclass(frozen=True)
class Pacing:
    period: float
    streamers: int
    chunk: int
    stream_rate: float


class Client:
    """One keep-alive connection; reopened after the server closes it or a request fails."""

    def __init__(self, host: str, port: int, token: str, samples: list[Sample]) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.samples = samples
        self.stream: trio.SocketStream | None = None
        self.reader: Reader | None = None

    async def get(self, route: str, path: str, extra: str = "") -> None:
        """Send one request and read its whole answer; record it."""
        head = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.auth}{extra}\r\n"
        started = time.monotonic()
        try:
            if self.stream is None:
                self.stream = await trio.open_tcp_stream(self.host, self.port)
                self.reader = Reader(self.stream)
            assert self.reader is not None
            await self.stream.send_all(head.encode("latin-1"))
            status, closing = await self.reader.response()
        except (OSError, trio.BrokenResourceError, ProtocolError, ValueError):
            self.samples.append((route, started, time.monotonic() - started, 0))
            await self.close()
            await trio.sleep(RECONNECT_PAUSE_S)
            return
        self.samples.append((route, started, time.monotonic() - started, status))
        if closing:
            await self.close()

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
        self.stream, self.reader = None, None


async def poller(client: Client, routes: Sequence[str], first: float, period: float) -> None:
    """Ask for `routes` in turn every `period` seconds from `first` (a late answer skips the
    polls it missed, as a client's timer would)."""
    due = first
    while True:
        await trio.sleep_until(due)
        for route in routes:
            await client.get(route, PATHS[route])
        now = trio.current_time()
        due += period * max(1, int((now - due) // period) + 1)


async def streamer(
    client: Client, tracks: list[tuple[str, int]], first: int, pacing: Pacing, start: float
) -> None:
    """Play `tracks` from the `first` one on: each chunk asked for once the audio received
    before it has played."""
    due, n = start, first
    while True:
        track, size = tracks[n % len(tracks)]
        for offset in range(0, size, pacing.chunk):
            await trio.sleep_until(due)
            end = min(size, offset + pacing.chunk)
            wanted = f"Range: bytes={offset}-{end - 1}\r\n"
            await client.get(STREAM, f"/v1/content/stream/{track}", wanted)
            due += (end - offset) / pacing.stream_rate
        n += 1


async def run_day(
    host: str, port: int, plan: Plan, pacing: Pacing, duration: float
) -> list[Sample]:
    samples: list[Sample] = []
    clients: list[Client] = []

    def client(token: str) -> Client:
        clients.append(Client(host, port, token, samples))
        return clients[-1]

    start = trio.current_time()
    with trio.move_on_after(duration):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_sigterm, nursery.cancel_scope)
            users = len(plan.users)
            for n, token in enumerate(plan.users):
                first = start + pacing.period * n / users
                nursery.start_soon(poller, client(token), [MY_REQUESTS], first, pacing.period)
                if n < pacing.streamers and plan.tracks:
                    nursery.start_soon(streamer, client(token), plan.tracks, n, pacing, first)
            for n, token in enumerate(plan.admins):
                first = start + pacing.period * (n + 0.5) / max(1, len(plan.admins))
                routes = [ADMIN_STATS, ADMIN_REQUESTS]
                nursery.start_soon(poller, client(token), routes, first, pacing.period)
    for each in clients:
        await each.close()
    return samples


async def _stop_on_sigterm(scope: trio.CancelScope) -> None:
    """SIGTERM ends the load early; what was measured so far is still reported."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def read_plan(path: str) -> Plan:
    with open(path, encoding="utf-8") as file:
        raw = json.load(file)
    return Plan(raw["users"], raw["admins"], [(t, int(size)) for t, size in raw["tracks"]])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.day_load", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plan", required=True, help="JSON file: users, admins, tracks")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, at most 900")
    parser.add_argument("--period", type=float, default=5.0, help="seconds between two polls")
    parser.add_argument("--streamers", type=int, default=20, help="users also playing tracks")
    parser.add_argument("--chunk", type=int, default=256 * 1024, help="bytes per Range request")
    parser.add_argument("--stream-rate", type=float, default=1_411_200 / 8,
                        help="bytes per second played (CD audio: 176,400)")  # fmt: skip
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("only loopback addresses may be loaded")
    if not 0 < args.duration <= MAX_DURATION_S:
        parser.error(f"duration must be in (0, {MAX_DURATION_S:g}]")
    if args.period <= 0 or args.chunk <= 0 or args.stream_rate <= 0 or args.streamers < 0:
        parser.error("period, chunk and stream rate must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = read_plan(args.plan)
    pacing = Pacing(args.period, args.streamers, args.chunk, args.stream_rate)
    samples = trio.run(run_day, args.host, args.port, plan, pacing, args.duration)
    json.dump({"samples": samples}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
