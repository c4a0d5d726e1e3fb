"""The download-queue processor actor (SPEC §8.5 to §8.7, §10).

At start it puts work left IN_PROGRESS by a dead process back in the queue and sweeps `.part`
files, then reports ready. It works back to back while ready work exists: promote due retries,
claim (new albums only while the global capacity allows), process, record. When idle it waits
for a `WakeProcessor` or until the earliest retry is due, at most `process_interval_secs`.

One item at a time: the downloader serves one audio download at a time (429 when busy), and a
429 only parks the item in RETRY_WAITING without spending a retry. Per-item failures
(`DownloaderError`) are recorded on the item; anything else is a bug and propagates to the
supervisor, which restarts the actor (and the restart's recovery puts the item back).

Shutdown: once `shutdown` is set nothing new is claimed; the item in flight gets up to
`shutdown_timeout` seconds to finish, then is cancelled, its temporary file removed and the item
released back to PENDING without spending a retry; then `run` returns.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import trio

from actors.download_steps import MAX_AUDIO_BYTES, MAX_IMAGE_BYTES, StepResult, Steps
from actors.downloader import DownloaderClient, DownloaderError
from actors.messages import Hook, HookFired, WakeProcessor
from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.catalog import CatalogStore
from storage.files import MediaLayout
from storage.queue import QueueStore
from storage.queue_schema import ContentType, Status, now

log = logging.getLogger("pezzottify.processor")

CLEANUP_S = 5.0
# The queue-size gauge costs a scan of the status index: refreshed at most this often while
# busy and once on going idle (the stale detector refreshes it periodically as well).
GAUGE_REFRESH_S = 1.0


class Processor:
    def __init__(
        self,
        queue: QueueStore,
        catalog: CatalogStore,
        client: DownloaderClient,
        media: MediaLayout,
        metrics: Metrics,
        config: DownloadManagerConfig,
        wake: trio.MemoryReceiveChannel[WakeProcessor],
        hooks: trio.MemorySendChannel[Any] | None,
        *,
        shutdown: trio.Event,
        shutdown_timeout: float,
        clock: Callable[[], int] = now,
        max_audio_bytes: int = MAX_AUDIO_BYTES,
        max_image_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        self.queue = queue
        self.media = media
        self.metrics = metrics
        self.config = config
        self.wake = wake
        self.hooks = hooks
        self.shutdown = shutdown
        self.shutdown_timeout = shutdown_timeout
        self.clock = clock
        self.steps = Steps(client, catalog, media, max_audio_bytes, max_image_bytes)
        self._idle: trio.CancelScope | None = None
        self._current: trio.CancelScope | None = None
        self._gauges_at = -GAUGE_REFRESH_S
        self._dirty = True  # the queue changed since the gauges were last set

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, report ready, process until shutdown.

        If cancelled from outside, the item in flight is released back to PENDING and its
        temporary file removed (bounded, shielded cleanup) before the cancellation goes on.
        """
        await self._recover()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._limit_on_shutdown)
            while not self.shutdown.is_set():
                item = await self._claim()
                if item is None:
                    if self._dirty:  # settle the gauges once on going idle
                        await self._refresh_gauges(force=True)
                    await self._wait_for_work()
                else:
                    await self._handle(item)
                    self._dirty = True
                    await self._refresh_gauges()
            nursery.cancel_scope.cancel()
        if self._dirty:
            await self._refresh_gauges(force=True)

    async def _recover(self) -> None:
        recovery = await self.queue.db.run(self.queue.recover_after_restart, self.clock())
        swept = await trio.to_thread.run_sync(self.media.sweep_partials)
        if recovery.recovered or recovery.albums_completed or swept:
            log.info(
                "recovered %d interrupted items, completed %d albums, removed %d partial files",
                recovery.recovered, recovery.albums_completed, swept,
            )  # fmt: skip
        if recovery.albums_completed:
            self._hook(Hook.OnDownloadComplete)
        await self._refresh_gauges(force=True)

    async def _limit_on_shutdown(self) -> None:
        await self.shutdown.wait()
        if self._idle is not None:
            self._idle.cancel()
        if self._current is not None:
            self._grant_shutdown_grace(self._current)

    def _grant_shutdown_grace(self, scope: trio.CancelScope) -> None:
        scope.deadline = min(scope.deadline, trio.current_time() + self.shutdown_timeout)

    def _claim_now(self, at: int) -> tuple[sqlite3.Row | None, dict[str, Any]]:
        """Blocking: promote due retries, check the global capacity, claim one item."""
        self.queue.promote_due_retries(at)
        capacity = self.queue.capacity(at)
        allowed = (
            capacity["albums_this_hour"] < self.config.max_albums_per_hour
            and capacity["albums_today"] < self.config.max_albums_per_day
        )
        item = self.queue.claim_next(at, albums_allowed=allowed)
        if item is not None and item["parent_id"] is None and item["started_at"] == at:
            capacity = self.queue.capacity(at)  # this album may just have started
        return item, capacity

    async def _claim(self) -> sqlite3.Row | None:
        item, capacity = await self.queue.db.run(self._claim_now, self.clock())
        self.metrics.capacity_used.labels("hour").set(capacity["albums_this_hour"])
        self.metrics.capacity_used.labels("day").set(capacity["albums_today"])
        return item

    async def _wait_for_work(self) -> None:
        """Sleep until woken, the earliest retry is due, or `process_interval_secs`."""
        wait = self.config.process_interval_secs
        due = await self.queue.db.run(self.queue.next_retry_at)
        if due is not None:
            wait = min(wait, max(0, due - self.clock()))
        with trio.move_on_after(wait) as idle:
            self._idle = idle
            if self.shutdown.is_set():
                idle.cancel()
            try:
                await self.wake.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                await trio.sleep_forever()  # nobody can wake us any more: only the timer does
            finally:
                self._idle = None

    async def _handle(self, item: sqlite3.Row) -> None:
        """Process one claimed item under a scope that shutdown can put a deadline on."""
        settled = False
        try:
            with trio.CancelScope() as scope:
                self._current = scope
                if self.shutdown.is_set():
                    self._grant_shutdown_grace(scope)
                await self._process(item)
                settled = True
        finally:
            self._current = None
            if not settled:
                with trio.move_on_after(CLEANUP_S, shield=True):
                    if await self.queue.db.run(self.queue.release, item["id"], self.clock()):
                        log.info("released %s %s back to the queue", item["content_type"],
                                 item["content_id"])  # fmt: skip

    async def _process(self, item: sqlite3.Row) -> None:
        kind = ContentType(item["content_type"])
        started = trio.current_time()
        try:
            result = await self.steps.run(item)
        except DownloaderError as error:
            outcome = await self._record_failure(item, error)
        else:
            elapsed_ms = int((trio.current_time() - started) * 1000)
            await self._record_success(item, kind, result, elapsed_ms)
            outcome = "success"
        self.metrics.download_processed.labels(kind.value, outcome).inc()
        self.metrics.download_seconds.labels(kind.value).observe(trio.current_time() - started)

    async def _record_success(
        self, item: sqlite3.Row, kind: ContentType, result: StepResult, elapsed_ms: int
    ) -> None:
        if kind is ContentType.ALBUM:
            if result.catalog_changed:
                self._hook(Hook.OnCatalogChange)
            created = await self.queue.db.run(
                self.queue.create_children, item["id"], list(result.children), self.clock()
            )
            album_completed = created.album_completed
            log.info("album %s ingested, %d children", item["content_id"], created.total)
        else:
            album_completed = await self.queue.db.run(
                self.queue.complete, item["id"], result.size, elapsed_ms, self.clock()
            )
        if album_completed:
            self._hook(Hook.OnDownloadComplete)

    async def _record_failure(self, item: sqlite3.Row, error: DownloaderError) -> str:
        status = await self.queue.db.run(
            self.queue.fail,
            item["id"],
            error.error_type,
            error.message,
            self.clock(),
            error.retry_after,
        )
        log.warning(
            "%s %s failed (%s): %s -> %s", item["content_type"], item["content_id"],
            error.error_type.value, error.message, status.value,
        )  # fmt: skip
        return "retry" if status is Status.RETRY_WAITING else "failed"

    def _hook(self, hook: Hook) -> None:
        if self.hooks is None:
            return
        try:
            self.hooks.send_nowait(HookFired(hook))
        except trio.WouldBlock:
            log.warning("scheduler channel full; hook %s dropped", hook.value)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.warning("scheduler gone; hook %s dropped", hook.value)

    async def _refresh_gauges(self, *, force: bool = False) -> None:
        if not force and trio.current_time() - self._gauges_at < GAUGE_REFRESH_S:
            return
        self._gauges_at = trio.current_time()
        self._dirty = False
        sizes = await self.queue.db.run(self.queue.status_counts)
        for (status, priority), size in sizes.items():
            self.metrics.queue_size.labels(status, str(priority)).set(size)
