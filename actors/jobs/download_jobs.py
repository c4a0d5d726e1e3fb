"""The download manager's jobs (SPEC §7.4): `integrity_watchdog` and `audit_log_cleanup`.

Both exist only when the download manager is enabled; `download_jobs(root, scan_send)` builds
them from the configuration (`[background_jobs.<id>] enabled / interval_hours`).

`integrity_watchdog` (daily + OnStartup, cancellable) asks the `IntegrityWatchdog` actor for a
scan and returns its report, so the report is stored with the run. Cancelling the run sets the
request's cancel event and the actor stops the scan (see `actors.watchdog`).

`audit_log_cleanup` (daily, wait for completion) deletes audit entries older than
`audit_log_retention_days` (0 keeps everything), and bounds the notifications of the same
database (SPEC §16): notifications delivered more than `DELIVERED_KEPT_DAYS` ago, failed ones
older than `audit_log_retention_days` (the admins' record of what went wrong, like the audit
log), and inbox items older than `event_retention_days` (as the live events; read or not). It
deletes in chunks, one short transaction each, so a shutdown deadline that cancels it stops
between chunks and leaves every deleted chunk deleted and every remaining row intact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from actors.jobs.base import JobSpec, Schedule, ShutdownBehavior
from actors.messages import Hook, ScanRequest
from daemon.root import Root
from storage.queue import QueueAdminStore
from storage.queue import now as wall_now
from storage.queue.notices import NoticeStore

WATCHDOG_JOB_ID = "integrity_watchdog"
AUDIT_CLEANUP_JOB_ID = "audit_log_cleanup"
DEFAULT_INTERVAL_HOURS = 24.0
DELETE_CHUNK = 5000
NOTICE_CHUNK = 1000  # of each kind of notification row, per transaction
DELIVERED_KEPT_DAYS = 7  # a delivered notification is plumbing: kept a week, for a look back
DAY_S = 86400


class ScanFailed(Exception):
    """The watchdog could not complete the scan (the run is recorded `failed`)."""


def integrity_watchdog_job(
    scan_send: trio.MemorySendChannel[ScanRequest],
    *,
    interval_hours: float = DEFAULT_INTERVAL_HOURS,
) -> JobSpec:
    async def run() -> dict[str, Any]:
        reply_send, reply_recv = trio.open_memory_channel[tuple[str, Any]](1)
        request = ScanRequest(reply_send)
        try:
            async with reply_recv:
                await scan_send.send(request)
                try:
                    kind, value = await reply_recv.receive()
                except trio.EndOfChannel:
                    raise ScanFailed("the integrity watchdog stopped before finishing") from None
        finally:
            # Cancelled or done, the actor must not go on scanning for nobody.
            request.cancel.set()
        if kind != "completed":
            raise ScanFailed(str(value))
        report: dict[str, Any] = value
        return report

    return JobSpec(
        id=WATCHDOG_JOB_ID,
        name="Integrity watchdog",
        description=(
            "Scans the catalog for tracks, album covers and artist portraits whose file is "
            "missing and queues a repair for each"
        ),
        schedule=Schedule(interval_secs=interval_hours * 3600, hooks=(Hook.OnStartup,)),
        shutdown=ShutdownBehavior.CANCELLABLE,
        run=run,
    )


def audit_log_cleanup_job(
    store: QueueAdminStore,
    retention_days: int,
    *,
    notices: NoticeStore | None = None,
    inbox_retention_days: int = 0,
    interval_hours: float = DEFAULT_INTERVAL_HOURS,
    clock: Callable[[], int] = wall_now,
) -> JobSpec:
    async def run() -> dict[str, Any]:
        now = clock()
        report: dict[str, Any] = {"deleted_entries": 0, "retention_days": retention_days}
        if retention_days:
            cutoff = now - retention_days * DAY_S
            deleted = 0
            while (n := await store.db.run(store.delete_audit_chunk, cutoff, DELETE_CHUNK)) > 0:
                deleted += n
            report |= {"deleted_entries": deleted, "cutoff": cutoff}
        if notices is not None:
            report |= await _prune_notices(notices, now, retention_days, inbox_retention_days)
        return report

    kept = (
        f"download audit entries older than {retention_days} days"
        if retention_days
        else "nothing of the audit log (audit_log_retention_days = 0)"
    )
    if notices is not None:
        kept += f", notifications delivered more than {DELIVERED_KEPT_DAYS} days ago"
        if retention_days:
            kept += f" or failed more than {retention_days} days ago"
        if inbox_retention_days:
            kept += f", inbox items older than {inbox_retention_days} days"
    return JobSpec(
        id=AUDIT_CLEANUP_JOB_ID,
        name="Audit log cleanup",
        description=f"Deletes {kept}",
        schedule=Schedule(interval_secs=interval_hours * 3600),
        shutdown=ShutdownBehavior.WAIT_FOR_COMPLETION,
        run=run,
    )


async def _prune_notices(
    notices: NoticeStore, now: int, failed_days: int, inbox_days: int
) -> dict[str, int]:
    """The notifications past their retention (see the module), a chunk per transaction."""
    done_before = now - DELIVERED_KEPT_DAYS * DAY_S
    failed_before = now - failed_days * DAY_S if failed_days else None
    inbox_before = now - inbox_days * DAY_S if inbox_days else None
    outbox = inbox = 0
    while True:
        chunk = await notices.db.run(
            notices.prune_chunk, done_before, failed_before, inbox_before, NOTICE_CHUNK
        )
        outbox, inbox = outbox + chunk[0], inbox + chunk[1]
        if chunk == (0, 0):
            return {"deleted_notifications": outbox, "deleted_inbox_items": inbox}


def download_jobs(root: Root, scan_send: trio.MemorySendChannel[ScanRequest]) -> list[JobSpec]:
    """The enabled download-manager jobs; empty when the download manager is off."""
    config, downloads = root.config, root.downloads
    if downloads is None:
        return []
    jobs: list[JobSpec] = []
    watchdog = config.job(WATCHDOG_JOB_ID)
    if watchdog.enabled:
        jobs.append(
            integrity_watchdog_job(
                scan_send, interval_hours=watchdog.interval_hours or DEFAULT_INTERVAL_HOURS
            )
        )
    cleanup = config.job(AUDIT_CLEANUP_JOB_ID)
    if cleanup.enabled:
        jobs.append(
            audit_log_cleanup_job(
                downloads.queue_admin,
                config.download_manager.audit_log_retention_days,
                notices=downloads.notices,
                inbox_retention_days=config.event_retention_days,
                interval_hours=cleanup.interval_hours or DEFAULT_INTERVAL_HOURS,
            )
        )
    return jobs
