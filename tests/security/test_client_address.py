"""SPEC §4.2 rev 2: the client address behind trusted proxies, login throttling per client, and the
session cookie's `Secure` flag.

The app runs in-process with a proxy at 10.0.0.1 trusted (10.0.0.0/24); the connection's peer is
set through the test client's ASGI scope, as hypercorn sets it from the socket.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from api.client import Client, resolve
from api.throttle import PER_ADDRESS, PER_HANDLE_AND_ADDRESS
from daemon.config import Config
from daemon.root import Root
from storage.users import Role
from tests.conftest import make_user

PROXY = "10.0.0.1"
TRUSTED = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/64"))
CLIENT_A, CLIENT_B = "203.0.113.5", "198.51.100.7"
STRANGER = "192.0.2.9"  # a peer that is not a trusted proxy


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(db_dir=tmp_path, media_path=tmp_path, trusted_proxies=TRUSTED)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Any]:
    async with app.test_app():
        yield app.test_client(use_cookies=False)


@pytest.fixture
def admin(root: Root) -> str:
    make_user(root, "admin", (Role.Admin,))
    return "admin"


async def login(
    client: Any,
    handle: str,
    password: str = "wrong-password",
    *,
    peer: str = PROXY,
    headers: dict[str, str] | None = None,
    scheme: str = "http",
) -> Any:
    body = {"user_handle": handle, "password": password}
    scope = {"client": (peer, 40000)}
    return await client.post(
        "/v1/auth/login", json=body, headers=headers or {}, scope_base=scope, scheme=scheme
    )


def via_proxy(client_address: str, **extra: str) -> dict[str, str]:
    return {"X-Forwarded-For": client_address, **extra}


async def test_one_clients_failures_behind_the_proxy_never_lock_out_another(
    client: Any, admin: str
) -> None:
    statuses = []
    # A guesses at the admin's handle and at made-up ones, all through the shared proxy.
    for n in range(PER_ADDRESS):
        handle = admin if n % 2 else f"made-up-{n}"
        statuses.append((await login(client, handle, headers=via_proxy(CLIENT_A))).status_code)
    assert statuses == [401] * PER_ADDRESS
    held = await login(client, "someone-else", headers=via_proxy(CLIENT_A))
    assert held.status_code == 429
    assert (await held.get_json())["code"] == "TOO_MANY_REQUESTS"
    assert 1 <= int(held.headers["Retry-After"]) <= 60
    # A is held back even with the right password; B, through the same proxy, is not.
    right = await login(client, admin, "secret-password", headers=via_proxy(CLIENT_A))
    assert right.status_code == 429
    assert (await login(client, "made-up", headers=via_proxy(CLIENT_B))).status_code == 401
    signed_in = await login(client, admin, "secret-password", headers=via_proxy(CLIENT_B))
    assert signed_in.status_code == 201


async def test_hammering_one_handle_holds_back_only_that_client(client: Any, admin: str) -> None:
    for _ in range(PER_HANDLE_AND_ADDRESS):
        assert (await login(client, admin, headers=via_proxy(CLIENT_A))).status_code == 401
    held = await login(client, admin, "secret-password", headers=via_proxy(CLIENT_A))
    assert held.status_code == 429 and "Retry-After" in held.headers
    signed_in = await login(client, admin, "secret-password", headers=via_proxy(CLIENT_B))
    assert signed_in.status_code == 201


async def test_the_client_is_the_right_most_address_no_trusted_proxy_wrote(
    client: Any, admin: str
) -> None:
    # A makes up a different left-most entry every time; a second trusted proxy (10.0.0.2)
    # stands between the first and the daemon. All of it is A's failures all the same.
    for n in range(PER_ADDRESS):
        chain = f"198.18.0.{n}, {CLIENT_A}, 10.0.0.2"
        assert (await login(client, f"guess-{n}", headers=via_proxy(chain))).status_code == 401
    chain = f"{CLIENT_B}, {CLIENT_A}, 10.0.0.2"
    assert (
        await login(client, admin, "secret-password", headers=via_proxy(chain))
    ).status_code == 429
    chain = f"{CLIENT_A}, {CLIENT_B}, 10.0.0.2"
    assert (
        await login(client, admin, "secret-password", headers=via_proxy(chain))
    ).status_code == 201


async def test_a_forwarded_for_header_from_an_untrusted_peer_is_ignored(
    client: Any, admin: str
) -> None:
    for n in range(PER_ADDRESS):
        spoofed = via_proxy(f"198.18.0.{n}")
        assert (
            await login(client, f"guess-{n}", peer=STRANGER, headers=spoofed)
        ).status_code == 401
    # Counted against the peer, whatever it claims to forward for.
    claims_b = via_proxy(CLIENT_B)
    held = await login(client, admin, "secret-password", peer=STRANGER, headers=claims_b)
    assert held.status_code == 429
    # The client it claimed to be is not held back.
    signed_in = await login(client, admin, "secret-password", headers=via_proxy(CLIENT_B))
    assert signed_in.status_code == 201


async def test_malformed_forwarded_for_entries_are_ignored(client: Any, admin: str) -> None:
    odd = [
        "", ",", "unknown", "_hidden", "not an address", "999.1.1.1", "[::1", "[::1]x",
        "1.2.3.4:http", "1.2.3.4:99999999", "::ffff:zz", "\u00e9", "1.2.3.4, , garbage",
        "x" * 4000, ", ".join(["junk"] * 500),
    ]  # fmt: skip
    for n, value in enumerate(odd):
        response = await login(client, f"guess-{n}", headers=via_proxy(value))
        assert response.status_code == 401, (value, response.status_code)
    # Throttled as one client (the proxy itself, for want of any address), never a 500.
    assert len(odd) < PER_ADDRESS
    signed_in = await login(client, admin, "secret-password", headers=via_proxy("garbage"))
    assert signed_in.status_code == 201


async def test_the_cookie_is_secure_when_the_client_came_over_https(
    client: Any, admin: str
) -> None:
    async def cookie(**kwargs: Any) -> str:
        response = await login(client, admin, "secret-password", **kwargs)
        assert response.status_code == 201
        value: str = response.headers["Set-Cookie"]
        return value

    https = {"X-Forwarded-Proto": "https"}
    assert "Secure" in await cookie(headers=via_proxy(CLIENT_A, **https))
    assert "Secure" not in await cookie(headers=via_proxy(CLIENT_A))
    assert "Secure" not in await cookie(
        headers=via_proxy(CLIENT_A, **{"X-Forwarded-Proto": "http"})
    )
    # An untrusted peer's claim is ignored; a direct HTTPS connection needs no claim.
    assert "Secure" not in await cookie(peer=STRANGER, headers=https)
    assert "Secure" in await cookie(peer=STRANGER, scheme="https")


async def test_the_request_log_names_the_resolved_client(
    client: Any, admin: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pezzottify.http")
    await login(client, admin, headers=via_proxy(f"198.18.0.1, {CLIENT_A}"))
    await login(client, admin, peer=STRANGER, headers=via_proxy(CLIENT_B))
    lines = [r.getMessage() for r in caplog.records if "/v1/auth/login" in r.getMessage()]
    assert lines[0].endswith(f"from {CLIENT_A}"), lines
    assert lines[1].endswith(f"from {STRANGER}"), lines


def resolved(
    peer: str | None,
    forwarded_for: str | None = None,
    proto: str | None = None,
    scheme: str = "http",
) -> Client:
    return resolve(
        peer,
        scheme,
        [] if forwarded_for is None else [forwarded_for],
        [] if proto is None else [proto],
        TRUSTED,
    )


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "address"),
    [
        (STRANGER, "1.2.3.4", STRANGER),
        (PROXY, None, PROXY),
        (PROXY, "1.2.3.4", "1.2.3.4"),
        (PROXY, "1.2.3.4:5678", "1.2.3.4"),
        (PROXY, "[2001:db8::7]:443", "2001:db8::7"),
        (PROXY, "2001:db8::7", "2001:db8::7"),
        (PROXY, "5.6.7.8, 1.2.3.4, 10.0.0.9", "1.2.3.4"),
        (PROXY, "5.6.7.8, 1.2.3.4, unknown, 10.0.0.9", "1.2.3.4"),
        (PROXY, "10.0.0.3, 10.0.0.2", "10.0.0.3"),  # all trusted: the farthest hop
        (PROXY, "garbage", PROXY),
        (PROXY, "::ffff:1.2.3.4", "1.2.3.4"),
        ("::ffff:10.0.0.1", "1.2.3.4", "1.2.3.4"),  # a dual-stack listener's view of the proxy
        ("fd00::1", "1.2.3.4", "1.2.3.4"),
        ("fd00:1::1", "1.2.3.4", "fd00:1::1"),
        (None, "1.2.3.4", "unknown"),
        ("/run/pezzottify.sock", "1.2.3.4", "/run/pezzottify.sock"),
    ],
)  # fmt: skip
def test_client_address_resolution(
    peer: str | None, forwarded_for: str | None, address: str
) -> None:
    assert resolved(peer, forwarded_for).address == address


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "proto", "scheme", "https"),
    [
        (PROXY, "1.2.3.4", "https", "http", True),
        (PROXY, "1.2.3.4", "HTTPS", "http", True),
        (PROXY, "1.2.3.4", None, "http", False),
        (PROXY, "1.2.3.4", None, "https", True),
        (STRANGER, "1.2.3.4", "https", "http", False),
        (STRANGER, None, None, "https", True),
        # Appended per hop: the value beside the chosen address is its proxy's.
        (PROXY, "9.9.9.9, 1.2.3.4", "https, http", "http", False),
        (PROXY, "1.2.3.4, 10.0.0.2", "https, http", "http", True),
        # Overwritten by the nearest proxy: its value counts.
        (PROXY, "9.9.9.9, 1.2.3.4", "https", "http", True),
    ],
)  # fmt: skip
def test_https_behind_a_trusted_proxy(
    peer: str, forwarded_for: str | None, proto: str | None, scheme: str, https: bool
) -> None:
    assert resolved(peer, forwarded_for, proto, scheme).https is https
