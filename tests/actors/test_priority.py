"""`NiceWorker`: one thread of lower priority that runs its calls to their end."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
import trio

from actors.priority import NiceWorker


def nice() -> tuple[int, int]:
    thread = threading.get_native_id()
    return thread, os.getpriority(os.PRIO_PROCESS, thread)


async def test_calls_run_in_one_thread_in_order_and_failures_reach_the_caller() -> None:
    worker = NiceWorker("test-nice", 5)
    try:
        seen = [await worker.run(nice) for _ in range(3)]
        with pytest.raises(ZeroDivisionError):
            await worker.run(lambda: 1 // 0)
        assert await worker.run(lambda: "still there") == "still there"
    finally:
        worker.close()
    assert len({thread for thread, _ in seen}) == 1
    assert seen[0][0] != threading.get_native_id()


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")
async def test_its_thread_alone_runs_below_the_others() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    worker = NiceWorker("test-nice", 5)
    try:
        _, lowered = await worker.run(nice)
    finally:
        worker.close()
    assert lowered == min(19, base + 5)
    assert nice()[1] == base
    assert (await trio.to_thread.run_sync(nice))[1] == base


async def test_a_cancelled_call_still_runs_to_its_end() -> None:
    ended = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        ended.set()

    worker = NiceWorker("test-nice", 5)
    steps: list[str] = []
    try:
        with trio.move_on_after(0.02) as scope:
            await worker.run(slow)
            steps.append("returned")
            await trio.lowlevel.checkpoint()  # the cancellation arrives here
            steps.append("went on")
    finally:
        worker.close()
    assert (steps, scope.cancelled_caught) == (["returned"], True)
    assert ended.is_set()


async def test_closing_ends_its_thread() -> None:
    worker = NiceWorker("test-nice-closing", 5)
    await worker.run(lambda: None)
    worker.close()
    with trio.fail_after(5):
        while any(t.name.startswith("test-nice-closing") for t in threading.enumerate()):  # noqa: ASYNC110
            await trio.sleep(0.01)
