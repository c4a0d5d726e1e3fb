"""The processing side of the download queue: claim order, capacity, children, completion,
retries, recovery, and a claim that stays fast however much waits."""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.db import Database
from storage.queue import (
    MIGRATIONS,
    ChildSpec,
    ContentType,
    ErrorType,
    Priority,
    QueueAdminStore,
    QueueStateError,
    QueueStore,
    Source,
    Status,
)
from tests.support.queue_rows import enqueue

T0 = 1_700_000_000 - 1_700_000_000 % 86400  # midnight UTC
HOUR = 3600
# The global capacity is out of the way, but where a test is about it.
DM = DownloadManagerConfig(
    max_albums_per_hour=1_000,
    max_albums_per_day=1_000,
    max_retries=3,
    initial_backoff_secs=60,
    backoff_multiplier=2.0,
    max_backoff_secs=200,
)


def cid(n: int) -> str:
    return f"{n:022d}"  # digits are base62: a valid content id


def iid(n: int) -> str:
    return f"{n:040x}"


def open_store(
    path: Path, dm: DownloadManagerConfig = DM, metrics: Metrics | None = None
) -> QueueStore:
    counted = (metrics or Metrics()).count_audit_events
    return QueueStore(Database(path, MIGRATIONS, synchronous="OFF"), dm, on_audit=counted)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def store(tmp_path: Path, metrics: Metrics) -> Iterator[QueueStore]:
    queue = open_store(tmp_path / "download_queue.db", metrics=metrics)
    yield queue
    queue.db.close()


def capacity(store: QueueStore, now: int) -> dict[str, Any]:
    """The global capacity as the admin's dashboard shows it."""
    return QueueAdminStore(store.db, store.dm).stats(now)["capacity"]


def row(store: QueueStore, item_id: str) -> Any:
    with store.db.read() as conn:
        return conn.execute("SELECT * FROM queue_items WHERE id = ?", (item_id,)).fetchone()


def events(store: QueueStore, item_id: str) -> list[str]:
    with store.db.read() as conn:
        rows = conn.execute(
            "SELECT event_type FROM audit_log WHERE queue_item_id = ? ORDER BY id", (item_id,)
        )
        return [r[0] for r in rows]


def album_with_children(
    store: QueueStore, n: int = 3, now: int = T0, number: int = 1000
) -> tuple[str, list[str]]:
    """A claimed album with `n` track children; returns (album id, child ids in order)."""
    album = enqueue(store, ContentType.ALBUM, cid(number), now, requested_by="alice")
    claimed = store.claim(now).item
    assert claimed is not None and claimed["id"] == album["id"]
    specs = [ChildSpec(ContentType.TRACK_AUDIO, cid(number * 10 + i), f"t{i}") for i in range(n)]
    store.create_children(album["id"], specs, now)
    with store.db.read() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM queue_items WHERE parent_id = ? ORDER BY seq", (album["id"],)
            )
        ]
    return album["id"], ids


def claim_child(store: QueueStore, child_id: str, now: int = T0) -> None:
    claimed = store.claim(now).item
    assert claimed is not None and claimed["id"] == child_id


# -- claim order -----------------------------------------------------------------------------

top_level = st.tuples(
    st.just("top"),
    st.sampled_from([int(p) for p in Priority]),
    st.sampled_from(list(ContentType)),
    st.integers(0, 5),
)
children = st.tuples(st.just("children"), st.integers(0, 30), st.integers(1, 3), st.integers(0, 5))


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.one_of(top_level, children), min_size=1, max_size=25),
       albums_allowed=st.booleans())  # fmt: skip
def test_claims_follow_a_stable_sort_of_priority_children_age_and_insertion(
    ops: list[tuple[Any, ...]], albums_allowed: bool
) -> None:
    """The processor's `claim`, new albums allowed or not by the capacity: the same order."""
    limit = 1_000 if albums_allowed else 0
    dm = DownloadManagerConfig(max_albums_per_hour=limit, max_albums_per_day=limit)
    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder) / "q.db", dm)
        expected: list[tuple[tuple[int, int, int, int], str]] = []
        parents: list[tuple[str, int]] = []
        serial = 0
        for op in ops:
            if op[0] == "top":
                _, priority, kind, created = op
                serial += 1
                content = iid(serial) if "IMAGE" in kind.value else cid(serial)
                item = enqueue(store, kind, content, T0 + created, priority=priority)
                parents.append((item["id"], priority))
                skip = kind is ContentType.ALBUM and not albums_allowed
                if not skip:
                    expected.append(((priority, 1, T0 + created, len(expected)), item["id"]))
            elif parents:
                _, pick, count, created = op
                parent_id, priority = parents[pick % len(parents)]
                specs = []
                for _ in range(count):
                    serial += 1
                    specs.append(ChildSpec(ContentType.TRACK_AUDIO, cid(serial)))
                store.create_children(parent_id, specs, T0 + created)
                with store.db.read() as conn:
                    new = conn.execute(
                        "SELECT id FROM queue_items WHERE parent_id = ? ORDER BY seq DESC LIMIT ?",
                        (parent_id, count),
                    ).fetchall()
                for (child_id,) in reversed(new):
                    expected.append(((priority, 0, T0 + created, len(expected)), child_id))
        claimed = []
        while (one := store.claim(T0 + 10).item) is not None:
            claimed.append(one["id"])
        store.db.close()
    assert claimed == [item_id for _, item_id in sorted(expected)]


def test_claim_marks_the_item_started_once_and_audits(store: QueueStore) -> None:
    item = enqueue(store, ContentType.TRACK_AUDIO, cid(1), T0, source=Source.WATCHDOG)
    assert store.claim(T0 + 5).item is not None
    store.fail(item["id"], ErrorType.CONNECTION, "refused", T0 + 6)  # due again at T0 + 66
    again = store.claim(T0 + 100).item
    assert again is not None
    assert again["status"] == "IN_PROGRESS"
    assert again["started_at"] == T0 + 5
    assert again["last_attempt_at"] == T0 + 100
    assert events(store, item["id"]) == [
        "REQUEST_CREATED", "DOWNLOAD_STARTED", "RETRY_SCHEDULED", "DOWNLOAD_STARTED",
    ]  # fmt: skip
    assert store.claim(T0 + 100).item is None


def test_the_processors_claim_promotes_due_retries_and_counts_the_album_it_starts(
    store: QueueStore,
) -> None:
    album_id, kids = album_with_children(store, 2)
    enqueue(store, ContentType.ALBUM, cid(7), T0)  # next in line once the children are taken
    retry = enqueue(
        store, ContentType.TRACK_AUDIO, cid(8), T0, priority=Priority.WATCHDOG,
        source=Source.WATCHDOG,
    )  # fmt: skip
    assert store.claim(T0).item["id"] == retry["id"]  # type: ignore[index]
    store.fail(retry["id"], ErrorType.CONNECTION, "refused", T0)  # due at T0 + 60
    first = store.claim(T0 + 60)
    # The due retry was promoted in the same transaction and comes first (higher priority).
    assert first.item is not None and first.item["id"] == retry["id"]
    assert row(store, retry["id"])["status"] == "IN_PROGRESS"
    assert first.capacity["albums_this_hour"] == 1
    taken = [store.claim(T0 + 61).item for _ in kids]
    assert [t["id"] for t in taken if t is not None] == kids  # children before the new album
    assert events(store, kids[0]) == ["DOWNLOAD_STARTED"]
    third = store.claim(T0 + 62)
    assert third.item is not None and third.item["content_type"] == "ALBUM"
    assert third.capacity["albums_this_hour"] == 2  # the album it just started counts
    assert store.claim(T0 + 63).item is None
    assert row(store, album_id)["last_activity_at"] == T0 + 61


# -- capacity ----------------------------------------------------------------------------------


def test_capacity_counts_albums_started_this_hour_and_day(tmp_path: Path) -> None:
    store = open_store(tmp_path / "q.db", replace(DM, max_albums_per_hour=2, max_albums_per_day=3))
    for n in range(4):
        enqueue(store, ContentType.ALBUM, cid(n), T0)
    assert store.claim(T0 + 10).item is not None
    assert store.claim(T0 + 3700).item is not None
    cap = capacity(store, T0 + 3800)
    assert (cap["albums_this_hour"], cap["albums_today"], cap["at_capacity"]) == (1, 2, False)
    assert store.claim(T0 + 3900).item is not None
    cap = capacity(store, T0 + 3950)
    assert (cap["albums_this_hour"], cap["albums_today"], cap["at_capacity"]) == (2, 3, True)
    assert cap["resets_at"] == T0 + 86400  # the daily limit binds
    assert capacity(store, T0 + 86400 + 5)["albums_today"] == 0
    store.db.close()


def test_at_capacity_children_and_repairs_still_claim_but_new_albums_wait(tmp_path: Path) -> None:
    store = open_store(tmp_path / "q.db", replace(DM, max_albums_per_hour=1))
    album_id, (child, *_) = album_with_children(store, 1)  # the hour's one album
    waiting = enqueue(store, ContentType.ALBUM, cid(7), T0)
    repair = enqueue(
        store, ContentType.ALBUM_IMAGE, iid(7), T0 + 1, priority=Priority.WATCHDOG,
        source=Source.WATCHDOG,
    )  # fmt: skip
    first = store.claim(T0 + 2).item
    second = store.claim(T0 + 2).item
    assert first is not None and first["id"] == repair["id"]
    assert second is not None and second["id"] == child
    assert store.claim(T0 + 2).item is None
    assert row(store, waiting["id"])["status"] == "PENDING"
    later = store.claim(T0 + 2 + HOUR).item  # the next hour has room
    assert later is not None and later["id"] == waiting["id"]
    assert album_id != waiting["id"]
    store.db.close()


# -- children and completion -------------------------------------------------------------------


def test_children_are_created_once_and_inherit_from_the_album(store: QueueStore) -> None:
    album = enqueue(
        store, ContentType.ALBUM, cid(1), T0, priority=Priority.EXPANSION,
        source=Source.EXPANSION, requested_by="bob",
    )  # fmt: skip
    store.claim(T0)
    specs = [
        ChildSpec(ContentType.TRACK_AUDIO, cid(2), "song", "band"),
        ChildSpec(ContentType.ALBUM_IMAGE, iid(3)),
        ChildSpec(ContentType.ARTIST_IMAGE, iid(4)),
    ]
    first = store.create_children(album["id"], specs, T0 + 1)
    again = store.create_children(album["id"], [*specs, specs[0]], T0 + 2)
    assert (first.created, first.total, first.album_completed) == (3, 3, False)
    assert (again.created, again.total) == (0, 3)
    with store.db.read() as conn:
        kids = conn.execute(
            "SELECT * FROM queue_items WHERE parent_id = ? ORDER BY seq", (album["id"],)
        ).fetchall()
    assert [(k["content_type"], k["content_id"]) for k in kids] == [
        (s.content_type.value, s.content_id) for s in specs
    ]
    for kid in kids:
        assert (kid["priority"], kid["request_source"], kid["requested_by"]) == (
            3,
            "EXPANSION",
            "bob",
        )
        assert kid["status"] == "PENDING" and kid["max_retries"] == DM.max_retries
    assert kids[0]["content_name"] == "song" and kids[0]["artist_name"] == "band"
    assert row(store, album["id"])["children_created"] == 1
    assert events(store, album["id"]).count("CHILDREN_CREATED") == 2


def test_an_album_completes_when_its_last_child_does(store: QueueStore) -> None:
    album_id, kids = album_with_children(store, 3)
    results = []
    for n, kid in enumerate(kids):
        claim_child(store, kid, T0 + 10)
        results.append(store.complete(kid, 100 + n, 5, T0 + 20))
        assert row(store, album_id)["status"] == ("COMPLETED" if n == 2 else "IN_PROGRESS")
    assert results == [False, False, True]
    album = row(store, album_id)
    assert album["bytes_downloaded"] == 303
    assert album["completed_at"] == T0 + 20
    assert album["processing_duration_ms"] == 20_000
    assert events(store, album_id)[-1] == "DOWNLOAD_COMPLETED"
    with store.db.read() as conn:
        hour = conn.execute("SELECT * FROM activity_hourly").fetchone()
    assert (hour["hour"], hour["albums"], hour["tracks"], hour["bytes"]) == (T0, 1, 3, 303)


def test_completions_settle_their_albums_and_count_the_hour(store: QueueStore) -> None:
    first, first_kids = album_with_children(store, 2)
    for kid in first_kids:
        claim_child(store, kid, T0 + 10)
    second, second_kids = album_with_children(store, 3, number=2000)
    for kid in second_kids:
        claim_child(store, kid, T0 + 10)
    done = [store.complete(kid, 100, 5, T0 + 20) for kid in [*first_kids, *second_kids[:2]]]
    assert done == [False, True, False, False]  # the first album, not the second
    assert row(store, first)["status"] == "COMPLETED"
    assert row(store, second)["status"] == "IN_PROGRESS"
    assert [row(store, kid)["status"] for kid in second_kids] == [
        "COMPLETED", "COMPLETED", "IN_PROGRESS",
    ]  # fmt: skip
    assert all(events(store, kid)[-1] == "DOWNLOAD_COMPLETED" for kid in first_kids)
    assert row(store, first)["bytes_downloaded"] == 200
    assert row(store, second)["last_activity_at"] == T0 + 20
    assert events(store, first)[-1] == "DOWNLOAD_COMPLETED"
    with store.db.read() as conn:
        hour = conn.execute("SELECT albums, tracks, images, bytes FROM activity_hourly").fetchone()
    assert tuple(hour) == (1, 4, 0, 400)
    # An item that is not IN_PROGRESS any more is refused, and nothing is recorded.
    with pytest.raises(QueueStateError):
        store.complete(first_kids[0], 1, 1, T0 + 30)
    assert events(store, first_kids[0]).count("DOWNLOAD_COMPLETED") == 1
    assert row(store, first)["bytes_downloaded"] == 200


def test_an_album_with_nothing_to_fetch_completes_at_once(store: QueueStore) -> None:
    album = enqueue(store, ContentType.ALBUM, cid(1), T0)
    store.claim(T0)
    assert store.create_children(album["id"], [], T0 + 1).album_completed
    assert row(store, album["id"])["status"] == "COMPLETED"


def test_a_failed_child_fails_the_album_once_all_children_are_terminal(store: QueueStore) -> None:
    album_id, (a, b, c) = album_with_children(store, 3)
    claim_child(store, a)
    assert store.fail(a, ErrorType.NOT_FOUND, "gone", T0 + 1) is Status.FAILED
    assert row(store, album_id)["status"] == "IN_PROGRESS"
    claim_child(store, b)
    store.complete(b, 10, 1, T0 + 2)
    claim_child(store, c)
    assert store.complete(c, 10, 1, T0 + 3) is False
    album = row(store, album_id)
    assert (album["status"], album["error_message"]) == ("FAILED", "1 of 3 children failed")
    assert album["error_type"] == "not_found"
    failed = row(store, a)
    assert (failed["error_type"], failed["error_message"], failed["retry_count"]) == (
        "not_found", "gone", 0,
    )  # fmt: skip
    assert events(store, album_id)[-1] == "DOWNLOAD_FAILED"


@pytest.mark.parametrize("error", [ErrorType.NOT_FOUND, ErrorType.BAD_REQUEST])
def test_permanent_errors_fail_at_once(store: QueueStore, error: ErrorType) -> None:
    item = enqueue(store, ContentType.ALBUM, cid(1), T0)
    store.claim(T0)
    assert store.fail(item["id"], error, "no", T0 + 1) is Status.FAILED
    failed = row(store, item["id"])
    assert (failed["status"], failed["next_retry_at"], failed["completed_at"]) == (
        "FAILED", None, T0 + 1,
    )  # fmt: skip
    with store.db.read() as conn:
        assert conn.execute("SELECT failed FROM activity_hourly").fetchone()[0] == 1


# -- retries -----------------------------------------------------------------------------------


def test_backoff_grows_then_caps_and_the_item_fails_after_max_retries(store: QueueStore) -> None:
    item = enqueue(store, ContentType.ALBUM, cid(1), T0)
    now, waits = T0, []
    for _ in range(DM.max_retries):
        assert store.claim(now).item is not None  # due now: promoted and claimed
        assert store.fail(item["id"], ErrorType.CONNECTION, "refused", now) is Status.RETRY_WAITING
        due = row(store, item["id"])["next_retry_at"]
        waits.append(due - now)
        assert store.next_retry_at() == due
        assert store.claim(due - 1).item is None  # not due yet
        now = due
    assert waits == [60, 120, 200]  # 60 * 2^k, capped at 200
    assert row(store, item["id"])["retry_count"] == 3
    store.claim(now)
    assert store.fail(item["id"], ErrorType.TIMEOUT, "slow", now) is Status.FAILED
    failed = row(store, item["id"])
    assert (failed["status"], failed["error_type"], failed["retry_count"]) == (
        "FAILED",
        "timeout",
        3,
    )
    assert store.next_retry_at() is None


@pytest.mark.parametrize(("retry_after", "wait"), [(None, 5), (30.0, 30), (0.2, 1), (math.nan, 5)])
def test_rate_limited_waits_without_spending_a_retry(
    store: QueueStore, retry_after: float | None, wait: int
) -> None:
    item = enqueue(store, ContentType.ALBUM, cid(1), T0)
    for attempt in range(10):  # many more 429s than max_retries
        now = T0 + attempt * 100
        assert store.claim(now).item is not None
        status = store.fail(item["id"], ErrorType.RATE_LIMITED, "busy", now, retry_after)
        assert status is Status.RETRY_WAITING
        waiting = row(store, item["id"])
        assert (waiting["retry_count"], waiting["next_retry_at"]) == (0, now + wait)
    with store.db.read() as conn:
        details = conn.execute(
            "SELECT details FROM audit_log WHERE event_type = 'RETRY_SCHEDULED' LIMIT 1"
        ).fetchone()[0]
    assert json.loads(details)["error_type"] == "rate_limited"


@pytest.mark.parametrize("retry_after", [1e7, 1e300, math.inf])
def test_a_rate_limit_waits_no_longer_than_the_longest_backoff(
    store: QueueStore, retry_after: float
) -> None:
    # Whatever the downloader answers, the item comes back within max_backoff_secs.
    item = enqueue(store, ContentType.ALBUM, cid(1), T0)
    store.claim(T0)
    status = store.fail(item["id"], ErrorType.RATE_LIMITED, "busy", T0, retry_after)
    assert status is Status.RETRY_WAITING
    assert row(store, item["id"])["next_retry_at"] == T0 + DM.max_backoff_secs
    assert store.next_retry_at() == T0 + DM.max_backoff_secs


def test_transitions_refuse_items_that_are_not_in_progress(store: QueueStore) -> None:
    item = enqueue(store, ContentType.ALBUM, cid(1), T0)
    with pytest.raises(QueueStateError):
        store.complete(item["id"], 1, 1, T0)
    with pytest.raises(QueueStateError):
        store.fail(str(uuid.uuid4()), ErrorType.PARSE, "x", T0)
    assert row(store, item["id"])["status"] == "PENDING"


# -- release and recovery ----------------------------------------------------------------------


def test_release_puts_the_item_back_without_spending_a_retry(store: QueueStore) -> None:
    item = enqueue(store, ContentType.TRACK_AUDIO, cid(1), T0)
    store.claim(T0)
    assert store.release(item["id"], T0 + 1) is True
    back = row(store, item["id"])
    assert (back["status"], back["retry_count"]) == ("PENDING", 0)
    assert store.release(item["id"], T0 + 2) is False  # not in progress any more
    assert events(store, item["id"])[-1] == "RECOVERED_AFTER_RESTART"


def snapshot(store: QueueStore) -> tuple[list[tuple[Any, ...]], int]:
    with store.db.read() as conn:
        rows = [tuple(r) for r in conn.execute("SELECT * FROM queue_items ORDER BY seq")]
        audits = conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    return rows, audits


def test_recovery_requeues_interrupted_work_and_is_idempotent(store: QueueStore) -> None:
    bare = enqueue(store, ContentType.ALBUM, cid(3000), T0)
    store.claim(T0)
    finished_album, (last,) = album_with_children(store, 1, number=1001)
    claim_child(store, last)
    with store.db.write() as conn:  # the process died between the child's and album's updates
        conn.execute("UPDATE queue_items SET status = 'COMPLETED', bytes_downloaded = 9 "
                     "WHERE id = ?", (last,))  # fmt: skip
    busy_album, (done, running, waiting) = album_with_children(store, 3)
    claim_child(store, done)
    store.complete(done, 5, 1, T0)
    claim_child(store, running)

    first = store.recover_after_restart(T0 + 50)
    after_first = snapshot(store)
    second = store.recover_after_restart(T0 + 60)

    assert (first.recovered, first.albums_completed) == (2, 1)
    assert (second.recovered, second.albums_completed) == (0, 0)
    assert snapshot(store) == after_first
    assert row(store, running)["status"] == "PENDING"
    assert row(store, bare["id"])["status"] == "PENDING"
    assert row(store, busy_album)["status"] == "IN_PROGRESS"
    assert row(store, waiting)["status"] == "PENDING"
    finished = row(store, finished_album)
    assert (finished["status"], finished["bytes_downloaded"]) == ("COMPLETED", 9)
    assert events(store, running)[-1] == "RECOVERED_AFTER_RESTART"


# -- gauges, metrics -----------------------------------------------------------------------------


def test_status_counts_and_audit_metrics(store: QueueStore, metrics: Metrics) -> None:
    album_with_children(store, 2)
    enqueue(store, ContentType.ALBUM, cid(1), T0, priority=Priority.EXPANSION)
    counts = store.status_counts()
    assert counts[("PENDING", 2)] == 2
    assert counts[("IN_PROGRESS", 2)] == 1
    assert counts[("PENDING", 3)] == 1
    assert counts[("FAILED", 1)] == 0
    sample = metrics.registry.get_sample_value
    assert sample("pezzottify_download_audit_events_total", {"event_type": "REQUEST_CREATED"}) == 2
    assert sample("pezzottify_download_audit_events_total", {"event_type": "CHILDREN_CREATED"}) == 1


# -- a claim stays fast ----------------------------------------------------------------------------


def median_claim_seconds(store: QueueStore, ready: int = 30) -> float:
    for n in range(ready):
        enqueue(store, ContentType.TRACK_AUDIO, cid(900_000 + n), T0, priority=Priority.WATCHDOG,
                source=Source.WATCHDOG)  # fmt: skip
    timings = []
    for _ in range(ready):
        start = time.perf_counter()
        assert store.claim(T0).item is not None
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def test_claim_time_does_not_grow_with_waiting_items(tmp_path: Path) -> None:
    used_up = replace(DM, max_albums_per_hour=0)  # the pending albums wait: only repairs go
    small = open_store(tmp_path / "small.db", used_up)
    big = open_store(tmp_path / "big.db", used_up)
    with big.db.write() as conn:  # 100k waiting retries and 50k pending albums, ahead of all
        conn.execute(
            """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 149999)
                INSERT INTO queue_items (id, status, priority, content_type, content_id,
                    request_source, created_at, max_retries, next_retry_at)
                SELECT 'bulk-' || i, IIF(i < 100000, 'RETRY_WAITING', 'PENDING'), 1, 'ALBUM',
                    printf('%022d', i), 'USER', ?, 5, IIF(i < 100000, ?, NULL) FROM n""",
            (T0 - 10, T0 + 3600),
        )
    # Each claim also promotes the retries that are due (none of the 100k is).
    baseline = median_claim_seconds(small)
    with_waiting = median_claim_seconds(big)
    assert with_waiting < max(baseline * 10, 0.001), (baseline, with_waiting)
    assert big.next_retry_at() == T0 + 3600
    assert big.status_counts()[("RETRY_WAITING", 1)] == 100_000
    small.db.close()
    big.db.close()


# -- the watchdog giving up (SPEC §8.9) ----------------------------------------------------------


def marks(store: QueueStore) -> list[tuple[str, str, int, str]]:
    with store.db.read() as conn:
        rows = conn.execute(
            "SELECT content_type, content_id, marked_at, queue_item_id FROM unavailable_content"
        )
        return [tuple(r) for r in rows]


def failed_repair(store: QueueStore, error: ErrorType, track: str = cid(5), now: int = T0) -> str:
    """A repair of `track`'s audio, claimed and failed once with `error`; returns its id."""
    item = enqueue(
        store, ContentType.TRACK_AUDIO, track, now, priority=Priority.WATCHDOG,
        source=Source.WATCHDOG,
    )  # fmt: skip
    assert store.claim(now).item is not None
    store.fail(item["id"], error, "no audio for this track", now + 1)
    return str(item["id"])


def test_a_repair_failing_not_found_marks_its_content_with_one_gave_up_entry(
    store: QueueStore, metrics: Metrics
) -> None:
    repair = failed_repair(store, ErrorType.NOT_FOUND)
    assert row(store, repair)["status"] == "FAILED"
    assert marks(store) == [("TRACK_AUDIO", cid(5), T0 + 1, repair)]
    assert events(store, repair)[-2:] == ["DOWNLOAD_FAILED", "WATCHDOG_GAVE_UP"]
    with store.db.read() as conn:
        details = conn.execute(
            "SELECT details FROM audit_log WHERE event_type = 'WATCHDOG_GAVE_UP'"
        ).fetchone()[0]
    assert json.loads(details) == {
        "error_message": "no audio for this track",
        "recheck_after": T0 + 1 + 7 * 86400,
    }
    sample = metrics.registry.get_sample_value
    assert sample("pezzottify_download_audit_events_total", {"event_type": "WATCHDOG_GAVE_UP"}) == 1
    # A later repair that fails the same way renews the mark, with a decision of its own.
    again = failed_repair(store, ErrorType.NOT_FOUND, now=T0 + 8 * 86400)
    assert marks(store) == [("TRACK_AUDIO", cid(5), T0 + 8 * 86400 + 1, again)]
    assert events(store, again).count("WATCHDOG_GAVE_UP") == 1
    assert events(store, repair).count("WATCHDOG_GAVE_UP") == 1


@pytest.mark.parametrize("error", [ErrorType.BAD_REQUEST, ErrorType.PARSE, ErrorType.CONNECTION])
def test_a_repair_failing_otherwise_never_marks(tmp_path: Path, error: ErrorType) -> None:
    store = open_store(tmp_path / "q.db", DownloadManagerConfig(max_retries=0))
    repair = failed_repair(store, error)
    assert row(store, repair)["status"] == "FAILED"
    assert marks(store) == []
    assert "WATCHDOG_GAVE_UP" not in events(store, repair)
    store.db.close()


def test_a_users_request_failing_not_found_does_not_mark(store: QueueStore) -> None:
    single = enqueue(store, ContentType.TRACK_AUDIO, cid(5), T0, requested_by="alice")
    store.claim(T0)
    store.fail(single["id"], ErrorType.NOT_FOUND, "gone", T0)
    _, children = album_with_children(store, 1)
    claim_child(store, children[0])
    store.fail(children[0], ErrorType.NOT_FOUND, "gone", T0)
    assert marks(store) == []


def test_with_zero_recheck_days_the_watchdog_never_gives_up(tmp_path: Path) -> None:
    store = open_store(tmp_path / "q.db", DownloadManagerConfig(unavailable_recheck_days=0))
    repair = failed_repair(store, ErrorType.NOT_FOUND)
    assert row(store, repair)["status"] == "FAILED"
    assert marks(store) == []
    assert "WATCHDOG_GAVE_UP" not in events(store, repair)
    store.db.close()


def test_a_download_of_marked_content_drops_the_mark(store: QueueStore) -> None:
    failed_repair(store, ErrorType.NOT_FOUND, track=cid(10_000))
    failed_repair(store, ErrorType.NOT_FOUND, track=cid(77))
    # The album's download has the track after all (the downloader found it again).
    _, children = album_with_children(store, 1, number=1000)
    claim_child(store, children[0])
    store.complete(children[0], 10, 5, T0 + 2)
    assert [(kind, track) for kind, track, _, _ in marks(store)] == [("TRACK_AUDIO", cid(77))]
