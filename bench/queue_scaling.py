"""Queue scaling: what one item's bookkeeping and a user's queue reads cost as the queue grows.

Claim plus complete is the processor's whole per-item store work, called as it calls it:
promote due retries, read the global capacity, claim the next item, complete it (with its audit
entries, hourly counters and the parent album's settling). Sides: a queue of 1,000 pending
children (albums of 20 tracks) against one of 1,000,000, and against 1,000,000 of which
100,000 are top-priority repairs waiting in RETRY_WAITING (not due). Figure: seconds per
claim-plus-complete, large / small.

Reads, as the routes make them: `queue_position`, a user's newest request read with its position
(`request/{id}`), and that user's `my-requests` page (20 requests, each with its position and
progress, and the user's limits), with 1,000 against 100,000 top-level albums pending ahead; the
user's requests are the newest, so they wait behind the whole queue (the worst case). Figure:
seconds per call, large / small.

Databases are seeded into a temporary folder first (not measured) and used through the real
stores with the daemon's settings (WAL, `synchronous=FULL`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import seed
from bench.common import Row, Target, alternate, ms
from bench.seed import synthetic_id
from daemon.config import DownloadManagerConfig
from storage.db import Database
from storage.queue import MIGRATIONS, QueueStore, RequestStore, now

NAME = "queue_scaling"
TARGET = Target("<=", 1.5)
DM = DownloadManagerConfig(
    max_albums_per_hour=10**9,
    max_albums_per_day=10**9,
    user_max_requests_per_day=10**9,
    user_max_queue_size=10**9,
)
USER = "bench"


@dataclass(frozen=True)
class Params:
    small: int = 1_000
    large: int = 1_000_000
    retry_waiting: int = 100_000
    pending_small: int = 1_000
    pending_large: int = 100_000
    user_requests: int = 20
    ops: int = 150
    reads: int = 30
    rounds: int = 7


DEFAULT = Params()
SMOKE = Params(
    small=100, large=2_000, retry_waiting=200, pending_small=50, pending_large=1_000,
    user_requests=3, ops=5, reads=5, rounds=2,
)  # fmt: skip


class Refill:
    """Puts back as many pending children as the last measurement took (not measured), so a
    queue keeps its length however many rounds run."""

    def __init__(self) -> None:
        self.next_album = 10**7

    def __call__(self, store: QueueStore, taken: int) -> None:
        albums = -(-taken // seed.CHILDREN)
        with store.db.write() as conn:
            seed.add_albums(conn, albums, self.next_album)
        self.next_album += albums


refill = Refill()


def claim_complete(store: QueueStore, ops: int) -> float:
    """Seconds per item of the processor's store work (the queue is refilled afterwards)."""
    refill(store, ops)
    started = time.perf_counter()
    for _ in range(ops):
        at = now()
        claimed = store.claim(at).item
        if claimed is None:
            raise RuntimeError("the queue ran dry; seed more items")
        store.complete(claimed["id"], 256 * 1024, 5, at)
    return (time.perf_counter() - started) / ops


def per_call(fn: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def _queue(path: Path) -> QueueStore:
    return QueueStore(Database(path, MIGRATIONS), DM)


def claims(tmp: Path, params: Params) -> list[Row]:
    due = now() + 30 * 86400
    seed.seed_queue(tmp / "small.db", params.small)
    seed.seed_queue(tmp / "large.db", params.large)
    (tmp / "retry.db").write_bytes((tmp / "large.db").read_bytes())
    seed.convert_to_retry_waiting(tmp / "retry.db", params.retry_waiting, due)
    stores = {name: _queue(tmp / f"{name}.db") for name in ("small", "large", "retry")}
    try:
        for store in stores.values():
            claim_complete(store, max(2, params.ops // 4))  # warm the page cache
        rows = []
        retry = f"{params.large:,} queued, {params.retry_waiting:,} RETRY_WAITING at top priority"
        for name, label in (("large", f"{params.large:,} queued"), ("retry", retry)):
            pairs = alternate(
                lambda name=name: claim_complete(stores[name], params.ops),  # type: ignore[misc]
                lambda: claim_complete(stores["small"], params.ops),
                params.rounds,
            )
            detail = (
                f"{ms(pairs.side_a().median)} vs {ms(pairs.side_b().median)} per item "
                f"({params.small:,} queued)"
            )
            rows.append(Row(NAME, f"claim + complete: {label} ÷ {params.small:,}",
                            pairs.ratio(), TARGET, detail))  # fmt: skip
    finally:
        for store in stores.values():
            store.db.close()
    return rows


def _requests(path: Path, pending: int, params: Params) -> tuple[RequestStore, str]:
    seed.seed_pending_albums(path, pending)
    store = RequestStore(Database(path, MIGRATIONS), DM)
    newest = ""
    for k in range(params.user_requests):
        album = synthetic_id("U", k)
        outcome = store.request_album(USER, album, f"Album {k}", "Artist", now(), False)
        newest = outcome.request_id or newest
    return store, newest


def my_requests(store: RequestStore) -> object:
    return store.my_requests_and_limits(USER, None, 50, 0, now())


def reads(tmp: Path, params: Params) -> list[Row]:
    small, small_id = _requests(tmp / "pending-small.db", params.pending_small, params)
    large, large_id = _requests(tmp / "pending-large.db", params.pending_large, params)
    try:
        cases = {
            "queue_position": (
                lambda: large.item_for_user(large_id, USER),
                lambda: small.item_for_user(small_id, USER),
            ),
            "my-requests": (lambda: my_requests(large), lambda: my_requests(small)),
        }
        rows = []
        for label, (big, little) in cases.items():
            big(), little()  # warm up
            pairs = alternate(
                lambda big=big: per_call(big, params.reads),  # type: ignore[misc]
                lambda little=little: per_call(little, params.reads),  # type: ignore[misc]
                params.rounds,
            )
            detail = f"{ms(pairs.side_a().median)} vs {ms(pairs.side_b().median)} per call"
            measure = f"{label}: {params.pending_large:,} pending ahead ÷ {params.pending_small:,}"
            rows.append(Row(NAME, measure, pairs.ratio(), TARGET, detail))
    finally:
        small.db.close()
        large.db.close()
    return rows


def run(params: Params = DEFAULT) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        return claims(Path(tmp), params) + reads(Path(tmp), params)
