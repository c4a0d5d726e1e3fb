"""Listening events and popular content (SPEC §6).

`POST /v1/user/listening` records one play of a catalog track by the caller. `played_at` is unix
seconds (an integer, UTC), defaulting to the time of the request; a time more than
`MAX_FUTURE_S` ahead is refused so a client cannot plant plays that count for the next month.
`GET /v1/content/popular` serves the last result stored by the `popular_content` job: it never
computes on the request path. Limits above 50 are clamped (like page sizes), negative or
non-integer ones are a 400.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field
from quart import Blueprint, Response, jsonify
from quart_schema import document_response, validate_querystring

from api.auth import current_user, requires
from api.bodies_catalog import ListeningRecorded, Popular
from api.context import root
from api.errors import ApiError
from api.jobs import rfc3339
from api.openapi import answers
from api.schemas import ContentId, Query, StrictBody, json_body
from storage.ids import is_content_id
from storage.users import Permission

blueprint = Blueprint("listening", __name__)
MAX_FUTURE_S = 300
# Plays are stored as 64-bit integers; larger values are refused before they reach SQLite.
MAX_INT = 2**62
POPULAR_DEFAULT, POPULAR_MAX = 10, 50


class ListeningBody(StrictBody):
    track_id: ContentId
    duration_ms: int | None = Field(default=None, ge=0, le=MAX_INT)
    played_at: int | None = Field(default=None, ge=0, le=MAX_INT)


class PopularQuery(Query):
    albums_limit: int | None = Field(default=None, ge=0)
    artists_limit: int | None = Field(default=None, ge=0)


@blueprint.post("/v1/user/listening")
@document_response(ListeningRecorded, 201)
@answers(201, 404)
@requires(Permission.AccessCatalog)
@json_body(ListeningBody)
async def record_listening(data: ListeningBody) -> tuple[Response, int]:
    if not is_content_id(data.track_id):
        raise ApiError(400, "track_id must be a 22-character base62 content id", "INVALID_ID")
    now = int(time.time())
    if data.played_at is not None and data.played_at > now + MAX_FUTURE_S:
        raise ApiError(400, "played_at is in the future", "BAD_REQUEST")
    catalog, users = root().catalog, root().users
    track = await catalog.db.run(catalog.get_track, data.track_id)
    if track is None:
        raise ApiError(404, "unknown track", "NOT_FOUND")
    event_id = await users.db.run(
        users.record_listening,
        current_user().id,
        data.track_id,
        data.duration_ms,
        data.played_at if data.played_at is not None else now,
    )
    return jsonify({"id": event_id}), 201


def _limit(value: int | None) -> int:
    return POPULAR_DEFAULT if value is None else min(value, POPULAR_MAX)


@blueprint.get("/v1/content/popular")
@document_response(Popular)
@requires(Permission.AccessCatalog)
@validate_querystring(PopularQuery)
async def popular(query_args: PopularQuery) -> Response:
    store = root().jobs
    found = await store.db.run(store.load_popular)
    body: dict[str, Any] = {"albums": [], "artists": [], "computed_at": None}
    if found is not None:
        body = {
            "albums": found.albums[: _limit(query_args.albums_limit)],
            "artists": found.artists[: _limit(query_args.artists_limit)],
            "computed_at": rfc3339(found.computed_at),
        }
    response = jsonify(body)
    response.headers["Cache-Control"] = f"max-age={root().config.content_cache_age_sec}"
    return response
