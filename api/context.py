"""How handlers reach what the API was built with: the daemon's `Root` and the login's own state.

`create_app` stores one frozen `ApiState` on the app (`app.extensions["pezzottify"]`); handlers
read it through the typed accessors here, nowhere else. `require_downloads` is the one place
that answers 503 for a disabled download manager: the root's `downloads` is None exactly then.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from argon2 import PasswordHasher
from quart import Quart, current_app

from api.errors import ApiError
from api.throttle import LoginThrottle
from daemon.root import Downloads, Root
from storage.offload import Offload

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
EXTENSION = "pezzottify"
# Marks a view made by `downloads_route`, so the OpenAPI document lists its 503 (`api.openapi`).
DOWNLOADS_ATTR = "downloads_route"


class DecoyHash:
    """A hash to verify when the handle is unknown, so both login failures cost the same time:
    made by the server's own hasher, so it costs what the users' hashes cost, at the first
    login that needs it."""

    def __init__(self, hasher: PasswordHasher, hashing: Offload) -> None:
        self._hasher = hasher
        self._hashing = hashing
        self._hash: str | None = None

    async def get(self) -> str:
        if self._hash is None:
            self._hash = await self._hashing.run(self._hasher.hash, secrets.token_urlsafe(16))
        return self._hash


@dataclass(frozen=True)
class ApiState:
    root: Root
    throttle: LoginThrottle
    decoy: DecoyHash


def install(app: Quart, root: Root, throttle: LoginThrottle) -> None:
    app.extensions[EXTENSION] = ApiState(root, throttle, DecoyHash(root.hasher, root.hashing))


def api_state() -> ApiState:
    state: ApiState = current_app.extensions[EXTENSION]
    return state


def root() -> Root:
    return api_state().root


def require_downloads() -> Downloads:
    """The download manager's services, or the 503 that says it is disabled."""
    downloads = root().downloads
    if downloads is None:
        raise ApiError(503, "the download manager is disabled", "DOWNLOAD_MANAGER_DISABLED")
    return downloads


def downloads_route(view: F) -> F:
    """Declare a route of the download manager: `require_downloads` runs before the body or the
    query string is validated (placed under `@requires`), so a bad request on a server without
    the download manager is still told so."""

    @functools.wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        require_downloads()
        return await view(*args, **kwargs)

    setattr(wrapper, DOWNLOADS_ATTR, True)
    return wrapper  # type: ignore[return-value]
