"""What the API handlers reach: stores, channels to actors, clients, settings.

Built by the supervisor and stored on the app (`app.extensions["pezzottify"]`); handlers read it
with `ctx()`. Fields for the download manager are None when it is disabled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from argon2 import PasswordHasher
from quart import current_app

from daemon.config import Config
from daemon.metrics import Metrics
from storage.files import MediaLayout
from storage.users import UserStore

if TYPE_CHECKING:
    from api.throttle import LoginThrottle


@dataclass
class AppContext:
    config: Config
    metrics: Metrics
    users: UserStore
    media: MediaLayout
    throttle: LoginThrottle
    hasher: PasswordHasher = field(default_factory=PasswordHasher)
    # Other stores and channels are attached by the features that need them.
    catalog: Any = None
    jobs: Any = None
    queue: Any = None
    downloader: Any = None
    requests: Any = None  # storage.queue_requests.RequestStore
    queue_admin: Any = None  # storage.queue_admin.QueueAdminStore
    scheduler: trio.MemorySendChannel[Any] | None = None
    wake_processor: trio.MemorySendChannel[Any] | None = None
    scheduler_view: Any = None  # the scheduler's read-only SchedulerView
    # Argon2 costs ~64 MiB and tens of ms per hash; bound how many run at once.
    hash_limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(2))
    # Made by `hasher` at the first login for an unknown handle (see api.auth_routes).
    unknown_user_hash: str | None = None


def ctx() -> AppContext:
    context: AppContext = current_app.extensions["pezzottify"]
    return context
