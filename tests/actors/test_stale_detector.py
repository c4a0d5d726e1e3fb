"""The stale detector: gauge, one warning per newly stale item, no state change, gauges of §9.

Store calls run inline (not in worker threads) so the autojump clock moves only when the detector
really sleeps; the wall clock the detector sees advances with trio's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from actors.stale_detector import StaleDetector
from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.queue import QueueAdminStore
from tests.support.queue_rows import BASE, insert, open_store, row

THRESHOLD = 60  # so the period is 30 s


class InlineDb:
    def __init__(self, calls: list[float]) -> None:
        self.calls = calls

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.calls.append(trio.current_time())
        return fn(*args)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[QueueAdminStore]:
    store = open_store(tmp_path, DownloadManagerConfig(max_albums_per_hour=4))
    yield store
    store.db.close()


def detector(store: QueueAdminStore, metrics: Metrics, calls: list[float]) -> StaleDetector:
    start = trio.current_time()
    inline = SimpleNamespace(db=InlineDb(calls), stale_items=store.stale_items, gauges=store.gauges)
    return StaleDetector(
        inline,  # type: ignore[arg-type]
        metrics,
        THRESHOLD,
        clock=lambda: BASE + int(trio.current_time() - start),
    )


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pezzottify.stale" and r.levelno == logging.WARNING
    ]


async def test_stale_item_raises_the_gauge_once_and_changes_nothing(
    autojump_clock: Any, store: QueueAdminStore, caplog: pytest.LogCaptureFixture
) -> None:
    metrics, calls = Metrics(), []
    item = insert(
        store.db,
        status="IN_PROGRESS",
        content_type="TRACK_AUDIO",
        started_at=BASE - 50,
        last_attempt_at=BASE - 50,
        last_activity_at=BASE - 50,
    )
    before = row(store.db, item)
    async with trio.open_nursery() as nursery:
        await nursery.start(detector(store, metrics, calls).run)
        await trio.sleep(1)
        assert gauge(metrics, "pezzottify_download_stale_in_progress") == 0  # 51 s: not yet
        await trio.sleep(30)
        assert gauge(metrics, "pezzottify_download_stale_in_progress") == 1  # 80 s
        await trio.sleep(90)
        assert gauge(metrics, "pezzottify_download_stale_in_progress") == 1
        nursery.cancel_scope.cancel()
    stale_warnings = warnings(caplog)
    assert len(stale_warnings) == 1 and item in stale_warnings[0]
    assert row(store.db, item) == before


async def test_checks_on_an_absolute_grid_of_half_the_threshold(
    autojump_clock: Any, store: QueueAdminStore
) -> None:
    calls: list[float] = []
    start = trio.current_time()
    with trio.move_on_after(100):
        await detector(store, Metrics(), calls).run()
    # Two store calls per check (stale items, gauges), at 0, 30, 60, 90 s.
    assert [round(t - start, 6) for t in calls[::2]] == [0, 30, 60, 90]
    assert StaleDetector(store, Metrics(), 3600).period == 60


async def test_recovered_item_leaves_and_a_relapse_warns_again(
    autojump_clock: Any, store: QueueAdminStore, caplog: pytest.LogCaptureFixture
) -> None:
    metrics, calls = Metrics(), []
    album = insert(store.db, status="IN_PROGRESS", started_at=BASE - 500, children_created=1)
    child = insert(
        store.db,
        parent_id=album,
        status="IN_PROGRESS",
        content_type="TRACK_AUDIO",
        started_at=BASE - 500,
        last_activity_at=BASE - 500,
    )
    watcher = detector(store, metrics, calls)
    assert {s.id for s in await watcher.check()} == {album, child}
    # The child finishes: the album counts from that activity and is no longer stale.
    with store.db.write() as conn:
        conn.execute(
            "UPDATE queue_items SET status = 'COMPLETED', completed_at = ? WHERE id = ?",
            (watcher.clock(), child),
        )
    assert await watcher.check() == []
    assert gauge(metrics, "pezzottify_download_stale_in_progress") == 0
    await trio.sleep(THRESHOLD + 1)
    assert [s.id for s in await watcher.check()] == [album]
    assert len(warnings(caplog)) == 3  # album, child, then the album again
    assert row(store.db, album)["status"] == "IN_PROGRESS"


async def test_each_check_refreshes_queue_size_and_capacity_gauges(
    autojump_clock: Any, store: QueueAdminStore
) -> None:
    metrics = Metrics()
    insert(store.db, status="PENDING", priority=1, content_type="TRACK_AUDIO")
    insert(store.db, status="IN_PROGRESS", started_at=BASE)
    watcher = detector(store, metrics, [])
    await watcher.check()
    size = "pezzottify_download_queue_size"
    assert gauge(metrics, size, status="PENDING", priority="1") == 1
    assert gauge(metrics, size, status="IN_PROGRESS", priority="2") == 1
    assert gauge(metrics, size, status="FAILED", priority="3") == 0
    assert gauge(metrics, "pezzottify_download_capacity_used", period="hour") == 1
    assert gauge(metrics, "pezzottify_download_capacity_used", period="day") == 1
    with store.db.write() as conn:
        conn.execute("UPDATE queue_items SET status = 'COMPLETED' WHERE priority = 1")
    await watcher.check()
    assert gauge(metrics, size, status="PENDING", priority="1") == 0
    assert gauge(metrics, size, status="COMPLETED", priority="1") == 1
