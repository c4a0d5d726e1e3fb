"""The scheduler actor (SPEC §7.1, §7.2) under a virtual clock.

The wall clock follows trio's clock (plus an offset that simulates downtime between two scheduler
lifetimes). Store calls run inline in these tests: in a worker thread the autojump clock could
leap to the next deadline while SQLite works, which would make run times depend on disk speed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.jobs.base import JobSpec, Schedule, ShutdownBehavior
from actors.jobs.prune_events import prune_events_job
from actors.jobs.registry import core_jobs
from actors.messages import CancelJob, Hook, HookFired, SchedulerMessage, TriggerJob, ask
from actors.scheduler import Scheduler, SchedulerView
from daemon.config import Config, JobSettings
from daemon.metrics import Metrics
from daemon.services import close_root
from storage.jobs import JobRun, JobStore, RunStatus
from tests.conftest import open_test_root

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class Wall:
    """EPOCH + virtual seconds since creation + `offset` (the simulated downtime)."""

    def __init__(self) -> None:
        self.start = trio.current_time()
        self.offset = 0.0

    def __call__(self) -> datetime:
        return EPOCH + timedelta(seconds=self.offset + trio.current_time() - self.start)

    def at(self, seconds: float) -> datetime:
        return EPOCH + timedelta(seconds=seconds)

    async def sleep_until(self, seconds: float) -> None:
        """Sleep until the wall clock reads EPOCH + seconds."""
        await trio.sleep_until(self.start + seconds - self.offset)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.open(tmp_path / "server.db")

    async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    store.db.run = inline  # type: ignore[method-assign]
    yield store
    store.db.close()


def job(
    job_id: str,
    schedule: Schedule,
    duration: float = 1.0,
    *,
    shutdown: ShutdownBehavior = ShutdownBehavior.CANCELLABLE,
    fail: str | None = None,
) -> JobSpec:
    async def run() -> dict[str, Any]:
        await trio.sleep(duration)
        if fail is not None:
            raise RuntimeError(fail)
        return {"slept": duration}

    return JobSpec(job_id, job_id.title(), f"test job {job_id}", schedule, shutdown, run)


@dataclass
class Harness:
    inbox: trio.MemorySendChannel[SchedulerMessage]
    view: SchedulerView
    shutdown: trio.Event
    stopped: trio.Event


@asynccontextmanager
async def scheduler(
    jobs: list[JobSpec],
    store: JobStore,
    wall: Wall,
    metrics: Metrics | None = None,
    shutdown_timeout: float = 30.0,
) -> AsyncIterator[Harness]:
    send, recv = trio.open_memory_channel[SchedulerMessage](16)
    shutdown, stopped = trio.Event(), trio.Event()
    actor = Scheduler(
        jobs, store, metrics or Metrics(), recv,
        shutdown=shutdown, shutdown_timeout=shutdown_timeout, wall_clock=wall,
    )  # fmt: skip

    async def run(task_status: trio.TaskStatus[SchedulerView]) -> None:
        await actor.run(task_status=task_status)
        stopped.set()

    with trio.fail_after(100_000):
        async with send, recv, trio.open_nursery() as nursery:
            view = await nursery.start(run)
            yield Harness(send, view, shutdown, stopped)
            shutdown.set()


def runs(store: JobStore, job_id: str) -> list[JobRun]:
    """The job's runs, oldest first."""
    return list(reversed(store.history(job_id, 1000)))


def started(store: JobStore, job_id: str) -> list[tuple[float, str, RunStatus]]:
    return [
        ((r.started_at - EPOCH).total_seconds(), r.triggered_by, r.status)
        for r in runs(store, job_id)
    ]


async def test_interval_job_runs_on_time_and_is_measured(
    autojump_clock: Any, store: JobStore
) -> None:
    wall, metrics = Wall(), Metrics()
    async with scheduler([job("tick", Schedule(interval_secs=60))], store, wall, metrics) as h:
        assert h.view.next_run_at("tick") == wall.at(60)
        await wall.sleep_until(250)
        assert h.view.next_run_at("tick") == wall.at(300)
    done = RunStatus.COMPLETED
    assert started(store, "tick") == [(t, "schedule", done) for t in (60, 120, 180, 240)]
    assert all(r.finished_at == r.started_at + timedelta(seconds=1) for r in runs(store, "tick"))
    assert runs(store, "tick")[0].report == {"slept": 1.0}
    sample = metrics.registry.get_sample_value
    labels = {"job_id": "tick", "status": "completed"}
    assert sample("pezzottify_background_job_executions_total", labels) == 4
    assert sample("pezzottify_background_job_duration_seconds_count", {"job_id": "tick"}) == 4
    assert sample("pezzottify_background_job_duration_seconds_sum", {"job_id": "tick"}) == 4.0
    state = store.schedule_state("tick")
    assert state is not None and state.next_run_at == wall.at(300)


async def test_cron_job_fires_on_its_minutes_in_utc(autojump_clock: Any, store: JobStore) -> None:
    wall = Wall()
    wall.offset = 90  # start at 00:01:30
    async with scheduler([job("cron", Schedule(cron="*/5 * * * *"))], store, wall) as h:
        assert h.view.next_run_at("cron") == wall.at(300)
        await wall.sleep_until(11 * 60)
    assert started(store, "cron") == [
        (300, "schedule", RunStatus.COMPLETED),
        (600, "schedule", RunStatus.COMPLETED),
    ]


async def test_running_gauge_follows_the_run(autojump_clock: Any, store: JobStore) -> None:
    wall, metrics = Wall(), Metrics()
    gauge = "pezzottify_background_job_running"
    async with scheduler([job("slow", Schedule(interval_secs=10), 5)], store, wall, metrics):
        assert metrics.registry.get_sample_value(gauge, {"job_id": "slow"}) == 0
        await wall.sleep_until(12)
        assert metrics.registry.get_sample_value(gauge, {"job_id": "slow"}) == 1
        await wall.sleep_until(16)
        assert metrics.registry.get_sample_value(gauge, {"job_id": "slow"}) == 0


async def test_hooks_start_only_the_jobs_hooked_on_them(
    autojump_clock: Any, store: JobStore
) -> None:
    wall = Wall()
    jobs = [
        job("on_change", Schedule(hooks=(Hook.OnCatalogChange,))),
        job("on_user", Schedule(hooks=(Hook.OnUserCreated, Hook.OnStartup))),
    ]
    async with scheduler(jobs, store, wall) as h:
        assert h.view.next_run_at("on_change") is None
        await wall.sleep_until(10)
        await h.inbox.send(HookFired(Hook.OnCatalogChange))
        await wall.sleep_until(20)
        await h.inbox.send(HookFired(Hook.OnUserCreated))
        await wall.sleep_until(30)
    assert started(store, "on_change") == [(10, "hook:OnCatalogChange", RunStatus.COMPLETED)]
    assert started(store, "on_user") == [
        (0, "hook:OnStartup", RunStatus.COMPLETED),
        (20, "hook:OnUserCreated", RunStatus.COMPLETED),
    ]


async def test_triggers_while_running_are_recorded_as_skipped(
    autojump_clock: Any, store: JobStore
) -> None:
    wall, metrics = Wall(), Metrics()
    async with scheduler([job("long", Schedule(interval_secs=10), 25)], store, wall, metrics) as h:
        await wall.sleep_until(12)
        assert await ask(h.inbox, TriggerJob, "long") == ("running", None)
        await wall.sleep_until(45)
        assert h.view.running_run_id("long") == runs(store, "long")[-1].run_id
    history = started(store, "long")
    assert history == [
        (10, "schedule", RunStatus.COMPLETED),
        (12, "manual", RunStatus.SKIPPED),
        (20, "schedule", RunStatus.SKIPPED),
        (30, "schedule", RunStatus.SKIPPED),
        (40, "schedule", RunStatus.CANCELLED),  # still running at shutdown
    ]
    skipped = runs(store, "long")[1]
    assert skipped.error_message == f"Job was already running (run {runs(store, 'long')[0].run_id})"
    labels = {"job_id": "long", "status": "skipped"}
    assert (
        metrics.registry.get_sample_value("pezzottify_background_job_executions_total", labels) == 3
    )


async def test_manual_trigger_cancel_and_unknown_job(autojump_clock: Any, store: JobStore) -> None:
    wall = Wall()
    async with scheduler([job("manual", Schedule(hooks=(Hook.OnUserCreated,)), 100)], store,
                         wall) as h:  # fmt: skip
        assert await ask(h.inbox, CancelJob, "manual") == ("idle", None)
        answer, run_id = await ask(h.inbox, TriggerJob, "manual")
        assert answer == "triggered"
        # The row exists before the answer: the API can show it at once.
        row = store.get_run(run_id)
        assert row is not None and row.status is RunStatus.RUNNING
        assert h.view.running_run_id("manual") == run_id
        await wall.sleep_until(5)
        assert await ask(h.inbox, CancelJob, "manual") == ("cancelled", run_id)
        await wall.sleep_until(6)
        assert h.view.running_run_id("manual") is None
        assert await ask(h.inbox, TriggerJob, "nope") == ("not_found", None)
        assert await ask(h.inbox, CancelJob, "nope") == ("not_found", None)
    cancelled = store.get_run(run_id)
    assert cancelled is not None
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.error_message == "Cancelled by an administrator"
    assert cancelled.finished_at == wall.at(5)


async def test_a_failing_job_is_a_failed_run_and_the_schedule_goes_on(
    autojump_clock: Any, store: JobStore
) -> None:
    wall = Wall()
    async with scheduler([job("bad", Schedule(interval_secs=60), fail="disk on fire")],
                         store, wall) as h:  # fmt: skip
        await wall.sleep_until(130)
        assert (await ask(h.inbox, TriggerJob, "bad"))[0] == "triggered"
        await wall.sleep_until(140)
    history = runs(store, "bad")
    assert [(r.triggered_by, r.status, r.error_message) for r in history] == [
        ("schedule", RunStatus.FAILED, "disk on fire"),
        ("schedule", RunStatus.FAILED, "disk on fire"),
        ("manual", RunStatus.FAILED, "disk on fire"),
    ]


async def test_catch_up_runs_once_after_downtime(autojump_clock: Any, store: JobStore) -> None:
    wall = Wall()
    jobs = [
        job("tick", Schedule(interval_secs=60)),
        job("hooked", Schedule(hooks=(Hook.OnStartup,))),
    ]
    async with scheduler(jobs, store, wall):
        await wall.sleep_until(130)  # ran at 60 and 120; next due at 180
    wall.offset += 600  # the server is down for ten minutes: four periods are missed
    async with scheduler(jobs, store, wall) as h:
        assert h.view.next_run_at("tick") == wall.at(790)
        await wall.sleep_until(800)
    done = RunStatus.COMPLETED
    assert started(store, "tick") == [
        (60, "schedule", done), (120, "schedule", done),
        (730, "catch_up", done),
        (790, "schedule", done),
    ]  # fmt: skip
    # A job with nothing missed still gets its OnStartup run on each start.
    assert [t for t, _, _ in started(store, "hooked")] == [0, 730]


async def test_restart_before_due_keeps_the_persisted_slot(
    autojump_clock: Any, store: JobStore
) -> None:
    wall = Wall()
    jobs = [job("tick", Schedule(interval_secs=60))]
    async with scheduler(jobs, store, wall):
        await wall.sleep_until(130)
    wall.offset += 10  # back after ten seconds; the 180 s slot has not passed
    async with scheduler(jobs, store, wall) as h:
        assert h.view.next_run_at("tick") == wall.at(180)
        await wall.sleep_until(200)
    assert [(t, by) for t, by, _ in started(store, "tick")] == [
        (60, "schedule"), (120, "schedule"), (180, "schedule")
    ]  # fmt: skip


async def test_runs_left_running_by_a_dead_process_become_failed(
    autojump_clock: Any, store: JobStore
) -> None:
    wall = Wall()
    orphan = store.start_run("tick", "schedule", EPOCH - timedelta(minutes=5), None)
    async with scheduler([job("tick", Schedule(interval_secs=60))], store, wall):
        await wall.sleep_until(1)
    row = store.get_run(orphan)
    assert row is not None
    assert row.status is RunStatus.FAILED
    assert row.error_message == "Job was interrupted (server restart)"
    assert row.finished_at == EPOCH


async def test_shutdown_cancels_cancellable_and_waits_for_the_others(
    autojump_clock: Any, store: JobStore
) -> None:
    wall = Wall()
    jobs = [
        job("quick", Schedule(hooks=(Hook.OnStartup,)), 1000),
        job("careful", Schedule(hooks=(Hook.OnStartup,)), 20,
            shutdown=ShutdownBehavior.WAIT_FOR_COMPLETION),
    ]  # fmt: skip
    async with scheduler(jobs, store, wall, shutdown_timeout=30) as h:
        await wall.sleep_until(10)
        h.shutdown.set()
        await h.stopped.wait()
        assert wall() == wall.at(20)  # returned as soon as the careful job finished
    (quick,) = runs(store, "quick")
    assert (quick.status, quick.error_message) == (RunStatus.CANCELLED, "Cancelled at shutdown")
    assert quick.finished_at == wall.at(10)
    (careful,) = runs(store, "careful")
    assert (careful.status, careful.finished_at) == (RunStatus.COMPLETED, wall.at(20))


async def test_wait_for_completion_is_cancelled_after_the_timeout(
    autojump_clock: Any, store: JobStore
) -> None:
    wall = Wall()
    careful = job("careful", Schedule(hooks=(Hook.OnStartup,)), 1000,
                  shutdown=ShutdownBehavior.WAIT_FOR_COMPLETION)  # fmt: skip
    async with scheduler([careful], store, wall, shutdown_timeout=10) as h:
        await wall.sleep_until(5)
        h.shutdown.set()
        await wall.sleep_until(7)
        # While it winds down, requests are answered rather than left hanging.
        assert await ask(h.inbox, TriggerJob, "careful") == ("shutting_down", None)
        await h.stopped.wait()
        assert wall() == wall.at(15)
    (run,) = runs(store, "careful")
    assert run.status is RunStatus.CANCELLED
    assert run.error_message == "Cancelled at shutdown after waiting 10 s"
    assert run.finished_at == wall.at(15)


async def test_schedules_keep_running_when_every_producer_is_gone(
    autojump_clock: Any, store: JobStore
) -> None:
    wall = Wall()
    async with scheduler([job("tick", Schedule(interval_secs=60))], store, wall) as h:
        await h.inbox.aclose()
        await wall.sleep_until(130)
    assert [t for t, _, _ in started(store, "tick")] == [60, 120]


def test_schedule_kinds_validation_and_next_due() -> None:
    assert Schedule(cron="0 * * * *").kind == "cron"
    assert Schedule(interval_secs=5).kind == "interval"
    assert Schedule(hooks=(Hook.OnStartup,)).kind == "hook"
    combined = Schedule(cron="0 * * * *", interval_secs=600, hooks=(Hook.OnStartup,))
    assert combined.kind == "combined"
    # The earlier of the cron slot and the interval.
    assert combined.next_due(EPOCH + timedelta(minutes=55)) == EPOCH + timedelta(hours=1)
    assert combined.next_due(EPOCH) == EPOCH + timedelta(minutes=10)
    # The interval stays on its grid, and restarts from now after a stall.
    every = Schedule(interval_secs=60)
    assert every.next_due(EPOCH + timedelta(seconds=61), EPOCH + timedelta(seconds=60)) == (
        EPOCH + timedelta(seconds=120)
    )
    assert every.next_due(EPOCH + timedelta(seconds=500), EPOCH) == EPOCH + timedelta(seconds=560)
    assert Schedule(hooks=(Hook.OnStartup,)).next_due(EPOCH) is None
    for bad in ({}, {"cron": "* * * *"}, {"cron": "0 0 * * * *"}, {"cron": "nope"},
                {"interval_secs": 0}):  # fmt: skip
        with pytest.raises(ValueError, match=r"schedule|cron|interval"):
            Schedule(**bad)


# The core jobs and their settings (SPEC §7.4) -------------------------------------------------


async def test_prune_events_job_keeps_recent_runs_and_the_last_20(store: JobStore) -> None:
    old = EPOCH - timedelta(days=40)
    for i in range(25):
        run = store.start_run("busy", "schedule", old + timedelta(minutes=i), None)
        store.finish_run(run, RunStatus.COMPLETED, old + timedelta(minutes=i))
    fresh = store.start_run("busy", "manual", EPOCH - timedelta(days=1), None)
    store.finish_run(fresh, RunStatus.COMPLETED, EPOCH)
    spec = prune_events_job(store, retention_days=30, interval_hours=24, wall_clock=lambda: EPOCH)
    assert (spec.schedule.interval_secs, spec.shutdown) == (86400, ShutdownBehavior.CANCELLABLE)
    assert await spec.run() == {"deleted_runs": 6, "retention_days": 30}
    kept = runs(store, "busy")
    assert len(kept) == 20 and kept[-1].run_id == fresh
    keep_all = prune_events_job(store, retention_days=0, interval_hours=1, wall_clock=lambda: EPOCH)
    assert await keep_all.run() == {"deleted_runs": 0, "retention_days": 0}
    assert len(runs(store, "busy")) == 20


def test_core_jobs_follow_the_background_jobs_settings(config: Config) -> None:
    def built(**overrides: Any) -> dict[str, JobSpec]:
        root = open_test_root(replace(config, **overrides))
        try:
            return {spec.id: spec for spec in core_jobs(root)}
        finally:
            close_root(root)

    defaults = built()
    assert sorted(defaults) == ["popular_content", "prune_events"]
    popular = defaults["popular_content"].schedule
    assert (popular.interval_secs, popular.hooks) == (6 * 3600, (Hook.OnStartup,))
    assert defaults["prune_events"].schedule.interval_secs == 24 * 3600

    tuned = built(
        prune_interval_hours=12.0,
        background_jobs={"popular_content": JobSettings(enabled=False)},
    )
    assert sorted(tuned) == ["prune_events"]
    assert tuned["prune_events"].schedule.interval_secs == 12 * 3600
    explicit = built(
        prune_interval_hours=12.0,
        background_jobs={
            "prune_events": JobSettings(interval_hours=2),
            "popular_content": JobSettings(interval_hours=1.5),
        },
    )
    assert explicit["prune_events"].schedule.interval_secs == 2 * 3600
    assert explicit["popular_content"].schedule.interval_secs == 1.5 * 3600
    backups = config.db_dir / "backups"
    saving = built(background_jobs={"backup": JobSettings(enabled=True, dir=backups)})
    assert saving["backup"].schedule.interval_secs == 24 * 3600
    assert saving["backup"].shutdown is ShutdownBehavior.WAIT_FOR_COMPLETION
    assert str(backups) in saving["backup"].description
