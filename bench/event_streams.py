"""Many `/v1/events` streams held open by a process of their own: ``python -m bench.event_streams``.

The benchmarks of live events' cost (`bench.idle_streams`, `bench.event_latency`) open hundreds
of streams; held here, in a process of its own, their sockets, buffers and parsing cost nothing
to the daemon's process, whose memory and latency are what is measured. `Holder` starts it from
a benchmark.

Every stream is one loopback connection, one session token of `--plan` (a JSON file
``{"tokens": [token, ...]}``: tokens stay out of the command line): the request is written and
the chunked `text/event-stream` answer read by hand over trio sockets, as `bench.load` does.
At most `--opening` streams are being opened at once (a connection counts until its `hello`
arrives), so the server's listen backlog is never overrun. Once every stream has its `hello`
(or failed to open), one JSON line goes to stdout: ``{"ready": n, "failed": n, "open_s": s,
"why": [reason, ...]}``.
The streams are then read until SIGTERM or `--duration`, and a second JSON line reports each
stream: the keep-alive comments and events it received, whether the server ended it, and with
`--record` every event's id and the `time.monotonic()` (comparable across processes on Linux)
at which its bytes were read, with the name, `content_id` and `change` of each event id once.
Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

MAX_DURATION_S = 900.0
OPEN_TIMEOUT_S = 60.0
MAX_HEAD = 64 * 1024


class StreamError(Exception):
    """The server's answer is not an event stream as this client reads it."""


@dataclass
class Stream:
    """What one stream received."""

    comments: int = 0  # keep-alive comment lines
    events: int = 0  # events other than `hello`
    hello: bool = False
    failed: str | None = None  # why it could not be opened
    closed: bool = False  # the server ended the response or the connection
    ending: str | None = None  # how the server ended it
    held_s: float = 0.0  # from the `hello` to the end (the server's, or this process's)
    received: list[tuple[int, float]] = field(default_factory=list)  # (event id, read at)

    def report(self, record: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "comments": self.comments, "events": self.events, "hello": self.hello,
            "failed": self.failed, "closed": self.closed, "ending": self.ending,
            "held_s": self.held_s,
        }  # fmt: skip
        if record:
            out["received"] = self.received
        return out


class Messages:
    """Turns the bytes of a chunked `text/event-stream` answer into its messages."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.body = bytearray()
        self.head: int | None = None  # the status, once the head is read
        self.ended = False  # the last chunk was read

    def feed(self, data: bytes) -> list[bytes]:
        self.raw += data
        if self.head is None:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                if len(self.raw) > MAX_HEAD:
                    raise StreamError("header section too long")
                return []
            head = bytes(self.raw[:end]).decode("latin-1")
            del self.raw[: end + 4]
            self.head = int(head.split(" ", 2)[1])
            if "chunked" not in head.lower():
                raise StreamError(f"not a chunked answer: {head.splitlines()[0]}")
        while (line := self.raw.find(b"\r\n")) >= 0:
            size = int(bytes(self.raw[:line]).split(b";")[0], 16)
            if len(self.raw) < line + 2 + size + 2:
                break
            self.body += self.raw[line + 2 : line + 2 + size]
            del self.raw[: line + 2 + size + 2]
            if size == 0:
                self.ended = True
                break
        messages = []
        while (end := self.body.find(b"\n\n")) >= 0:
            messages.append(bytes(self.body[:end]))
            del self.body[: end + 2]
        return messages


def fields(message: bytes) -> dict[str, str]:
    out = {}
    for line in message.decode().split("\n"):
        key, _, value = line.partition(": ")
        out[key] = value
    return out


class Streams:
    """Opens and reads every stream; `seen` holds each event id's name, content id and change."""

    def __init__(self, host: str, port: int, tokens: list[str], opening: int, record: bool):
        self.host, self.port = host, port
        self.tokens = tokens
        self.record = record
        self.streams = [Stream() for _ in tokens]
        self.seen: dict[int, list[Any]] = {}
        self.opening = trio.Semaphore(opening)
        self.settled = 0  # streams that got their hello or failed
        self.all_settled = trio.Event()
        if not tokens:
            self.all_settled.set()

    def _settle(self) -> None:
        self.settled += 1
        if self.settled == len(self.streams):
            self.all_settled.set()

    def _message(self, stream: Stream, message: bytes, at: float) -> None:
        if message.startswith(b":"):
            stream.comments += 1
            return
        parts = fields(message)
        name = parts.get("event", "message")
        if name == "hello":
            stream.hello = True
            return
        stream.events += 1
        if not self.record or "id" not in parts:
            return
        event_id = int(parts["id"])
        stream.received.append((event_id, at))
        if event_id not in self.seen:
            data = json.loads(parts.get("data", "{}"))
            self.seen[event_id] = [name, data.get("content_id"), data.get("change")]

    async def _open(
        self, sock: trio.SocketStream, request: bytes, parser: Messages, stream: Stream
    ) -> None:
        """Send the request and read up to the `hello`."""
        await sock.send_all(request)
        while not stream.hello:
            data = await sock.receive_some(65536)
            if not data:
                raise StreamError("closed before the hello")
            for message in parser.feed(data):
                self._message(stream, message, time.monotonic())
            if parser.head is not None and parser.head != 200:
                raise StreamError(f"status {parser.head}")

    async def follow(self, index: int) -> None:
        stream = self.streams[index]
        request = (
            f"GET /v1/events HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.tokens[index]}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode("latin-1")
        parser = Messages()
        hello_at = 0.0
        try:
            async with self.opening:
                with trio.fail_after(OPEN_TIMEOUT_S):
                    sock = await trio.open_tcp_stream(self.host, self.port)
                    try:
                        await self._open(sock, request, parser, stream)
                    except BaseException:
                        await trio.aclose_forcefully(sock)
                        raise
            hello_at = time.monotonic()
            self._settle()
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, StreamError) as error:
            stream.failed = f"{type(error).__name__}: {error}"
            self._settle()
            return
        try:
            async with sock:
                while not parser.ended:
                    data = await sock.receive_some(65536)
                    at = time.monotonic()
                    if not data:
                        break
                    for message in parser.feed(data):
                        self._message(stream, message, at)
                stream.closed = True
                stream.ending = "the response ended" if parser.ended else "the connection closed"
        except (OSError, trio.BrokenResourceError, StreamError) as error:
            stream.closed = True
            stream.ending = f"{type(error).__name__}: {error}"
        finally:
            stream.held_s = time.monotonic() - hello_at

    def report(self) -> dict[str, Any]:
        return {
            "streams": [s.report(self.record) for s in self.streams],
            "seen": {str(k): v for k, v in self.seen.items()} if self.record else {},
        }


async def hold(
    host: str, port: int, tokens: list[str], opening: int, record: bool, duration: float
) -> dict[str, Any]:
    streams = Streams(host, port, tokens, opening, record)
    started = time.monotonic()
    with trio.move_on_after(duration):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_sigterm, nursery.cancel_scope)
            for index in range(len(tokens)):
                nursery.start_soon(streams.follow, index)
            await streams.all_settled.wait()
            failed = sum(1 for s in streams.streams if s.failed is not None)
            why = sorted({s.failed for s in streams.streams if s.failed is not None})
            ready = {"ready": len(tokens) - failed, "failed": failed,
                     "open_s": time.monotonic() - started, "why": why}  # fmt: skip
            print(json.dumps(ready), flush=True)
    return streams.report()


async def _stop_on_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.event_streams", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plan", required=True, help='JSON file: {"tokens": [...]}')
    parser.add_argument("--opening", type=int, default=64, help="streams opened at once")
    parser.add_argument("--record", action="store_true", help="every event's id and read time")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds, at most 900")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("only loopback addresses may be loaded")
    if not 0 < args.duration <= MAX_DURATION_S or args.opening < 1:
        parser.error(f"duration must be in (0, {MAX_DURATION_S:g}], opening positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with open(args.plan, encoding="utf-8") as file:
        tokens = list(json.load(file)["tokens"])
    # A socket per stream: lift the soft limit on open files to the hard one.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report = trio.run(hold, args.host, args.port, tokens, args.opening, args.record, args.duration)
    print(json.dumps(report), flush=True)
    return 0


class Holder:
    """This module as a process, holding one stream per token until `stop`."""

    def __init__(self, url: str, tokens: list[str], folder: Path, *, record: bool = False) -> None:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        plan = folder / "streams.json"
        plan.write_text(json.dumps({"tokens": tokens}))
        args = [
            sys.executable, "-m", "bench.event_streams", "--host", host, "--port",
            str(int(port.split("/")[0])), "--plan", str(plan), "--duration", str(MAX_DURATION_S),
        ]  # fmt: skip
        if record:
            args.append("--record")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until every stream is open (or failed)
        if not line:
            self.proc.wait(10)
            raise RuntimeError("the event streams process ended before opening its streams")
        # {"ready", "failed", "open_s", "why"}: streams that failed to open are the caller's
        # to report, not a reason to stop a long run.
        self.ready: dict[str, Any] = json.loads(line)

    def stop(self) -> dict[str, Any]:
        """Close every stream; return the report."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        lines = out.strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError("the event streams process failed")
        report: dict[str, Any] = json.loads(lines[-1])
        return report


@contextlib.contextmanager
def held(url: str, tokens: list[str], folder: Path, *, record: bool = False) -> Iterator[Holder]:
    """Streams open for the block; the holder's process is stopped however the block ends."""
    holder = Holder(url, tokens, folder, record=record)
    try:
        yield holder
    finally:
        if holder.proc.poll() is None:
            holder.proc.kill()
            holder.proc.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
