"""The data directory's lock: who is using the databases of one `db_dir` right now.

A running `pezzottify-server` holds an exclusive `flock` on `<db_dir>/pezzottify.lock` from
before it opens a database until after it has closed them all; `pezzottify-admin restore` takes
the same lock while it swaps files. So a restore refuses while a daemon runs on those files, and
a daemon refuses to start in the middle of a restore (or beside another daemon on the same
files). The kernel drops the lock when its holder exits, however it exits (a SIGKILL, a power
cut), so a lock is never left stale: the file itself staying behind means nothing.

`flock` rather than POSIX record locks: a flock belongs to the open file, so a second attempt
from the same process (an in-process daemon and a restore in one test) is refused too, and
closing an unrelated descriptor of the file does not drop it. The holder writes a line saying
who it is (program and pid) for the refusal message; the line is informative only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from storage.db import StorageError

LOCK_NAME = "pezzottify.lock"


class DirInUse(StorageError):
    """Another process holds the data directory's lock."""


class DirLock:
    """An exclusive hold on a data directory, released by `release()` or the process's end."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, db_dir: Path, holder: str) -> DirLock:
        """Take the lock of `db_dir` without waiting (blocking call: opens a file); `holder`
        names the program for the message another one gets. `DirInUse` if it is held."""
        path = db_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _read_holder(fd)
            os.close(fd)
            raise DirInUse(f"{db_dir} is in use by {who or 'another process'}") from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {path}: {exc.strerror}") from exc
        with contextlib.suppress(OSError):  # the line is informative: a full disk must not stop us
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder} (pid {os.getpid()})\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open file drops the flock
            self._fd = None


@contextlib.contextmanager
def holding(db_dir: Path, holder: str) -> Iterator[DirLock]:
    lock = DirLock.acquire(db_dir, holder)
    try:
        yield lock
    finally:
        lock.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""
