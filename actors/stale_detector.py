"""The stale detector actor (SPEC §8.8) and the keeper of the queue gauges of SPEC §9.

It looks at start and then every min(60 s, threshold / 2) on an absolute-deadline grid
(`trio.sleep_until`, so a slow check does not make the period drift) for items IN_PROGRESS with
no sign of life for longer than `stale_in_progress_threshold_secs` (an album waiting on its
children counts from its children's latest activity; see `storage.queue.reads`). It sets
`pezzottify_download_stale_in_progress` and logs one warning per item that became stale since
the previous look (and hands the admins' `stale_work` notification to the notifier); an item
that recovers and later goes stale again is warned about again. It only reads: stale work needs
a human, and changing its state here would hide the cause.

Each tick also refreshes `pezzottify_download_queue_size{status,priority}` and
`pezzottify_download_capacity_used{period}`, so those gauges are at most one period old. A
database error on one tick is logged and the next tick tries again.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

import trio

from daemon.metrics import Metrics
from storage.db import StorageError
from storage.queue import QueueAdminStore, StaleItem
from storage.queue import now as wall_now

log = logging.getLogger("pezzottify.stale")
MAX_PERIOD_S = 60.0


class StaleDetector:
    def __init__(
        self,
        store: QueueAdminStore,
        metrics: Metrics,
        threshold_secs: int,
        *,
        clock: Callable[[], int] = wall_now,
        alarm: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.threshold_secs = threshold_secs
        self.clock = clock
        self.alarm = alarm  # the admins' `stale_work` notification (`actors.notifier`)
        self.period = min(MAX_PERIOD_S, threshold_secs / 2)
        self._known: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check now, then once per period, until cancelled (nothing is left behind)."""
        task_status.started()
        deadline = trio.current_time()
        while True:
            try:
                await self.check()
            except (sqlite3.Error, StorageError) as exc:
                log.warning("stale check failed, retrying next period: %s", exc)
            deadline += self.period
            await trio.sleep_until(deadline)

    async def check(self) -> list[StaleItem]:
        """One look: update the gauges, warn about newly stale items, return the stale ones."""
        now = self.clock()
        stale = await self.store.db.run(self.store.stale_items, self.threshold_secs, now)
        self.metrics.stale_in_progress.set(len(stale))
        for item in stale:
            if item.id not in self._known:
                log.warning(
                    "download item %s (%s %s%s) has been IN_PROGRESS without activity for %d s",
                    item.id,
                    item.content_type,
                    item.content_id,
                    f" {item.content_name!r}" if item.content_name else "",
                    now - item.since,
                )
        newly = [item for item in stale if item.id not in self._known]
        if newly and self.alarm is not None:  # the stale gauge rose
            names = ", ".join(item.content_name or item.content_id for item in newly[:5])
            self.alarm(
                "stale_work",
                "Downloads stuck",
                f"{len(stale)} download(s) in progress without activity for over "
                f"{self.threshold_secs} s, newly: {names}.",
            )
        # Forget items that recovered, so a later relapse is reported again.
        self._known = {item.id for item in stale}
        sizes, capacity = await self.store.db.run(self.store.gauges, now)
        for (status, priority), size in sizes.items():
            self.metrics.queue_size.labels(status, str(priority)).set(size)
        for period, used in capacity.items():
            self.metrics.capacity_used.labels(period).set(used)
        return stale
