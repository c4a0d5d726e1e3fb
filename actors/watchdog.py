"""The integrity watchdog actor: runs one integrity scan (SPEC §8.9) per `ScanRequest`.

Design: the scheduler's `integrity_watchdog` job sends a `ScanRequest` and waits for the reply,
so the report lands in the job run's record; the actor serves requests one at a time from its
channel, which is what keeps "one scan at a time" true whoever asks. Cancelling the job sets the
request's `cancel` event, and the actor cancels the scan; shutting the daemon down cancels the
actor (a cancellable actor) and the scan with it.

A scan never blocks the event loop. For each kind of file, one call in the catalog's worker
threads reads the media folder slice by slice into SQLite and compares the catalog against it
(see `actors.integrity_scan`), returning only the rows whose file is missing: the listing is
input to that one store call, never held whole. SQLite stores the slices and compares in its C
code, which releases the interpreter lock while it steps, so the event loop keeps answering
while it runs (`docs/benchmarks.md` has the API's latency during a scan). Every kind is
compared before anything is queued, so a missing folder fails the scan with nothing queued;
repairs are then queued `batch_size` per transaction.

Content the watchdog gave up on (a repair failed `not_found`) is not queued again until
`unavailable_recheck_days` have passed (see `storage.queue.marks`); the scan reads those marks
with the active items, in one snapshot, and a complete scan drops the marks of files it found
present.

Cancelling a scan stops its comparison within milliseconds: the statements' progress handler,
and the comparison between two slices of the listing, poll `trio.from_thread.check_cancelled`
and interrupt it, and the resulting `sqlite3.OperationalError` is turned back into the
cancellation (not a failed scan).

If cancelled, a scan leaves the repairs of the batches already queued (each commits whole) and
a WATCHDOG_SCAN_STARTED entry without its WATCHDOG_SCAN_COMPLETED.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from actors.integrity_scan import KINDS, MissingRow, ScanState, list_folder
from actors.messages import ScanRequest, WakeProcessor, offer
from storage.db import StorageError
from storage.files import MediaLayout
from storage.queue import ContentType, QueueAdminStore
from storage.queue import now as wall_now

log = logging.getLogger("pezzottify.watchdog")
BATCH_SIZE = 100  # repairs per transaction
Outcome = tuple[str, Any]


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _cancel_requested() -> bool:
    """In a worker thread: True once the task waiting for it is cancelled (a progress handler:
    True interrupts the running statement). Run on the event loop (`Offload.inline`), a call
    cannot be cancelled midway, and this is always False."""
    try:
        trio.from_thread.check_cancelled()
    except trio.Cancelled:
        return True
    except RuntimeError:  # not in a worker thread
        return False
    return False


class IntegrityWatchdog:
    def __init__(
        self,
        requests: trio.MemoryReceiveChannel[ScanRequest],
        catalog: Any,
        admin: QueueAdminStore,
        media: MediaLayout,
        *,
        wake: trio.MemorySendChannel[WakeProcessor] | None = None,
        clock: Callable[[], int] = wall_now,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.requests = requests
        self.catalog = catalog
        self.admin = admin
        self.media = media
        self.wake = wake
        self.clock = clock
        self.batch_size = batch_size

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve scan requests until the channel closes (the wiring owns it)."""
        task_status.started()
        async for request in self.requests:
            await self._serve(request)

    async def _serve(self, request: ScanRequest) -> None:
        # Closing the reply whatever happens means the asker never waits on a dead scan.
        with request.reply:
            if request.cancel.is_set():
                return
            outcome: Outcome | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_set, request.cancel, nursery.cancel_scope)
                outcome = await self._attempt()
                nursery.cancel_scope.cancel()
            if outcome is not None:
                try:
                    request.reply.send_nowait(outcome)
                except (trio.WouldBlock, trio.BrokenResourceError):
                    log.info("integrity scan finished but nobody is waiting for its report")

    async def _attempt(self) -> Outcome:
        try:
            return ("completed", await self.scan())
        except (OSError, sqlite3.Error, StorageError) as exc:
            log.warning("integrity scan failed: %s", exc)
            return ("failed", f"integrity scan failed: {exc}")

    async def scan(self) -> dict[str, Any]:
        """Run one scan and return its report (also written as WATCHDOG_SCAN_COMPLETED)."""
        started = time.perf_counter()
        now = self.clock()
        await self.admin.db.run(self.admin.record_scan_started, now)
        held = await self.admin.db.run(self.admin.repair_filter, now)
        folders = {"audio": self.media.audio_dir, "images": self.media.images_dir}
        # Every kind is compared before anything is queued: a missing folder fails the scan.
        compared = [
            (ctype, await self._missing(kind, folders[folder])) for ctype, kind, folder in KINDS
        ]
        state = ScanState(held.active, held.unavailable)
        for content_type, missing in compared:
            await self._queue(state, content_type, missing, now)
        # A mark of a file no longer missing (restored, or gone from the catalog) means nothing.
        found = {key: at for key, at in held.marks.items() if key not in state.seen}
        if found:
            await self.admin.db.run(self.admin.forget_marks, found)
        report = state.report(round((time.perf_counter() - started) * 1000))
        await self.admin.db.run(self.admin.record_scan_completed, report, now)
        log.info("integrity scan: %s", report)
        return report

    async def _missing(self, kind: str, folder: Path) -> list[MissingRow]:
        """The catalog's rows of `kind` whose file is not in `folder`, by one store call that
        reads the folder as it compares (in the catalog's worker threads, as its input) and
        that this task's cancellation interrupts."""
        try:
            rows: list[MissingRow] = await self.catalog.db.run(
                self.catalog.missing_files, kind, list_folder(folder), _cancel_requested
            )
            return rows
        except sqlite3.OperationalError:
            # 'interrupted' because this task was cancelled: deliver the cancellation instead.
            await trio.lowlevel.checkpoint_if_cancelled()
            raise

    async def _queue(
        self, state: ScanState, content_type: ContentType, missing: list[MissingRow], now: int
    ) -> None:
        """Queue the repairs for `missing`, `batch_size` rows per transaction."""
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            queued, skipped = await self.admin.db.run(
                self._enqueue, state, content_type, batch, now
            )
            state.queued += queued
            state.skipped += skipped
            if queued:
                # If not taken, a wake-up is already pending or the daemon is stopping.
                offer(self.wake, WakeProcessor())

    def _enqueue(
        self, state: ScanState, content_type: ContentType, rows: Sequence[MissingRow], now: int
    ) -> tuple[int, int]:
        """Queue one batch's repairs in one transaction: (queued, skipped as already active)."""
        repairs = state.repairs(content_type, rows)
        return self.admin.enqueue_repairs(repairs, now) if repairs else (0, 0)
