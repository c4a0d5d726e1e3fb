"""Media files: where they live and how they are written.

Paths are a pure function of validated ids (`audio/<track_id>.<ext>`, `images/<image_id>.jpg`)
with the extension from an allow-list, so nothing from outside ever names a file. Writes are
atomic: bytes go to `<final>.<random>.part` in the same directory, are fsynced, renamed into place
and the directory fsynced, so a crash leaves either no file or the whole file under the final
name, plus at most a `.part` file that the startup sweep removes.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from storage.ids import content_id, image_id

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
FAULT_ENV = "PEZ_TEST_FAULT_POINT"


class MediaLayout:
    """The media folder's layout; creates its subfolders on construction."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.audio_dir = root / "audio"
        self.images_dir = root / "images"
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.images_dir.mkdir(parents=True, exist_ok=True)

    def audio_path(self, track_id: str, ext: str) -> Path:
        if ext not in AUDIO_MEDIA_TYPES:
            raise ValueError(f"unsupported audio extension {ext!r}")
        return self.audio_dir / f"{content_id(track_id)}.{ext}"

    def image_path(self, image: str) -> Path:
        return self.images_dir / f"{image_id(image)}.jpg"

    def sweep_partials(self) -> int:
        """Remove `.part` files left by a crash; return how many."""
        removed = 0
        for folder in (self.audio_dir, self.images_dir):
            for entry in os.scandir(folder):
                if entry.name.endswith(PART_SUFFIX):
                    os.unlink(entry.path)
                    removed += 1
        return removed


def fault_point(name: str) -> None:
    """Die here (SIGKILL-like) when tests ask for it through the environment."""
    if os.environ.get(FAULT_ENV) == name:
        os._exit(137)


class AtomicWriter:
    """Write one file atomically. Use as a context manager; call `commit()` to publish.

    Leaving the block without `commit()` (an error, a cancellation) deletes the temporary file.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f"{final.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
        self.size = 0
        self.created = False  # the temporary file was made (it may remain until exit/unlink)
        self.committed = False  # the file is under its final name
        self._fd: int | None = None  # a bare descriptor: one system call per step, no buffer

    def __enter__(self) -> AtomicWriter:
        self.open()
        return self

    def open(self) -> None:
        """Create the temporary file (the context manager does this on entry)."""
        self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self.created = True

    @property
    def opened(self) -> bool:
        """True while the temporary file is open (from `open` until commit or exit)."""
        return self._fd is not None

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:  # a regular file takes it all at once unless interrupted
            view = view[os.write(self._fd, view) :]
        self.size += len(data)

    def commit(self, *, sync_dir: bool = True) -> None:
        """Fsync, rename into place, fsync the directory.

        With `sync_dir=False` the caller fsyncs the directory (`sync_dirs`) before it relies on
        the file, so several files published together share one directory fsync.
        """
        assert self._fd is not None
        fault_point("after_write")
        os.fsync(self._fd)
        fault_point("after_fsync")
        fd, self._fd = self._fd, None
        os.close(fd)
        os.replace(self.tmp, self.final)
        self.committed = True
        fault_point("after_rename")
        if sync_dir:
            sync_dirs([self.final.parent])

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
            self.tmp.unlink(missing_ok=True)


def write_atomic(final: Path, chunks: Iterator[bytes] | bytes) -> int:
    """Write all chunks to `final` atomically; return the size written."""
    with AtomicWriter(final) as writer:
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            writer.write(chunk)
        writer.commit()
        return writer.size


def sync_dirs(folders: Iterable[Path]) -> None:
    """Make the renames into these folders durable."""
    for folder in folders:
        fsync_dir(folder)
    fault_point("after_dirfsync")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
