"""Bulk retry: one `POST /v1/download/admin/bulk` retrying 1,000 failed items against one
`POST /v1/download/admin/retry/{id}`.

The daemon runs as the real `pezzottify-server` process with an admin's session; its queue is
seeded before it starts (not measured) with failed albums (FAILED, no children, as an album
whose metadata never came): for each round a batch of 1,000 under a user of its own, so each
bulk call has fresh work and selects its batch by filter (`user`, `status`), and failed albums
for the single retries. The global capacity is 0 and the watchdog off, so the retried albums
stay PENDING and only the calls are measured, over one keep-alive connection on loopback.

Sides, alternated round by round: A, one bulk retry of a batch (the answer is checked: 1,000
matched and changed); B, the median of `singles` single retries, each of another item (one
such call takes a few milliseconds, so one alone would be mostly noise). Figures: A ÷ B, what a
bulk retry of 1,000 costs in single retries; and per item, (A / 1,000) ÷ B.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import services
from bench.common import Pairs, Row, Stats, Target, alternate, ms
from storage.db import Database
from storage.queue import MIGRATIONS
from storage.users import Role
from tests.support.queue_rows import insert_many

NAME = "bulk_retry"
ADMIN = "bench-admin"
SINGLE = "bench-single"
# A bulk retry must cost a small part of retrying its items one call at a time.
PER_ITEM_TARGET = Target("<=", 0.1)


@dataclass(frozen=True)
class Params:
    batch: int = 1_000
    singles: int = 20
    rounds: int = 7


DEFAULT = Params()
SMOKE = Params(batch=50, singles=3, rounds=2)
FAILED = {"status": "FAILED", "error_type": "connection", "error_message": "refused",
          "completed_at": 1_700_000_000, "retry_count": 5}  # fmt: skip


def seed(db_dir: Path, params: Params) -> list[str]:
    """A batch of failed albums per round (and one to warm up) under users `batch-<k>`, and
    failed albums for the single retries; return the latter's ids."""
    db = Database(db_dir / "download_queue.db", MIGRATIONS, synchronous="OFF")
    try:
        for k in range(params.rounds + 1):
            insert_many(db, params.batch, requested_by=f"batch-{k}", **FAILED)
        return insert_many(db, (params.rounds + 1) * params.singles, requested_by=SINGLE, **FAILED)
    finally:
        db.close()


class Calls:
    """The two sides, each call on fresh failed items."""

    def __init__(self, http: httpx.Client, params: Params, singles: list[str]) -> None:
        self.http = http
        self.params = params
        self.singles = iter(singles)
        self.batches = iter(range(params.rounds + 1))

    def bulk(self) -> float:
        body = {"action": "retry", "filter": {"user": f"batch-{next(self.batches)}",
                                              "status": "FAILED"}}  # fmt: skip
        started = time.perf_counter()
        response = self.http.post("/v1/download/admin/bulk", json=body)
        took = time.perf_counter() - started
        expected = {"matched": self.params.batch, "changed": self.params.batch}
        if response.status_code != 200 or response.json() != expected:
            raise RuntimeError(f"bulk retry answered {response.status_code} {response.text}")
        return took

    def single(self) -> float:
        times = []
        for _ in range(self.params.singles):
            item = next(self.singles)
            started = time.perf_counter()
            response = self.http.post(f"/v1/download/admin/retry/{item}")
            times.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"retry answered {response.status_code} {response.text}")
        return statistics.median(times)


def rows(pairs: Pairs, params: Params) -> list[Row]:
    bulk, single = pairs.side_a().median, pairs.side_b().median
    per_item = Stats.of([r / params.batch for r in pairs.ratios])
    detail = f"bulk {ms(bulk)} for {params.batch:,} items vs {ms(single)} per single retry"
    return [
        Row(NAME, f"one bulk retry of {params.batch:,} failed items ÷ one single retry",
            pairs.ratio(), None, detail),
        Row(NAME, "per item: bulk ÷ single retry", per_item, PER_ITEM_TARGET,
            f"{ms(bulk / params.batch)} vs {ms(single)} per item"),
    ]  # fmt: skip


def run(params: Params = DEFAULT) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
        db_dir = Path(tmp)
        singles = seed(db_dir, params)
        token = services.add_session(db_dir, ADMIN, Role.Admin)
        config = services.daemon_config(
            db_dir, "http://127.0.0.1:9", albums_per_hour=0, jobs_off=["integrity_watchdog"]
        )
        with services.daemon(db_dir, config) as proc, httpx.Client(
            base_url=proc.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as http:  # fmt: skip
            calls = Calls(http, params, singles)
            calls.bulk(), calls.single()  # warm up the connection and the caches
            pairs = alternate(calls.bulk, calls.single, params.rounds)
    return rows(pairs, params)
