"""The notifier actor (SPEC §16 rev 2): delivers the outbox of download_queue.db through Apprise.

Notifications are written to the outbox in the transaction of the change that causes them
(`storage.queue.notices`); the queue's stores ring the `NoticeBell` after each commit, from
whatever thread ran it, and the notifier reads what is due. Each notification is delivered in
a worker thread (Apprise blocks) with `timeout_sec` connect and read timeouts, several at once,
so a slow or dead target delays only its own notifications, and never the queue, which only
wrote a row. A notification for a user goes to the URLs the user has when it is delivered, if
they chose its event; an operator event goes to `admin_urls`. A URL already sent to is not sent
to again when another of the same notification failed: the retry goes to the failed ones only,
after `first_retry_sec` (5 s), then 4 times later each time, until `max_attempts` attempts; then the
notification is recorded as failed (`GET /v1/admin/notifications/failed`).

The notifier answers a ring at once unless it answered one less than `ANSWER_EVERY_S` (a quarter
of a second) before: then at the end of that time, with every ring that came meanwhile, so that
a burst of commits (a queue draining from a local downloader) costs one look, not one per
commit.

Delivery is at least once: a crash (or a shutdown that cuts a send short) between a send and its
record sends it again after the next start, which finds the row still pending.

Operator events seen outside a queue transaction (stale work, a failed job) are handed to the
bell (`NoticeBell.alarm`), and the notifier writes them to the outbox before delivering.

Shutdown: the notifier takes no new notification, and the deliveries in flight have
`shutdown_timeout_sec` to finish; one still sending then is abandoned (its worker thread is left
to its own timeouts) and its row, still pending, is delivered after the next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import trio

from actors.notify_urls import NotificationSettings, masked, send, url_id
from daemon.metrics import Metrics
from storage.queue import now
from storage.queue.notices import NoticeStore, Outcome
from storage.users import UnknownUser, UserStore

log = logging.getLogger("pezzottify.notifier")

DELIVERIES_AT_ONCE = 4  # worker threads sending at once; the rest wait their turn
BATCH = 32  # due notifications read at once
IDLE_S = 60.0  # look again this often even when nothing rings
# Rings are answered at most this often. A queue that drains fast commits hundreds of times a
# second, and each answer is a look at the outbox (two worker-thread calls) taken from the
# downloads' share of the cores; a notification is a message to a person, for whom a quarter of
# a second is nothing.
ANSWER_EVERY_S = 0.25
RETRY_FACTOR = 4
MAX_ALARMS = 100  # operator events held for the notifier at most

# Sends one message to one URL (url, title, body, timeout): None when delivered, else why not.
Transport = Callable[[str, str, str, float], Awaitable["str | None"]]


class Alarm(NamedTuple):
    event: str
    title: str
    body: str
    at: int


class NoticeBell:
    """Wakes the notifier: after a queue commit (from any thread), or with an operator event."""

    def __init__(self) -> None:
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._alarms: list[Alarm] = []
        self._answered_at = -math.inf

    def attach(self) -> None:
        """Called by the notifier, on the event loop, before it waits."""
        self._token = trio.lowlevel.current_trio_token()

    def ring(self, _events: object = None) -> None:
        """Something committed: wake the notifier (from any thread)."""
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._set)

    def _set(self) -> None:
        self._wake.set()

    def alarm(self, event: str, title: str, body: str, at: int | None = None) -> None:
        """An operator event (stale work, a failed job), from the event loop."""
        if len(self._alarms) < MAX_ALARMS:  # none is taken while the notifier is not running
            self._alarms.append(Alarm(event, title, body, now() if at is None else at))
        self._set()

    def take_alarms(self) -> list[Alarm]:
        alarms, self._alarms = self._alarms, []
        return alarms

    async def wait(self) -> None:
        """Wait for a ring. One that comes within `ANSWER_EVERY_S` of the last one answered is
        answered at the end of that time, together with every ring that came meanwhile."""
        await self._wake.wait()
        await trio.sleep_until(self._answered_at + ANSWER_EVERY_S)
        self._answered_at = trio.current_time()
        self._wake = trio.Event()


def retry_delay(settings: NotificationSettings, attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: 5, 20, 80, 320…"""
    return float(settings.first_retry_sec * RETRY_FACTOR ** (attempts - 1))


class Notifier:
    def __init__(
        self,
        store: NoticeStore,
        users: UserStore,
        bell: NoticeBell,
        settings: NotificationSettings,
        metrics: Metrics,
        *,
        shutdown: trio.Event,
        shutdown_timeout: float,
        clock: Callable[[], float] = now,
        transport: Transport | None = None,
    ) -> None:
        """`clock` is the wall clock of the outbox's times; `transport` replaces the worker
        threads sending through Apprise (tests under trio's autojump clock, whose time jumps
        while a thread works)."""
        self.store = store
        self.users = users
        self.bell = bell
        self.settings = settings
        self.metrics = metrics
        self.shutdown = shutdown
        self.shutdown_timeout = shutdown_timeout
        self.clock = clock
        self.transport = transport if transport is not None else self._in_thread
        self._limiter = trio.CapacityLimiter(DELIVERIES_AT_ONCE)
        self._in_flight: set[int] = set()
        # Delivered since the due notifications were last read: that read may be older than
        # their record, so they are not taken from it again.
        self._finished: set[int] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.bell.attach()
        task_status.started()
        async with trio.open_nursery() as deliveries:
            with trio.CancelScope() as looking:
                deliveries.start_soon(self._stop_looking, looking, deliveries.cancel_scope)
                await self._look(deliveries)
            # Shutdown: the nursery waits for the deliveries in flight, up to the deadline.

    async def _stop_looking(self, looking: trio.CancelScope, deliveries: trio.CancelScope) -> None:
        await self.shutdown.wait()
        looking.cancel()
        deliveries.deadline = trio.current_time() + self.shutdown_timeout

    async def _look(self, deliveries: trio.Nursery) -> None:
        while True:
            for alarm in self.bell.take_alarms():
                await self.store.db.run(
                    self.store.alarm, alarm.event, alarm.title, alarm.body, alarm.at
                )
            self._finished.clear()
            due = await self.store.db.run(
                self.store.due, int(self.clock()), BATCH + len(self._in_flight)
            )
            for row in due:
                if row["id"] not in self._in_flight and row["id"] not in self._finished:
                    self._in_flight.add(row["id"])
                    deliveries.start_soon(self._deliver, row)
            next_at = await self.store.db.run(self.store.next_due, sorted(self._in_flight))
            wait = IDLE_S if next_at is None else min(IDLE_S, max(0.0, next_at - self.clock()))
            with trio.move_on_after(wait):
                await self.bell.wait()

    async def _deliver(self, row: sqlite3.Row) -> None:
        try:
            outcome = await self._attempt(row)
            await self.store.db.run(self.store.record, row["id"], outcome, int(self.clock()))
            result = "retried" if outcome.state == "pending" else outcome.state
            self.metrics.notifications.labels(result).inc()
        finally:
            self._in_flight.discard(row["id"])
            self._finished.add(row["id"])
            self.bell._set()

    async def _targets(self, row: sqlite3.Row) -> list[str]:
        if row["user"] is None:
            return list(self.settings.admin_urls)
        try:
            urls, events = await self.users.db.run(self.users.notification_settings, row["user"])
        except UnknownUser:
            return []
        return urls if row["event"] in events else []

    async def _attempt(self, row: sqlite3.Row) -> Outcome:
        delivered = list(json.loads(row["delivered"]))
        urls = [url for url in await self._targets(row) if url_id(url) not in delivered]
        if not urls:
            return Outcome("sent" if delivered else "skipped", delivered)
        errors = []
        for url in urls:
            error = await self.transport(url, row["title"], row["body"], self.settings.timeout_sec)
            if error is None:
                delivered.append(url_id(url))
            else:
                errors.append(f"{masked(url)}: {error}")
        if not errors:
            return Outcome("sent", delivered)
        attempts = row["attempts"] + 1
        error = "; ".join(errors)
        if attempts >= self.settings.max_attempts:
            log.warning("notification %d (%s) failed for good: %s", row["id"], row["event"], error)
            return Outcome("failed", delivered, error)
        delay = retry_delay(self.settings, attempts)
        log.info("notification %d (%s) failed, retrying in %g s: %s",
                 row["id"], row["event"], delay, error)  # fmt: skip
        next_at = int(self.clock() + delay + 0.999)
        return Outcome("pending", delivered, error, next_at)

    async def _in_thread(self, url: str, title: str, body: str, timeout_sec: float) -> str | None:
        """Apprise blocks: a worker thread, `DELIVERIES_AT_ONCE` at most. Cancelled (the
        shutdown deadline), the thread is abandoned to its own timeouts and the row stays
        pending."""
        return await trio.to_thread.run_sync(
            send, url, title, body, timeout_sec, limiter=self._limiter, abandon_on_cancel=True
        )
