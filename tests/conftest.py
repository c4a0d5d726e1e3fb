"""Shared fixtures: a configuration on tmp_path, the API context, the app and its test client.

Password hashing in tests uses cheap Argon2id parameters (the production parameters are checked
by their own test) so that logging in a dozen users stays fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from api.app import create_app
from api.context import AppContext
from daemon.config import Config, DownloadManagerConfig
from daemon.services import build_context, close_context
from storage.users import Permission, Role

FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here rather than under tests/reliability so that any invocation accepts it.
    parser.addoption(
        "--chaos-iterations", type=int, default=3,
        help="random kill/restart iterations of tests/reliability/test_chaos.py (default 3)",
    )  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(db_dir=tmp_path, media_path=tmp_path, download_manager=DownloadManagerConfig())


@pytest.fixture
def context(config: Config) -> Iterator[AppContext]:
    context = build_context(config, hasher=FAST_HASHER)
    yield context
    close_context(context)


@pytest.fixture
def app(context: AppContext) -> Any:
    return create_app(context)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Any]:
    async with app.test_app() as test_app:
        yield test_app.test_client()


def make_user(
    context: AppContext,
    handle: str,
    roles: tuple[Role, ...] = (Role.Regular,),
    password: str = "secret-password",
    extra: tuple[Permission, ...] = (),
) -> None:
    """Create a user with a password directly in the store (blocking; fine in tests)."""
    context.users.create_user(handle, roles)
    context.users.set_password(handle, context.hasher.hash(password), must_exist=False)
    for permission in extra:
        context.users.add_permission(handle, permission)


async def login(client: Any, handle: str, password: str = "secret-password") -> dict[str, str]:
    """Log in over the API; return headers carrying the bearer token."""
    response = await client.post(
        "/v1/auth/login", json={"user_handle": handle, "password": password}
    )
    assert response.status_code == 201, await response.get_data()
    body = await response.get_json()
    return {"Authorization": f"Bearer {body['token']}"}


@pytest.fixture
async def admin_headers(context: AppContext, client: Any) -> dict[str, str]:
    make_user(context, "admin", (Role.Admin,))
    return await login(client, "admin")


@pytest.fixture
async def user_headers(context: AppContext, client: Any) -> dict[str, str]:
    make_user(context, "regular", (Role.Regular,))
    return await login(client, "regular")
