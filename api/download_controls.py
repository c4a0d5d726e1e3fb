"""An admin's controls over queued items (SPEC §8.10 rev 2 operator controls): a request's
priority, and bulk actions by filter. Both need EditCatalog and write audit entries carrying the
admin's handle (`storage.queue.controls`).

`PATCH /item/{id}` `{"priority": 1..9}` moves a top-level item that has not ended, with its
unfinished children; the answer is the item as it is now, its `queue_position` already the new
one. It does not wake the processor: a new priority makes nothing claimable that was not, and
the next claim reads the new order anyway.

`POST /bulk` applies `retry`, `cancel` or `set_priority` to the items a filter selects, in one
transaction, and answers `{"matched", "changed"}`; `dry_run` answers the same without changing
anything. A filter with no field set is refused (400 EMPTY_FILTER): a bulk action never takes
everything by accident. `priority` is required by `set_priority` and refused with the other
actions. After a retry the processor is woken; after a cancel the processor abandons what it
was fetching for a cancelled item, and an album completed by a child cancelled alone fires
OnDownloadComplete, as the one-item cancel does.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field
from quart import Blueprint
from quart_schema import document_response

from actors.messages import Hook, HookFired, WakeProcessor, offer
from api.auth import current_user, requires
from api.bodies import BulkOutcome, QueueItem
from api.context import downloads_route, require_downloads, root
from api.download import Text
from api.download_admin import MAX_TIME
from api.errors import ApiError
from api.openapi import answers
from api.schemas import StrictBody, json_body
from storage.queue import (
    PRIORITIES,
    BulkAction,
    BulkFilter,
    ContentType,
    ErrorType,
    PriorityRefused,
    Source,
    Status,
    now,
)
from storage.users import Permission

blueprint = Blueprint("download_controls", __name__, url_prefix="/v1/download/admin")

Priority = Annotated[int, Field(ge=min(PRIORITIES), le=max(PRIORITIES))]
Time = Annotated[int, Field(ge=0, le=MAX_TIME)]
# Bodies are strict, and a JSON string is no enum member: enums are given by their values.
ByValue = Field(strict=False)


class PriorityBody(StrictBody):
    priority: Priority


def _some_field(schema: dict[str, Any]) -> None:
    """An empty filter is refused (EMPTY_FILTER): the document asks for one field not null."""
    schema["anyOf"] = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in schema["properties"]
    ]


class FilterBody(StrictBody):
    model_config = ConfigDict(json_schema_extra=_some_field)
    status: Annotated[Status | None, ByValue] = None
    user: Text | None = None
    content_type: Annotated[ContentType | None, ByValue] = None
    error_type: Annotated[ErrorType | None, ByValue] = None
    request_source: Annotated[Source | None, ByValue] = None
    created_after: Time | None = None
    created_before: Time | None = None


class BulkBody(StrictBody):
    # `priority` with set_priority, and only with it (BAD_PRIORITY), as the document says.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["priority"],
                    "properties": {
                        "action": {"const": BulkAction.SET_PRIORITY.value},
                        "priority": {"type": "integer"},
                    },
                },
                {
                    "properties": {
                        "action": {"not": {"const": BulkAction.SET_PRIORITY.value}},
                        "priority": {"type": "null"},
                    }
                },
            ]
        }
    )
    action: Annotated[BulkAction, ByValue]
    filter: FilterBody
    priority: Priority | None = None
    dry_run: bool = False


@blueprint.patch("/item/<item_id>")
@document_response(QueueItem)
@answers(404, 409)
@requires(Permission.EditCatalog)
@downloads_route
@json_body(PriorityBody)
async def set_priority(item_id: str, data: PriorityBody) -> dict[str, Any]:
    store = require_downloads().queue_admin
    try:
        return await store.db.run(
            store.set_priority, item_id, data.priority, current_user().handle, now()
        )
    except PriorityRefused as exc:
        raise ApiError(exc.status, str(exc), exc.code) from None


@blueprint.post("/bulk")
@document_response(BulkOutcome)
@requires(Permission.EditCatalog)
@downloads_route
@json_body(BulkBody)
async def bulk(data: BulkBody) -> dict[str, Any]:
    where = BulkFilter(**data.filter.model_dump())
    if where.is_empty():
        message = "the filter selects on nothing: give at least one of its fields"
        raise ApiError(400, message, "EMPTY_FILTER")
    if (data.action is BulkAction.SET_PRIORITY) != (data.priority is not None):
        message = "priority is required by set_priority, and only by it"
        raise ApiError(400, message, "BAD_PRIORITY")
    downloads = require_downloads()
    store = downloads.queue_admin
    outcome = await store.db.run(
        store.bulk, data.action, where, current_user().handle, now(),
        priority=data.priority, dry_run=data.dry_run,
    )  # fmt: skip
    if outcome.changed and data.action is BulkAction.RETRY:
        offer(downloads.wake, WakeProcessor())
    downloads.in_flight.abandon(outcome.cancelled)
    if outcome.album_completed:
        offer(root().scheduler.inbox, HookFired(Hook.OnDownloadComplete))
    return {"matched": outcome.matched, "changed": outcome.changed}
