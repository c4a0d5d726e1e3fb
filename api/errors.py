"""JSON errors: one exception for handlers to raise and the handlers that shape every error.

Every error response is `{"error": <human message>, "code": <MACHINE_CODE>, ...extra}`, including
the framework's own 404/405/413 and validation failures. A write refused because the disk is
full or failing answers 503 `STORAGE_UNAVAILABLE` with `Retry-After`. Any other unexpected
exception is logged and answered 500 in the same shape; the test suite treats any 500 as a bug.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from storage.db import disk_trouble

log = logging.getLogger(__name__)
STORAGE_RETRY_AFTER_S = 30

HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    416: "RANGE_NOT_SATISFIABLE",
    429: "TOO_MANY_REQUESTS",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
}


class ApiError(Exception):
    """Raise from a handler to answer with a JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or HTTP_CODES.get(status, "ERROR")
        self.headers = headers or {}
        self.extra = extra


def error_response(
    status: int, message: str, code: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    response = jsonify({"error": message, "code": code, **extra})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _validation_message(exc: RequestSchemaValidationError) -> tuple[str, list[dict[str, Any]]]:
    inner = exc.validation_error
    if isinstance(inner, ValidationError):
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in inner.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in details)
        return f"invalid request: {summary}", details
    return "invalid request: expected a JSON object", []


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.code, exc.headers, **exc.extra)

    @app.errorhandler(RequestSchemaValidationError)
    async def validation_error(exc: RequestSchemaValidationError) -> Response:
        message, details = _validation_message(exc)
        return error_response(400, message, "VALIDATION_ERROR", details=details)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = (exc.description or exc.name or "error").rstrip(".")
        if status == 413:
            message = "request body too large (limit 1 MiB)"
        headers = {}
        if status == 405 and exc.get_headers():
            headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        return error_response(status, message, HTTP_CODES.get(status, "ERROR"), headers)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        if disk_trouble(exc):  # the machine's condition, not a bug: say so, and retry later
            log.error("a request could not write: the disk is full or failing (%s)", exc)
            return error_response(
                503, "the server's disk is full or failing; try again later",
                "STORAGE_UNAVAILABLE", {"Retry-After": str(STORAGE_RETRY_AFTER_S)},
            )  # fmt: skip
        log.exception("unhandled error in request", exc_info=exc)
        return error_response(500, "internal server error", "INTERNAL_ERROR")
