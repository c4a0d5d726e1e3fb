"""Supervision (SPEC §10): restarts with backoff, crash loops, shutdown styles, signals."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
import trio

from daemon.metrics import Metrics
from daemon.supervisor import ActorSpec, CrashLoop, Shutdown, Supervisor
from tests.support.disk import database_full


class Flaky:
    """Fails `failures[0]` times after starting (raising what `error` makes: a bug by default),
    then serves until cancelled or shutdown."""

    def __init__(
        self,
        failures: list[int],
        log: list[str],
        shutdown: trio.Event,
        error: Callable[[], Exception] = lambda: RuntimeError("deliberate bug"),
    ) -> None:
        self.failures = failures
        self.log = log
        self.shutdown = shutdown
        self.error = error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.log.append("started")
        if self.failures[0] > 0:
            self.failures[0] -= 1
            await trio.sleep(0.1)
            raise self.error()
        await self.shutdown.wait()
        self.log.append("stopped")


class Slow:
    """Needs `work` seconds to stop after shutdown; records whether it finished."""

    def __init__(self, work: float, log: list[str], shutdown: trio.Event) -> None:
        self.work, self.log, self.shutdown = work, log, shutdown

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await self.shutdown.wait()
        try:
            await trio.sleep(self.work)
            self.log.append("finished")
        except trio.Cancelled:
            self.log.append("cancelled")
            raise


def sample(metrics: Metrics, actor: str) -> float:
    value = metrics.registry.get_sample_value("pezzottify_actor_restarts_total", {"actor": actor})
    return value or 0.0


def doomed(shutdown: trio.Event, metrics: Metrics, **limits: Any) -> Supervisor:
    """A supervisor of one actor, "doomed", that fails every time it starts."""
    return Supervisor(
        [ActorSpec("doomed", lambda: Flaky([10**6], [], shutdown))],
        shutdown=shutdown,
        shutdown_timeout=1,
        metrics=metrics,
        **limits,
    )


async def test_failing_actor_is_restarted_while_others_keep_running(
    autojump_clock: Any,
) -> None:
    shutdown, metrics = trio.Event(), Metrics()
    flaky_log: list[str] = []
    steady_log: list[str] = []
    failures = [2]
    supervisor = Supervisor(
        [
            ActorSpec("flaky", lambda: Flaky(failures, flaky_log, shutdown)),
            ActorSpec("steady", lambda: Flaky([0], steady_log, shutdown)),
        ],
        shutdown=shutdown,
        shutdown_timeout=1,
        metrics=metrics,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(10)
        assert flaky_log == ["started"] * 3
        assert steady_log == ["started"]
        assert sample(metrics, "flaky") == 2
        shutdown.set()
    assert flaky_log[-1] == "stopped" and steady_log[-1] == "stopped"


async def test_crash_loop_stops_the_supervisor(autojump_clock: Any) -> None:
    shutdown, metrics = trio.Event(), Metrics()
    supervisor = doomed(shutdown, metrics, max_crashes=5, crash_window=60)
    with pytest.RaisesGroup(
        pytest.RaisesExc(CrashLoop, match="doomed failed 5 times"), flatten_subgroups=True
    ):
        await supervisor.run()
    assert sample(metrics, "doomed") == 5


async def test_a_full_disk_never_makes_a_crash_loop(autojump_clock: Any) -> None:
    # Ten failures in a row, twice the crash-loop limit: the actor is tried again every
    # backoff_max seconds until the disk has room, and the daemon never stops for it.
    shutdown, metrics = trio.Event(), Metrics()
    log: list[str] = []
    failures = [10]
    supervisor = Supervisor(
        [ActorSpec("disk-bound", lambda: Flaky(failures, log, shutdown, database_full))],
        shutdown=shutdown,
        shutdown_timeout=1,
        metrics=metrics,
        max_crashes=5,
        crash_window=600,
        backoff_max=30,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(10 * 30 - 5)  # a start every 30 s and a tenth of a second
        assert log.count("started") == 10
        await trio.sleep(10)
        assert log.count("started") == 11
        assert sample(metrics, "disk-bound") == 10
        shutdown.set()
    assert log[-1] == "stopped"


async def test_a_full_disk_at_startup_does_not_keep_the_daemon_down(autojump_clock: Any) -> None:
    # The first actor cannot even start (its recovery must write); the next ones come up at
    # once, and the first follows once the disk has room.
    shutdown, metrics = trio.Event(), Metrics()
    log: list[str] = []
    steady_log: list[str] = []
    attempts = [0]

    class FullAtStart:
        async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            attempts[0] += 1
            if attempts[0] <= 3:
                raise database_full()
            await Flaky([0], log, shutdown).run(task_status=task_status)

    supervisor = Supervisor(
        [
            ActorSpec("disk-bound", FullAtStart),
            ActorSpec("steady", lambda: Flaky([0], steady_log, shutdown)),
        ],
        shutdown=shutdown,
        shutdown_timeout=1,
        metrics=metrics,
        backoff_max=30,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        assert steady_log == ["started"] and log == []
        await trio.sleep(3 * 30 + 1)
        assert log == ["started"] and attempts[0] == 4
        assert sample(metrics, "disk-bound") == 3
        shutdown.set()
    assert log[-1] == "stopped" and steady_log[-1] == "stopped"


async def test_a_shutdown_ends_the_wait_before_a_restart(autojump_clock: Any) -> None:
    shutdown, metrics = trio.Event(), Metrics()
    supervisor = doomed(shutdown, metrics, backoff_initial=60, backoff_max=600)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(1)  # the first failure: a minute's wait before the restart begins
        assert sample(metrics, "doomed") == 1
        stopping = trio.current_time()
        shutdown.set()
    assert trio.current_time() - stopping < 1


async def test_startup_failure_is_fatal_at_once() -> None:
    class Broken:
        async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            raise OSError("address in use")

    supervisor = Supervisor(
        [ActorSpec("broken", Broken)], shutdown=trio.Event(), shutdown_timeout=1, metrics=Metrics()
    )
    with pytest.RaisesGroup(OSError, flatten_subgroups=True):
        await supervisor.run()


async def test_graceful_actor_gets_the_timeout_cancellable_does_not(autojump_clock: Any) -> None:
    shutdown = trio.Event()
    log: list[str] = []
    supervisor = Supervisor(
        [
            ActorSpec("quick-work", lambda: Slow(3, log, shutdown), Shutdown.GRACEFUL),
            ActorSpec("cancel-me", lambda: Slow(3, log, shutdown), Shutdown.CANCELLABLE),
            ActorSpec("too-slow", lambda: Slow(100, log, shutdown), Shutdown.GRACEFUL),
        ],
        shutdown=shutdown,
        shutdown_timeout=10,
        metrics=Metrics(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        started = trio.current_time()
        shutdown.set()
    assert sorted(log) == ["cancelled", "cancelled", "finished"]
    assert trio.current_time() - started <= 10 + 5 + 0.1


async def test_signals_first_graceful_second_immediate() -> None:
    shutdown = trio.Event()
    log: list[str] = []
    supervisor = Supervisor(
        [ActorSpec("slow", lambda: Slow(30, log, shutdown), Shutdown.GRACEFUL)],
        shutdown=shutdown,
        shutdown_timeout=30,
        metrics=Metrics(),
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            signal.raise_signal(signal.SIGTERM)
            await shutdown.wait()
            await trio.sleep(0.05)
            signal.raise_signal(signal.SIGTERM)
    assert log == ["cancelled"]
