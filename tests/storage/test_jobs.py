"""The job store (SPEC §7.2): run rows, schedule state, interrupted runs, pruning, popular."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.jobs import INTERRUPTED, JobStore, RunStatus

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore.open(tmp_path / "server.db")
    yield store
    store.db.close()


def test_run_lifecycle_and_report(store: JobStore) -> None:
    run_id = store.start_run("a", "manual", T0, None)
    running = store.get_run(run_id)
    assert running is not None
    assert (running.status, running.finished_at, running.triggered_by) == (
        RunStatus.RUNNING, None, "manual"
    )  # fmt: skip
    store.finish_run(run_id, RunStatus.COMPLETED, T0 + timedelta(seconds=5), None, {"n": 3})
    done = store.get_run(run_id)
    assert done is not None
    assert done.status is RunStatus.COMPLETED
    assert done.started_at == T0 and done.finished_at == T0 + timedelta(seconds=5)
    assert done.report == {"n": 3}


def test_start_run_moves_schedule_state_in_the_same_write(store: JobStore) -> None:
    assert store.schedule_state("a") is None
    store.start_run("a", "schedule", T0, T0 + timedelta(hours=1))
    state = store.schedule_state("a")
    assert state is not None
    assert (state.next_run_at, state.last_run_at) == (T0 + timedelta(hours=1), T0)
    # Setting only next_run_at keeps last_run_at.
    store.set_schedule_state("a", T0 + timedelta(hours=2))
    state = store.schedule_state("a")
    assert state is not None
    assert (state.next_run_at, state.last_run_at) == (T0 + timedelta(hours=2), T0)


def test_history_newest_first_with_paging_and_skips(store: JobStore) -> None:
    ids = [store.start_run("a", "schedule", T0 + timedelta(minutes=i), None) for i in range(5)]
    skipped = store.record_skipped("a", "manual", T0 + timedelta(minutes=4), "busy")
    other = store.start_run("b", "manual", T0, None)
    page = store.history("a", 3, 0)
    assert [r.run_id for r in page] == [skipped, ids[4], ids[3]]
    assert page[0].status is RunStatus.SKIPPED and page[0].error_message == "busy"
    assert page[0].finished_at == page[0].started_at
    assert [r.run_id for r in store.history("a", 3, 3)] == [ids[2], ids[1], ids[0]]
    assert store.history("a", 3, 6) == []
    # last_run ignores skipped triggers: it is the run that actually executed.
    last = store.last_run("a")
    assert last is not None and last.run_id == ids[4]
    assert {k: v.run_id for k, v in store.last_runs().items()} == {"a": ids[4], "b": other}


def test_mark_interrupted_runs_fails_only_running_rows(store: JobStore) -> None:
    left = store.start_run("a", "schedule", T0, None)
    done = store.start_run("b", "schedule", T0, None)
    store.finish_run(done, RunStatus.COMPLETED, T0)
    assert store.mark_interrupted_runs(T0 + timedelta(minutes=1)) == 1
    interrupted = store.get_run(left)
    assert interrupted is not None
    assert interrupted.status is RunStatus.FAILED
    assert interrupted.error_message == INTERRUPTED == "Job was interrupted (server restart)"
    assert interrupted.finished_at == T0 + timedelta(minutes=1)
    finished = store.get_run(done)
    assert finished is not None and finished.status is RunStatus.COMPLETED
    assert store.mark_interrupted_runs(T0) == 0  # idempotent


def test_prune_keeps_the_last_20_per_job_and_recent_runs(store: JobStore) -> None:
    old = T0 - timedelta(days=100)
    for i in range(30):
        run = store.start_run("busy", "schedule", old + timedelta(minutes=i), None)
        store.finish_run(run, RunStatus.COMPLETED, old + timedelta(minutes=i))
    rare = store.start_run("rare", "schedule", old, None)
    store.finish_run(rare, RunStatus.FAILED, old, "boom")
    stuck = store.start_run("stuck", "schedule", old, None)  # still running: never pruned
    recent = store.start_run("busy", "manual", T0, None)
    deleted = store.prune(T0 - timedelta(days=30), keep_last=20)
    # "busy" has 31 rows: the 20 newest stay (the recent one and 19 old ones).
    assert deleted == 11
    busy = store.history("busy", 100)
    assert len(busy) == 20 and busy[0].run_id == recent
    assert [r.run_id for r in store.history("rare", 100)] == [rare]
    assert [r.run_id for r in store.history("stuck", 100)] == [stuck]


def test_popular_content_round_trip(store: JobStore) -> None:
    assert store.load_popular() is None
    albums = [{"id": "x", "name": "X", "artist_names": ["Y"], "play_count": 3}]
    store.save_popular(albums, [], T0)
    store.save_popular(albums, [{"id": "y", "name": "Y", "play_count": 3}], T0 + timedelta(1))
    found = store.load_popular()
    assert found is not None
    assert found.albums == albums
    assert found.artists == [{"id": "y", "name": "Y", "play_count": 3}]
    assert found.computed_at == T0 + timedelta(days=1)


def test_schema_has_the_run_index(store: JobStore) -> None:
    with store.db.read() as conn:
        columns = [r[2] for r in conn.execute("PRAGMA index_info(job_runs_job_started)")]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert columns == ["job_id", "started_at"]
    assert {"job_runs", "job_schedules", "popular_content"} <= tables
