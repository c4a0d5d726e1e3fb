"""The integrity watchdog actor: runs one integrity scan (SPEC §8.9) per `ScanRequest`.

Design: the scheduler's `integrity_watchdog` job sends a `ScanRequest` and waits for the reply,
so the report lands in the job run's record; the actor serves requests one at a time from its
channel, which is what keeps "one scan at a time" true whoever asks. Cancelling the job sets the
request's `cancel` event, and the actor cancels the scan; shutting the daemon down cancels the
actor (a cancellable actor) and the scan with it.

A scan never blocks the event loop: each media folder is listed once (one `os.scandir`
iterator, consumed `page_size` entries per worker-thread call), then the catalog is read in keyset
pages of `page_size` rows, each fetched and compared in a worker thread, with a checkpoint between
slices. The repairs of a page are queued in one transaction. Small slices matter more than thread
count: a worker thread busy in Python holds the GIL, and the event loop's thread then waits up to
the interpreter's switch interval (5 ms) every time it wakes. Measured with
`tests/api/test_download_admin.py` (API p99 during a 100,000-track scan over idle p99), slices of
2,000 rows gave about 2.5-4x, 500 rows about 2-3.5x, 100 rows about 1.4-1.7x; a scan of 100,000
tracks with nothing to repair still takes under a second.

If cancelled, a scan leaves the repairs of the pages already done (each page commits whole) and
a WATCHDOG_SCAN_STARTED entry without its WATCHDOG_SCAN_COMPLETED.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from actors.integrity_scan import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    Classify,
    ScanState,
    classify_album_images,
    classify_artist_images,
    classify_tracks,
    take_names,
)
from actors.messages import ScanRequest, WakeProcessor, offer
from storage.db import StorageError
from storage.files import MediaLayout
from storage.queue_admin import QueueAdminStore
from storage.queue_schema import now as wall_now

log = logging.getLogger("pezzottify.watchdog")
PAGE_SIZE = 100
Outcome = tuple[str, Any]


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


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
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.requests = requests
        self.catalog = catalog
        self.admin = admin
        self.media = media
        self.wake = wake
        self.clock = clock
        self.page_size = page_size

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
        active = await self.admin.db.run(self.admin.active_repair_ids)
        audio = await self._list(self.media.audio_dir, AUDIO_EXTENSIONS)
        images = await self._list(self.media.images_dir, IMAGE_EXTENSIONS)
        state = ScanState(audio, images, active)
        await self._pages(state, self.catalog.track_audio_page, "", classify_tracks, now)
        await self._pages(
            state, self.catalog.album_image_page, ("", ""), classify_album_images, now
        )
        await self._pages(
            state, self.catalog.artist_image_page, ("", ""), classify_artist_images, now
        )
        report = state.report(round((time.perf_counter() - started) * 1000))
        await self.admin.db.run(self.admin.record_scan_completed, report, now)
        log.info("integrity scan: %s", report)
        return report

    async def _list(self, folder: Path, extensions: frozenset[str]) -> set[str]:
        """Names of the folder's files with an allowed extension: one listing, in slices."""
        entries = await trio.to_thread.run_sync(os.scandir, folder)
        found: set[str] = set()
        try:
            while not await trio.to_thread.run_sync(
                take_names, entries, extensions, found, self.page_size
            ):
                await trio.lowlevel.checkpoint()
        finally:
            entries.close()
        return found

    async def _pages(
        self,
        state: ScanState,
        fetch: Callable[[Any, int], list[Any]],
        cursor: Any,
        classify: Classify,
        now: int,
    ) -> None:
        """Walk one keyset-paged catalog listing, queueing each page's repairs."""
        while True:
            page, repairs = await trio.to_thread.run_sync(
                functools.partial(self._page, state, fetch, cursor, classify),
                limiter=self.catalog.db.limiter,
            )
            if repairs:
                queued, skipped = await self.admin.db.run(self.admin.enqueue_repairs, repairs, now)
                state.queued += queued
                state.skipped += skipped
                if queued:
                    # If not taken, a wake-up is already pending or the daemon is stopping.
                    offer(self.wake, WakeProcessor())
            if len(page) < self.page_size:
                return
            cursor = page[-1][0] if isinstance(cursor, str) else tuple(page[-1])
            await trio.lowlevel.checkpoint()

    def _page(
        self, state: ScanState, fetch: Callable[[Any, int], list[Any]], cursor: Any,
        classify: Classify,
    ) -> tuple[list[Any], list[Any]]:  # fmt: skip
        page = fetch(cursor, self.page_size)
        return page, classify(state, page)
