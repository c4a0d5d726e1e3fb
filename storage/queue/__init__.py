"""The download queue, `download_queue.db`: the stores the actors and the API use, and the names
they need. Outside this package, import them from here.

Modules, by concept:

- `schema`: the migrations; `model`: the vocabulary (enums, settings, records, the clock, the
  QueueItem JSON);
- `rows`: the one place items are inserted, and fetched by id or parent;
- `transitions` (claim, children, completion, cancel, release, recovery), `retries` (failures,
  admin retry) and `controls` (priorities, bulk actions): state changes inside the caller's
  transaction, returning their audit events;
- `limits` (per-user limits, global capacity), `positions`, `audit`, `activity`, `marks`
  (content the watchdog gave up on), `pause` (an admin's pause of the queue), `reads` (users'
  and admins' queries, and `shape`, the one QueueItem JSON, with each item's `wait` from
  `waits` and its estimated times from `estimates`);
- the stores over one `Database`: `QueueStore` (`processing`, the processor), `RequestStore`
  (`requests`, users) and `QueueAdminStore` (`admin`, admins, monitors and the watchdog); a
  user's cancel and an admin's are the same transition (`transitions.cancel`).

Claims and transitions are SQL written by hand, under the write connection's `BEGIN IMMEDIATE`;
the filtered, paged lists are `sqlite_utils` table reads (`docs/decisions.md`).
"""

from __future__ import annotations

from storage.queue.admin import QueueAdminStore, Repair
from storage.queue.audit import AuditFilter
from storage.queue.controls import BulkAction, BulkFilter, BulkOutcome, PriorityRefused
from storage.queue.limits import UserLimitStatus
from storage.queue.model import (
    PRIORITIES,
    AuditEvent,
    ChildSpec,
    ContentType,
    ErrorType,
    Priority,
    Source,
    Status,
    now,
)
from storage.queue.processing import QueueStore
from storage.queue.reads import StaleItem
from storage.queue.requests import Rejection, RequestStore
from storage.queue.retries import RetryRefused
from storage.queue.schema import MIGRATIONS
from storage.queue.transitions import Cancelled, CancelRefused, QueueStateError

__all__ = [
    "MIGRATIONS",
    "PRIORITIES",
    "AuditEvent",
    "AuditFilter",
    "BulkAction",
    "BulkFilter",
    "BulkOutcome",
    "CancelRefused",
    "Cancelled",
    "ChildSpec",
    "ContentType",
    "ErrorType",
    "Priority",
    "PriorityRefused",
    "QueueAdminStore",
    "QueueStateError",
    "QueueStore",
    "Rejection",
    "Repair",
    "RequestStore",
    "RetryRefused",
    "Source",
    "StaleItem",
    "Status",
    "UserLimitStatus",
    "now",
]
