"""Streaming a downloader response body: into memory (bounded) or atomically into a file.

httpx's body iterators are nested async generators; a consumer that stops iterating early
leaves them suspended, and trio warns when they are collected. `pump` therefore never leaves
the loop by raising: a failure of its sink is kept aside and the read is stopped by cancelling
it, which raises inside the generators and closes them, then the failure is raised.

Files are written through `storage.files.AtomicWriter` in batches from a worker thread (the
event loop never does file I/O); the size cap is enforced while the body arrives and the
Content-Length is checked once it has. Receiving and publishing are two steps (`receive_to_file`
then `Received.publish`), so that the processor can publish one file while it receives the
next; a body smaller than one batch costs a single worker call, at publish. Whatever happens
short of a publish (an error, a cancellation, a discard) removes the temporary file.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.downloader_errors import (
    DownloaderConnectionError,
    DownloaderError,
    DownloaderParseError,
    DownloaderTimeout,
    StorageFailure,
)
from storage.files import AtomicWriter

log = logging.getLogger("pezzottify.downloader")

# Bytes gathered before one hop to a worker thread: few hops, bounded memory.
WRITE_BATCH_BYTES = 1024 * 1024
CLEANUP_S = 5.0


async def pump(
    response: httpx.Response, path: str, sink: Callable[[bytes], Awaitable[None]]
) -> None:
    """Feed the body to `sink` chunk by chunk, translating transport failures mid-body.

    A `DownloaderError` from `sink` stops the read (see the module docstring) and is raised.
    """
    failure: DownloaderError | None = None
    with trio.CancelScope() as stop:
        try:
            async for chunk in response.aiter_bytes():
                if failure is not None:
                    continue  # only reached when the body needs no checkpoint (in memory)
                try:
                    await sink(chunk)
                except DownloaderError as exc:
                    failure = exc
                    stop.cancel()
        except httpx.TimeoutException as exc:
            raise DownloaderTimeout(f"downloader stalled while sending {path}") from exc
        except httpx.RemoteProtocolError as exc:
            raise DownloaderParseError(f"truncated body from {path}: {exc}") from exc
        except httpx.TransportError as exc:
            raise DownloaderConnectionError(f"connection lost while reading {path}: {exc}") from exc
    if failure is not None:
        raise failure


async def read_capped(response: httpx.Response, path: str, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0

    async def keep(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > cap:
            raise DownloaderParseError(f"too large: {path} sent more than {cap} bytes")
        parts.append(chunk)

    await pump(response, path, keep)
    return b"".join(parts)


def content_length(response: httpx.Response, path: str) -> int | None:
    if response.headers.get("content-encoding", "identity") != "identity":
        return None  # the header counts encoded bytes; we count decoded ones
    raw = response.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise DownloaderParseError(f"bad Content-Length {raw[:32]!r} from {path}")
    return int(raw)


async def _disk(final: Path, fn: Callable[..., Any], *args: Any) -> Any:
    """Run one bounded file operation in a thread. Shielded: the thread cannot be interrupted
    anyway, and a cancellation must land inside the body iterator (see `pump`)."""
    try:
        with trio.CancelScope(shield=True):
            return await trio.to_thread.run_sync(fn, *args)
    except OSError as exc:
        raise StorageFailure(f"cannot write {final.name}: {exc.strerror or exc}") from exc


class _FileSink:
    """Batches body chunks, enforcing the size cap as they arrive. The temporary file is opened
    by the first full batch only: a body smaller than one batch stays in memory until publish."""

    def __init__(self, writer: AtomicWriter, path: str, max_bytes: int) -> None:
        self.writer = writer
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self.batch: list[bytes] = []
        self.batched = 0

    async def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise DownloaderParseError(
                f"too large: {self.path} sent more than {self.max_bytes} bytes"
            )
        self.batch.append(chunk)
        self.batched += len(chunk)
        if self.batched >= WRITE_BATCH_BYTES:
            await _disk(self.writer.final, _write, self.writer, self.take())

    def take(self) -> bytes:
        data, self.batch, self.batched = b"".join(self.batch), [], 0
        return data


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
                final = self.writer.final.name
                raise StorageFailure(f"cannot write {final}: {exc.strerror or exc}") from exc
            raise
        finally:
            self.rest = b""

    async def publish(self) -> int:
        """`publish_now` in a worker thread (shielded: it runs to its end); returns the size."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.publish_now)
        return self.size

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


async def receive_to_file(
    final: Path, response: httpx.Response, path: str, max_bytes: int, expected: int | None
) -> Received:
    """Receive the body for `final` (see `Received`). If this fails or is cancelled, whatever
    was written is removed."""
    writer = AtomicWriter(final)
    sink = _FileSink(writer, path, max_bytes)
    received = Received(writer, b"", 0)
    try:
        await pump(response, path, sink)
        if expected is not None and sink.size != expected:
            problem = "truncated body" if sink.size < expected else "body longer than announced"
            raise DownloaderParseError(f"{problem}: {path} sent {sink.size} of {expected} bytes")
    except BaseException:
        await received.discard()
        raise
    received.rest, received.size = sink.take(), sink.size
    return received


def _write(writer: AtomicWriter, data: bytes) -> None:
    if not writer.opened:
        writer.open()
    writer.write(data)


def _discard(writer: AtomicWriter) -> None:
    """Close the temporary file and remove it: nothing was published."""
    try:
        writer.__exit__(None, None, None)
        writer.tmp.unlink(missing_ok=True)
    except OSError as exc:  # the startup sweep removes what is left; keep the first error
        log.warning("cannot remove %s: %s", writer.tmp.name, exc)
