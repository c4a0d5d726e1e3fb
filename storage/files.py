"""Media files: where they live, how they are written and published.

Paths are a pure function of validated ids (`audio/<track_id>.<ext>`, `images/<image_id>.jpg`)
with the extension from an allow-list, so nothing from outside ever names a file. Writes are
atomic: bytes go to `<final>.<random>.part` in the same directory, are fsynced, renamed into place
and the directory fsynced, so a crash leaves either no file or the whole file under the final
name, plus at most a `.part` file that the startup sweep removes.

`MediaFile` is the async face of a file arriving from the network: it gathers the body's chunks
into batches and hands each batch, then the publishing, to the media folder's `Offload` (worker
threads; a call that has begun runs to its end). Disk errors leave as `OSError`, for the caller
to translate. A `Faults` hook, given by the crash tests, is called at each step of publishing.

`MediaRead` is the other way: a span of a file being served, read in pieces of at most
`READ_PIECE_BYTES`, each piece one blocking call for the caller to run in the same `Offload`.
The first call opens the file, stats it, chooses the span from its size and reads the first
piece; a span that fits in one piece (a player's range) costs that one call, and the file is
closed before it returns.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import trio

from storage.ids import content_id, image_id
from storage.offload import Offload

AUDIO_TYPES: dict[str, str] = {
    "audio/flac": "flac",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/mp4": "m4a",
    "audio/aac": "aac",
    "audio/wav": "wav",
}
AUDIO_MEDIA_TYPES: dict[str, str] = {ext: mime for mime, ext in AUDIO_TYPES.items()}
PART_SUFFIX = ".part"
# Bytes of a body gathered before one write to its temporary file: few thread hops, bounded
# memory (a smaller body is written and published in one call).
WRITE_BATCH_BYTES = 1024 * 1024
CLEANUP_S = 5.0
# Bytes of a file read by one call while serving it: a player's range (256 KiB to 1 MiB) in one
# thread round trip, and a whole file in as many as it takes, with one piece in memory.
READ_PIECE_BYTES = 1024 * 1024

# Called with the name of each step of publishing a file and of recording a completion
# ("after_write", "after_fsync", "after_rename", "after_dirfsync", "before_commit",
# "after_commit"), and of a health check's disk probe ("disk_probe"); the crash tests pass one
# that kills the process at the step they name, the health tests one that fills the disk.
Faults = Callable[[str], None]


def no_faults(step: str) -> None:
    """The hook of a daemon that nobody is testing: nothing happens at any step."""


PROBE_BYTES = b"pezzottify disk probe\n"


def probe_write(folder: Path, faults: Faults = no_faults) -> None:
    """Check that `folder`'s disk takes writes now (blocking; for health checks): a small file
    is written, fsynced and removed; raises `OSError` if any of it fails. The fault hook is
    called at the step "disk_probe", before the write, so a test can fill the disk. A probe cut
    short by a crash leaves one small `.health-probe-*` file behind."""
    path = folder / f".health-probe-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        faults("disk_probe")
        os.write(fd, PROBE_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)


class MediaLayout:
    """The media folder's layout, and how its blocking work leaves the event loop; creates its
    subfolders on construction."""

    def __init__(
        self, root: Path, *, offload: Offload | None = None, faults: Faults = no_faults
    ) -> None:
        self.root = root
        self.audio_dir = root / "audio"
        self.images_dir = root / "images"
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.images_dir.mkdir(parents=True, exist_ok=True)
        # Two threads: the processor writes one file at a time (a batch, or the publishing with
        # its fsyncs), so a slow disk never holds both and listeners' ranges are still read.
        self.offload = offload if offload is not None else Offload(2)
        self.faults = faults

    def audio_path(self, track_id: str, ext: str) -> Path:
        if ext not in AUDIO_MEDIA_TYPES:
            raise ValueError(f"unsupported audio extension {ext!r}")
        return self.audio_dir / f"{content_id(track_id)}.{ext}"

    def image_path(self, image: str) -> Path:
        return self.images_dir / f"{image_id(image)}.jpg"

    def has_audio(self, track_id: str, audio_format: str | None) -> bool:
        """Whether the track's audio is here as the catalog records it: a format, and
        `audio/<id>.<format>` (blocking). The integrity scan's rule, for one track; a file that
        cannot be looked at counts as absent (fetching it again is what tells more)."""
        return audio_format is not None and os.path.isfile(self.audio_path(track_id, audio_format))

    def has_image(self, image: str) -> bool:
        """Whether `images/<id>.jpg` is here (blocking; absent if it cannot be looked at)."""
        return os.path.isfile(self.image_path(image))

    def sweep_partials(self) -> int:
        """Remove `.part` files left by a crash; return how many (blocking)."""
        removed = 0
        for folder in (self.audio_dir, self.images_dir):
            for entry in os.scandir(folder):
                if entry.name.endswith(PART_SUFFIX):
                    os.unlink(entry.path)
                    removed += 1
        return removed


class AtomicWriter:
    """Write one file atomically (blocking). Use as a context manager or call `discard()`;
    call `commit()` to publish. Leaving without `commit()` deletes the temporary file."""

    def __init__(self, final: Path, faults: Faults = no_faults) -> None:
        self.final = final
        self.tmp = final.with_name(f"{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        self.size = 0
        self.committed = False  # the file is under its final name
        self._faults = faults
        self._fd: int | None = None  # a bare descriptor: one system call per step, no buffer

    def __enter__(self) -> AtomicWriter:
        return self

    def write(self, data: bytes) -> None:
        """Append `data`, creating the temporary file on the first call."""
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(self.tmp, flags, 0o666)
        view = memoryview(data)
        while view:  # a regular file takes it all at once unless interrupted
            view = view[os.write(self._fd, view) :]
        self.size += len(data)

    def commit(self) -> None:
        """Fsync, rename into place, fsync the directory."""
        if self._fd is None:
            self.write(b"")  # an empty file is a file too
        assert self._fd is not None
        self._faults("after_write")
        os.fsync(self._fd)
        self._faults("after_fsync")
        fd, self._fd = self._fd, None
        os.close(fd)
        os.replace(self.tmp, self.final)
        self.committed = True
        self._faults("after_rename")
        fsync_dir(self.final.parent)
        self._faults("after_dirfsync")

    def discard(self) -> None:
        """Close and remove the temporary file, if one was made and not published (a failed
        rename leaves it closed, and still to remove)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if not self.committed:
            self.tmp.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        self.discard()


class MediaFile:
    """A media file arriving in chunks, written off the event loop (see the module docstring).

    `write` each chunk, then `publish`; if anything stops it before, `discard` removes the
    temporary file (publishing a file already under its final name changes nothing).
    """

    def __init__(self, media: MediaLayout, final: Path) -> None:
        self._offload = media.offload
        self.writer = AtomicWriter(final, media.faults)
        self._batch: list[bytes] = []
        self._batched = 0

    @property
    def size(self) -> int:
        return self.writer.size + self._batched

    async def write(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= WRITE_BATCH_BYTES:
            await self._offload.run(self.writer.write, self._take())

    async def publish(self) -> None:
        """Write what is left, fsync, rename into place and fsync the folder, in one call."""
        rest = self._take()

        def finish() -> None:
            self.writer.write(rest)
            self.writer.commit()

        await self._offload.run(finish)

    async def discard(self) -> None:
        """Remove the temporary file (bounded, shielded: safe in a `finally`)."""
        self._take()
        with trio.move_on_after(CLEANUP_S, shield=True):
            await self._offload.run(self.writer.discard)

    def _take(self) -> bytes:
        data = b"".join(self._batch)
        self._batch, self._batched = [], 0
        return data


class MediaRead:
    """A span of a media file being read, piece by piece (blocking calls; see the module
    docstring). The file stays open between pieces, so a file replaced meanwhile (a download
    publishing a new version) is still read whole, as it was when the first piece was read.

    `open` reads the first piece; while `remaining`, `next_piece` reads the next, and the call
    that reads the last closes the file. `close` is for a reader that stops early (a file
    object left open is closed when it is dropped, as a last resort).
    """

    def __init__(self, path: Path, file: io.FileIO, size: int, span: tuple[int, int]) -> None:
        self.path = path
        self.size = size  # of the whole file
        self.begin, self.end = span
        self.first = b""
        self._file: io.FileIO | None = file
        self._offset = self.begin

    @classmethod
    def open(cls, root: Path, path: Path, span: Callable[[int], tuple[int, int]]) -> MediaRead:
        """Open `path`, stat it, take `span(size)` as the `[begin, end)` to read (what it raises
        leaves, the file closed) and read the first piece into `first`. A symlink, or a path
        whose folder leads outside `root`, raises FileNotFoundError: the file is absent."""
        if not inside(root, path.parent):
            raise FileNotFoundError(path)
        # O_NOFOLLOW: a symlink planted in place of the file is refused, not followed.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        file = io.FileIO(os.open(path, flags), "rb")
        try:
            size = os.fstat(file.fileno()).st_size
            read = cls(path, file, size, span(size))
            read.first = read.next_piece()
        except BaseException:
            file.close()
            raise
        return read

    @property
    def remaining(self) -> int:
        """Bytes of the span not read yet."""
        return self.end - self._offset

    def next_piece(self) -> bytes:
        """The next `READ_PIECE_BYTES` of the span at most; closes the file after the last.
        Raises OSError if the file is now shorter than the span (it is never truncated in
        place: new versions are renamed over it)."""
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        want = min(self.remaining, READ_PIECE_BYTES)
        data = os.pread(self._file.fileno(), want, self._offset) if want else b""
        if len(data) < want:
            self.close()
            raise OSError(f"{self.path} ended before its size")
        self._offset += want
        if not self.remaining:
            self.close()
        return data

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()


def inside(root: Path, folder: Path) -> bool:
    """True if `folder`, symlinks resolved, is `root` or lies within it (blocking: it reads
    the links)."""
    base, real = os.path.realpath(root), os.path.realpath(folder)
    return real == base or real.startswith(os.path.join(base, ""))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
