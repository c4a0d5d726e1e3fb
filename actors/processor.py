"""The download-queue processor actor (SPEC §8.5 to §8.7, §10).

At start it puts work left IN_PROGRESS by a dead process back in the queue and sweeps `.part`
files, then reports ready. It works back to back while ready work exists: promote due retries
and claim (new albums only while the global capacity allows), process, record. A claim takes an
album alone, or a run of up to `CLAIM_BATCH` files in one transaction (so IN_PROGRESS covers the
few files claimed and waiting their turn); they are fetched in claim order. When idle it waits
for a `WakeProcessor` or until the earliest retry is due, at most `process_interval_secs`.

One download at a time: the downloader serves one audio download at a time (429 when busy),
and a 429 only parks the item in RETRY_WAITING without spending a retry. A claimed run of files
is received in one worker call, one file after the other (`Steps.fetch_files`: no hop back to
the loop between two downloads), and an album's calls and ingestion are one worker call too.
A file's bookkeeping overlaps the next downloads: once a run has been received, the loop hands
its files to a finisher task and claims the next items. The finisher takes every file waiting
(up to `FINISH_BATCH`) and, in one call to a thread of its own at a lower priority (so that it
takes no core from the download on its way), publishes each (write, fsync, rename), fsyncs
their folders once, records the tracks in one catalog transaction and the completions in one
queue transaction, so a batch costs less than its files one by one. Albums are finished in the
loop (their children must exist before the next claim), and the loop waits for the finisher
before it decides it is idle. A crash before a batch's queue commit leaves its items
IN_PROGRESS, which recovery puts back (publishing again is harmless). Per-item failures
(`DownloaderError`) are recorded on the item; anything else is a bug and propagates to the
supervisor, which restarts the actor (and the restart's recovery puts the items back).

Shutdown: once `shutdown` is set nothing new is claimed or begun, and claimed items not begun
are released; the work in flight (the run being received, the files handed to the finisher)
gets up to `shutdown_timeout` seconds to finish, then is cancelled: temporary files are removed
and the items not recorded yet released back to PENDING without spending a retry (a run's files
already received go back with it, to be fetched again on the next start); then `run` returns.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import trio

from actors.download_steps import (
    MAX_IMAGE_BYTES,
    Fetched,
    Outcome,
    StepResult,
    Steps,
)
from actors.downloader import DownloaderClient, DownloaderError
from actors.messages import Hook, HookFired, WakeProcessor
from actors.priority import NiceWorker
from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.catalog import CatalogStore
from storage.files import MediaLayout
from storage.queue import Completion, QueueStore
from storage.queue_schema import ContentType, Status, now

log = logging.getLogger("pezzottify.processor")

CLEANUP_S = 5.0
# The queue-size gauge costs a scan of the status index: refreshed at most this often while
# busy and once on going idle (the stale detector refreshes it periodically as well).
GAUGE_REFRESH_S = 1.0


# Items claimed in one transaction: a run of files (never an album, see `QueueStore.claim`) is
# taken together and received one after the other in one worker call, which saves a commit and
# two thread crossings per file.
CLAIM_BATCH = 8

# Received files the loop may hand over before the finisher takes them (each body holds up to
# `WRITE_BATCH_BYTES` in memory), and so the most files published and recorded together. Room
# for a whole run while the finisher works on the previous one: with room for fewer, the loop
# waited for the finisher after every run (the drain took 0.91 to 0.94 of the time with 8).
FINISH_BATCH = 2 * CLAIM_BATCH

# The finisher's thread runs this many nice steps below the others (`actors.priority.NiceWorker`):
# below the thread receiving the files, the downloader and the event loop. On two cores, a
# finisher at their priority took a core from them while a file was on its way (the drain took
# 0.94 to 0.95 of the time at nice 5, 10 or 19, each measured against no change).
FINISHER_NICE = 10


class Handoff(NamedTuple):
    """A fetched file on its way to the finisher; `done` is set once it has been recorded."""

    item: sqlite3.Row
    fetched: Fetched
    started: float
    done: trio.Event


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
        image_cap = min(MAX_IMAGE_BYTES, config.max_file_bytes)
        self.steps = Steps(client, catalog, media, config.max_file_bytes, image_cap)
        self._idle: trio.CancelScope | None = None
        self._current: trio.CancelScope | None = None  # the album or run of files being fetched
        self._finishing: trio.CancelScope | None = None  # the batch being finished
        # The finisher's calls: its thread is made on first use and ends with `run`.
        self._finishing_thread = NiceWorker("finisher", FINISHER_NICE)
        self._finished = trio.Event()  # set once all that was handed over is recorded
        self._finished.set()
        self._gauges_at = -GAUGE_REFRESH_S
        self._dirty = True  # the queue changed since the gauges were last set

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, report ready, process until shutdown.

        If cancelled from outside, the items in flight are released back to PENDING and their
        temporary files removed (bounded, shielded cleanup) before the cancellation goes on.
        """
        await self._recover()
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._limit_on_shutdown)
                async with trio.open_nursery() as finishing:
                    handoff, fetched = trio.open_memory_channel[Handoff](FINISH_BATCH - 1)
                    finishing.start_soon(self._finisher, fetched)
                    async with handoff:
                        await self._work(handoff)
                nursery.cancel_scope.cancel()
        finally:
            self._finishing_thread.close()
        if self._dirty:
            await self._refresh_gauges(force=True)

    async def _work(self, handoff: trio.MemorySendChannel[Handoff]) -> None:
        while not self.shutdown.is_set():
            items = await self._claim()
            if items:
                await self._handle_claimed(items, handoff)
            elif not self._finished.is_set():
                await self._finished.wait()  # its outcome may be work (a retry) or a wake-up time
            else:
                if self._dirty:  # settle the gauges once on going idle
                    await self._refresh_gauges(force=True)
                await self._wait_for_work()

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
        for scope in (self._current, self._finishing):
            if scope is not None:
                self._grant_shutdown_grace(scope)

    def _grant_shutdown_grace(self, scope: trio.CancelScope) -> None:
        scope.deadline = min(scope.deadline, trio.current_time() + self.shutdown_timeout)

    async def _claim(self, most: int = CLAIM_BATCH) -> list[sqlite3.Row]:
        claimed = await self.queue.db.run(self.queue.claim, self.clock(), most=most)
        self.metrics.capacity_used.labels("hour").set(claimed.capacity["albums_this_hour"])
        self.metrics.capacity_used.labels("day").set(claimed.capacity["albums_today"])
        return claimed.items

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

    async def _handle_claimed(
        self, items: list[sqlite3.Row], handoff: trio.MemorySendChannel[Handoff]
    ) -> None:
        """Handle a claim: an album (claimed alone) or a run of files. What is not begun when
        shutdown comes (or when this is cancelled) is released back to the queue."""
        if items[0]["content_type"] != ContentType.ALBUM.value:
            await self._handle_files(items, handoff)
        elif self.shutdown.is_set():
            await self._abandon(items[0], None)
        else:
            await self._handle_album(items[0])

    async def _handle_album(self, item: sqlite3.Row) -> None:
        """Fetch and ingest an album, then create its children; released back to the queue if
        this is cancelled first."""
        started = trio.current_time()
        settled = False
        try:
            with trio.CancelScope() as scope:
                self._current = scope
                if self.shutdown.is_set():
                    self._grant_shutdown_grace(scope)
                try:
                    result = await self.steps.fetch_album(item)
                except DownloaderError as error:
                    self._count(item, started, await self._record_failure(item, error))
                    await self._refresh_gauges()
                else:
                    await self._finish_album(item, result, started)
                settled = True
        finally:
            self._current = None
            if not settled:
                await self._abandon(item, None)

    async def _handle_files(
        self, items: list[sqlite3.Row], handoff: trio.MemorySendChannel[Handoff]
    ) -> None:
        """Receive a claimed run of files (one worker call, `Steps.fetch_files`), then hand each
        to the finisher or record its failure. Files not received, or received but not handed
        over when this is cancelled, are released back to the queue (and their bodies
        discarded)."""
        outcomes: list[Outcome] = []
        settled = 0
        try:
            with trio.CancelScope() as scope:
                self._current = scope
                if self.shutdown.is_set():
                    self._grant_shutdown_grace(scope)
                shift = trio.current_time() - time.perf_counter()  # thread times to loop times
                outcomes = await self.steps.fetch_files(items, self.shutdown.is_set)
            self._current = None
            failed = False
            for item, (value, began) in zip(items, outcomes, strict=False):
                if isinstance(value, DownloaderError):
                    self._count(item, began + shift, await self._record_failure(item, value))
                    failed = True
                else:
                    await self._hand_over(handoff, item, value, began + shift)
                settled += 1
            if failed:
                await self._refresh_gauges()
        finally:
            self._current = None
            received = [o.value if isinstance(o.value, Fetched) else None for o in outcomes]
            received += [None] * (len(items) - len(outcomes))  # not begun
            for item, fetched in zip(items[settled:], received[settled:], strict=True):
                await self._abandon(item, fetched)

    async def _hand_over(
        self, handoff: trio.MemorySendChannel[Handoff], item: sqlite3.Row, fetched: Fetched,
        started: float,
    ) -> None:  # fmt: skip
        """Queue a fetched file for the finisher (waits while `FINISH_BATCH - 1` already wait).
        `_finished` stays unset until the finisher has recorded it, and so all before it."""
        previous, done = self._finished, trio.Event()
        self._finished = done
        try:
            await handoff.send(Handoff(item, fetched, started, done))
        except BaseException:
            self._finished = previous  # not handed over: the caller still owns the item
            raise

    async def _finisher(self, handoffs: trio.MemoryReceiveChannel[Handoff]) -> None:
        """Publish and record fetched files while the loop fetches the next ones: everything
        waiting when it is free, as one batch (see the module docstring)."""
        async with handoffs:
            try:
                async for first in handoffs:
                    await self._finish_batch([first, *_waiting(handoffs, FINISH_BATCH - 1)])
            finally:  # cancelled: what was handed over but not taken goes back to the queue
                for handoff in _waiting(handoffs, FINISH_BATCH):
                    await self._abandon(handoff.item, handoff.fetched)
                    handoff.done.set()

    async def _finish_batch(self, batch: list[Handoff]) -> None:
        settled = False
        try:
            with trio.CancelScope() as scope:
                self._finishing = scope
                if self.shutdown.is_set():
                    self._grant_shutdown_grace(scope)
                await self._finish(batch)
                settled = True
        finally:
            self._finishing = None
            if not settled:
                for handoff in batch:
                    await self._abandon(handoff.item, handoff.fetched)
            for handoff in batch:
                handoff.done.set()

    async def _finish(self, batch: list[Handoff]) -> None:
        """Publish the batch's files and record them in the catalog and the queue (one worker
        call, run to its end); then record the failures, if any."""
        now, at = self.clock(), trio.current_time()

        def publish_and_record() -> tuple[list[DownloaderError | None], int]:
            errors = self.steps.finish_now([h.fetched for h in batch])
            done = [
                Completion(h.item["id"], h.fetched.size, int((at - h.started) * 1000))
                for h, error in zip(batch, errors, strict=True)
                if error is None
            ]
            return errors, self.queue.complete_many(done, now)

        errors, albums_completed = await self._finishing_thread.run(publish_and_record)
        outcomes = [
            "success" if error is None else await self._record_failure(handoff.item, error)
            for handoff, error in zip(batch, errors, strict=True)
        ]
        # Every item counted before the hooks fire: whoever a hook wakes sees the whole batch.
        for handoff, outcome in zip(batch, outcomes, strict=True):
            self._count(handoff.item, handoff.started, outcome)
        for _ in range(albums_completed):
            self._hook(Hook.OnDownloadComplete)
        await self._refresh_gauges()

    def _count(self, item: sqlite3.Row, started: float, outcome: str) -> None:
        kind = item["content_type"]
        self.metrics.download_processed.labels(kind, outcome).inc()
        self.metrics.download_seconds.labels(kind).observe(trio.current_time() - started)
        self._dirty = True

    async def _abandon(self, item: sqlite3.Row, fetched: Fetched | None) -> None:
        """Put an item that was interrupted back in the queue, without its temporary file."""
        with trio.move_on_after(CLEANUP_S, shield=True):
            if fetched is not None:
                await fetched.discard()
            if await self.queue.db.run(self.queue.release, item["id"], self.clock()):
                log.info("released %s %s back to the queue", item["content_type"],
                         item["content_id"])  # fmt: skip

    async def _finish_album(self, item: sqlite3.Row, result: StepResult, started: float) -> None:
        """An album was ingested: create its children (or complete it, if it has none)."""
        if result.catalog_changed:
            self._hook(Hook.OnCatalogChange)
        created = await self.queue.db.run(
            self.queue.create_children, item["id"], list(result.children), self.clock()
        )
        log.info("album %s ingested, %d children", item["content_id"], created.total)
        self._count(item, started, "success")
        if created.album_completed:
            self._hook(Hook.OnDownloadComplete)
        await self._refresh_gauges()

    async def _record_failure(self, item: sqlite3.Row, error: DownloaderError) -> str:
        status = await self.queue.db.run(
            self.queue.fail,
            item["id"],
            error.error_type,
            error.message,
            self.clock(),
            error.retry_after,
            error.permanent,
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


def _waiting(handoffs: trio.MemoryReceiveChannel[Handoff], most: int) -> list[Handoff]:
    """Up to `most` handoffs that can be taken without waiting."""
    taken: list[Handoff] = []
    while len(taken) < most:
        try:
            taken.append(handoffs.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    return taken
