"""Downloader response bodies: JSON and error bodies into memory (bounded), media atomically
into a file.

JSON and error bodies arrive on the event loop (`pump`, `read_capped`). httpx's body iterators
are nested async generators; a consumer that stops iterating early leaves them suspended, and
trio warns when they are collected. `pump` therefore never leaves the loop by raising: a failure
of its sink is kept aside and the read is stopped by cancelling it, which raises inside the
generators and closes them, then the failure is raised.

Media bodies are received by a blocking transport in a worker thread (`in_worker`,
`receive_now`): one hop per file instead of two scheduler passes per 64 KiB chunk, and the
thread lets the interpreter lock go while it waits on the socket, so the event loop keeps the
lock for the rest of the work (see `docs/decisions.md`). A body smaller than one batch stays in
memory until it is published; a larger one is written through `storage.files.AtomicWriter`
batch by batch from the same thread. The size cap is enforced while the body arrives and the
Content-Length is checked once it has. Receiving and publishing are two steps (`receive_now`,
then `Received.publish`), so that the processor can publish one file while it receives the
next. Whatever happens short of a publish (an error, a cancellation, a discard) removes the
temporary file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import trio

from actors.downloader_errors import (
    DownloaderConnectionError,
    DownloaderError,
    DownloaderParseError,
    DownloaderTimeout,
    DownloaderTooLarge,
    StorageFailure,
)
from storage.files import AtomicWriter

log = logging.getLogger("pezzottify.downloader")

T = TypeVar("T")

# Bytes of a body gathered before one write to its temporary file: few writes, bounded memory
# (a smaller body stays in memory until it is published).
WRITE_BATCH_BYTES = 1024 * 1024
CLEANUP_S = 5.0
# How long a cancelled download waits for its thread to stop and clean up. A thread that is
# receiving stops at its next chunk, within milliseconds; one that takes longer is waiting on a
# silent downloader, which more waiting would not change (and a shutdown has its own deadline).
STOP_WAIT_S = 1.0


async def pump(
    response: httpx.Response, path: str, sink: Callable[[bytes], Awaitable[None]]
) -> None:
    """Feed the body to `sink` chunk by chunk, translating transport failures mid-body.

    A `DownloaderError` from `sink` stops the read (see the module docstring) and is raised.
    """
    failure: DownloaderError | None = None
    with trio.CancelScope() as stop, mid_body(path):
        async for chunk in response.aiter_bytes():
            if failure is not None:
                continue  # only reached when the body needs no checkpoint (in memory)
            try:
                await sink(chunk)
            except DownloaderError as exc:
                failure = exc
                stop.cancel()
    if failure is not None:
        raise failure


@contextmanager
def mid_body(path: str) -> Iterator[None]:
    """Translate the transport failures of a body that is arriving into downloader errors."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise DownloaderTimeout(f"downloader stalled while sending {path}") from exc
    except httpx.RemoteProtocolError as exc:
        raise DownloaderParseError(f"truncated body from {path}: {exc}") from exc
    except httpx.TransportError as exc:
        raise DownloaderConnectionError(f"connection lost while reading {path}: {exc}") from exc


async def read_capped(response: httpx.Response, path: str, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0

    async def keep(chunk: bytes) -> None:
        nonlocal size
        size = _counted(size, chunk, path, cap)
        parts.append(chunk)

    await pump(response, path, keep)
    return b"".join(parts)


def read_capped_now(chunks: Iterator[bytes], path: str, cap: int) -> bytes:
    """Blocking `read_capped` of a body's chunks (see `body_chunks`)."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size = _counted(size, chunk, path, cap)
        parts.append(chunk)
    return b"".join(parts)


def _counted(
    size: int,
    chunk: bytes,
    path: str,
    cap: int,
    over: type[DownloaderParseError] = DownloaderParseError,
) -> int:
    """The body's size with `chunk`; `over` (a parse error) once it passes `cap`."""
    size += len(chunk)
    if size > cap:
        raise over(f"too large: {path} sent more than {cap} bytes")
    return size


def content_length(response: httpx.Response, path: str) -> int | None:
    if response.headers.get("content-encoding", "identity") != "identity":
        return None  # the header counts encoded bytes; we count decoded ones
    raw = response.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise DownloaderParseError(f"bad Content-Length {raw[:32]!r} from {path}")
    return int(raw)


@dataclass
class Received:
    """A body received whole and checked against its announced length, not yet published.

    `rest` is what is not on disk yet (the whole body when it fits in one batch). Exactly one of
    `publish` and `discard` must follow: until then a temporary file may exist.
    """

    writer: AtomicWriter
    rest: bytes
    size: int
    media_type: str = ""

    def publish_now(self, *, sync_dir: bool = True) -> None:
        """Blocking: write the rest and publish the file (see `AtomicWriter.commit`). Raises
        `StorageFailure` if it cannot; whatever stops it, the temporary file is removed."""
        try:
            _write(self.writer, self.rest)
            self.writer.commit(sync_dir=sync_dir)
        except BaseException as exc:
            self.discard_now()  # nothing to do once the file is under its final name
            if isinstance(exc, OSError):
                raise _storage_failure(self.writer, exc) from exc
            raise
        finally:
            self.rest = b""

    def discard_now(self) -> None:
        """Blocking: remove the temporary file, if one was made and not published."""
        self.rest = b""
        if self.writer.created and not self.writer.committed:
            _discard(self.writer)

    async def discard(self) -> None:
        """`discard_now` in a worker thread (bounded, shielded)."""
        if self.writer.created and not self.writer.committed:
            with trio.move_on_after(CLEANUP_S, shield=True):
                await trio.to_thread.run_sync(self.discard_now)


def receive_now(
    final: Path, chunks: Iterator[bytes], path: str, max_bytes: int, expected: int | None
) -> Received:
    """Blocking: receive the body for `final` from `chunks` (see `Received`), enforcing the size
    cap as it arrives and the announced length at its end. A body smaller than one batch stays
    in memory; a larger one goes to the temporary file batch by batch. If this fails, whatever
    was written is removed."""
    received = Received(AtomicWriter(final), b"", 0)
    batch: list[bytes] = []
    batched = 0
    try:
        for chunk in chunks:
            received.size = _counted(received.size, chunk, path, max_bytes, DownloaderTooLarge)
            batch.append(chunk)
            batched += len(chunk)
            if batched >= WRITE_BATCH_BYTES:
                _write_or_fail(received.writer, b"".join(batch))
                batch, batched = [], 0
        if expected is not None and received.size != expected:
            size = received.size
            problem = "truncated body" if size < expected else "body longer than announced"
            raise DownloaderParseError(f"{problem}: {path} sent {size} of {expected} bytes")
    except BaseException:
        received.discard_now()
        raise
    received.rest = b"".join(batch)
    return received


def body_chunks(
    response: httpx.Response, path: str, stopped: Callable[[], bool]
) -> Iterator[bytes]:
    """Blocking: the body's chunks, transport failures mid-body translated; ends with `Stopped`
    at the first chunk after `stopped()` turns True."""
    with mid_body(path):
        for chunk in response.iter_bytes():
            if stopped():
                raise Stopped
            yield chunk


class Stopped(Exception):
    """Raised in a worker thread whose caller was cancelled (see `in_worker`)."""


async def in_worker(
    work: Callable[[Callable[[], bool]], T], discard_now: Callable[[T], None] | None = None
) -> T:
    """`work(stopped)` in a worker thread; its result.

    If cancelled: `stopped()` turns True, which `work` checks between chunks (and between its
    steps), and this waits (shielded) up to `STOP_WAIT_S` for it to end; a result that arrives
    all the same goes to `discard_now`. Then the cancellation goes on. Nothing is
    left behind, unless the thread is blocked on a silent downloader for longer: it is then
    abandoned, and cleans up itself when its read timeout ends it (a media body's temporary
    file, should the daemon exit first, goes in the startup sweep).
    """
    stop, ended, handover = threading.Event(), threading.Event(), threading.Lock()
    delivered: list[T] = []  # returned before the cancellation: discarded here

    def run() -> T:
        try:
            result = work(stop.is_set)
            with handover:
                if not stop.is_set():
                    delivered.append(result)
                    return result
            if discard_now is not None:  # done after the cancellation: nobody will take it
                discard_now(result)
            raise Stopped
        finally:
            ended.set()

    try:
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)
    except trio.Cancelled:
        with handover:  # held by the thread only between its two checks
            stop.set()
        with trio.move_on_after(STOP_WAIT_S + CLEANUP_S, shield=True):
            await trio.to_thread.run_sync(ended.wait, STOP_WAIT_S)
            if discard_now is not None:
                for result in delivered:
                    await trio.to_thread.run_sync(discard_now, result)
        raise


def _write(writer: AtomicWriter, data: bytes) -> None:
    if not writer.opened:
        writer.open()
    writer.write(data)


def _write_or_fail(writer: AtomicWriter, data: bytes) -> None:
    try:
        _write(writer, data)
    except OSError as exc:
        raise _storage_failure(writer, exc) from exc


def _storage_failure(writer: AtomicWriter, exc: OSError) -> StorageFailure:
    return StorageFailure(f"cannot write {writer.final.name}: {exc.strerror or exc}")


def _discard(writer: AtomicWriter) -> None:
    """Close the temporary file and remove it: nothing was published."""
    try:
        writer.__exit__(None, None, None)
        writer.tmp.unlink(missing_ok=True)
    except OSError as exc:  # the startup sweep removes what is left; keep the first error
        log.warning("cannot remove %s: %s", writer.tmp.name, exc)
