"""Download-manager user routes (SPEC §8.3): search the downloader, request albums and
discographies, follow and cancel one's own requests, see one's limits. Every route needs
RequestContent.

Authentication and the permission check come first, then the 503 for a disabled download
manager, then input validation, so a bad request on a disabled server is still a 503. Search
results are the downloader's, marked with `in_catalog` (catalog.db) and `in_queue` (the queue).
Whether a request is accepted is decided in `storage.queue.requests` (one transaction with the
limit check); this module only looks the album up in the catalog first, because that is another
database. A queued request wakes the queue processor without waiting: a full wake-up channel
already holds a pending wake-up. `pezzottify_download_user_requests_total` counts accepted HTTP
requests by type (a discography request counts once, however many albums it queued).

"In the catalog" (`in_catalog`, ALREADY_IN_CATALOG) means complete: the album with the audio of
every track (`storage.presence`), so an album there in part can be requested again. A cancel
commits first, then tells the processor which items it took, so one in flight is abandoned.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, StringConstraints
from quart import Blueprint, Response, jsonify
from quart_schema import document_response, validate_querystring

from actors.failures import DownloaderError, DownloaderNotFound
from actors.messages import WakeProcessor, offer
from api.auth import current_user, requires
from api.bodies import (
    DiscographyAnswer,
    DiscographyRequested,
    LimitsAnswer,
    MyRequests,
    QueueItem,
    QueueItemWithChildren,
    SearchAnswer,
)
from api.context import downloads_route, require_downloads, root
from api.errors import ApiError
from api.openapi import CONTENT_ID, IMAGE_ID, AlbumRequested, answers, media, path_schemas
from api.schemas import ContentId, Query, StrictBody, json_body, page_limit
from storage.ids import InvalidId, content_id, is_image_id
from storage.ids import image_id as image_id_of
from storage.presence import complete_album_ids
from storage.queue import CancelRefused, Rejection, Status, UserLimitStatus, now
from storage.users import Permission

blueprint = Blueprint("download", __name__, url_prefix="/v1/download")
T = TypeVar("T")

MAX_OFFSET = 10**12  # keeps OFFSET an SQLite integer
SEARCH_LIMIT = 20
MAX_SEARCH_IMAGE_BYTES = 10 * 1024**2  # a cover or a portrait shown beside a search result
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
# A request's id, which is never the name of the request routes beside it (`api.converters`).
REQUEST_ITEM = '/request/<other_than("album", "discography"):item_id>'
REJECTIONS = {
    Rejection.IN_CATALOG: (409, "ALREADY_IN_CATALOG", "the album is already in the catalog"),
    Rejection.IN_QUEUE: (409, "ALREADY_IN_QUEUE", "the album is already queued"),
}


class SearchQuery(Query):
    q: Text
    type: Literal["album", "artist"] = "album"


class MyRequestsQuery(Query):
    status: Status | None = None
    limit: int | None = Field(default=None, ge=1)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class AlbumRequestBody(StrictBody):
    album_id: ContentId
    album_name: Text
    artist_name: Text


class DiscographyRequestBody(StrictBody):
    artist_id: ContentId
    artist_name: Text


def _valid_id(raw: str) -> str:
    try:
        return content_id(raw)
    except InvalidId as exc:
        raise ApiError(400, str(exc), "INVALID_ID") from None


async def _from_downloader(call: Awaitable[T]) -> T:
    """Await a downloader call; its failures become 404 (unknown id) or 502."""
    try:
        return await call
    except DownloaderNotFound:
        raise ApiError(404, "the downloader does not know this id", "NOT_FOUND") from None
    except DownloaderError as exc:
        raise ApiError(502, f"downloader error: {exc.message}", "DOWNLOADER_ERROR") from None


async def _marked(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SearchResults with `in_catalog` and `in_queue` added."""
    catalog, store = root().catalog, require_downloads().requests
    albums = [r["id"] for r in results if r.get("type") == "album"]
    artists = [r["id"] for r in results if r.get("type") == "artist"]
    in_catalog = await complete_album_ids(catalog, root().media, albums)
    in_catalog |= await catalog.db.run(catalog.existing_artist_ids, artists)
    in_queue = await store.db.run(store.in_queue_ids, [r["id"] for r in results])
    return [
        {
            "id": r["id"],
            "type": r.get("type"),
            "name": r.get("name"),
            "artist_name": r.get("artist_name"),
            "image_url": _reachable(r.get("image_url")),
            "year": r.get("year"),
            "in_catalog": r["id"] in in_catalog,
            "in_queue": r["id"] in in_queue,
        }
        for r in results
    ]


# How the downloader's `/search` names an image it serves (SPEC §12.1): this, then its id.
_DOWNLOADER_IMAGE = "/image/"


def _reachable(url: str | None) -> str | None:
    """A search result's `image_url` as the daemon's clients can load it (SPEC §12.1): an
    absolute http(s) URL as given; the downloader's `/image/{id}` as this API's
    `/v1/download/image/{id}`; anything else (another path on the downloader, which clients
    cannot reach and this API does not relay) as null."""
    if url is None:
        return None
    if url.startswith(("https://", "http://")):
        return url
    ident = url.removeprefix(_DOWNLOADER_IMAGE)
    if ident != url and is_image_id(ident):
        return f"{blueprint.url_prefix}/image/{ident}"
    return None


def _rate_limited(limits: UserLimitStatus, **extra: Any) -> ApiError:
    headers = {}
    if limits.resets_at is not None:
        headers["Retry-After"] = str(max(limits.resets_at - now(), 1))
    return ApiError(
        429, "request limit reached", "RATE_LIMITED", headers=headers, limits=limits.json(), **extra
    )


def _accepted(kind: str) -> None:
    root().metrics.user_requests.labels(kind).inc()
    offer(require_downloads().wake, WakeProcessor())


@blueprint.get("/search")
@document_response(SearchAnswer)
@answers(502)
@requires(Permission.RequestContent)
@downloads_route
@validate_querystring(SearchQuery)
async def search(query_args: SearchQuery) -> dict[str, Any]:
    downloader = require_downloads().downloader
    found = await _from_downloader(downloader.search(query_args.q, query_args.type, SEARCH_LIMIT))
    results = await _marked(found)
    return {"results": results, "total": len(results)}


@blueprint.get("/search/discography/<path:artist_id>")
@document_response(DiscographyAnswer)
@answers(404, 502)
@path_schemas(artist_id=CONTENT_ID)
@requires(Permission.RequestContent)
@downloads_route
async def discography(artist_id: str) -> dict[str, Any]:
    valid = _valid_id(artist_id)
    found = await _from_downloader(require_downloads().downloader.discography(valid))
    artist, *albums = await _marked([found["artist"], *found["albums"]])
    return {"artist": artist, "albums": albums}


@blueprint.get("/image/<path:image_id>")
@answers(404, 502)
@path_schemas(image_id=IMAGE_ID)
@media("image/*")
@requires(Permission.RequestContent)
@downloads_route
async def search_image(image_id: str) -> Response:
    """A search result's image, relayed from the downloader by its id (and nothing else: this
    is never a fetch of an arbitrary URL). 400 for a bad id, 404 for one the downloader does not
    know, 502 if it fails or sends something that is not an image."""
    try:
        ident = image_id_of(image_id)
    except InvalidId as exc:
        raise ApiError(400, str(exc), "INVALID_ID") from None
    downloader = require_downloads().downloader
    media_type, body = await _from_downloader(downloader.image(ident, MAX_SEARCH_IMAGE_BYTES))
    if not media_type.startswith("image/"):
        raise ApiError(502, "the downloader did not send an image", "DOWNLOADER_ERROR")
    response = Response(body, content_type=media_type)
    response.headers["Cache-Control"] = f"max-age={root().config.content_cache_age_sec}"
    return response


@blueprint.post("/request/album")
@document_response(AlbumRequested, 201)
@answers(201, 409, 429)
@requires(Permission.RequestContent)
@downloads_route
@json_body(AlbumRequestBody)
async def request_album(data: AlbumRequestBody) -> tuple[dict[str, Any], int]:
    album_id = _valid_id(data.album_id)
    catalog, store = root().catalog, require_downloads().requests
    in_catalog = album_id in await complete_album_ids(catalog, root().media, [album_id])
    result = await store.db.run(
        store.request_album,
        current_user().handle, album_id, data.album_name, data.artist_name, now(), in_catalog,
    )  # fmt: skip
    if result.rejected is Rejection.RATE_LIMITED:
        raise _rate_limited(result.limits)
    if result.rejected is not None:
        status, code, message = REJECTIONS[result.rejected]
        raise ApiError(status, message, code)
    _accepted("album")
    body = {"request_id": result.request_id, "status": "PENDING"}
    return {**body, "queue_position": result.queue_position}, 201


@blueprint.post("/request/discography")
@document_response(DiscographyRequested, 201)
@answers(201, 404, 429, 502)
@requires(Permission.RequestContent)
@downloads_route
@json_body(DiscographyRequestBody)
async def request_discography(data: DiscographyRequestBody) -> tuple[dict[str, Any], int]:
    artist_id = _valid_id(data.artist_id)
    found = await _from_downloader(require_downloads().downloader.discography(artist_id))
    albums = [(album["id"], album["name"]) for album in found["albums"]]
    catalog, store = root().catalog, require_downloads().requests
    in_catalog = await complete_album_ids(catalog, root().media, [a for a, _ in albums])
    result = await store.db.run(
        store.request_discography,
        current_user().handle, albums, data.artist_name, now(), in_catalog,
    )  # fmt: skip
    limited = any(skip["reason"] == Rejection.RATE_LIMITED for skip in result.skipped)
    if not result.request_ids and limited:
        raise _rate_limited(result.limits, skipped=result.skipped)
    if result.request_ids:
        _accepted("discography")
    return {
        "request_ids": result.request_ids,
        "albums_queued": len(result.request_ids),
        "albums_skipped": len(result.skipped),
        "skipped": result.skipped,
        "status": "PENDING" if result.request_ids else "NOTHING_QUEUED",
    }, 201


@blueprint.get("/my-requests")
@document_response(MyRequests)
@requires(Permission.RequestContent)
@downloads_route
@validate_querystring(MyRequestsQuery)
async def my_requests(query_args: MyRequestsQuery) -> Response:
    store, user, q = require_downloads().requests, current_user().handle, query_args
    requests, stats = await store.db.run(
        store.my_requests_and_limits, user, q.status, page_limit(q.limit), q.offset, now()
    )
    # A Response rather than a dict: quart-schema would walk a returned dict with pydantic,
    # and this page is what clients poll.
    return jsonify({"requests": requests, "stats": stats.json()})


@blueprint.get(REQUEST_ITEM)
@document_response(QueueItemWithChildren)
@answers(404)
@requires(Permission.RequestContent)
@downloads_route
async def request_detail(item_id: str) -> dict[str, Any]:
    store = require_downloads().requests
    item = await store.db.run(store.item_for_user, item_id, current_user().handle, now())
    if item is None:
        raise ApiError(404, "no such request of yours", "NOT_FOUND")
    return item


@blueprint.delete(REQUEST_ITEM)
@document_response(QueueItem)
@answers(404, 409)
@requires(Permission.RequestContent)
@downloads_route
async def cancel_request(item_id: str) -> dict[str, Any]:
    """Cancel one's own request: it and its unfinished children become CANCELLED, and a file
    downloading for it is abandoned. 404 unless it is the caller's own top-level item, 409 when
    it has already finished."""
    downloads = require_downloads()
    store = downloads.requests
    try:
        item, cancelled = await store.db.run(
            store.cancel_request, item_id, current_user().handle, now()
        )
    except CancelRefused as exc:
        code = "NOT_FOUND" if exc.status == 404 else "ALREADY_FINISHED"
        raise ApiError(exc.status, str(exc), code) from None
    downloads.in_flight.abandon(cancelled.ids)
    return item


@blueprint.get("/limits")
@document_response(LimitsAnswer)
@requires(Permission.RequestContent)
@downloads_route
async def limits() -> Response:
    store = require_downloads().requests
    user, capacity = await store.db.run(store.limits_and_capacity, current_user().handle, now())
    # A Response, as for my-requests: clients poll it.
    return jsonify({"user": user.json(), "global": capacity})
