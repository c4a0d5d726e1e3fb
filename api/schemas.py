"""Request-body and query-string plumbing shared by the blueprints.

Bodies are pydantic models that forbid unknown fields and coerce nothing (`"1"` is not an int):
an explicit allow-list per write endpoint. `json_body` adds a 415 for non-JSON bodies, and the
decoding and bad-text checks of `api.text`, in front of quart-schema's validation (which also
feeds `/openapi.json`); `querystring` is quart-schema's `validate_querystring`. Both let the
model validate itself: quart-schema builds a pydantic TypeAdapter for every request.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from quart import request
from quart_schema import validate_querystring, validate_request
from quart_schema.validation import QuerystringValidationError, RequestSchemaValidationError
from werkzeug.datastructures import MultiDict

from api.errors import ApiError
from api.text import check_json_text, decode_json

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
M = TypeVar("M", bound=BaseModel)


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query strings arrive as text, so numbers are coerced; unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")


def json_body(model: type[BaseModel]) -> Callable[[F], F]:
    """quart-schema's `validate_request(model)` (the same `data`, errors and `/openapi.json`
    entry) behind a 415 for bodies that are not JSON, validated by the model itself (see
    `querystring`)."""

    def decorate(view: F) -> F:
        declared = validate_request(model)(view)  # for the declaration `/openapi.json` reads

        @functools.wraps(declared)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.mimetype != "application/json":
                raise ApiError(415, "request body must be application/json")
            # Decoded here rather than by the framework, whose errors say neither what is wrong
            # nor where, and checked for bad text before the model sees any of it.
            body = decode_json(await request.get_data(cache=True, as_text=False))
            check_json_text(body)
            data = _validated(model, body, RequestSchemaValidationError)
            return await view(*args, data=data, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def querystring(model: type[Query]) -> Callable[[F], F]:
    """`validate_querystring(model)`: the same `query_args`, the same errors, the same entry in
    `/openapi.json`. quart-schema builds a pydantic TypeAdapter for every request, which costs
    more than the rest of a route answered from memory; the model's own validator does not."""

    def decorate(view: F) -> F:
        declared = validate_querystring(model)(view)  # for the declaration `/openapi.json` reads

        @functools.wraps(declared)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            parsed = _validated(model, _query_values(request.args), QuerystringValidationError)
            return await view(*args, query_args=parsed, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _validated(model: type[M], data: Any, error: type[Exception]) -> M:
    """`model.model_validate(data)`, failing as quart-schema does: `error` around the cause."""
    try:
        return model.model_validate(data)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise error(exc) from None


def _query_values(args: MultiDict[str, str]) -> dict[str, Any]:
    """As quart-schema reads a query string: `k[]` and repeated keys are lists, others text."""
    values: dict[str, Any] = {}
    for key, found in args.lists():
        if key.endswith("[]"):
            values[key.removesuffix("[]")] = found
        else:
            values[key] = found if len(found) > 1 else found[0]
    return values


def page_limit(value: int | None, default: int = 50, maximum: int = 500) -> int:
    if value is None:
        return default
    if value < 1:
        raise ApiError(400, "limit must be at least 1", "BAD_REQUEST")
    return min(value, maximum)
