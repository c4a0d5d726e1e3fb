"""The health checks behind `GET /health` (SPEC §15): every database answers, the disk takes
writes, and whether the downloader answers.

- `databases`: each database's `Database.probe` (its file still an SQLite database on disk, a
  read through its own pool); "ok", or "unreadable: <file>: <what>" for each that fails.
- `disk`: a small file written, fsynced and removed in the media folder and in the database
  folder (`storage.files.probe_write`, through the media folder's fault hook, so a test can
  fill the disk); "ok", "full" (no space, or over quota), or "unwritable: <folder>: <what>".
- `downloader`: "ok" when it answers HTTP (`DownloaderClient.reachable`), "unreachable" when it
  does not, "disabled" without a download manager. It alone never makes the status "degraded":
  the API serves without it.

Each check is bounded by CHECK_TIMEOUT_S and the three run at once, so an answer never takes
much longer: a database or a disk that does not answer in time counts as failed, and the thread
stuck on it is left to finish on its own (`Offload.probe`). Failures name files and folders,
never paths: the route is public.

The route is public and a probe fsyncs, so anyone could make the disk work by calling it in a
loop: probes run one at a time, and checks younger than FRESH_S are answered again to whoever
asks meanwhile.
"""

from __future__ import annotations

import errno
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from storage.db import Database, StorageError
from storage.files import probe_write

if TYPE_CHECKING:
    from daemon.root import Root

log = logging.getLogger("pezzottify.health")

CHECK_TIMEOUT_S = 2.0
FRESH_S = 1.0
OK = "ok"
FULL = "full"
UNREACHABLE = "unreachable"
DISABLED = "disabled"
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _version() -> str:
    try:
        return importlib.metadata.version("pezzottify")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "unknown"


VERSION = _version()


@dataclass(frozen=True)
class Health:
    checks: dict[str, str]
    uptime_sec: int

    @property
    def ok(self) -> bool:
        """Every database answers and the disk takes writes (the downloader aside)."""
        return self.checks["databases"] == OK and self.checks["disk"] == OK

    def json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "degraded",
            "version": VERSION,
            "uptime_sec": self.uptime_sec,
            "checks": dict(self.checks),
        }


class HealthProbe:
    """What the health checks keep between calls: when the daemon started, and the last
    checks with when they were made."""

    def __init__(self, fresh_for: float = FRESH_S) -> None:
        self.started = time.monotonic()
        self.fresh_for = fresh_for
        self._lock = trio.Lock()
        self._last: tuple[float, dict[str, str]] | None = None

    async def report(self, root: Root) -> Health:
        """The daemon's health now (checks at most `fresh_for` seconds old)."""
        async with self._lock:
            if self._last is None or time.monotonic() - self._last[0] >= self.fresh_for:
                checks = await check(root)
                self._last = (time.monotonic(), checks)
                if checks["databases"] != OK or checks["disk"] != OK:
                    log.warning("health check failed: %s", checks)
            checks = self._last[1]
        return Health(checks, int(time.monotonic() - self.started))


async def check(root: Root) -> dict[str, str]:
    """Run the three checks at once; each answers within about CHECK_TIMEOUT_S."""
    checks: dict[str, str] = {}

    async def run(name: str, probe: Callable[[Root], Awaitable[str]]) -> None:
        checks[name] = await probe(root)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "databases", databases)
        nursery.start_soon(run, "disk", disk)
        nursery.start_soon(run, "downloader", downloader)
    return {name: checks[name] for name in ("databases", "disk", "downloader")}


async def databases(root: Root) -> str:
    found = [root.users.db, root.catalog.db, root.jobs.db]
    if root.downloads is not None:
        found.append(root.downloads.queue.db)
    failures: dict[str, str] = {}

    async def probe(db: Database) -> None:
        with trio.move_on_after(CHECK_TIMEOUT_S):
            try:
                await db.offload.probe(db.probe)
            except StorageError as exc:
                failures[db.path.name] = str(exc)
            return
        failures[db.path.name] = f"{db.path.name}: no answer within {CHECK_TIMEOUT_S:g} s"

    async with trio.open_nursery() as nursery:
        for db in found:
            nursery.start_soon(probe, db)
    if not failures:
        return OK
    return "; ".join(f"unreadable: {failures[name]}" for name in sorted(failures))


async def disk(root: Root) -> str:
    folders: dict[Path, str] = {root.media.root: "media folder"}
    folders.setdefault(root.config.db_dir, "database folder")
    media = root.media
    with trio.move_on_after(CHECK_TIMEOUT_S):
        for folder, name in folders.items():
            try:
                await media.offload.probe(probe_write, folder, media.faults)
            except OSError as exc:
                if exc.errno in _FULL_ERRNOS:
                    return FULL
                return f"unwritable: {name}: {exc.strerror or type(exc).__name__}"
        return OK
    return f"unwritable: no answer within {CHECK_TIMEOUT_S:g} s"


async def downloader(root: Root) -> str:
    if root.downloads is None:
        return DISABLED
    with trio.move_on_after(CHECK_TIMEOUT_S):
        return OK if await root.downloads.downloader.reachable() else UNREACHABLE
    return UNREACHABLE
