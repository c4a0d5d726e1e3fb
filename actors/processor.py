"""The download-queue processor actor (SPEC §8.5 to §8.7, §10).

At start it puts work left IN_PROGRESS by a dead process back in the queue and sweeps `.part`
files, then reports ready. It works back to back while ready work exists: claim (due retries
promoted, new albums only while the global capacity allows, nothing while an admin has paused
the queue), fetch and publish (`actors.download_steps`), record the outcome in the queue. When
idle it waits for a `WakeProcessor` (a resume sends one) or until the earliest retry is due, at
most `process_interval_secs`. Each claim sets the paused gauge.

One download at a time, and the recording of a file beside the download of the next: each
claimed item runs in a task of its own. Once a file is received whole into its temporary file,
the next item is claimed and downloads while this one publishes the file (fsync, rename, fsync
of the folder), marks the catalog and records its completion (two durable commits), so the
disk's work per file no longer stands between two downloads. At most two items are in flight
(both IN_PROGRESS; a crash leaves both to the recovery), and a `Turn` keeps their outcomes in
claim order: an item records its own, success or failure, once the item before it has ended,
and the next is claimed once this one is done with the downloader and the one before has
ended. An album is not overlapped: it waits for the file before it, and its children are
created before the next claim, so a new album never overtakes them. The downloader serves one
audio download at a time (429 when busy), and a 429 only parks the item in RETRY_WAITING
without spending a retry. Per-item failures (`ItemFailure`), in the download or in the
recording, are recorded on the item; anything else is a bug and propagates to the supervisor,
which restarts the actor (and the restart's recovery puts the items back).

Cancelled requests (SPEC §8.3 rev 2): each item in flight is registered in `InFlight` as its
claim returns, and the API tells it of the items a cancel took. Such an item is abandoned at
once, downloading or being recorded: its step stops, its temporary file is removed, and it stays
CANCELLED (it is not released); files it had published and catalog rows it had ingested stay.
Its outcome, if it got as far as recording one, changes nothing in the queue.

Shutdown: once `shutdown` is set nothing new is claimed; each item in flight (the one
downloading and the one being recorded) gets up to `shutdown_timeout` seconds to finish, then is
cancelled: its temporary file is removed and it goes back to PENDING without spending a retry.
A file published but not yet recorded as completed is simply downloaded again later (publishing
is idempotent).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.download_steps import Steps, checked_id
from actors.downloader import DownloaderClient
from actors.failures import ItemFailure
from actors.in_flight import InFlight
from actors.messages import Hook, HookFired, WakeProcessor
from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.catalog import CatalogStore
from storage.files import MediaLayout
from storage.queue import ContentType, QueueStore, Status, now

log = logging.getLogger("pezzottify.processor")

CLEANUP_S = 5.0
# The queue-size gauge costs a scan of the status index: refreshed at most this often while
# busy and once on going idle (the stale detector refreshes it periodically as well).
GAUGE_REFRESH_S = 1.0
# A failed attempt's outcome by the item's state after it (CANCELLED: a cancel came first).
OUTCOMES = {Status.RETRY_WAITING: "retry", Status.CANCELLED: "cancelled"}


@dataclass(frozen=True)
class Turn:
    """A claimed item's place in the pipeline of two: it records its outcome once the item
    claimed before it has ended (`previous`); it tells the loop when it is done with the
    downloader (`downloaded`) and when it has ended (`recorded`)."""

    previous: trio.Event
    downloaded: trio.Event = field(default_factory=trio.Event)
    recorded: trio.Event = field(default_factory=trio.Event)

    async def wait_to_record(self) -> None:
        await self.previous.wait()


def _ended() -> trio.Event:
    """The `previous` of the first item: nothing before it."""
    event = trio.Event()
    event.set()
    return event


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
        in_flight: InFlight | None = None,
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
        self.in_flight = in_flight if in_flight is not None else InFlight()
        self.steps = Steps(client, catalog, media, config.max_file_bytes)
        self._idle: trio.CancelScope | None = None
        self._working: set[trio.CancelScope] = set()  # the items in flight (two at most)
        self._gauges_at = -GAUGE_REFRESH_S
        self._dirty = True  # the queue changed since the gauges were last set

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, report ready, process until shutdown.

        If cancelled from outside, the items in flight are released back to PENDING and their
        temporary files removed (bounded, shielded cleanup) before the cancellation goes on.
        """
        await self._recover()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._limit_on_shutdown)
            previous = _ended()  # set once the item claimed last has ended
            while not self.shutdown.is_set():
                item = await self._claim()
                if item is None:
                    await previous.wait()  # its outcome settles the gauges and the next retry
                    if self._dirty:  # settle the gauges once on going idle
                        await self._refresh_gauges(force=True)
                    await self._wait_for_work()
                    continue
                turn = Turn(previous)
                nursery.start_soon(self._process, item, turn)
                # The next claim comes once this item is done with the downloader and the one
                # before it has ended: so this one records while the next downloads. (An item
                # abandoned while downloading does not wait for its turn: it may end first.)
                await turn.downloaded.wait()
                await previous.wait()
                previous = turn.recorded
        if self._dirty:
            await self._refresh_gauges(force=True)

    async def _recover(self) -> None:
        recovery = await self.queue.db.run(self.queue.recover_after_restart, self.clock())
        swept = await self.media.offload.run(self.media.sweep_partials)
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
        for scope in self._working:
            self._grant_shutdown_grace(scope)

    def _grant_shutdown_grace(self, scope: trio.CancelScope) -> None:
        scope.deadline = min(scope.deadline, trio.current_time() + self.shutdown_timeout)

    async def _claim(self) -> sqlite3.Row | None:
        with self.in_flight.claiming():
            claimed = await self.queue.db.run(self.queue.claim, self.clock())
        if claimed.item is not None:
            self.in_flight.claimed(claimed.item["id"])
        self.metrics.capacity_used.labels("hour").set(claimed.capacity["albums_this_hour"])
        self.metrics.capacity_used.labels("day").set(claimed.capacity["albums_today"])
        self.metrics.download_paused.set(int(claimed.paused))
        return claimed.item

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

    async def _process(self, item: sqlite3.Row, turn: Turn) -> None:
        """Fetch, publish and record one claimed item, in its `turn`; released back to the
        queue if this is cancelled first (shutdown past its grace, or the actor cancelled)."""
        started = trio.current_time()
        settled = False
        try:
            with trio.CancelScope() as scope:
                self._working.add(scope)
                if self.shutdown.is_set():
                    self._grant_shutdown_grace(scope)
                outcome = await self._attempt(item, started, turn)
                self._count(item, started, outcome)
                settled = True
        finally:
            self._working.discard(scope)
            turn.downloaded.set()
            if not settled:
                await self._release(item)
            turn.recorded.set()
        await self._refresh_gauges()

    async def _attempt(self, item: sqlite3.Row, started: float, turn: Turn) -> str:
        """Do the item's step and record its outcome ("success", "retry" or "failed"), unless a
        cancel abandons it on the way ("cancelled": its request no longer wants it)."""
        with self.in_flight.working_on(item["id"]):
            try:
                return await self._step(item, started, turn)
            except ItemFailure as failure:
                await turn.wait_to_record()
                return await self._record_failure(item, failure)
        log.info("abandoned %s %s: cancelled", item["content_type"], item["content_id"])
        return "cancelled"

    async def _step(self, item: sqlite3.Row, started: float, turn: Turn) -> str:
        """Do the item's step and record its success, after the item before it; "success"."""
        kind = item["content_type"]
        ident = checked_id(kind, item["content_id"])
        if kind == ContentType.ALBUM.value:
            await turn.wait_to_record()  # an album is not overlapped: all of it comes after
            ingested = await self.steps.album(ident)
            if ingested.catalog_changed:
                self._hook(Hook.OnCatalogChange)
            created = await self.queue.db.run(
                self.queue.create_children, item["id"], list(ingested.children), self.clock()
            )
            log.info("album %s ingested, %d children", ident, created.total)
            album_completed = created.album_completed
        else:
            async with self.steps.receive(kind, ident) as received:
                turn.downloaded.set()  # the next item downloads while this one is recorded
                await turn.wait_to_record()
                saved = await self.steps.publish(kind, ident, received)
            took_ms = int((trio.current_time() - started) * 1000)
            album_completed = await self.queue.db.run(
                self.queue.complete, item["id"], saved.size, took_ms, self.clock()
            )
        if album_completed:
            self._hook(Hook.OnDownloadComplete)
        return "success"

    async def _record_failure(self, item: sqlite3.Row, failure: ItemFailure) -> str:
        status = await self.queue.db.run(
            self.queue.fail,
            item["id"],
            failure.error_type,
            failure.message,
            self.clock(),
            failure.retry_after,
            failure.permanent,
        )
        log.warning(
            "%s %s failed (%s): %s -> %s", item["content_type"], item["content_id"],
            failure.error_type.value, failure.message, status.value,
        )  # fmt: skip
        self.metrics.download_failures.labels(item["content_type"], failure.error_type.value).inc()
        return OUTCOMES.get(status, "failed")

    async def _release(self, item: sqlite3.Row) -> None:
        """Put an item that was interrupted back in the queue (its step removed its temporary
        file on the way out)."""
        with trio.move_on_after(CLEANUP_S, shield=True):
            if await self.queue.db.run(self.queue.release, item["id"], self.clock()):
                log.info("released %s %s back to the queue", item["content_type"],
                         item["content_id"])  # fmt: skip

    def _count(self, item: sqlite3.Row, started: float, outcome: str) -> None:
        kind = item["content_type"]
        self.metrics.download_processed.labels(kind, outcome).inc()
        self.metrics.download_seconds.labels(kind).observe(trio.current_time() - started)
        self._dirty = True

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
