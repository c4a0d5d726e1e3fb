"""The notifier actor (SPEC §16 rev 2) under trio's autojump clock: when a failing target is tried
again (5 s, then 4 times later each time), when it is given up on (`max_attempts`) and what is
recorded, retries to the failed URLs only, a user's own URLs and events, operator events handed
to the bell, and the shutdown grace for a delivery in flight.

The outbox is the real one (download_queue.db, calls run inline); the transport is a fake that
answers as scripted and notes when it was called, in virtual time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio

from actors.notifier import NoticeBell, Notifier
from actors.notify_urls import NotificationSettings, masked
from daemon.config import DownloadManagerConfig
from daemon.metrics import Metrics
from storage.db import Database
from storage.offload import Offload
from storage.queue import MIGRATIONS, ChildSpec, ContentType, QueueStore, RequestStore
from storage.queue.notices import NoticeStore
from storage.users import MIGRATIONS as USER_MIGRATIONS
from storage.users import UserStore
from tests.support.queue_rows import BASE, cid

ADMIN_A = "json://admins.example/a"
ADMIN_B = "json://admins.example/b"
ALICE_URL = "ntfys://alice-topic"


@dataclass
class Transport:
    """Answers each URL's sends from its script ("ok", an error, or a delay then "ok"); notes
    (virtual time, url, title) of every call."""

    scripts: dict[str, list[str | float]] = field(default_factory=dict)
    calls: list[tuple[float, str, str]] = field(default_factory=list)
    default: str = "ok"

    async def __call__(self, url: str, title: str, body: str, timeout_sec: float) -> str | None:
        self.calls.append((trio.current_time(), url, title))
        script = self.scripts.get(url, [])
        answer = script.pop(0) if script else self.default
        if isinstance(answer, float):
            await trio.sleep(answer)  # a slow target
            return None
        return None if answer == "ok" else answer

    def times(self, url: str) -> list[float]:
        return [at for at, to, _ in self.calls if to == url]


@dataclass
class Rig:
    notices: NoticeStore
    queue: QueueStore
    requests: RequestStore
    users: UserStore
    bell: NoticeBell
    metrics: Metrics
    transport: Transport

    def notifier(self, settings: NotificationSettings, shutdown: trio.Event) -> Notifier:
        return Notifier(
            self.notices, self.users, self.bell, settings, self.metrics, shutdown=shutdown,
            shutdown_timeout=5, clock=lambda: BASE + trio.current_time(),
            transport=self.transport,
        )  # fmt: skip

    def alarm(self, event: str = "disk_trouble") -> None:
        """An operator event committed now (virtual time); the bell rings as after a commit."""
        assert self.notices.alarm(event, event, f"{event} happened", self.wall())
        self.bell.ring()

    def wall(self) -> int:
        return BASE + int(trio.current_time())

    def outbox(self) -> list[dict[str, object]]:
        with self.notices.db.read() as conn:
            return [dict(row) for row in conn.execute("SELECT * FROM outbox ORDER BY id")]

    def counted(self, result: str) -> float:
        sample = self.metrics.registry.get_sample_value
        return sample("pezzottify_notifications_total", {"result": result}) or 0.0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    inline = Offload.inline()
    queue_db = Database(tmp_path / "download_queue.db", MIGRATIONS, offload=inline)
    users = UserStore(Database(tmp_path / "user.db", USER_MIGRATIONS, offload=inline))
    dm = DownloadManagerConfig()
    yield Rig(
        NoticeStore(queue_db, dm), QueueStore(queue_db, dm), RequestStore(queue_db, dm), users,
        NoticeBell(), Metrics(), Transport(),
    )  # fmt: skip
    queue_db.close()
    users.db.close()


@asynccontextmanager
async def running(rig: Rig, settings: NotificationSettings) -> AsyncIterator[trio.Event]:
    """The notifier running; yields its shutdown event, set (and the notifier awaited) at the
    end unless the test did."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.notifier(settings, shutdown).run)
        yield shutdown
        shutdown.set()


def admins(*urls: str, max_attempts: int = 5) -> NotificationSettings:
    return NotificationSettings(admin_urls=urls, max_attempts=max_attempts)


@pytest.mark.parametrize(
    ("max_attempts", "tried_at"),
    [(1, [0.0]), (2, [0.0, 5.0]), (5, [0.0, 5.0, 25.0, 105.0, 425.0])],
)
async def test_a_failing_target_is_tried_after_5_s_then_4_times_later_until_max_attempts(
    autojump_clock: trio.abc.Clock, rig: Rig, max_attempts: int, tried_at: list[float]
) -> None:
    rig.transport.default = "the target refused or did not answer"
    async with running(rig, admins(ADMIN_A, max_attempts=max_attempts)):
        rig.alarm()
        await trio.sleep(5000)  # far beyond the last retry: nothing more is tried
    assert rig.transport.times(ADMIN_A) == tried_at
    [row] = rig.outbox()
    assert (row["state"], row["attempts"]) == ("failed", max_attempts)
    assert row["finished_at"] == BASE + int(tried_at[-1])
    # The admins' list shows it, with why (the URL masked), and the metric counts each try.
    failed = rig.notices.failed(10, 0)
    assert failed["total"] == 1
    [shown] = failed["items"]
    assert (shown["event"], shown["user"], shown["attempts"]) == (
        "disk_trouble",
        None,
        max_attempts,
    )
    assert shown["last_error"] == f"{masked(ADMIN_A)}: the target refused or did not answer"
    assert (rig.counted("retried"), rig.counted("failed")) == (max_attempts - 1, 1)
    assert rig.counted("sent") == 0


async def test_a_retry_goes_only_to_the_url_that_failed(
    autojump_clock: trio.abc.Clock, rig: Rig
) -> None:
    rig.transport.scripts[ADMIN_B] = ["HTTP 500", "HTTP 500"]
    async with running(rig, admins(ADMIN_A, ADMIN_B)):
        rig.alarm()
        await trio.sleep(600)
    assert rig.transport.times(ADMIN_A) == [0.0]  # delivered once, never again
    assert rig.transport.times(ADMIN_B) == [0.0, 5.0, 25.0]  # two refusals, then delivered
    [row] = rig.outbox()
    assert (row["state"], row["attempts"], row["last_error"]) == ("sent", 3, None)
    assert (rig.counted("retried"), rig.counted("sent")) == (2, 1)


async def test_a_working_target_hears_at_once_and_one_dead_target_delays_no_other(
    autojump_clock: trio.abc.Clock, rig: Rig
) -> None:
    """A target that takes its whole timeout holds only its own notification: the next one,
    committed meanwhile, is delivered at once."""
    rig.transport.scripts[ADMIN_A] = [30.0]  # answers after 30 s
    async with running(rig, admins(ADMIN_A)):
        rig.alarm("disk_trouble")
        await trio.sleep(1)
        rig.alarm("queue.paused")
        await trio.sleep(60)
    assert [(at, title) for at, _, title in rig.transport.calls] == [
        (0.0, "disk_trouble"), (1.0, "queue.paused"),
    ]  # fmt: skip
    assert [row["state"] for row in rig.outbox()] == ["sent", "sent"]


async def test_a_burst_of_commits_is_answered_once_a_quarter_second_and_nothing_is_lost(
    autojump_clock: trio.abc.Clock, rig: Rig
) -> None:
    """A queue that drains fast rings after every commit: the notifier answers the first ring at
    once and the rest of the burst together, a quarter of a second later."""
    events = ["disk_trouble", "queue.paused", "stale_work", "job.failed", "capacity_reached"]
    async with running(rig, admins(ADMIN_A)):
        for event in events:
            rig.alarm(event)  # committed and rung every 10 ms
            await trio.sleep(0.01)
        await trio.sleep(60)
    assert rig.transport.times(ADMIN_A) == [0.0] + [0.25] * (len(events) - 1)
    assert sorted(title for _, _, title in rig.transport.calls) == sorted(events)
    assert {row["state"] for row in rig.outbox()} == {"sent"}


async def test_a_user_hears_only_of_the_events_they_chose_on_the_urls_they_have_when_sent(
    autojump_clock: trio.abc.Clock, rig: Rig
) -> None:
    for handle in ("alice", "bob"):
        rig.users.create_user(handle)
    rig.users.set_notification_settings("alice", [ALICE_URL], ["request.completed"])
    rig.users.set_notification_settings("bob", ["ntfys://bob-topic"], ["request.failed"])
    async with running(rig, admins(ADMIN_A)):
        for handle, n in (("alice", 1), ("bob", 2)):
            complete_request(rig, handle, n)
            rig.bell.ring()
        await trio.sleep(1)
    assert [(url, title) for _, url, title in rig.transport.calls] == [
        (ALICE_URL, "Download complete"),
    ]  # fmt: skip  # bob chose failures only; completions are not admin events
    assert [(r["user"], r["state"]) for r in rig.outbox()] == [
        ("alice", "sent"),
        ("bob", "skipped"),
    ]
    assert rig.counted("skipped") == 1


async def test_operator_events_handed_to_the_bell_are_written_then_sent_once_an_hour(
    autojump_clock: trio.abc.Clock, rig: Rig
) -> None:
    async with running(rig, admins(ADMIN_A)):
        stuck = partial(rig.bell.alarm, "stale_work", "Downloads stuck")
        stuck("1 download(s) without activity", at=rig.wall())
        await trio.sleep(1)
        stuck("2 download(s) without activity", at=rig.wall())
        await trio.sleep(3600)
        stuck("3 download(s) without activity", at=rig.wall())
        await trio.sleep(1)
    # The second within the hour is not told again; the third, an hour later, is.
    assert rig.transport.times(ADMIN_A) == [0.0, 3601.0]
    assert [(r["event"], r["body"]) for r in rig.outbox()] == [
        ("stale_work", "1 download(s) without activity"),
        ("stale_work", "3 download(s) without activity"),
    ]


async def test_shutdown_waits_for_a_delivery_in_flight_within_the_grace(
    autojump_clock: trio.abc.Clock, rig: Rig
) -> None:
    rig.transport.scripts[ADMIN_A] = [3.0]  # answers after 3 s; the grace is 5 s
    async with running(rig, admins(ADMIN_A)) as shutdown:
        rig.alarm()
        await trio.sleep(1)
        shutdown.set()
        rig.alarm("queue.paused")  # committed after the shutdown began: left for the next start
    assert trio.current_time() == 3.0  # the notifier returned when its delivery ended
    assert [row["state"] for row in rig.outbox()] == ["sent", "pending"]
    assert len(rig.transport.calls) == 1


async def test_a_delivery_longer_than_the_grace_is_cut_and_sent_after_the_next_start(
    autojump_clock: trio.abc.Clock, rig: Rig
) -> None:
    rig.transport.scripts[ADMIN_A] = [60.0]  # longer than the 5 s grace
    async with running(rig, admins(ADMIN_A)) as shutdown:
        rig.alarm()
        await trio.sleep(1)
        shutdown.set()
    assert trio.current_time() == 6.0  # shutdown at 1 s + 5 s of grace
    [row] = rig.outbox()
    assert (row["state"], row["attempts"]) == ("pending", 0)  # nothing recorded: not spent
    async with running(rig, admins(ADMIN_A)):  # the next start
        await trio.sleep(1)
    assert rig.transport.times(ADMIN_A) == [0.0, 6.0]
    [row] = rig.outbox()
    assert (row["state"], row["attempts"]) == ("sent", 1)


def complete_request(rig: Rig, user: str, n: int) -> None:
    """A user's album request through the queue's stores, down to its completion (which writes
    the inbox and outbox rows in its transaction)."""
    at = rig.wall()
    queued = rig.requests.request_album(user, cid(n), f"Album {n}", "Artist", at, False)
    assert queued.request_id is not None
    claimed = rig.queue.claim(at).item
    assert claimed is not None and claimed["id"] == queued.request_id
    rig.queue.create_children(claimed["id"], [ChildSpec(ContentType.TRACK_AUDIO, cid(900 + n))], at)
    child = rig.queue.claim(at).item
    assert child is not None
    rig.queue.complete(child["id"], 10, 5, at)
