"""Open every store the configuration calls for and compose them into the daemon's `Root`.

Used by the wiring at startup and by tests and benchmarks. Opening applies migrations, so this is
where a database that is too new stops the daemon; the databases opened before the one that
failed are closed again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import trio
from argon2 import PasswordHasher

from actors.downloader import DownloaderClient
from actors.events import EventHub
from actors.in_flight import InFlight
from actors.messages import SchedulerMessage, WakeProcessor
from actors.notifier import NoticeBell
from actors.scheduler import SchedulerView
from daemon.config import Config
from daemon.metrics import Metrics
from daemon.root import Downloads, Root, SchedulerHandle
from storage.catalog import CatalogStore
from storage.db import Database
from storage.events import EventStore
from storage.files import Faults, MediaLayout, no_faults
from storage.jobs import JobStore
from storage.offload import Offload
from storage.queue import MIGRATIONS, AuditEvent, QueueAdminStore, QueueStore, RequestStore
from storage.queue.feed import QueueFeed
from storage.queue.notices import NoticeStore
from storage.users import UserStore

HASHES_AT_ONCE = 2


def open_root(
    config: Config,
    *,
    scheduler_inbox: trio.MemorySendChannel[SchedulerMessage],
    wake: trio.MemorySendChannel[WakeProcessor],
    metrics: Metrics | None = None,
    hasher: PasswordHasher | None = None,
    faults: Faults = no_faults,
) -> Root:
    """The root for `config` (blocking: opens the databases). `wake` is kept only when the
    download manager is enabled; `faults` is the crash tests' hook (`storage.files.Faults`),
    which a daemon nobody tests does without."""
    metrics = Metrics() if metrics is None else metrics
    hub = EventHub()
    bell = NoticeBell()
    with contextlib.ExitStack() as opened:
        users = UserStore.open(config.db_dir / "user.db")
        opened.callback(users.db.close)
        catalog = CatalogStore.open(config.db_dir / "catalog.db")
        opened.callback(catalog.db.close)
        jobs = JobStore.open(config.db_dir / "server.db")
        opened.callback(jobs.db.close)
        downloads = None
        if config.download_enabled:
            downloads = _open_downloads(config, metrics, hub, bell, wake, faults)
        opened.pop_all()
    return Root(
        config=config,
        metrics=metrics,
        users=users,
        catalog=catalog,
        jobs=jobs,
        events=EventStore(jobs.db),
        hub=hub,
        bell=bell,
        media=MediaLayout(config.media_path, faults=faults),
        hasher=PasswordHasher() if hasher is None else hasher,
        hashing=Offload(HASHES_AT_ONCE),
        scheduler=SchedulerHandle(scheduler_inbox, SchedulerView()),
        downloads=downloads,
    )


def _open_downloads(
    config: Config,
    metrics: Metrics,
    hub: EventHub,
    bell: NoticeBell,
    wake: trio.MemorySendChannel[WakeProcessor],
    faults: Faults,
) -> Downloads:
    # One Database (one write connection) shared by the queue's three stores.
    queue_db = Database(config.db_dir / "download_queue.db", MIGRATIONS)
    settings = config.download_manager
    url = config.downloader_url or ""  # set: the download manager is enabled

    # Beside the used capacity, so that a dashboard or an alert can compare the two.
    metrics.capacity_limit.labels("hour").set(settings.max_albums_per_hour)
    metrics.capacity_limit.labels("day").set(settings.max_albums_per_day)

    def committed(events: Sequence[AuditEvent]) -> None:
        metrics.count_audit_events(events)
        if events:
            hub.poke()
            bell.ring()  # the transaction may have written notifications

    return Downloads(
        queue=QueueStore(queue_db, settings, on_audit=committed, faults=faults),
        requests=RequestStore(queue_db, settings, on_audit=committed),
        queue_admin=QueueAdminStore(queue_db, settings, on_audit=committed),
        feed=QueueFeed(queue_db, settings),
        notices=NoticeStore(queue_db, settings),
        downloader=DownloaderClient(url, config.downloader_timeout_sec),
        wake=wake,
        in_flight=InFlight(),
    )


def close_root(root: Root) -> None:
    """Close every database of the root (blocking); the downloader client is closed by its
    owner, which can await."""
    root.users.db.close()
    root.catalog.db.close()
    root.jobs.db.close()
    if root.downloads is not None:
        root.downloads.queue.db.close()  # the one database of the queue's stores
