"""Authentication and the per-route permission declaration.

Every view is decorated with `@requires(Permission.X, ...)` or `@public`; the app factory refuses
to start if a route has neither. `requires` resolves the session token (Authorization header,
`Bearer <t>` or raw, winning over the `session_token` cookie), answers 401 for no or unknown
token and 403 for a missing permission — all before the handler (and so before the body is read).
Only then is the path and query string checked for bad text (`api.text.check_url`), so a caller
without a session learns nothing about a route but that it needs one.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from quart import g, request

from api.context import root
from api.errors import ApiError
from api.text import check_url
from storage.users import Permission, User

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
PERMISSION_ATTR = "required_permissions"
COOKIE = "session_token"


def request_token() -> str | None:
    header = request.headers.get("Authorization", "").strip()
    if header:
        scheme, _, rest = header.partition(" ")
        return rest.strip() if scheme.lower() == "bearer" and rest else header
    return request.cookies.get(COOKIE) or None


async def authenticate() -> User:
    token = request_token()
    if token is None:
        raise ApiError(401, "authentication required", "UNAUTHORIZED")
    users = root().users
    # A session resolved moments ago is served from memory: most requests then make one
    # worker-thread round trip (their own store call) instead of two.
    user = users.cached_session(token)
    if user is None:
        user = await users.db.run(users.session_user, token)
    if user is None:
        raise ApiError(401, "invalid or expired session", "UNAUTHORIZED")
    g.user = user
    g.token = token
    return user


def requires(*permissions: Permission) -> Callable[[F], F]:
    """Declare the permissions a view needs (none: any logged-in user)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = await authenticate()
            missing = [p.name for p in permissions if p not in user.permissions]
            if missing:
                raise ApiError(403, f"missing permission {', '.join(missing)}", "FORBIDDEN")
            check_url()
            return await view(*args, **kwargs)

        setattr(wrapper, PERMISSION_ATTR, tuple(permissions))
        return wrapper  # type: ignore[return-value]

    return decorate


def public(view: F) -> F:
    """Declare a view that needs no session."""
    setattr(view, PERMISSION_ATTR, None)
    return view


def current_user() -> User:
    user: User = g.user
    return user
