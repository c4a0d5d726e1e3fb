"""Download-manager admin routes (SPEC §8.10): queue stats, failures, retry, pause and resume,
activity, audit.

Reading needs ViewAnalytics; retrying, pausing and resuming need EditCatalog. A pause's optional
`reason` is text of 1 to 500 characters once trimmed (the request routes' text rule); pausing a
paused queue and resuming a running one answer 200 and change nothing (`storage.queue.pause`).
The paused gauge is set here, where the pause changes, and by every claim of the processor.
Authentication and the permission check come first, then the 503 for a disabled download
manager, then query validation, so an anonymous caller learns nothing and a bad query on a
disabled server is still a 503. Query strings are validated by pydantic models (unknown
parameters, bad numbers and bad enum values are 400); `limit` defaults to 50 and is clamped to
500, `hours` defaults to 24 and is clamped to 168.

Cancelling any item (EditCatalog) is the users' cancel (`storage.queue.transitions.cancel`).
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field
from quart import Blueprint
from quart_schema import document_response, validate_querystring

from actors.messages import Hook, HookFired, WakeProcessor, offer
from api.auth import current_user, requires
from api.bodies import (
    Activity,
    AuditPage,
    ItemHistory,
    ItemPage,
    PauseState,
    QueueItem,
    QueueStats,
    Resumed,
)
from api.context import downloads_route, require_downloads, root
from api.download import Text
from api.errors import ApiError
from api.openapi import answers
from api.schemas import Query, StrictBody, json_body, page_limit
from storage.queue import (
    AuditEvent,
    AuditFilter,
    CancelRefused,
    ContentType,
    RetryRefused,
    Status,
    now,
)
from storage.users import Permission

blueprint = Blueprint("download_admin", __name__, url_prefix="/v1/download/admin")

# Bounds keep every number representable as an SQLite integer.
MAX_OFFSET = 10**12
MAX_TIME = 2**53
MAX_HOURS = 168


class PageQuery(Query):
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class PauseBody(StrictBody):
    reason: Text | None = None


class ActivityQuery(Query):
    hours: int = Field(default=24, ge=1)


class RequestsQuery(PageQuery):
    status: Status | None = None
    user: str | None = None
    top_level_only: bool = False


class TimeRangeQuery(PageQuery):
    since: int | None = Field(default=None, ge=0, le=MAX_TIME)
    until: int | None = Field(default=None, ge=0, le=MAX_TIME)


class AuditQuery(TimeRangeQuery):
    queue_item_id: str | None = None
    user: str | None = None
    event_type: AuditEvent | None = None
    content_type: ContentType | None = None
    content_id: str | None = None


@blueprint.get("/stats")
@document_response(QueueStats)
@requires(Permission.ViewAnalytics)
@downloads_route
async def stats() -> dict[str, Any]:
    store = require_downloads().queue_admin
    return await store.db.run(store.stats, now())


@blueprint.get("/failed")
@document_response(ItemPage)
@requires(Permission.ViewAnalytics)
@downloads_route
@validate_querystring(PageQuery)
async def failed(query_args: PageQuery) -> dict[str, Any]:
    store = require_downloads().queue_admin
    limit, offset = page_limit(query_args.limit), query_args.offset
    items, total = await store.db.run(store.failed, limit, offset, now())
    return {"items": items, "total": total}


@blueprint.post("/retry/<item_id>")
@document_response(QueueItem)
@answers(404, 409)
@requires(Permission.EditCatalog)
@downloads_route
async def retry(item_id: str) -> dict[str, Any]:
    store = require_downloads().queue_admin
    try:
        item = await store.db.run(store.admin_retry, item_id, current_user().handle, now())
    except RetryRefused as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None
    offer(require_downloads().wake, WakeProcessor())
    return item


@blueprint.delete("/item/<item_id>")
@document_response(QueueItem)
@answers(404, 409)
@requires(Permission.EditCatalog)
@downloads_route
async def cancel_item(item_id: str) -> dict[str, Any]:
    """Cancel any user's item, or a child alone, as a user cancels their own request. A child
    that was its album's last unfinished one completes the album, which fires
    OnDownloadComplete as a download completing it would."""
    downloads = require_downloads()
    store = downloads.queue_admin
    try:
        item, cancelled = await store.db.run(
            store.admin_cancel, item_id, current_user().handle, now()
        )
    except CancelRefused as exc:
        code = "NOT_FOUND" if exc.status == 404 else "ALREADY_FINISHED"
        raise ApiError(exc.status, str(exc), code) from None
    downloads.in_flight.abandon(cancelled.ids)
    if cancelled.album_completed:
        offer(root().scheduler.inbox, HookFired(Hook.OnDownloadComplete))
    return item


@blueprint.post("/pause")
@document_response(PauseState)
@requires(Permission.EditCatalog)
@downloads_route
@json_body(PauseBody, optional=True)
async def pause(data: PauseBody) -> dict[str, Any]:
    """Pause the queue: nothing new starts, a file already downloading finishes."""
    store = require_downloads().queue_admin
    state = await store.db.run(store.pause, current_user().handle, data.reason, now())
    root().metrics.download_paused.set(1)
    return state


@blueprint.post("/resume")
@document_response(Resumed)
@requires(Permission.EditCatalog)
@downloads_route
async def resume() -> dict[str, Any]:
    """Resume the queue; the processor is woken to start work at once."""
    store = require_downloads().queue_admin
    await store.db.run(store.resume, current_user().handle, now())
    root().metrics.download_paused.set(0)
    offer(require_downloads().wake, WakeProcessor())
    return {"paused": False}


@blueprint.get("/activity")
@document_response(Activity)
@requires(Permission.ViewAnalytics)
@downloads_route
@validate_querystring(ActivityQuery)
async def activity(query_args: ActivityQuery) -> dict[str, Any]:
    store = require_downloads().queue_admin
    return await store.db.run(store.activity, min(query_args.hours, MAX_HOURS), now())


@blueprint.get("/requests")
@document_response(ItemPage)
@requires(Permission.ViewAnalytics)
@downloads_route
@validate_querystring(RequestsQuery)
async def requests(query_args: RequestsQuery) -> dict[str, Any]:
    store = require_downloads().queue_admin
    items, total = await store.db.run(
        functools.partial(
            store.requests,
            status=query_args.status,
            user=query_args.user,
            top_level_only=query_args.top_level_only,
            limit=page_limit(query_args.limit),
            offset=query_args.offset,
            now=now(),
        )
    )
    return {"items": items, "total": total}


@blueprint.get("/audit")
@document_response(AuditPage)
@requires(Permission.ViewAnalytics)
@downloads_route
@validate_querystring(AuditQuery)
async def audit(query_args: AuditQuery) -> dict[str, Any]:
    q = query_args
    where = AuditFilter(
        queue_item_id=q.queue_item_id,
        user=q.user,
        event_type=q.event_type,
        content_type=q.content_type,
        content_id=q.content_id,
        since=q.since,
        until=q.until,
    )
    store = require_downloads().queue_admin
    page = await store.db.run(store.audit, where, page_limit(q.limit), q.offset)
    return page.json()


@blueprint.get("/audit/item/<item_id>")
@document_response(ItemHistory)
@answers(404)
@requires(Permission.ViewAnalytics)
@downloads_route
async def audit_item(item_id: str) -> dict[str, Any]:
    store = require_downloads().queue_admin
    found = await store.db.run(store.audit_for_item, item_id, now())
    if found is None:
        raise ApiError(404, f"no queue item {item_id}", "NOT_FOUND")
    return found


@blueprint.get("/audit/user/<handle>")
@document_response(AuditPage)
@requires(Permission.ViewAnalytics)
@downloads_route
@validate_querystring(TimeRangeQuery)
async def audit_user(handle: str, query_args: TimeRangeQuery) -> dict[str, Any]:
    q = query_args
    store = require_downloads().queue_admin
    page = await store.db.run(
        store.audit_for_user, handle, page_limit(q.limit), q.offset, q.since, q.until
    )
    return page.json()
