"""The job scheduler actor: runs background jobs on time, on hooks and on demand, and records them.

One loop owns all scheduling state. It sleeps until the earliest due time or the next inbox
message (hooks, manual triggers, cancels) and never polls. Each run is a task in the actor's own
nursery inside its own cancel scope, so a cancel or a shutdown reaches exactly that run.

Honesty rules (SPEC §7): every run is a row written before the body starts and finished whatever
happens; a trigger for a job that is running becomes a `skipped` row; a job that raises is a
`failed` run, never an actor crash. At start, rows a dead process left `running` become `failed`,
and a job whose persisted `next_run_at` passed during downtime runs once (`catch_up`). A job runs
at most once at startup: the catch-up run also stands for its `OnStartup` hook.

Due times are wall-clock UTC (they are stored and cron is defined on them); sleeps convert them
to trio deadlines each time round the loop. The wall clock is injectable so tests can move it in
step with `autojump_clock`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trio

from actors.events import job_event
from actors.jobs.base import JobSpec, ShutdownBehavior, utc_now
from actors.messages import CancelJob, Hook, HookFired, SchedulerMessage, TriggerJob
from daemon.metrics import Metrics
from storage.events import NewEvent
from storage.jobs import JobStore, RunStatus

log = logging.getLogger("pezzottify.scheduler")

# Bound on the shielded database writes that record outcomes while being cancelled.
CLEANUP_S = 5.0
SCHEDULE, CATCH_UP, MANUAL = "schedule", "catch_up", "manual"
CANCELLED_BY_ADMIN = "Cancelled by an administrator"
CANCELLED_AT_SHUTDOWN = "Cancelled at shutdown"
CANCELLED_SCHEDULER_STOPPED = "Cancelled: the scheduler stopped"


class SchedulerView:
    """A read-only picture of the scheduler for the API: jobs, which run, when each is next due.

    Only the scheduler calls `reset` and the `record_*` methods; everything lives on the one trio
    thread, so readers always see a consistent state. The view is made before the scheduler and
    handed to it, so a restarted scheduler fills the same view again (`reset`) and its readers
    never hold a stale one; until a scheduler has started, the view lists no jobs.
    """

    def __init__(self, jobs: Iterable[JobSpec] = ()) -> None:
        self._specs: dict[str, JobSpec] = {}
        self._running: dict[str, int] = {}
        self._next: dict[str, datetime | None] = {}
        self._run_ended = trio.Event()
        self.reset(jobs)

    def reset(self, jobs: Iterable[JobSpec]) -> None:
        """Show `jobs`, none running, none due yet (a scheduler starting)."""
        self._specs = {job.id: job for job in sorted(jobs, key=lambda j: j.id)}
        self._next = {}
        if self._running:
            self._running = {}
            self._run_ended.set()
            self._run_ended = trio.Event()

    def jobs(self) -> list[JobSpec]:
        """Registered jobs sorted by id."""
        return list(self._specs.values())

    def job(self, job_id: str) -> JobSpec | None:
        return self._specs.get(job_id)

    def running_run_id(self, job_id: str) -> int | None:
        return self._running.get(job_id)

    def next_run_at(self, job_id: str) -> datetime | None:
        return self._next.get(job_id)

    async def wait_idle(self, job_id: str) -> None:
        """Wait until the job has no run in progress (its end is recorded by then)."""
        while job_id in self._running:
            await self._run_ended.wait()

    def record_running(self, job_id: str, run_id: int | None) -> None:
        if run_id is not None:
            self._running[job_id] = run_id
        elif self._running.pop(job_id, None) is not None:
            self._run_ended.set()
            self._run_ended = trio.Event()

    def record_next(self, job_id: str, when: datetime | None) -> None:
        self._next[job_id] = when


@dataclass
class _ActiveRun:
    run_id: int
    scope: trio.CancelScope
    started: float  # trio time, for the duration metric
    triggered_by: str
    cancel_reason: str = CANCELLED_SCHEDULER_STOPPED


def _reply(channel: trio.MemorySendChannel[tuple[str, Any]], answer: tuple[str, Any]) -> None:
    """Answer a request; the asker may have given up (timeout, disconnect), which is fine."""
    try:
        channel.send_nowait(answer)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.WouldBlock):
        log.debug("scheduler reply %r dropped: the asker went away", answer)
    finally:
        channel.close()


class Scheduler:
    def __init__(
        self,
        jobs: list[JobSpec],
        store: JobStore,
        metrics: Metrics,
        inbox: trio.MemoryReceiveChannel[SchedulerMessage],
        *,
        shutdown: trio.Event,
        shutdown_timeout: float,
        wall_clock: Callable[[], datetime] = utc_now,
        view: SchedulerView | None = None,
        publish: Callable[[NewEvent], None] | None = None,
    ) -> None:
        self._jobs = {job.id: job for job in jobs}
        if len(self._jobs) != len(jobs):
            raise ValueError("two background jobs share an id")
        self._store = store
        self._metrics = metrics
        self._inbox = inbox
        self._shutdown = shutdown
        self._shutdown_timeout = shutdown_timeout
        self._wall = wall_clock
        self.view = view if view is not None else SchedulerView()
        self.view.reset(jobs)
        self._due: dict[str, datetime | None] = {}
        self._active: dict[str, _ActiveRun] = {}
        self._runs: trio.Nursery | None = None
        self._waiting = trio.CancelScope()
        self._inbox_open = True
        self._publish = publish  # the live events' `job.started` / `job.finished`

    def status(self) -> SchedulerView:
        """The live read-only view (the same object each time)."""
        return self.view

    async def run(
        self, *, task_status: trio.TaskStatus[SchedulerView] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Schedule and run jobs until `shutdown` is set, then stop them as each one declares.

        Returns once every run has ended and been recorded. If cancelled from outside, running
        jobs are cancelled too and recorded `cancelled` (bounded, shielded writes); a row whose
        write could not finish is marked interrupted at the next start. The inbox is left open so
        a restarted actor can keep using it.
        """
        self._active.clear()
        startup = await self._recover()
        for job in self._jobs.values():
            self._metrics.job_running.labels(job.id).set(0)
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as runs:
                self._runs = runs
                for job, trigger in startup:
                    if not self._shutdown.is_set():
                        await self._start(job, trigger)
                task_status.started(self.view)
                await self._loop()
                self._stop_runs()
                outer.start_soon(self._refuse_messages)
            outer.cancel_scope.cancel()
        self._runs = None

    async def _recover(self) -> list[tuple[JobSpec, str]]:
        """Fail interrupted runs, restore due times, and list the runs owed at startup."""
        now = self._wall()
        interrupted = await self._store.db.run(self._store.mark_interrupted_runs, now)
        if interrupted:
            log.warning("%d job run(s) were interrupted by a restart; marked failed", interrupted)
        startup: list[tuple[JobSpec, str]] = []
        for job in self._jobs.values():
            state = await self._store.db.run(self._store.schedule_state, job.id)
            persisted = state.next_run_at if state is not None else None
            due = job.schedule.next_due(now)
            overdue = due is not None and persisted is not None and persisted <= now
            if overdue:
                startup.append((job, CATCH_UP))
            elif due is not None and persisted is not None:
                # A shortened interval or an edited cron must not wait for the old slot.
                due = min(due, persisted)
            if Hook.OnStartup in job.schedule.hooks and not overdue:
                startup.append((job, f"hook:{Hook.OnStartup.value}"))
            self._set_due(job.id, due)
            if job.schedule.timed:
                await self._store.db.run(self._store.set_schedule_state, job.id, due)
        return startup

    def _set_due(self, job_id: str, when: datetime | None) -> None:
        self._due[job_id] = when
        self.view.record_next(job_id, when)

    async def _loop(self) -> None:
        async with trio.open_nursery() as watcher:
            watcher.start_soon(self._watch_shutdown)
            while not self._shutdown.is_set():
                await self._start_due()
                message = await self._wait()
                if message is not None:
                    await self._handle(message)
            watcher.cancel_scope.cancel()

    async def _watch_shutdown(self) -> None:
        await self._shutdown.wait()
        self._waiting.cancel()

    def _deadline(self) -> float:
        dues = [due for due in self._due.values() if due is not None]
        if not dues:
            return math.inf
        wait = (min(dues) - self._wall()).total_seconds()
        return trio.current_time() + max(0.0, wait)

    async def _wait(self) -> SchedulerMessage | None:
        """The next message, or None at the next due time or at shutdown."""
        if self._shutdown.is_set():
            return None
        with trio.move_on_at(self._deadline()) as self._waiting:
            if self._inbox_open:
                try:
                    return await self._inbox.receive()
                except trio.EndOfChannel:
                    # Every producer is gone; time-based schedules still run.
                    self._inbox_open = False
            await trio.sleep_forever()
        return None

    async def _start_due(self) -> None:
        now = self._wall()
        for job in self._jobs.values():
            due = self._due.get(job.id)
            if due is not None and due <= now:
                self._set_due(job.id, job.schedule.next_due(now, due))
                await self._start(job, SCHEDULE)

    async def _handle(self, message: SchedulerMessage) -> None:
        if isinstance(message, HookFired):
            for job in self._jobs.values():
                if message.hook in job.schedule.hooks:
                    await self._start(job, f"hook:{message.hook.value}")
            return
        target = self._jobs.get(message.job_id)
        if target is None:
            _reply(message.reply, ("not_found", None))
        elif isinstance(message, TriggerJob):
            run_id = await self._start(target, MANUAL)
            answer = ("triggered", run_id) if run_id is not None else ("running", None)
            _reply(message.reply, answer)
        elif isinstance(message, CancelJob):
            active = self._active.get(target.id)
            if active is None:
                _reply(message.reply, ("idle", None))
            else:
                active.cancel_reason = CANCELLED_BY_ADMIN
                active.scope.cancel()
                _reply(message.reply, ("cancelled", active.run_id))

    async def _start(self, job: JobSpec, triggered_by: str) -> int | None:
        """Start a run and return its id, or record a `skipped` run and return None."""
        now = self._wall()
        db, store = self._store.db, self._store
        running = self._active.get(job.id)
        if running is not None:
            reason = f"Job was already running (run {running.run_id})"
            await db.run(store.record_skipped, job.id, triggered_by, now, reason)
            if triggered_by == SCHEDULE:
                await db.run(store.set_schedule_state, job.id, self._due.get(job.id))
            self._metrics.job_executions.labels(job.id, RunStatus.SKIPPED.value).inc()
            log.info("job %s: %s trigger skipped, already running", job.id, triggered_by)
            return None
        run_id = await db.run(store.start_run, job.id, triggered_by, now, self._due.get(job.id))
        active = _ActiveRun(run_id, trio.CancelScope(), trio.current_time(), triggered_by)
        self._active[job.id] = active
        self.view.record_running(job.id, run_id)
        self._metrics.job_running.labels(job.id).set(1)
        assert self._runs is not None
        self._runs.start_soon(self._execute, job, active, name=f"job:{job.id}")
        self._announce("job.started", job, active, RunStatus.RUNNING)
        log.info("job %s: run %d started (%s)", job.id, run_id, triggered_by)
        return run_id

    async def _execute(self, job: JobSpec, active: _ActiveRun) -> None:
        # Anything escaping other than an Exception is a cancellation from outside the run.
        status = RunStatus.CANCELLED
        error: str | None = CANCELLED_SCHEDULER_STOPPED
        report: dict[str, Any] | None = None
        try:
            with active.scope:
                report = await job.run()
                status, error = RunStatus.COMPLETED, None
            if active.scope.cancelled_caught:
                status, error = RunStatus.CANCELLED, active.cancel_reason
        except Exception as exc:
            log.warning("job %s: run %d failed", job.id, active.run_id, exc_info=True)
            status, error = RunStatus.FAILED, str(exc) or type(exc).__name__
        finally:
            with trio.move_on_after(CLEANUP_S, shield=True):
                await self._store.db.run(
                    self._store.finish_run, active.run_id, status, self._wall(), error, report
                )
            self._record_end(job, active, status)

    def _record_end(self, job: JobSpec, active: _ActiveRun, status: RunStatus) -> None:
        self._active.pop(job.id, None)
        self.view.record_running(job.id, None)
        self._metrics.job_running.labels(job.id).set(0)
        self._metrics.job_executions.labels(job.id, status.value).inc()
        self._metrics.job_duration.labels(job.id).observe(trio.current_time() - active.started)
        self._announce("job.finished", job, active, status)
        log.info("job %s: run %d %s", job.id, active.run_id, status.value)

    def _announce(self, name: str, job: JobSpec, active: _ActiveRun, status: RunStatus) -> None:
        if self._publish is not None:
            self._publish(job_event(name, job.id, active.run_id, status.value, active.triggered_by))

    def _stop_runs(self) -> None:
        """Shutdown: cancel cancellable runs now, give the others `shutdown_timeout`."""
        for job_id, active in self._active.items():
            if self._jobs[job_id].shutdown is ShutdownBehavior.CANCELLABLE:
                active.cancel_reason = CANCELLED_AT_SHUTDOWN
                active.scope.cancel()
            else:
                active.cancel_reason = (
                    f"{CANCELLED_AT_SHUTDOWN} after waiting {self._shutdown_timeout:g} s"
                )
                deadline = trio.current_time() + self._shutdown_timeout
                active.scope.deadline = min(active.scope.deadline, deadline)

    async def _refuse_messages(self) -> None:
        """While runs wind down, answer requests truthfully instead of leaving askers waiting."""
        if not self._inbox_open:
            return
        async for message in self._inbox:
            if isinstance(message, TriggerJob | CancelJob):
                _reply(message.reply, ("shutting_down", None))
