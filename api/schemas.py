"""Request-body and query-string plumbing shared by the blueprints.

Bodies are pydantic models that forbid unknown fields and coerce nothing (`"1"` is not an int):
an explicit allow-list per write endpoint. `json_body` is quart-schema's `validate_request`
(the same `data`, errors and `/openapi.json` entry) behind what it cannot do itself: a 415 for a
body that is not JSON, and JSON errors that say what is wrong and where, with the bad-text
checks of `api.text`, before the model sees any of it. Query strings are validated by
quart-schema's `validate_querystring` as it is, against `Query` models: they arrive as text, so
those models coerce numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from quart import request
from quart_schema import validate_request

from api.errors import ApiError
from api.text import check_json_text, decode_json
from storage.ids import CONTENT_ID_PATTERN
from storage.users import HANDLE_RE, Permission, Role

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
# Marks a view whose body may be left out (`json_body(optional=True)`), for the OpenAPI document.
OPTIONAL_BODY_ATTR = "optional_body"


# A content id in a body, checked by the handler (400 `INVALID_ID`); the pattern is for the
# OpenAPI document, so a generated client or a fuzzer sends a well-formed one.
ContentId = Annotated[str, Field(json_schema_extra={"pattern": CONTENT_ID_PATTERN})]

# A handle, a role name and a permission name as `storage.users` checks them (400 otherwise),
# stated for the document; those checks keep their own messages and codes. Answers name
# permissions the same way.
HANDLE = {"pattern": f"^{HANDLE_RE.pattern}$"}
ROLE = {"enum": [role.value for role in Role]}
PERMISSION = {"enum": [permission.name for permission in Permission]}
Handle = Annotated[str, Field(json_schema_extra=HANDLE)]
RoleName = Annotated[str, Field(json_schema_extra=ROLE)]
PermissionName = Annotated[str, Field(json_schema_extra=PERMISSION)]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Query strings arrive as text, so numbers are coerced; unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")


def json_body(model: type[BaseModel], *, optional: bool = False) -> Callable[[F], F]:
    """`validate_request(model)`, reached only by a body that is JSON, decodes and holds no bad
    text. quart-schema's own decoding answers a bare 400 for a malformed body (`api.text`'s says
    where), so the body is decoded here first; the framework decodes it again for the model.

    `optional`: a request with no body at all is taken as `{}` (a model whose fields all have
    defaults), so `curl -X POST` works without one; a body that is there is checked as usual."""

    def decorate(view: F) -> F:
        validated = validate_request(model)(view)

        @functools.wraps(validated)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if optional and not await request.get_data(cache=True, as_text=False):
                return await view(*args, data=model(), **kwargs)
            if request.mimetype != "application/json":
                raise ApiError(415, "request body must be application/json")
            check_json_text(decode_json(await request.get_data(cache=True, as_text=False)))
            return await validated(*args, **kwargs)

        setattr(wrapper, OPTIONAL_BODY_ATTR, optional)
        return wrapper  # type: ignore[return-value]

    return decorate


def page_limit(value: int | None, default: int = 50, maximum: int = 500) -> int:
    if value is None:
        return default
    if value < 1:
        raise ApiError(400, "limit must be at least 1", "BAD_REQUEST")
    return min(value, maximum)
