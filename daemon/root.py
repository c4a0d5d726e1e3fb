"""The composition root: what the daemon builds once and hands to the API, the jobs and the actors.

`daemon.services.open_root` builds a `Root` from the configuration and the send ends of the
channels the wiring made first; nothing is set on it afterwards. Every field is typed: a reader
of `root.downloads.queue_admin` knows what it holds without looking at how it was built.

`downloads` is None when the download manager is disabled (no `downloader_url`): that one fact,
decided when the root is built, is what every other part reads (the API's 503, the download
jobs, the download actors). Its stores and client exist together or not at all.

The scheduler's view outlives the scheduler: a restarted scheduler is handed the same view and
fills it again (`actors.scheduler.SchedulerView`), so the API always reads the live one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
from argon2 import PasswordHasher

from actors.downloader import DownloaderClient
from actors.events import EventHub
from actors.in_flight import InFlight
from actors.messages import SchedulerMessage, WakeProcessor
from actors.notifier import NoticeBell
from actors.scheduler import SchedulerView
from daemon.config import Config
from daemon.health import HealthProbe
from daemon.metrics import Metrics
from storage.catalog import CatalogStore
from storage.events import EventStore
from storage.files import MediaLayout
from storage.jobs import JobStore
from storage.offload import Offload
from storage.queue import QueueAdminStore, QueueStore, RequestStore
from storage.queue.feed import QueueFeed
from storage.queue.notices import NoticeStore
from storage.users import UserStore


@dataclass(frozen=True)
class SchedulerHandle:
    """How the API reaches the job scheduler: its inbox and its read-only view."""

    inbox: trio.MemorySendChannel[SchedulerMessage]
    view: SchedulerView


@dataclass(frozen=True)
class Downloads:
    """The download manager's services. The queue's three stores share one database."""

    queue: QueueStore
    requests: RequestStore
    queue_admin: QueueAdminStore
    feed: QueueFeed  # the queue's committed changes, for the live events
    notices: NoticeStore  # the notifications' outbox and the users' inboxes
    downloader: DownloaderClient
    wake: trio.MemorySendChannel[WakeProcessor]  # the processor's inbox: new work is queued
    # The item the processor works on, which a cancel abandons; a restarted processor gets the
    # same one.
    in_flight: InFlight


@dataclass(frozen=True)
class Root:
    config: Config
    metrics: Metrics
    users: UserStore
    catalog: CatalogStore
    jobs: JobStore
    events: EventStore  # the live events kept for replay, in server.db beside the jobs
    # The open event streams; every queue commit pokes it (`actors.events`).
    hub: EventHub
    # Wakes the notifier: every queue commit rings it; operator events are handed to it.
    bell: NoticeBell
    media: MediaLayout
    hasher: PasswordHasher
    # Argon2 hashing, off the event loop: ~64 MiB and tens of ms per hash, so at most two at once.
    hashing: Offload
    scheduler: SchedulerHandle
    downloads: Downloads | None
    # When the daemon started and its last health checks (`GET /health`).
    health: HealthProbe = field(default_factory=HealthProbe)
