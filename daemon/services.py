"""Open every store the configuration calls for and bundle them into the API's context.

Used by the supervisor at startup and by tests. Opening applies migrations, so this is where a
database that is too new stops the daemon.
"""

from __future__ import annotations

from argon2 import PasswordHasher

from api.context import AppContext
from api.throttle import LoginThrottle
from daemon.config import Config
from daemon.metrics import Metrics
from storage.files import MediaLayout
from storage.users import UserStore


def build_context(
    config: Config, metrics: Metrics | None = None, hasher: PasswordHasher | None = None
) -> AppContext:
    context = AppContext(
        config=config,
        metrics=metrics or Metrics(),
        users=UserStore.open(config.db_dir / "user.db"),
        media=MediaLayout(config.media_path),
        throttle=LoginThrottle(),
        hasher=hasher or PasswordHasher(),
    )
    return context


def close_context(context: AppContext) -> None:
    for store in (context.users, context.catalog, context.jobs, context.queue):
        if store is not None:
            store.db.close()
