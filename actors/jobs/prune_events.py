"""The `prune_events` job: bounds the job-run history and the stored live events (SPEC §7.4,
§14).

Deletes runs that started more than `event_retention_days` ago, but always keeps each job's
newest `KEEP_LAST` runs, so a job that runs rarely still shows its recent history. Runs still
`running` are never deleted. One DELETE statement: cancelling the job lets that statement
finish, it never leaves a half-pruned table. The live events kept for replay (`storage.events`)
older than the same retention go too, a chunk per transaction. A retention of 0 keeps everything
(the job then runs and reports that it deleted nothing, so its schedule stays visible).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from actors.jobs.base import JobSpec, Schedule, ShutdownBehavior, utc_now
from storage.events import EventStore
from storage.jobs import JobStore

JOB_ID = "prune_events"
KEEP_LAST = 20


def prune_events_job(
    store: JobStore,
    *,
    retention_days: int,
    interval_hours: float,
    wall_clock: Callable[[], datetime] = utc_now,
    events: EventStore | None = None,
) -> JobSpec:
    async def run() -> dict[str, Any]:
        if retention_days == 0:
            return {"deleted_runs": 0, "retention_days": 0}
        cutoff = wall_clock() - timedelta(days=retention_days)
        deleted = await store.db.run(store.prune, cutoff, KEEP_LAST)
        report: dict[str, Any] = {"deleted_runs": deleted, "retention_days": retention_days}
        if events is not None:
            report["deleted_events"] = await _prune_live_events(events, cutoff)
        return report

    return JobSpec(
        id=JOB_ID,
        name="Prune job history",
        description=(
            f"Deletes job runs older than {retention_days} days, keeping each job's last "
            f"{KEEP_LAST} runs"
            if retention_days
            else "Job-run history is kept forever (event_retention_days = 0)"
        ),
        schedule=Schedule(interval_secs=interval_hours * 3600),
        shutdown=ShutdownBehavior.CANCELLABLE,
        run=run,
    )


async def _prune_live_events(events: EventStore, cutoff: datetime) -> int:
    """The live events kept for replay (SPEC §14) older than the cutoff, a chunk per short
    transaction; cancelling the job stops between chunks."""
    deleted = 0
    while chunk := await events.db.run(events.prune_chunk, int(cutoff.timestamp())):
        deleted += chunk
    return deleted
