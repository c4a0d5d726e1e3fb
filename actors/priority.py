"""Threads of lower CPU priority, for work that must not slow down the event loop or the
downloads.

Linux schedules each thread on its own, so one thread's priority can be lowered alone. An
unprivileged process cannot raise it back, and trio reuses its worker threads for everything
else, so such work runs in threads of its own: a new one per call (`in_background_thread`, the
integrity scan) or one long-lived thread (`NiceWorker`, the processor's finisher). Elsewhere
than on Linux, or where the kernel refuses, they run at normal priority.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import trio

T = TypeVar("T")

LOWEST_PRIORITY = 19  # nice, where the idle scheduling class is refused
# How often a thread waiting for a background thread checks whether to stop it.
STOP_POLL_S = 0.02


def lower_priority(by: int | None = None) -> None:
    """Lower the calling thread's priority, and its alone: `by` nice steps (at most to the
    lowest) or, with None, to the idle scheduling class (failing that, the lowest nice value).

    Idle, not merely nice 19, for work that may wait: the kernel lets a waking thread of normal
    priority preempt an idle one at once, and counts a core that runs only idle threads as free
    when it places a waking thread. At nice 19 the integrity scan still ran out its time slice
    before the event loop's thread or an API worker thread got the core back (API p99 during a
    scan over idle, 4 alternated runs each: 1.92-2.56 at nice 19, 1.45-1.74 idle). An idle
    thread still gets a small share of a busy machine, so its work is slowed down by load, never
    stopped by it."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        if by is not None:
            nice = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(LOWEST_PRIORITY, nice + by))
            return
        try:
            os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            os.setpriority(os.PRIO_PROCESS, thread, LOWEST_PRIORITY)


def in_background_thread(fn: Callable[[Callable[[], bool]], T], stop: Callable[[], bool]) -> T:
    """Run `fn(stopped)` in a new thread of the idle class (`lower_priority`) and wait for it
    (blocking); `stopped()` turns True once `stop()`, which the waiting thread polls, does.

    A comparison of the integrity scan runs without the interpreter lock, truly in parallel with
    the event loop, so at normal priority it competes with the loop (and the API's worker
    threads) for a core: on the 2-core benchmark machine, API p99 during a scan was 2.7x idle at
    normal priority, about 2x at nice 19 and 1.6x in the idle class, which takes only the CPU the
    daemon and its neighbours leave idle."""
    stopped = threading.Event()
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        lower_priority()
        try:
            results.append(fn(stopped.is_set))
        except BaseException as exc:  # re-raised in the waiting thread
            errors.append(exc)

    thread = threading.Thread(target=body, name="integrity-scan", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(STOP_POLL_S)
        if stop():
            stopped.set()
    if errors:
        raise errors[0]
    return results[0]


class NiceWorker:
    """One long-lived thread `by` nice steps below the others (`lower_priority`), made on first
    use. `await run(fn)` runs the calls one after the other, each to its end (a cancellation
    waits for it). `close()` once done: the thread ends after its last call.

    Not the idle class: a thread that holds the interpreter lock when the kernel stops it holds
    up every other thread of the process until it runs again, which an idle thread on a busy
    machine may not do for long; a nice thread still gets a smaller share. (The processor's
    finisher in the idle class did not make the drain any faster: 0.98 and 1.02 of the time.)
    """

    def __init__(self, name: str, by: int) -> None:
        self._pool = ThreadPoolExecutor(1, name, initializer=lower_priority, initargs=(by,))

    async def run(self, fn: Callable[[], T]) -> T:
        token, done = trio.lowlevel.current_trio_token(), trio.Event()

        def wake(_: Future[T]) -> None:
            token.run_sync_soon(done.set)

        future = self._pool.submit(fn)
        future.add_done_callback(wake)
        with trio.CancelScope(shield=True):
            await done.wait()
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False)
