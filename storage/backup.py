"""Backups of the databases while the daemon runs, their checks, and putting one back (SPEC §15).

A backup is a folder `<dest>/<UTC time>/` (`20240501T031500Z`) holding a copy of each database
of `db_dir` that exists (`user.db`, `catalog.db`, `server.db`, `download_queue.db`) and
`backup.json`, the manifest (size, SHA-256 and schema version of each copy). Media files are not
copied: they can be downloaded again, and the integrity watchdog queues what is missing.

Consistency. Each copy is made with SQLite's online backup API from a connection that holds one
read transaction for the whole copy: in WAL mode that snapshot costs the daemon nothing (readers
never block its writer, and no write lock is taken), and the copy is the database as of the
moment the snapshot began, however much is written meanwhile. Without it the backup API starts
over whenever another connection writes, and under a busy queue it would never finish. The
snapshots of all the databases are opened first, one after the other, and only then copied, so
the copies agree with each other to within milliseconds. The copy goes in steps of `STEP_PAGES`
pages, between which a stop request is honoured (the backup job at a shutdown deadline).

Atomicity. The copies are written into `<dest>/.partial-<name>/`, each checked with
`PRAGMA integrity_check`, switched from WAL to a rollback journal (a backup is then one file per
database, nothing beside it), fsynced with the manifest, and the folder is renamed to its final
name. A crash leaves at most a `.partial-` folder, which no listing takes for a backup and the
next pruning removes once it is a day old.

Restore copies a backup's databases into `db_dir` beside the current ones, then moves the
current files (with their `-wal`, `-shm` and `-journal` files, which would otherwise be replayed
onto the restored database) into `db_dir/pre-restore-<UTC time>/` and renames the copies into
place, all under the data directory's lock (`storage.lock`): it refuses while a daemon runs on
those files, and no daemon starts while it works.

Every function here is blocking; the backup job runs them off the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from storage.lock import holding

DATABASES = ("user.db", "catalog.db", "server.db", "download_queue.db")
# The files SQLite keeps beside a database: left beside a restored one, a WAL would be replayed
# onto it.
COMPANIONS = ("-wal", "-shm", "-journal")
MANIFEST = "backup.json"
FORMAT = 1
# 256 pages (1 MiB at the default page size) per step: each step is a few milliseconds of work
# between which a stop request is seen.
STEP_PAGES = 256
NAME_FORMAT = "%Y%m%dT%H%M%SZ"
BACKUP_NAME = re.compile(r"\d{8}T\d{6}Z(-\d+)?")
PARTIAL = ".partial-"
RESTORING = ".restoring-"
ASIDE = "pre-restore-"
STALE_PARTIAL_S = 86400
CHUNK = 1 << 20


class BackupError(Exception):
    """A backup, check or restore could not be done; the message is one line for a person."""


class _Stopped(Exception):
    """The stop event was set between two steps of a copy."""


@dataclass(frozen=True)
class Copy:
    """One database in a backup."""

    name: str
    bytes: int
    sha256: str
    schema_version: int


@dataclass(frozen=True)
class Backup:
    folder: Path
    copies: tuple[Copy, ...]

    @property
    def total_bytes(self) -> int:
        return sum(c.bytes for c in self.copies)

    def report(self) -> dict[str, Any]:
        """What the backup job stores with its run."""
        return {
            "folder": str(self.folder),
            "databases": {c.name: c.bytes for c in self.copies},
            "bytes": self.total_bytes,
        }


@dataclass(frozen=True)
class Check:
    """One database of a backup as `verify` found it: `problem` is None when it is sound."""

    name: str
    problem: str | None


@dataclass(frozen=True)
class Restored:
    databases: tuple[str, ...]
    set_aside: Path | None  # where the files that were replaced went, if there were any
    moved: tuple[str, ...]  # the file names moved there


def read_only_uri(path: Path) -> str:
    """The URI that opens `path` read-only (a relative path too)."""
    return f"{path.resolve().as_uri()}?mode=ro"


# Backing up ---------------------------------------------------------------------------------


def make_backup(
    db_dir: Path,
    dest: Path,
    now: datetime,
    *,
    stop: threading.Event | None = None,
    step_pages: int = STEP_PAGES,
) -> Backup | None:
    """Copy every database of `db_dir` into a new folder under `dest` named after `now` (UTC);
    None if `stop` was set before it was complete (nothing is left behind then)."""
    names = [name for name in DATABASES if (db_dir / name).is_file()]
    if not names:
        raise BackupError(f"no database found in {db_dir} (is it the server's db_dir?)")
    if dest.exists() and not dest.is_dir():
        raise BackupError(f"{dest} is not a directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create {dest}: {exc.strerror}") from None
    final, partial = _new_folder(dest, now)
    try:
        with contextlib.ExitStack() as sources:
            # Every snapshot before any copy: the copies agree with each other.
            snapshots = [(name, sources.enter_context(_snapshot(db_dir / name))) for name in names]
            copies = []
            for name, (source, version) in snapshots:
                copied = _copy(source, partial / name, stop, step_pages)
                copies.append(Copy(name, *copied, schema_version=version))
        _write_manifest(partial, db_dir, now, copies)
        _fsync_dir(partial)
        os.rename(partial, final)
        _fsync_dir(dest)
    except _Stopped:
        shutil.rmtree(partial, ignore_errors=True)
        return None
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BackupError(f"cannot write the backup in {dest}: {exc.strerror}") from None
        raise
    return Backup(final, tuple(copies))


def _new_folder(dest: Path, now: datetime) -> tuple[Path, Path]:
    """A final name no backup has yet and its partial folder, created (two backups in one
    second get `-1`, `-2`…)."""
    stamp = now.strftime(NAME_FORMAT)
    for n in range(1000):
        name = stamp if n == 0 else f"{stamp}-{n}"
        final, partial = dest / name, dest / f"{PARTIAL}{name}"
        if final.exists():
            continue
        try:
            partial.mkdir()
        except FileExistsError:
            continue  # another backup is writing that one right now
        except OSError as exc:
            raise BackupError(f"cannot write in {dest}: {exc.strerror}") from None
        return final, partial
    raise BackupError(f"too many backups named {stamp} in {dest}")


@contextlib.contextmanager
def _snapshot(path: Path) -> Iterator[tuple[sqlite3.Connection, int]]:
    """A read-only connection to `path` inside one read transaction, and its schema version."""
    try:
        conn = sqlite3.connect(
            read_only_uri(path), uri=True, isolation_level=None,
            check_same_thread=False, timeout=10,
        )  # fmt: skip
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from None
    try:
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # the snapshot begins
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise BackupError(f"cannot read {path}: {exc}") from None
        yield conn, version
    finally:
        conn.close()


def _copy(
    source: sqlite3.Connection, target: Path, stop: threading.Event | None, step_pages: int
) -> tuple[int, str]:
    """Copy `source` into the new file `target` in steps, check it, make it one self-contained
    file and fsync it; its size and SHA-256."""

    def progress(status: int, remaining: int, total: int) -> None:
        if stop is not None and stop.is_set():
            raise _Stopped

    def interrupted() -> int:  # an integrity check of a big copy stops too
        return 1 if stop is not None and stop.is_set() else 0

    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    try:
        source.backup(conn, pages=step_pages, progress=progress)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.set_progress_handler(interrupted, 10_000)
        problem = _integrity(conn)
    except sqlite3.Error as exc:
        if stop is not None and stop.is_set():
            raise _Stopped from None
        raise BackupError(f"cannot copy {target.name}: {exc}") from None
    finally:
        conn.close()
    if problem is not None:
        raise BackupError(f"the copy of {target.name} fails its integrity check: {problem}")
    return target.stat().st_size, _sha256(target, sync=True)


def _integrity(conn: sqlite3.Connection) -> str | None:
    """None when `PRAGMA integrity_check` says ok, else its first findings."""
    found = [row[0] for row in conn.execute("PRAGMA integrity_check(5)")]
    return None if found == ["ok"] else "; ".join(str(f) for f in found)


def _sha256(path: Path, *, sync: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
        if sync:
            os.fsync(fh.fileno())
    return digest.hexdigest()


def _write_manifest(folder: Path, db_dir: Path, now: datetime, copies: Sequence[Copy]) -> None:
    manifest = {
        "format": FORMAT,
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "db_dir": str(db_dir),
        "databases": {
            c.name: {"bytes": c.bytes, "sha256": c.sha256, "schema_version": c.schema_version}
            for c in copies
        },
    }
    path = folder / MANIFEST
    with open(path, "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Keeping the last few ------------------------------------------------------------------------


def list_backups(dest: Path) -> list[Path]:
    """The complete backups in `dest`, oldest first (their names sort by time)."""
    try:
        entries = list(dest.iterdir())
    except OSError:
        return []
    return sorted(p for p in entries if BACKUP_NAME.fullmatch(p.name) and p.is_dir())


def prune_backups(dest: Path, keep: int, *, now: float | None = None) -> list[str]:
    """Delete all but the newest `keep` backups in `dest`, and partial folders a crash left
    more than a day ago; the names deleted. Nothing else in `dest` is touched."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    doomed = list_backups(dest)[:-keep]
    cutoff = (time.time() if now is None else now) - STALE_PARTIAL_S
    with contextlib.suppress(OSError):
        for path in dest.iterdir():
            if path.name.startswith(PARTIAL) and path.is_dir() and path.stat().st_mtime < cutoff:
                doomed.append(path)
    for path in doomed:
        shutil.rmtree(path)
    return [p.name for p in doomed]


# Checking -----------------------------------------------------------------------------------


def verify_backup(folder: Path) -> list[Check]:
    """Check each database of a backup: the manifest's size and SHA-256 when it has one, then
    `PRAGMA integrity_check`. `BackupError` when `folder` is no backup at all."""
    if not folder.is_dir():
        raise BackupError(f"{folder} is not a directory")
    expected = _manifest_databases(folder)
    if expected is None:
        expected = {name: {} for name in DATABASES if (folder / name).exists()}
    if not expected:
        inside = list_backups(folder)
        hint = f"; it holds backups, name one: {inside[-1]}" if inside else ""
        raise BackupError(f"{folder} holds no backup (no {MANIFEST}, no database){hint}")
    return [Check(name, _problem(folder / name, facts)) for name, facts in expected.items()]


def _manifest_databases(folder: Path) -> dict[str, dict[str, Any]] | None:
    """The manifest's facts per database, None without a manifest."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path} cannot be read: {exc}") from None
    databases = manifest.get("databases") if isinstance(manifest, dict) else None
    if not isinstance(databases, dict) or not all(
        name in DATABASES and isinstance(facts, dict) for name, facts in databases.items()
    ):
        raise BackupError(f"{path} is not a backup manifest")
    return {str(name): dict(facts) for name, facts in databases.items()}


def _problem(path: Path, facts: dict[str, Any]) -> str | None:
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if "bytes" in facts and size != facts["bytes"]:
        return f"{size} bytes, the backup wrote {facts['bytes']}"
    if "sha256" in facts and _sha256(path) != facts["sha256"]:
        return "its content changed since the backup was written (SHA-256 differs)"
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        return f"cannot be opened: {exc}"
    try:
        return _integrity(conn)
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        conn.close()


# Restoring ----------------------------------------------------------------------------------


def restore_backup(folder: Path, db_dir: Path, now: datetime, *, holder: str) -> Restored:
    """Put the backup in `folder` in place of the databases of `db_dir` (see the module's
    docstring). `DirInUse` while a daemon runs on `db_dir`; `BackupError` for a damaged backup,
    before anything in `db_dir` changes."""
    checks = verify_backup(folder)
    bad = [c for c in checks if c.problem is not None]
    if bad:
        named = "; ".join(f"{c.name}: {c.problem}" for c in bad)
        raise BackupError(f"{folder} is damaged, nothing restored ({named})")
    names = tuple(name for name in DATABASES if name in {c.name for c in checks})
    with holding(db_dir, holder):
        staged = [db_dir / f"{RESTORING}{name}" for name in names]
        try:
            for name, path in zip(names, staged, strict=True):
                _stage(folder / name, path)
            aside, moved = _set_aside(db_dir, now)
            for name, path in zip(names, staged, strict=True):
                os.rename(path, db_dir / name)
            _fsync_dir(db_dir)
        except OSError as exc:
            raise BackupError(f"cannot restore into {db_dir}: {exc.strerror}") from None
        finally:
            for path in staged:
                path.unlink(missing_ok=True)
    return Restored(names, aside, moved)


def _stage(source: Path, target: Path) -> None:
    """Copy one database of the backup to `target` (through SQLite, which also syncs it)."""
    target.unlink(missing_ok=True)  # a crashed restore's leftover
    src = sqlite3.connect(read_only_uri(source), uri=True, isolation_level=None)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        src.backup(dst)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from None
    finally:
        dst.close()
        src.close()


def _set_aside(db_dir: Path, now: datetime) -> tuple[Path | None, tuple[str, ...]]:
    """Move every database of `db_dir` with its companions into a new `pre-restore-` folder."""
    present = [
        db_dir / f"{name}{suffix}"
        for name in DATABASES
        for suffix in ("", *COMPANIONS)
        if (db_dir / f"{name}{suffix}").exists()
    ]
    if not present:
        return None, ()
    aside = db_dir / f"{ASIDE}{now.strftime(NAME_FORMAT)}"
    n = 0
    while aside.exists():
        n += 1
        aside = db_dir / f"{ASIDE}{now.strftime(NAME_FORMAT)}-{n}"
    aside.mkdir()
    for path in present:
        os.rename(path, aside / path.name)
    return aside, tuple(p.name for p in present)
