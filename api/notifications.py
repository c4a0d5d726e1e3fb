"""Notifications (SPEC §16 rev 2): each user's targets and inbox, and the admins' failed list.

`PUT /v1/user/notifications` sets the caller's Apprise URLs and events (every URL checked by
`actors.notify_urls.check_user_url`: allowed schemes, public hosts); `GET` returns them masked,
and no response or log line ever holds a URL whole. `POST /v1/user/notifications/test` sends a
test message to each URL at once (not through the outbox: its answer is the result) and says,
per masked URL, whether it arrived. The inbox lives with the queue (it is written in the
transaction that ends a request), so its routes answer 503 without the download manager.
"""

from __future__ import annotations

import functools
from typing import Any

import trio
from pydantic import ConfigDict, Field
from quart import Blueprint, Response, jsonify
from quart_schema import document_response, validate_querystring

from actors.notify_urls import MAX_URL_LENGTH, MAX_URLS, BadTarget, check_user_url, masked, send
from api.auth import current_user, requires
from api.bodies_notifications import (
    FailedNotifications,
    Inbox,
    InboxMarked,
    NotificationTargets,
    TargetChecks,
)
from api.context import downloads_route, require_downloads, root
from api.download import MAX_OFFSET
from api.errors import ApiError
from api.openapi import answers
from api.schemas import Query, StrictBody, json_body, page_limit
from storage.users import USER_EVENTS, Permission

blueprint = Blueprint("notifications", __name__)
TEST_TITLE = "Pezzottify test notification"
TEST_BODY = "Notifications from your Pezzottify server arrive here."


class SettingsBody(StrictBody):
    urls: list[str] = Field(max_length=MAX_URLS)
    events: list[str] = Field(default_factory=lambda: list(USER_EVENTS), max_length=10)


class InboxQuery(Query):
    unread: bool = False
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ReadBody(StrictBody):
    # Either the ids or `"all": true`, as `mark_read` checks (for the OpenAPI document).
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["ids"],
                    "properties": {"ids": {"type": "array"}, "all": {"const": False}},
                },
                {
                    "required": ["all"],
                    "properties": {"all": {"const": True}, "ids": {"type": "null"}},
                },
            ]
        }
    )
    ids: list[int] | None = Field(default=None, max_length=1000)
    all: bool = False


class PageQuery(Query):
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


def _shown(urls: list[str], events: list[str]) -> dict[str, Any]:
    return {"urls": [masked(url) for url in urls], "events": events}


@blueprint.get("/v1/user/notifications")
@document_response(NotificationTargets)
@requires()
async def get_settings() -> Response:
    users = root().users
    urls, events = await users.db.run(users.notification_settings, current_user().handle)
    return jsonify(_shown(urls, events))


@blueprint.put("/v1/user/notifications")
@document_response(NotificationTargets)
@requires()
@json_body(SettingsBody)
async def put_settings(data: SettingsBody) -> Response:
    unknown = sorted(set(data.events) - set(USER_EVENTS))
    if unknown:
        raise ApiError(400, f"unknown events {unknown}; known: {list(USER_EVENTS)}", "BAD_REQUEST")
    settings = root().config.notifications
    urls = list(dict.fromkeys(url.strip() for url in data.urls))
    for url in urls:
        if not url or len(url) > MAX_URL_LENGTH:
            raise ApiError(400, f"each URL must be 1 to {MAX_URL_LENGTH} characters", "BAD_URL")
        try:
            await check_user_url(url, settings)
        except BadTarget as bad:
            raise ApiError(400, str(bad), "BAD_URL") from None
    events = list(dict.fromkeys(data.events))
    users = root().users
    await users.db.run(users.set_notification_settings, current_user().handle, urls, events)
    return jsonify(_shown(urls, events))


@blueprint.post("/v1/user/notifications/test")
@document_response(TargetChecks)
@answers(409)
@requires()
async def test_settings() -> Response:
    users = root().users
    urls, _events = await users.db.run(users.notification_settings, current_user().handle)
    if not urls:
        raise ApiError(409, "no notification URLs are set; PUT /v1/user/notifications first")
    timeout = root().config.notifications.timeout_sec
    results: list[dict[str, Any]] = [{} for _ in urls]

    async def one(index: int, url: str) -> None:
        error = await trio.to_thread.run_sync(
            functools.partial(send, url, TEST_TITLE, TEST_BODY, timeout), abandon_on_cancel=True
        )
        results[index] = {"url": masked(url), "delivered": error is None, "error": error}

    async with trio.open_nursery() as nursery:
        for index, url in enumerate(urls):
            nursery.start_soon(one, index, url)
    return jsonify({"results": results})


@blueprint.get("/v1/user/inbox")
@document_response(Inbox)
@requires()
@downloads_route
@validate_querystring(InboxQuery)
async def inbox(query_args: InboxQuery) -> Response:
    store, q = require_downloads().notices, query_args
    page = await store.db.run(
        store.inbox, current_user().handle, q.unread, page_limit(q.limit), q.offset
    )
    return jsonify(page)


@blueprint.post("/v1/user/inbox/read")
@document_response(InboxMarked)
@requires()
@downloads_route
@json_body(ReadBody)
async def mark_read(data: ReadBody) -> Response:
    if (data.ids is None) == (not data.all):
        raise ApiError(400, 'give either "ids" or "all": true', "BAD_REQUEST")
    store = require_downloads().notices
    user = current_user().handle
    marked = await store.db.run(store.mark_read, user, None if data.all else data.ids)
    unread = (await store.db.run(store.inbox, user, True, 1, 0))["unread"]
    return jsonify({"marked": marked, "unread": unread})


@blueprint.get("/v1/admin/notifications/failed")
@document_response(FailedNotifications)
@requires(Permission.ServerAdmin)
@downloads_route
@validate_querystring(PageQuery)
async def failed(query_args: PageQuery) -> Response:
    store = require_downloads().notices
    page = await store.db.run(store.failed, page_limit(query_args.limit), query_args.offset)
    return jsonify(page)
