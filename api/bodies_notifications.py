"""The success bodies of the notification routes (SPEC §16 rev 2), for `document_response`.

Documentation only, as `api.bodies` (whose rules these follow: open bodies, a field nullable
exactly where the code can answer null): settings and test results are built in
`api.notifications`, inbox and failed pages by `storage.queue.notices`. URLs are shown masked
(`actors.notify_urls.masked`), never whole. Times are unix seconds.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from storage.users import USER_EVENTS

# The events a user's targets and inbox may carry.
UserEvent = Annotated[str, Field(json_schema_extra={"enum": list(USER_EVENTS)})]


class NotificationTargets(BaseModel):
    """The caller's target URLs, masked, and the events sent to them."""

    urls: list[str]
    events: list[UserEvent]


class TargetCheck(BaseModel):
    """Whether the test message reached one URL (masked); `error` says why not, null when it
    did."""

    url: str
    delivered: bool
    error: str | None


class TargetChecks(BaseModel):
    """One result per URL, in the order the URLs are set."""

    results: list[TargetCheck]


class InboxItem(BaseModel):
    """A notification in the caller's inbox, about the request `request_id`."""

    id: int
    created_at: int
    event: UserEvent
    title: str
    body: str
    request_id: str
    read: bool


class Inbox(BaseModel):
    """A page of the inbox, newest first, and how many of all the caller's items are unread."""

    items: list[InboxItem]
    unread: int


class InboxMarked(BaseModel):
    """How many items this marked read, and how many are still unread."""

    marked: int
    unread: int


class FailedNotification(BaseModel):
    """A notification given up on. `user` is the requester it was for (null: the admins');
    `request_id` the request it is about (null for an operator event); `last_error` why the
    last attempt failed, by masked URL."""

    id: int
    created_at: int
    event: str
    user: str | None
    title: str
    body: str
    request_id: str | None
    attempts: int
    last_error: str | None
    failed_at: int


class FailedNotifications(BaseModel):
    """A page of the failed notifications, newest first, and how many there are."""

    items: list[FailedNotification]
    total: int
