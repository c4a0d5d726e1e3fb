"""Shared fixtures: a configuration on tmp_path, the daemon's root, the app and its test client.

Password hashing in tests uses cheap Argon2id parameters (the production parameters are checked
by their own test) so that logging in a dozen users stays fast. No actor runs: the root's
scheduler inbox and processor wake-up channel have no reader, as when those actors are stopped.
A test that needs a reader (or another downloader, throttle...) builds its root with
`open_test_root` or `dataclasses.replace` and serves it with `serve`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from argon2 import PasswordHasher

from api.app import create_app
from daemon.config import Config, DownloadManagerConfig
from daemon.root import Root
from daemon.services import close_root, open_root
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


def no_reader() -> trio.MemorySendChannel[Any]:
    """A channel whose reader is gone: a send fails at once, an offer is dropped."""
    send, receive = trio.open_memory_channel[Any](1)
    receive.close()
    return send


def open_test_root(config: Config, **options: Any) -> Root:
    """`open_root` with cheap hashing and, unless given, channels nobody reads (blocking)."""
    options.setdefault("scheduler_inbox", no_reader())
    options.setdefault("wake", no_reader())
    options.setdefault("hasher", FAST_HASHER)  # None: the production hasher
    return open_root(config, **options)


@asynccontextmanager
async def serve(root: Root, **app_options: Any) -> AsyncIterator[Any]:
    """A test client of an app built on `root` (for a root other than the fixture's)."""
    app = create_app(root, **app_options)
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.fixture
def root(config: Config) -> Iterator[Root]:
    root = open_test_root(config)
    yield root
    close_root(root)


@pytest.fixture
def app(root: Root) -> Any:
    return create_app(root)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Any]:
    async with app.test_app() as test_app:
        yield test_app.test_client()


def make_user(
    root: Root,
    handle: str,
    roles: tuple[Role, ...] = (Role.Regular,),
    password: str = "secret-password",
    extra: tuple[Permission, ...] = (),
) -> None:
    """Create a user with a password directly in the store (blocking; fine in tests)."""
    root.users.create_user(handle, roles)
    root.users.set_password(handle, root.hasher.hash(password), must_exist=False)
    for permission in extra:
        root.users.add_permission(handle, permission)


async def login(client: Any, handle: str, password: str = "secret-password") -> dict[str, str]:
    """Log in over the API; return headers carrying the bearer token."""
    response = await client.post(
        "/v1/auth/login", json={"user_handle": handle, "password": password}
    )
    assert response.status_code == 201, await response.get_data()
    body = await response.get_json()
    return {"Authorization": f"Bearer {body['token']}"}


@pytest.fixture
async def admin_headers(root: Root, client: Any) -> dict[str, str]:
    make_user(root, "admin", (Role.Admin,))
    return await login(client, "admin")


@pytest.fixture
async def user_headers(root: Root, client: Any) -> dict[str, str]:
    make_user(root, "regular", (Role.Regular,))
    return await login(client, "regular")
