"""The `backup` job (SPEC §15): a backup of every database on a schedule, the oldest pruned.

`[background_jobs.backup]`: `enabled` (default false), `interval_hours` (24), `dir` (required
when enabled) and `keep` (7). Each run writes `<dir>/<UTC time>/` as `pezzottify-admin backup`
does (`storage.backup.make_backup`), then deletes the backups beyond the newest `keep`; a
failed backup deletes nothing. Its report names the folder written, the size of each copy and
the backups pruned.

Off the event loop: the copy runs in a worker thread of the job's own `Offload` (one thread: a
job never runs twice at once). It reads through its own connections, so it takes none of the
databases' threads or their write connection. Wait-for-completion: a shutdown lets the backup
finish within `shutdown_timeout_sec`; at the deadline the job sets the copy's stop event, the
copy stops at its next step (a fraction of a second) and removes its partial folder, and the
run is recorded `cancelled`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from actors.jobs.base import JobSpec, Schedule, ShutdownBehavior, utc_now
from storage.backup import Backup, make_backup, prune_backups
from storage.offload import Offload

JOB_ID = "backup"
DEFAULT_INTERVAL_HOURS = 24.0
DEFAULT_KEEP = 7


async def backup_off_loop(
    offload: Offload, db_dir: Path, dest: Path, now: datetime, **kwargs: Any
) -> Backup:
    """`make_backup` in a worker thread; if this task is cancelled, the copy is told to stop
    at its next step and the cancellation is delivered once it has cleaned up."""
    stop = threading.Event()

    async def stop_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_when_cancelled)
        try:
            made = await offload.run(make_backup, db_dir, dest, now, stop=stop, **kwargs)
        except Exception as exc:  # raised as itself below, not wrapped in the nursery's group
            failure = exc
        finally:
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if made is None:  # stopped: only a cancellation sets the event before the copy is done
        await trio.lowlevel.checkpoint()
        raise RuntimeError("the backup stopped before it was complete")
    return made


def backup_job(
    db_dir: Path,
    dest: Path,
    *,
    keep: int = DEFAULT_KEEP,
    interval_hours: float = DEFAULT_INTERVAL_HOURS,
    wall_clock: Callable[[], datetime] = utc_now,
    offload: Offload | None = None,
) -> JobSpec:
    runner = offload if offload is not None else Offload(1)

    async def run() -> dict[str, Any]:
        made = await backup_off_loop(runner, db_dir, dest, wall_clock())
        pruned = await runner.run(prune_backups, dest, keep)
        return {**made.report(), "pruned": pruned, "keep": keep}

    return JobSpec(
        id=JOB_ID,
        name="Backup",
        description=(
            f"Writes a consistent copy of every database to {dest}/<UTC time>/ and keeps the "
            f"newest {keep}"
        ),
        schedule=Schedule(interval_secs=interval_hours * 3600),
        shutdown=ShutdownBehavior.WAIT_FOR_COMPLETION,
        run=run,
    )
