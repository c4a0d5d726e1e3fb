"""How blocking work leaves the event loop: SQLite calls and file work, one rule for both.

Every database and the media folder own an `Offload`: their blocking calls run in trio's worker
threads under its limiter, so a burst of them never takes more threads than the resource can
use. The one cancellation rule: a call that has begun runs to its end (a transaction commits or
rolls back whole, a write or an fsync completes), and the cancellation is delivered after it.
Calls are therefore short (one transaction, one batch of bytes, one folder listing); longer work
is cut into such calls by its caller, which checks for cancellation between them. The one long
call, a backup's copy (`actors.jobs.backup`, on an Offload of its own), instead takes a stop event
that its caller sets when cancelled, and stops at its next step.

`Offload.inline()` runs the calls on the event loop instead, for tests under trio's autojump
clock: that clock jumps whenever every task waits, and a task waiting for a worker thread
counts as waiting, so timeouts would fire while a thread is still at work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    """Runs blocking calls in worker threads, at most `threads` at a time."""

    def __init__(self, threads: int, *, inline: bool = False) -> None:
        self.limiter = trio.CapacityLimiter(threads)
        self._inline = inline

    @classmethod
    def inline(cls) -> Offload:
        """Calls run on the event loop, blocking it (tests under the autojump clock only)."""
        return cls(1, inline=True)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in a worker thread; if cancelled, the call still runs to its
        end and the cancellation is delivered afterwards."""
        call = functools.partial(fn, *args, **kwargs)
        if self._inline:
            await trio.lowlevel.checkpoint()
            return call()
        return await trio.to_thread.run_sync(call, limiter=self.limiter)

    async def probe(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` in a worker thread, for a call whose answer is worth nothing
        once late (a health probe): a cancelled caller stops waiting at once, and the call runs
        to its end in its thread all the same, keeping its place in the limiter until then, its
        result dropped. Never for a call whose effect someone waits on."""
        call = functools.partial(fn, *args, **kwargs)
        if self._inline:
            await trio.lowlevel.checkpoint()
            return call()
        return await trio.to_thread.run_sync(call, limiter=self.limiter, abandon_on_cancel=True)
