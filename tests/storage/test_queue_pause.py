"""The queue's pause (SPEC §8.10 rev 2): who paused it and why, idempotent pause and resume
with their audit entries, a pause that outlives a restart, and a claim that takes nothing while
paused and everything again once resumed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.db import Database
from storage.queue import MIGRATIONS, ContentType, ErrorType, QueueAdminStore, QueueStore, Source
from tests.support.queue_rows import audit_rows, cid, enqueue

T0 = 1_700_000_000
DM = DownloadManagerConfig(initial_backoff_secs=60)


class Queue:
    """The processor's and the admins' stores over one download_queue.db."""

    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.db = Database(path, MIGRATIONS, synchronous="OFF")
        self.processing = QueueStore(self.db, DM, on_audit=metrics.count_audit_events)
        self.admin = QueueAdminStore(self.db, DM, on_audit=metrics.count_audit_events)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def queue(tmp_path: Path, metrics: Metrics) -> Iterator[Queue]:
    q = Queue(tmp_path / "download_queue.db", metrics)
    yield q
    q.db.close()


def test_a_pause_says_who_when_and_why_and_is_audited_once(queue: Queue, metrics: Metrics) -> None:
    running = {"paused": False, "paused_by": None, "paused_at": None, "reason": None}
    assert queue.admin.pause_state() == running
    paused = {"paused": True, "paused_by": "ops", "paused_at": T0, "reason": "disk swap"}
    assert queue.admin.pause("ops", "disk swap", T0) == paused
    # Pausing again keeps the first pause as it was, and writes nothing.
    assert queue.admin.pause("other", "again", T0 + 5) == paused
    assert queue.admin.stats(T0 + 6)["paused"] == paused
    assert queue.admin.resume("other", T0 + 100) is True
    assert queue.admin.resume("other", T0 + 101) is False  # already running: nothing to do
    assert queue.admin.pause_state() == running
    entries = [e for e in audit_rows(queue.db) if e["event_type"].startswith("QUEUE_")]
    assert [(e["event_type"], e["user"], e["timestamp"]) for e in entries] == [
        ("QUEUE_PAUSED", "ops", T0),
        ("QUEUE_RESUMED", "other", T0 + 100),
    ]
    assert json.loads(entries[0]["details"]) == {"reason": "disk swap"}
    assert json.loads(entries[1]["details"]) == {
        "paused_by": "ops", "paused_at": T0, "reason": "disk swap", "paused_secs": 100,
    }  # fmt: skip
    counted = metrics.registry.get_sample_value
    for event in ("QUEUE_PAUSED", "QUEUE_RESUMED"):
        assert counted("pezzottify_download_audit_events_total", {"event_type": event}) == 1


def test_nothing_is_claimed_while_paused_and_work_resumes_after(queue: Queue) -> None:
    album = enqueue(queue.processing, ContentType.ALBUM, cid(1), T0)
    queue.admin.pause("ops", None, T0)
    claimed = queue.processing.claim(T0 + 1)
    assert (claimed.item, claimed.paused) == (None, True)
    assert queue.admin.audit_for_item(album["id"], T0 + 1)["queue_item"]["status"] == "PENDING"  # type: ignore[index]
    queue.admin.resume("ops", T0 + 2)
    claimed = queue.processing.claim(T0 + 3)
    assert claimed.paused is False
    assert claimed.item is not None and claimed.item["id"] == album["id"]


def test_a_pause_outlives_a_restart(tmp_path: Path, metrics: Metrics) -> None:
    path = tmp_path / "download_queue.db"
    first = Queue(path, metrics)
    enqueue(first.processing, ContentType.ALBUM, cid(1), T0)
    first.admin.pause("ops", "moving house", T0)
    first.db.close()
    again = Queue(path, metrics)
    try:
        assert again.admin.pause_state()["reason"] == "moving house"
        assert again.processing.claim(T0 + 10).item is None
        again.admin.resume("ops", T0 + 20)
        assert again.processing.claim(T0 + 30).item is not None
    finally:
        again.db.close()


def test_due_retries_are_promoted_while_paused_so_the_processor_never_spins(queue: Queue) -> None:
    """A retry due while paused becomes PENDING (and waits, paused) rather than staying due:
    the processor sleeps until the earliest retry is due, and a due one would wake it at once,
    again and again, until the resume."""
    repair = enqueue(queue.processing, ContentType.TRACK_AUDIO, cid(2), T0, source=Source.WATCHDOG)
    assert queue.processing.claim(T0).item is not None
    queue.processing.fail(repair["id"], ErrorType.CONNECTION, "refused", T0)  # due at T0 + 60
    queue.admin.pause("ops", None, T0 + 1)
    assert queue.processing.claim(T0 + 61).item is None
    item = queue.admin.audit_for_item(repair["id"], T0 + 61)["queue_item"]  # type: ignore[index]
    assert item["status"] == "PENDING"
    assert item["wait"] == {"reason": "paused", "until": None}
    assert queue.processing.next_retry_at() is None
