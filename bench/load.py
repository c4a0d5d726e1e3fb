"""A small HTTP/1.1 load generator, run as its own process: ``python -m bench.load``.

It keeps `--connections` keep-alive connections to one loopback server busy for `--duration`
seconds (or until SIGTERM), each sending the next of the given paths as soon as the previous
answer is read (a closed loop), and prints one JSON object: requests, errors, requests per
second, p50 and p99 of the latency and, with `--samples`, every request's start
(`time.monotonic()`, comparable across processes on Linux) and latency. Requests are written
and answers parsed by hand over trio sockets rather than through an HTTP client library, so
that the generator spends far less time per request than the server it measures; it reads
Content-Length and chunked bodies, which is all hypercorn sends, and reconnects when the server
closes a connection (hypercorn does after 1,000 requests). Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import signal
import sys
import time
from collections.abc import Sequence

import trio

from bench.common import percentile

MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as this generator reads it."""


class Reader:
    """Buffered reads of one connection's answers."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ProtocolError("connection closed by the server")
        self.buffer += data

    async def until(self, marker: bytes) -> bytes:
        while (end := self.buffer.find(marker)) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise ProtocolError("header section too long")
            await self._more()
        head = bytes(self.buffer[:end])
        del self.buffer[: end + len(marker)]
        return head

    async def exactly(self, size: int) -> None:
        while len(self.buffer) < size:
            await self._more()
        del self.buffer[:size]

    async def response(self) -> tuple[int, bool]:
        """Read one whole answer; return its status and whether the server closes after it."""
        head = await self.until(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if "content-length" in headers:
            await self.exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await self.until(b"\r\n")).split(b";")[0], 16):
                await self.exactly(size + 2)
            await self.until(b"\r\n")  # no trailers are sent
        return status, headers.get("connection", "").lower() == "close"


def build_requests(
    host: str, port: int, paths: Sequence[str], headers: Sequence[str]
) -> list[bytes]:
    extra = "".join(f"{h}\r\n" for h in headers)
    return [
        f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode("latin-1") for p in paths
    ]


async def connection(
    host: str,
    port: int,
    requests: list[bytes],
    deadline: float,
    samples: list[tuple[float, float, int]],
    offset: int,
) -> None:
    cycle = itertools.islice(itertools.cycle(requests), offset, None)
    while trio.current_time() < deadline:
        # hypercorn closes a keep-alive connection after a number of requests: open a new one.
        async with await trio.open_tcp_stream(host, port) as stream:
            reader = Reader(stream)
            closing = False
            while not closing and trio.current_time() < deadline:
                started = time.monotonic()
                await stream.send_all(next(cycle))
                status, closing = await reader.response()
                samples.append((started, time.monotonic() - started, status))


async def run_load(
    host: str,
    port: int,
    paths: Sequence[str],
    headers: Sequence[str],
    connections: int,
    duration: float,
) -> tuple[list[tuple[float, float, int]], float]:
    requests = build_requests(host, port, paths, headers)
    samples: list[tuple[float, float, int]] = []
    started = time.monotonic()
    deadline = trio.current_time() + duration
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_sigterm, nursery.cancel_scope)
        async with trio.open_nursery() as clients:
            for n in range(connections):
                clients.start_soon(connection, host, port, requests, deadline, samples, n)
        nursery.cancel_scope.cancel()
    return samples, time.monotonic() - started


async def _stop_on_sigterm(scope: trio.CancelScope) -> None:
    """SIGTERM ends the load early; what was measured so far is still reported."""
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def summary(samples: list[tuple[float, float, int]], elapsed: float) -> dict[str, object]:
    ok = [latency for _, latency, status in samples if 200 <= status < 300]
    return {
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "elapsed": elapsed,
        "rps": len(ok) / elapsed if elapsed > 0 else 0.0,
        "p50": percentile(ok, 50) if ok else None,
        "p99": percentile(ok, 99) if ok else None,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", action="append", required=True, help="repeatable; cycled")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds, at most 120")
    parser.add_argument("--samples", action="store_true", help="include every request")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("only loopback addresses may be loaded")
    if not 0 < args.duration <= 120 or not 1 <= args.connections <= 256:
        parser.error("duration must be in (0, 120] and connections in [1, 256]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    samples, elapsed = trio.run(
        run_load, args.host, args.port, args.path, args.header, args.connections, args.duration
    )
    result = summary(samples, elapsed)
    if args.samples:
        result["samples"] = samples
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
