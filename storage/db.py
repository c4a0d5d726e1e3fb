"""SQLite access shared by every store: connections, transactions, migrations, threads.

A `Database` owns one write connection (serialised by a lock, every write transaction opened with
`BEGIN IMMEDIATE` so a read-then-write never fails with "database is locked") and a small pool of
read connections (WAL lets them read while a write is in progress). Store methods are plain
synchronous functions that use `db.read()` / `db.write()`; async code runs them off the event
loop with `await db.run(fn, *args)`. The `pezzottify-auth` CLI calls the same functions directly.

Schema versions live in `PRAGMA user_version`; each migration is a list of statements applied in
one transaction together with the version bump, so a crash leaves the old or the new schema.
Plain filtered, paged reads may go through `table`, an `sqlite_utils` view of a connection.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import sqlite_utils
from sqlite_utils.db import Table

from storage.offload import Offload

P = ParamSpec("P")
T = TypeVar("T")

Migration = Sequence[str]
BUSY_TIMEOUT_MS = 10_000
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


# Result codes of a write that failed for want of a working disk (extended codes included).
DISK_TROUBLE = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


# The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"

log = logging.getLogger("pezzottify.storage")
# WAL needs shared memory between connections on one host; these filesystems do not give it.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "ceph", "glusterfs"}
)
MOUNTS = Path("/proc/mounts")


def disk_trouble(exc: BaseException) -> bool:
    """True for an SQLite error that says the disk is full or failing ("database or disk is
    full", "disk I/O error"): a condition of the machine, not of the data or the code."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in DISK_TROUBLE


def filesystem_type(path: Path, mounts: Path = MOUNTS) -> str | None:
    """The type of the filesystem holding `path` (longest mount-point prefix), if known."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    target = path.resolve()
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = Path(fields[1].replace("\\040", " "))
        if target.is_relative_to(mount_point) and (best is None or len(fields[1]) > best[0]):
            best = (len(fields[1]), fields[2])
    return best[1] if best else None


def warn_if_network_filesystem(path: Path, mounts: Path = MOUNTS) -> bool:
    """Log loudly (and return True) when a database sits on a network filesystem."""
    fs_type = filesystem_type(path.parent, mounts)
    if fs_type not in NETWORK_FILESYSTEMS:
        return False
    log.warning(
        "%s is on a %s filesystem: SQLite in WAL mode is only safe on a local disk; "
        "expect corruption or locking errors. Move db_dir to a local filesystem.",
        path,
        fs_type,
    )
    return True


class StorageError(Exception):
    """A database cannot be opened or used as this server expects."""


class SchemaTooNew(StorageError):
    """The database was written by a newer server; refusing to touch it."""


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open a connection in autocommit mode with the pragmas every connection must carry."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
    return conn


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def table(conn: sqlite3.Connection, name: str) -> Table:
    """`name` as an `sqlite_utils` table over `conn`, for plain reads (`rows_where`,
    `count_where`) in the caller's transaction or snapshot. The wrapper sets no pragma and loads
    no plugin: the connection stays as `connect` made it."""
    wrapped = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    return wrapped.table(name)


def migrate(conn: sqlite3.Connection, name: str, migrations: Sequence[Migration]) -> int:
    """Apply the migrations the database lacks, each in its own transaction; return the version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(migrations):
        raise SchemaTooNew(
            f"{name} has schema version {current}, newer than this server supports "
            f"({len(migrations)}); upgrade the server"
        )
    for version, statements in enumerate(migrations[current:], start=current + 1):
        with immediate(conn):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version}")
    return len(migrations)


class Database:
    """One SQLite file: a locked write connection, a pool of readers, a thread limiter."""

    def __init__(
        self,
        path: Path,
        migrations: Sequence[Migration],
        *,
        readers: int = 4,
        synchronous: str = "FULL",
        offload: Offload | None = None,
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        warn_if_network_filesystem(path)
        try:
            self._writer = connect(path, synchronous=synchronous)
            migrate(self._writer, path.name, migrations)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {path}: {exc}") from exc
        self._write_lock = threading.Lock()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._reader_count = readers
        self._pool_lock = threading.Lock()
        # Threads beyond readers + one writer would only queue on the locks above.
        self.offload = offload if offload is not None else Offload(readers + 1)

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """Run a block as one immediate transaction on the write connection (blocking).

        `durable=False` commits this transaction with `synchronous=NORMAL`, without waiting for
        the disk: it survives the process being killed, but an OS crash or a power cut may roll
        it back (never corrupt the file); the next durable commit makes it durable as well. Only
        for a transaction whose loss the startup recovery makes good (the processor's claims).
        """
        relaxed = not durable and self._synchronous in ("FULL", "EXTRA")
        with self._write_lock:
            if relaxed:
                self._writer.execute("PRAGMA synchronous=NORMAL")
            try:
                with immediate(self._writer) as conn:
                    yield conn
            finally:  # after the commit (or the rollback)
                if relaxed:
                    self._writer.execute(f"PRAGMA synchronous={self._synchronous}")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Lend a read connection (autocommit; wrap several reads in BEGIN for a snapshot)."""
        conn = self._take_reader()
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._readers.put(conn)

    def _take_reader(self) -> sqlite3.Connection:
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        with self._pool_lock:
            if len(self._all_readers) < self._reader_count:
                conn = connect(self.path, synchronous=self._synchronous)
                self._all_readers.append(conn)
                return conn
        return self._readers.get()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking store call off the event loop (`storage.offload`): if cancelled, the
        call still runs to its end (its transaction commits or rolls back whole) and the
        cancellation is delivered afterwards."""
        return await self.offload.run(fn, *args, **kwargs)

    def probe(self) -> None:
        """Check that the database answers now (blocking; for health checks): the file on disk
        still begins as an SQLite database, and a connection of the pool reads its schema.
        Raises `StorageError` naming the file and what is wrong. The header is read from the
        file itself because the connections would not notice: their caches and the pages still
        in the WAL answer for a file replaced or overwritten under them, until it is too late."""
        try:
            with open(self.path, "rb") as file:
                header = file.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise StorageError(f"{self.path.name}: {exc.strerror or exc}") from exc
        if header != SQLITE_HEADER:
            raise StorageError(f"{self.path.name}: not an SQLite database file")
        try:
            with self.read() as conn:
                conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path.name}: {exc}") from exc

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        for conn in self._all_readers:
            conn.close()
