"""`server.db`: background-job runs, per-job schedule state and the stored popular-content result.

Every run is a row (`job_runs`) written when it starts and updated when it ends, so a run left
`running` can only mean its process died; `mark_interrupted_runs` turns those into `failed` at
startup. Triggers refused because the job was already running are rows too (`skipped`), so the
history never hides a lost trigger.

Times are stored as unix seconds (REAL, UTC) and handed out as aware `datetime`s: comparisons and
pruning stay plain numeric SQL, and the API formats them as RFC 3339. Starting a run and moving the
job's `next_run_at` happen in one transaction, so a crash cannot run a scheduled slot twice.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from storage.db import Database

MIGRATIONS = [
    [
        """CREATE TABLE job_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            status TEXT NOT NULL,
            error_message TEXT,
            triggered_by TEXT NOT NULL,
            report TEXT)""",
        "CREATE INDEX job_runs_job_started ON job_runs(job_id, started_at)",
        "CREATE INDEX job_runs_status ON job_runs(status)",
        """CREATE TABLE job_schedules (
            job_id TEXT PRIMARY KEY,
            next_run_at REAL,
            last_run_at REAL)""",
        """CREATE TABLE popular_content (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            computed_at REAL NOT NULL,
            result TEXT NOT NULL)""",
    ],
    [
        # The live events of SPEC §14 (`storage.events`): ids only grow, across restarts and
        # pruning (AUTOINCREMENT never reuses an id).
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            name TEXT NOT NULL,
            audience TEXT NOT NULL,
            owner TEXT,
            data TEXT NOT NULL)""",
        "CREATE INDEX events_at ON events(at)",
        # One row: the newest event id pruned (a client asking to resume from before it gets a
        # `resync`) and the newest queue audit entry already turned into events.
        """CREATE TABLE event_state (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            pruned_through INTEGER NOT NULL,
            audit_cursor INTEGER NOT NULL)""",
        "INSERT INTO event_state VALUES (1, 0, 0)",
    ],
]

INTERRUPTED = "Job was interrupted (server restart)"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class JobRun:
    run_id: int
    job_id: str
    started_at: datetime
    finished_at: datetime | None
    status: RunStatus
    error_message: str | None
    triggered_by: str
    report: dict[str, Any] | None


@dataclass(frozen=True)
class ScheduleState:
    job_id: str
    next_run_at: datetime | None
    last_run_at: datetime | None


@dataclass(frozen=True)
class PopularContent:
    """The last result of the popular-content job: top albums and artists by plays."""

    albums: list[dict[str, Any]]
    artists: list[dict[str, Any]]
    computed_at: datetime


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _run(row: sqlite3.Row) -> JobRun:
    started = _dt(row["started_at"])
    assert started is not None
    return JobRun(
        run_id=row["id"],
        job_id=row["job_id"],
        started_at=started,
        finished_at=_dt(row["finished_at"]),
        status=RunStatus(row["status"]),
        error_message=row["error_message"],
        triggered_by=row["triggered_by"],
        report=json.loads(row["report"]) if row["report"] is not None else None,
    )


# Upsert of the schedule row; `last_run_at` is kept when the new value is NULL.
_SET_SCHEDULE = (
    "INSERT INTO job_schedules (job_id, next_run_at, last_run_at) VALUES (?, ?, ?) "
    "ON CONFLICT (job_id) DO UPDATE SET next_run_at = excluded.next_run_at, "
    "last_run_at = COALESCE(excluded.last_run_at, job_schedules.last_run_at)"
)


class JobStore:
    """Blocking store methods; async callers use `await store.db.run(store.method, ...)`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path) -> JobStore:
        return cls(Database(path, MIGRATIONS))

    # Runs ---------------------------------------------------------------------------------

    def start_run(
        self, job_id: str, triggered_by: str, at: datetime, next_run_at: datetime | None
    ) -> int:
        """Insert a `running` row and record the job's schedule state in the same transaction."""
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT INTO job_runs (job_id, started_at, status, triggered_by) "
                "VALUES (?, ?, ?, ?)",
                (job_id, at.timestamp(), RunStatus.RUNNING.value, triggered_by),
            )
            conn.execute(_SET_SCHEDULE, (job_id, _ts(next_run_at), at.timestamp()))
            return int(cur.lastrowid or 0)

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        at: datetime,
        error_message: str | None = None,
        report: dict[str, Any] | None = None,
    ) -> None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE job_runs SET status = ?, finished_at = ?, error_message = ?, report = ? "
                "WHERE id = ?",
                (
                    status.value,
                    at.timestamp(),
                    error_message,
                    json.dumps(report) if report is not None else None,
                    run_id,
                ),
            )

    def record_skipped(self, job_id: str, triggered_by: str, at: datetime, reason: str) -> int:
        """A trigger that was refused (the job was running): a finished `skipped` row."""
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT INTO job_runs (job_id, started_at, finished_at, status, error_message, "
                "triggered_by) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    at.timestamp(),
                    at.timestamp(),
                    RunStatus.SKIPPED.value,
                    reason,
                    triggered_by,
                ),
            )
            return int(cur.lastrowid or 0)

    def mark_interrupted_runs(self, at: datetime) -> int:
        """Runs left `running` by a process that died become `failed`; return how many."""
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE job_runs SET status = ?, finished_at = ?, error_message = ? "
                "WHERE status = ?",
                (RunStatus.FAILED.value, at.timestamp(), INTERRUPTED, RunStatus.RUNNING.value),
            )
            return cur.rowcount

    def history(self, job_id: str, limit: int, offset: int = 0) -> list[JobRun]:
        """Runs of one job, newest first (ties broken by insertion order)."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM job_runs WHERE job_id = ? ORDER BY started_at DESC, id DESC "
                "LIMIT ? OFFSET ?",
                (job_id, limit, offset),
            ).fetchall()
        return [_run(r) for r in rows]

    def get_run(self, run_id: int) -> JobRun | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM job_runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row is not None else None

    def last_run(self, job_id: str) -> JobRun | None:
        """The most recent run that executed (skipped triggers are left to the history)."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM job_runs WHERE job_id = ? AND status != ? "
                "ORDER BY started_at DESC, id DESC LIMIT 1",
                (job_id, RunStatus.SKIPPED.value),
            ).fetchone()
        return _run(row) if row is not None else None

    def last_runs(self) -> dict[str, JobRun]:
        """`last_run` for every job at once, for the job list."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY job_id "
                "ORDER BY started_at DESC, id DESC) AS rn FROM job_runs WHERE status != ?) "
                "WHERE rn = 1",
                (RunStatus.SKIPPED.value,),
            ).fetchall()
        return {r["job_id"]: _run(r) for r in rows}

    def prune(self, older_than: datetime, keep_last: int = 20) -> int:
        """Delete finished runs started before `older_than`, keeping each job's newest
        `keep_last` rows whatever their age; return how many were deleted."""
        with self.db.write() as conn:
            cur = conn.execute(
                "DELETE FROM job_runs WHERE started_at < ? AND status != ? AND id NOT IN ("
                "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY job_id "
                "ORDER BY started_at DESC, id DESC) AS rn FROM job_runs) WHERE rn <= ?)",
                (older_than.timestamp(), RunStatus.RUNNING.value, keep_last),
            )
            return cur.rowcount

    # Schedule state -------------------------------------------------------------------------

    def schedule_state(self, job_id: str) -> ScheduleState | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM job_schedules WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return ScheduleState(job_id, _dt(row["next_run_at"]), _dt(row["last_run_at"]))

    def set_schedule_state(
        self, job_id: str, next_run_at: datetime | None, last_run_at: datetime | None = None
    ) -> None:
        """Store `next_run_at`; `last_run_at` is only changed when given."""
        with self.db.write() as conn:
            conn.execute(_SET_SCHEDULE, (job_id, _ts(next_run_at), _ts(last_run_at)))

    # Popular content ------------------------------------------------------------------------

    def save_popular(
        self, albums: list[dict[str, Any]], artists: list[dict[str, Any]], computed_at: datetime
    ) -> None:
        result = json.dumps({"albums": albums, "artists": artists})
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO popular_content (id, computed_at, result) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET computed_at = excluded.computed_at, "
                "result = excluded.result",
                (computed_at.timestamp(), result),
            )

    def load_popular(self) -> PopularContent | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT computed_at, result FROM popular_content").fetchone()
        if row is None:
            return None
        result = json.loads(row["result"])
        computed_at = _dt(row["computed_at"])
        assert computed_at is not None
        return PopularContent(result["albums"], result["artists"], computed_at)
