"""Listeners streaming audio by `Range` requests, as its own process: `python -m bench.stream_load`.

The streaming benchmark (`bench/streaming.py`) starts this against the daemon or nginx, so the
client's CPU is never counted as the server's. Every request is `GET PREFIX<track id>` with a
single `Range: bytes=a-b` over keep-alive HTTP/1.1 connections (one per listener), written and
parsed by hand over trio sockets as `bench.load` does; each answer must be a 206 of exactly the
asked length. Two modes, one JSON object on stdout:

- `throughput`: `--streams` listeners each read their tracks from start to end in `--chunk`
  ranges as fast as they are answered (a closed loop). After `--warmup` seconds the window of
  `--duration` seconds opens: body bytes received in it, MiB/s, and the CPU seconds spent in
  it by each `--cpu-pid` (utime + stime from /proc/PID/stat, all threads) and by this process.
- `realtime`: `--streams` listeners play CD-quality audio (`--rate` bytes/s; 1,411 kbit/s is
  176,375 B/s), started evenly over `--ramp` seconds and all playing for `--duration` more.
  Each first fetches `--start-seconds` of audio, starts playing, then asks for the next
  `--chunk` whenever less than `--start-seconds` is buffered, moving on to the next track at the
  end of a file. A stall is the buffer running empty: playback is then resumed from what has
  arrived and the stall counted. With `--probe-every S`, a probe opens a new connection every S
  seconds once the ramp is over and times the first body byte of a `--chunk` range of a track.

Only loopback addresses are accepted, and every run ends after its duration.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from bench.common import percentile

MAX_HEAD = 64 * 1024
RECEIVE = 256 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProtocolError(Exception):
    """The server's answer is not the 206 this client asked for."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (every thread), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int, head: str) -> None:
        self.host = host
        self.port = port
        self.head = head  # request line prefix and fixed headers, with `{path}` and `{range}`
        self.stream: trio.SocketStream | None = None
        self.buffer = bytearray()
        self.closing = False

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
        self.stream = None
        self.buffer.clear()

    async def _receive(self) -> bytes:
        assert self.stream is not None
        data = await self.stream.receive_some(RECEIVE)
        if not data:
            raise ProtocolError("connection closed by the server")
        return data

    async def get(self, path: str, begin: int, end: int, on_body: Callable[[int], None]) -> None:
        """Fetch bytes [begin, end) of `path`; `on_body(n)` is called as each piece arrives."""
        request = self.head.format(path=path, range=f"bytes={begin}-{end - 1}").encode()
        reused = self.stream is not None
        try:
            if self.stream is None:
                self.stream = await trio.open_tcp_stream(self.host, self.port)
            await self.stream.send_all(request)
            await self._read_head(end - begin)
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            if not reused:
                raise
            # The server closed an idle connection (keep-alive timeout or request cap): retry once.
            await self.close()
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            await self.stream.send_all(request)
            await self._read_head(end - begin)
        left = end - begin
        if self.buffer:
            piece = min(len(self.buffer), left)
            del self.buffer[:piece]
            left -= piece
            on_body(piece)
        while left > 0:
            data = await self._receive()
            if len(data) > left:
                raise ProtocolError("more body than Content-Length")
            left -= len(data)
            on_body(len(data))
        if self.closing:
            await self.close()

    async def _read_head(self, expected: int) -> None:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise ProtocolError("header section too long")
            self.buffer += await self._receive()
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        status = int(status_line.split(" ", 2)[1])
        if status != 206 or int(headers.get("content-length", -1)) != expected:
            raise ProtocolError(f"expected 206 of {expected} bytes, got {status_line} {headers}")
        self.closing = headers.get("connection", "").lower() == "close"


@dataclass
class Player:
    """A listener's buffer: bytes arrived against bytes played at `rate` since `since`."""

    rate: float
    received: int = 0
    played_at_since: float = 0.0
    since: float | None = None  # when playback (re)started; None before it starts
    stalls: int = 0
    failed: bool = False  # a request failed: the music stopped there
    lowest: float = float("inf")  # smallest buffer seen when bytes arrived, in seconds

    def played(self, now: float) -> float:
        if self.since is None:
            return 0.0
        return self.played_at_since + (now - self.since) * self.rate

    def level(self, now: float) -> float:
        """Seconds of audio buffered ahead of the playback position."""
        return (self.received - self.played(now)) / self.rate

    def start(self, now: float) -> None:
        self.since = now

    def deliver(self, size: int, now: float) -> None:
        if self.since is not None:
            level = self.level(now)
            if level < 0:  # the buffer ran empty before these bytes came: a stall
                self.stalls += 1
                self.played_at_since, self.since = float(self.received), now
                level = 0.0
            self.lowest = min(self.lowest, level)
        self.received += size

    def finish(self, now: float) -> None:
        """Count a stall still under way when the run ends."""
        if self.since is not None and self.level(now) < 0:
            self.stalls += 1
            self.lowest = 0.0


@dataclass
class Run:
    host: str
    port: int
    prefix: str
    headers: Sequence[str]
    tracks: Sequence[str]
    file_size: int
    chunk: int
    requests: int = 0
    latencies: list[float] = field(default_factory=list)

    def connection(self) -> Connection:
        extra = "".join(f"{h}\r\n" for h in self.headers)
        head = (
            f"GET {self.prefix}{{path}} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Range: {{range}}\r\n{extra}\r\n"
        )
        return Connection(self.host, self.port, head)

    async def fetch(
        self, conn: Connection, track: str, begin: int, end: int, on_body: Callable[[int], None]
    ) -> None:
        started = time.monotonic()
        await conn.get(track, begin, end, on_body)
        self.latencies.append(time.monotonic() - started)
        self.requests += 1


async def reader(run: Run, n: int, counter: list[int], window: list[float]) -> None:
    """Throughput: read tracks start to end in chunks as fast as they come."""
    conn = run.connection()

    def count(size: int) -> None:
        if window[0] <= time.monotonic() < window[1]:
            counter[0] += size

    track = n
    try:
        while True:
            for begin in range(0, run.file_size, run.chunk):
                end = min(begin + run.chunk, run.file_size)
                await run.fetch(conn, run.tracks[track % len(run.tracks)], begin, end, count)
            track += 1
    finally:
        with trio.CancelScope(shield=True):
            await conn.close()


async def throughput(
    run: Run, streams: int, warmup: float, duration: float, pids: Sequence[int]
) -> dict[str, object]:
    counter = [0]
    now = time.monotonic()
    window = [now + warmup, now + warmup + duration]
    cpu: dict[int, float] = {}
    async with trio.open_nursery() as nursery:
        for n in range(streams):
            nursery.start_soon(reader, run, n, counter, window)
        await trio.sleep_until(trio.current_time() + warmup)
        cpu = {pid: cpu_seconds(pid) for pid in pids}
        own = time.process_time()
        requests = run.requests
        await trio.sleep_until(trio.current_time() + duration)
        cpu = {pid: cpu_seconds(pid) - cpu[pid] for pid in pids}
        own = time.process_time() - own
        requests = run.requests - requests
        nursery.cancel_scope.cancel()
    mib = counter[0] / 2**20
    return {
        "mib": mib,
        "seconds": duration,
        "mib_s": mib / duration,
        "requests": requests,
        "server_cpu_s": sum(cpu.values()),
        "client_cpu_s": own,
    }


async def listener(
    run: Run, n: int, player: Player, start_at: float, start_seconds: float, startups: list[float]
) -> None:
    """Realtime: start after a delay, buffer, play, keep the buffer above the start amount."""
    await trio.sleep_until(start_at)
    conn = run.connection()
    track = n % len(run.tracks)
    first = min(round(start_seconds * player.rate), run.file_size)

    def arrived(size: int) -> None:
        player.deliver(size, time.monotonic())

    try:
        t0 = time.monotonic()
        await run.fetch(conn, run.tracks[track], 0, first, arrived)
        player.start(time.monotonic())
        startups.append(time.monotonic() - t0)
        offset = first
        while True:
            level = player.level(time.monotonic())
            if level > start_seconds:
                await trio.sleep(level - start_seconds)
                continue
            end = min(offset + run.chunk, run.file_size)
            await run.fetch(conn, run.tracks[track], offset, end, arrived)
            offset = end
            if offset >= run.file_size:  # the next track of the playlist, gapless
                track = (track + 1) % len(run.tracks)
                offset = 0
    except (ProtocolError, OSError, trio.BrokenResourceError):
        player.failed = True  # its buffer runs out: `finish` counts the stall
    finally:
        with trio.CancelScope(shield=True):
            await conn.close()


async def probe(run: Run, k: int, ttfb: list[float], failures: list[int]) -> None:
    """A new listener pressing play: new connection, one chunk, time to its first byte."""
    conn = run.connection()
    first: list[float] = []
    begin = (k * 7 % (run.file_size // run.chunk)) * run.chunk
    end = min(begin + run.chunk, run.file_size)

    def arrived(size: int) -> None:
        if not first:
            first.append(time.monotonic())

    started = time.monotonic()
    try:
        await conn.get(run.tracks[k % len(run.tracks)], begin, end, arrived)
        ttfb.append(first[0] - started)
    except (ProtocolError, OSError, trio.BrokenResourceError):
        failures.append(k)
    finally:
        with trio.CancelScope(shield=True):
            await conn.close()


async def realtime(
    run: Run,
    streams: int,
    rate: float,
    ramp: float,
    duration: float,
    start_seconds: float,
    probe_every: float | None,
) -> dict[str, object]:
    players = [Player(rate) for _ in range(streams)]
    startups: list[float] = []
    ttfb: list[float] = []
    failures: list[int] = []
    t0 = trio.current_time()
    offset = time.monotonic() - t0  # trio's clock to time.monotonic()
    end = t0 + ramp + duration
    own = time.process_time()
    with trio.move_on_at(end):
        async with trio.open_nursery() as nursery:
            for n, player in enumerate(players):
                start_at = t0 + ramp * n / streams
                nursery.start_soon(listener, run, n, player, start_at, start_seconds, startups)
            if probe_every is not None:
                await trio.sleep_until(t0 + ramp)
                k = 0
                while True:
                    nursery.start_soon(probe, run, k, ttfb, failures)
                    k += 1
                    await trio.sleep_until(t0 + ramp + k * probe_every)
    for player in players:
        player.finish(end + offset)
    stalled = [p for p in players if p.stalls]
    lowest = min((p.lowest for p in players if p.since is not None), default=float("nan"))
    result: dict[str, object] = {
        "streams": streams,
        "seconds": duration,
        "stalls": sum(p.stalls for p in players),
        "failed_streams": sum(1 for p in players if p.failed),
        "stalled_streams": len(stalled),
        "not_started": sum(1 for p in players if p.since is None),
        "lowest_buffer_s": lowest,
        "startup_p99": percentile(startups, 99) if startups else None,
        "fetch_p50": percentile(run.latencies, 50) if run.latencies else None,
        "fetch_p99": percentile(run.latencies, 99) if run.latencies else None,
        "requests": run.requests,
        "client_cpu_s": time.process_time() - own,
    }
    if probe_every is not None:
        result.update(
            probes=len(ttfb),
            probe_failures=len(failures),
            ttfb_p50=percentile(ttfb, 50) if ttfb else None,
            ttfb_p99=percentile(ttfb, 99) if ttfb else None,
            ttfb_max=max(ttfb, default=None),
        )
    return result


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    run = Run(
        args.host, args.port, args.prefix, args.header, args.track, args.file_size, args.chunk
    )
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_sigterm() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_sigterm)
            if args.mode == "throughput":
                result = await throughput(
                    run, args.streams, args.warmup, args.duration, args.cpu_pid
                )
            else:
                result = await realtime(
                    run,
                    args.streams,
                    args.rate,
                    args.ramp,
                    args.duration,
                    args.start_seconds,
                    args.probe_every,
                )
            nursery.cancel_scope.cancel()
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_load", description=__doc__)
    parser.add_argument("mode", choices=("throughput", "realtime"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", default="/v1/content/stream/", help="path before the id")
    parser.add_argument("--track", action="append", required=True, help="repeatable")
    parser.add_argument("--file-size", type=int, required=True, help="bytes of every track")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--chunk", type=int, default=256 * 1024, help="bytes per range")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds, at most 120")
    parser.add_argument("--warmup", type=float, default=1.0, help="throughput: seconds")
    parser.add_argument("--cpu-pid", type=int, action="append", default=[])
    parser.add_argument("--rate", type=float, default=176_375.0, help="realtime: bytes/s")
    parser.add_argument("--ramp", type=float, default=3.0, help="realtime: seconds to start all")
    parser.add_argument("--start-seconds", type=float, default=2.0, help="realtime: buffer")
    parser.add_argument("--probe-every", type=float, help="realtime: seconds between probes")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("only loopback addresses may be loaded")
    if not 0 < args.duration <= 120 or not 0 <= args.ramp <= 30:
        parser.error("duration must be in (0, 120] and ramp in [0, 30]")
    if not 1 <= args.streams <= 5000 or args.chunk < 1 or args.file_size < 1:
        parser.error("streams must be in [1, 5000], chunk and file size positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # A socket per listener: lift the soft limit on open files to the hard one.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    json.dump(trio.run(main_async, args), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
