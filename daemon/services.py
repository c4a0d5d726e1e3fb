"""Open every store the configuration calls for and bundle them into the API's context.

Used by the supervisor at startup and by tests. Opening applies migrations, so this is where a
database that is too new stops the daemon.
"""

from __future__ import annotations

from argon2 import PasswordHasher

from actors.downloader import DownloaderClient
from api.context import AppContext
from api.throttle import LoginThrottle
from daemon.config import Config
from daemon.metrics import Metrics
from storage import queue_schema
from storage.catalog import CatalogStore
from storage.db import Database
from storage.files import Faults, MediaLayout, no_faults
from storage.jobs import JobStore
from storage.queue import QueueStore
from storage.queue_admin import QueueAdminStore
from storage.queue_requests import RequestStore
from storage.users import UserStore


def build_context(
    config: Config,
    metrics: Metrics | None = None,
    hasher: PasswordHasher | None = None,
    *,
    faults: Faults = no_faults,
) -> AppContext:
    """`faults` is the crash tests' hook (`storage.files.Faults`); a daemon nobody tests has
    none."""
    context = AppContext(
        config=config,
        metrics=metrics or Metrics(),
        users=UserStore.open(config.db_dir / "user.db"),
        media=MediaLayout(config.media_path, faults=faults),
        throttle=LoginThrottle(),
        hasher=hasher or PasswordHasher(),
        catalog=CatalogStore.open(config.db_dir / "catalog.db"),
        jobs=JobStore.open(config.db_dir / "server.db"),
    )
    if config.download_enabled:
        # One Database (one write connection) shared by the queue's three stores.
        queue_db = Database(config.db_dir / "download_queue.db", queue_schema.MIGRATIONS)
        context.queue = QueueStore(
            queue_db, config.download_manager, metrics=context.metrics, faults=faults
        )
        url = config.downloader_url or ""  # set: download_enabled
        context.downloader = DownloaderClient(url, config.downloader_timeout_sec)
        context.requests = RequestStore(queue_db, config.download_manager, metrics=context.metrics)
        context.queue_admin = QueueAdminStore(
            queue_db, config.download_manager, metrics=context.metrics
        )
    return context


def close_context(context: AppContext) -> None:
    stores = (context.users, context.catalog, context.jobs, context.queue, context.requests)
    # The queue's stores share one Database: close each database once.
    for db in {id(store.db): store.db for store in stores if store is not None}.values():
        db.close()
