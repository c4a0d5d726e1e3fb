"""The supervisor: one root nursery, every actor under it, signals, restarts and shutdown.

Each actor is declared by an `ActorSpec`: a factory that builds a fresh actor for every (re)start
and its shutdown style. An actor that fails after it started is logged with its traceback,
counted in `pezzottify_actor_restarts_total` and restarted with exponential backoff; a crash loop
(`max_crashes` within `crash_window` seconds) stops the daemon with `CrashLoop`. A failure before
an actor's first `task_status.started()` is fatal at once: the daemon cannot come up. An actor
stopped only by a full or failing disk (SQLite's "database or disk is full", "disk I/O error") is
not a bug: it is counted too, but tried again every `backoff_max` seconds for as long as it
takes, whether it had started or not; it never stops the daemon (nor keeps it from coming up),
whose API keeps serving what it can. A shutdown ends the wait before a restart.

Shutdown (SIGTERM/SIGINT, or `shutdown.set()`): every actor sees the shared `shutdown` event and
stops taking work. The supervisor then cancels *cancellable* actors at once and gives *graceful*
actors `shutdown_timeout` (plus a little slack for their own bounded cleanup) before cancelling
them. A second signal cancels everything immediately.
"""

from __future__ import annotations

import logging
import signal
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import trio

from daemon.metrics import Metrics
from storage.db import disk_trouble

log = logging.getLogger("pezzottify.supervisor")
# Time granted beyond shutdown_timeout for an actor's own shielded cleanup to finish.
CLEANUP_SLACK_S = 5.0


class Actor(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...


class Shutdown(Enum):
    CANCELLABLE = "cancellable"
    GRACEFUL = "graceful"


@dataclass(frozen=True)
class ActorSpec:
    name: str
    factory: Callable[[], Actor]
    shutdown: Shutdown = Shutdown.CANCELLABLE


class CrashLoop(Exception):
    """An actor kept failing; the daemon stops rather than flap forever."""


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ActorSpec],
        *,
        shutdown: trio.Event,
        shutdown_timeout: float,
        metrics: Metrics,
        max_crashes: int = 5,
        crash_window: float = 60.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.specs = specs
        self.shutdown = shutdown
        self.shutdown_timeout = shutdown_timeout
        self.metrics = metrics
        self.max_crashes = max_crashes
        self.crash_window = crash_window
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._scopes: dict[str, tuple[Shutdown, trio.CancelScope]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every actor in order, then run until they have all stopped.

        Returns after a graceful shutdown; raises `CrashLoop` or a startup failure.
        """
        async with trio.open_nursery() as root:
            await root.start(self._watch_signals, root.cancel_scope)
            async with trio.open_nursery() as actors:
                actors.start_soon(self._apply_shutdown)
                for spec in self.specs:
                    await actors.start(self._supervise, spec)
                task_status.started()
            root.cancel_scope.cancel()

    async def _watch_signals(
        self, hard_stop: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.shutdown.is_set():
                    log.warning("second %s: stopping at once", name)
                    hard_stop.cancel()
                    return
                log.info("%s received: shutting down gracefully", name)
                self.shutdown.set()

    async def _apply_shutdown(self) -> None:
        await self.shutdown.wait()
        for name in list(self._scopes):
            self._limit(name)

    def _limit(self, name: str) -> None:
        style, scope = self._scopes[name]
        if style is Shutdown.CANCELLABLE:
            scope.cancel()
        else:
            scope.deadline = min(
                scope.deadline, trio.current_time() + self.shutdown_timeout + CLEANUP_SLACK_S
            )

    async def _supervise(self, spec: ActorSpec, *, task_status: trio.TaskStatus[None]) -> None:
        crashes: deque[float] = deque()
        backoff = self.backoff_initial
        started = False
        while not (started and self.shutdown.is_set()):
            failure: ExceptionGroup[Exception] | None = None
            try:
                with trio.CancelScope() as scope:
                    self._scopes[spec.name] = (spec.shutdown, scope)
                    if self.shutdown.is_set():
                        self._limit(spec.name)
                    async with trio.open_nursery() as nursery:
                        await nursery.start(spec.factory().run)
                        if not started:
                            started = True
                            task_status.started()
            except* Exception as group:
                failure = group
            if failure is None:
                return
            self.metrics.actor_restarts.labels(spec.name).inc()
            trouble, bugs = failure.split(disk_trouble)
            if trouble is not None and bugs is None:
                log.error(
                    "actor %s stopped: the disk is full or failing (%s); trying again in %g s",
                    spec.name, _first_leaf(trouble), self.backoff_max,
                )  # fmt: skip
                if not started:  # the daemon comes up without it, and it follows when it can
                    started = True
                    task_status.started()
                await self._wait_before_restart(self.backoff_max)
                continue
            if not started:
                raise failure
            log.error("actor %s failed; restarting", spec.name, exc_info=failure)
            now = trio.current_time()
            crashes.append(now)
            while crashes and crashes[0] < now - self.crash_window:
                crashes.popleft()
            if len(crashes) >= self.max_crashes:
                raise CrashLoop(
                    f"actor {spec.name} failed {len(crashes)} times in {self.crash_window:g} s"
                ) from failure
            await self._wait_before_restart(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _wait_before_restart(self, seconds: float) -> None:
        """Sleep before a restart; a shutdown ends the sleep (and so the supervision)."""
        with trio.move_on_after(seconds):
            await self.shutdown.wait()


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf
