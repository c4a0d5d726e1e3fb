"""The OpenAPI document (SPEC §11), generated from what the code declares.

quart-schema builds the paths, parameters and request schemas from the routes and their
`validate_request` / `validate_querystring` / `document_response` models; `ApiDocument` (its
`openapi_provider_class`) adds to each operation what this project's own decorators declare:

- security: public routes (`@public`) need nothing; every other route takes the bearer token or
  the `session_token` cookie, and names the permissions of its `@requires(...)` in
  `x-required-permission` (a list, empty for "any logged-in user") and in its description;
- error statuses, each with the §11 error body: 400 on every route (bad text in a path or query
  is refused everywhere), 401 for a session route, 403 when it requires a permission, 400/413/415
  for a JSON body, 503 for a download-manager route (`api.context.downloads_route`) and for a
  write (the disk may be full), plus what a route declares with `@answers(...)`;
- the success answer: the route's `document_response` model, else its `@media(...)` body, else a
  JSON object with the status `@answers` names (200 when none).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict
from quart_schema import OpenAPIProvider
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from werkzeug.routing import BaseConverter, Rule

from api.auth import PERMISSION_ATTR
from api.context import DOWNLOADS_ATTR
from api.converters import OtherThanConverter
from api.errors import HTTP_CODES
from api.schemas import OPTIONAL_BODY_ATTR
from storage.ids import CONTENT_ID_PATTERN, IMAGE_ID_PATTERN

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
ANSWERS_ATTR = "openapi_answers"
MEDIA_ATTR = "openapi_media"
PATH_ATTR = "openapi_path_patterns"
SESSION = "session_token"
BEARER = "bearer"
SESSION_SECURITY: list[dict[str, list[str]]] = [{BEARER: []}, {SESSION: []}]
ERROR = "Error"
CONTENT_ID = {"pattern": CONTENT_ID_PATTERN}
IMAGE_ID = {"pattern": IMAGE_ID_PATTERN}
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}
# What each error status means here, for a reader of the document.
MEANINGS = {
    400: "Bad input: malformed JSON, wrong types, unknown fields, a bad id or query value, text "
    "that is not valid Unicode or holds NUL.",
    401: "No session, or an unknown or expired one.",
    403: "The session lacks the required permission.",
    404: "Not found.",
    409: "Conflicts with the current state.",
    413: "The body is over 1 MiB.",
    415: "The body is not application/json.",
    416: "The requested range cannot be served.",
    429: "Too many requests; `Retry-After` says when to try again.",
    502: "The downloader failed or sent something unusable.",
    503: "Unavailable: the download manager is disabled, the server is shutting down, or its "
    "disk is full or failing (with `Retry-After`).",
}


class ErrorBody(BaseModel):
    """The §11 error body: a human message and a machine code, plus documented extras."""

    model_config = ConfigDict(extra="allow")
    error: str
    code: str


def answers(*statuses: int) -> Callable[[F], F]:
    """Declare statuses a route answers besides those its other declarations imply: its
    success status when it is not 200, and its own errors (404, 409, 429, 502...)."""

    def decorate(view: F) -> F:
        setattr(view, ANSWERS_ATTR, (*getattr(view, ANSWERS_ATTR, ()), *statuses))
        return view

    return decorate


def media(
    content_type: str, *statuses: int, schema: Mapping[str, Any] | None = None
) -> Callable[[F], F]:
    """Declare a success body that is not JSON (an image, audio, an event stream)."""

    def decorate(view: F) -> F:
        body = dict(schema or {"type": "string", "format": "binary"})
        setattr(view, MEDIA_ATTR, (content_type, statuses or (200,), body))
        return view

    return decorate


def path_schemas(**schemas: Mapping[str, Any]) -> Callable[[F], F]:
    """Declare the form of path parameters the route checks itself (a 400 otherwise), as JSON
    schema keywords (`CONTENT_ID`, `{"enum": [...]}`)."""

    def decorate(view: F) -> F:
        setattr(view, PATH_ATTR, schemas)
        return view

    return decorate


def permission_text(permissions: tuple[Any, ...] | None) -> str:
    if permissions is None:
        return "Public: no session needed."
    if not permissions:
        return "Needs a session (any logged-in user)."
    return "Requires permission: " + ", ".join(p.name for p in permissions) + "."


def _error(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": MEANINGS.get(status, HTTP_CODES.get(status, "Error")),
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}},
    }
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


def error_statuses(view: Any, method: str) -> set[int]:
    """The error statuses a view's declarations imply, and those it declares."""
    statuses = {400}
    permissions = getattr(view, PERMISSION_ATTR, None)
    if permissions is not None:
        statuses.add(401)
        if permissions:
            statuses.add(403)
    if getattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE, None) is not None:
        statuses |= {413, 415}
    if getattr(view, DOWNLOADS_ATTR, False) or method in WRITE_METHODS:
        statuses.add(503)
    statuses |= {s for s in getattr(view, ANSWERS_ATTR, ()) if s >= 400}
    return statuses


class ApiDocument(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        document = super().schema()
        document["components"]["schemas"][ERROR] = ErrorBody.model_json_schema()
        return document

    def build_querystring_parameters(
        self, model: Any
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """quart-schema's parameters, each marked required as its model says."""
        parameters, components = super().build_querystring_parameters(model)
        required = set(model.model_json_schema().get("required", ()))
        for parameter in parameters:
            if parameter["name"] in required:
                parameter["required"] = True
        return parameters, components

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, OtherThanConverter):
            words = "|".join(converter.words)
            parameter["schema"]["not"] = {"pattern": f"^({words})(/|$)"}
        return parameter

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        for operations in paths.values():
            for method, operation in list(operations.items()):
                operations[method] = self._complete(view, method.upper(), operation)
        return paths, components

    def _complete(self, view: Any, method: str, operation: dict[str, Any]) -> dict[str, Any]:
        operation = copy.deepcopy(operation)
        permissions = getattr(view, PERMISSION_ATTR, None)
        text = permission_text(permissions)
        operation["description"] = "\n\n".join(
            part for part in (operation.get("description"), text) if part
        )
        if permissions is None:
            operation["security"] = []
        else:
            operation["security"] = SESSION_SECURITY
            operation["x-required-permission"] = [p.name for p in permissions]
        for parameter in operation["parameters"]:
            schema = getattr(view, PATH_ATTR, {}).get(parameter["name"])
            if parameter["in"] == "path" and schema is not None:
                parameter["schema"].update(schema)
        if "requestBody" in operation:  # `json_body`: a body is needed unless it is optional
            operation["requestBody"]["required"] = not getattr(view, OPTIONAL_BODY_ATTR, False)
        responses: dict[Any, Any] = {str(k): v for k, v in operation["responses"].items()}
        successes = [s for s in getattr(view, ANSWERS_ATTR, ()) if s < 400]
        media_type = getattr(view, MEDIA_ATTR, None)
        if media_type is not None:
            content_type, statuses, schema = media_type
            for status in statuses:
                responses.setdefault(
                    str(status),
                    {"description": "OK", "content": {content_type: {"schema": schema}}},
                )
        if not any(status.startswith("2") for status in responses):
            for status in successes or [200]:
                responses[str(status)] = {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
        for status in sorted(error_statuses(view, method)):
            responses.setdefault(str(status), _error(status))
        operation["responses"] = dict(sorted(responses.items()))
        return operation


# The bodies of the main routes, for `document_response` (documentation only: the handlers'
# answers are tested against them by the fuzzer, tests/security/test_fuzz_openapi.py).
class HealthChecks(BaseModel):
    databases: str
    disk: str
    downloader: str


class HealthBody(BaseModel):
    """The daemon's health: `ok` (200) or `degraded` (503), naming the failing check."""

    status: Literal["ok", "degraded"]
    version: str
    uptime_sec: int
    checks: HealthChecks


class LoginAnswer(BaseModel):
    """A new session: its token (also set as the `session_token` cookie)."""

    token: str
    user_handle: str
    permissions: list[str]


class SessionAnswer(BaseModel):
    """Who the session belongs to and what they may do."""

    user_handle: str
    permissions: list[str]


class LogoutAnswer(BaseModel):
    """The session is ended and its cookie cleared."""

    status: Literal["logged_out"]


class OpenApiDocument(BaseModel):
    """This document: OpenAPI 3.1, generated from the routes' declarations."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, dict[str, Any]]
    components: dict[str, Any]


class AlbumRequested(BaseModel):
    """The album is queued."""

    request_id: str
    status: Literal["PENDING"]
    queue_position: int | None
