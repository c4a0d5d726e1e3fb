"""SEC-2..SEC-4: sessions, login errors and throttling, password hashing.

Tokens must never be written anywhere in clear (database files including the WAL, logs), must
stop working on logout, password change and expiry, and must never be read from a URL. Login
failures look the same whatever went wrong and are throttled. Passwords use Argon2id at or above
the OWASP floor, and a weaker stored hash is upgraded at the next successful login.
"""

from __future__ import annotations

import logging
import re
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from argon2 import PasswordHasher

from api.app import create_app
from api.throttle import PER_ADDRESS, PER_HANDLE_AND_ADDRESS, LoginThrottle
from daemon.config import Config
from daemon.root import Root
from daemon.services import close_root
from storage.users import SESSION_ABSOLUTE_SECS, SESSION_IDLE_SECS, Role, UserStore, hash_token
from tests.conftest import FAST_HASHER, login, make_user, open_test_root, serve
from tests.support.disk import full_for

ARGON2 = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")
OWASP_MIN_MEMORY_KIB, OWASP_MIN_TIME = 19456, 2


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Any]:
    """A client without a cookie jar: each request carries only the credentials a test gives."""
    async with app.test_app():
        yield app.test_client(use_cookies=False)


def user_db_bytes(db_dir: Path) -> bytes:
    """user.db with its -wal and -shm files, as they are on disk."""
    return b"".join(path.read_bytes() for path in sorted(db_dir.glob("user.db*")))


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def status(client: Any, path: str, **kwargs: Any) -> int:
    response = await client.get(path, **kwargs)
    code: int = response.status_code
    return code


@pytest.mark.parametrize("level", ["headers", "body"])
async def test_tokens_are_in_no_database_file_and_no_log(
    tmp_path: Path, level: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = open_test_root(Config(db_dir=tmp_path, media_path=tmp_path, logging_level=level))
    try:
        make_user(root, "alice")
        caplog.set_level(logging.INFO)
        app = create_app(root)
        async with app.test_app():
            client = app.test_client(use_cookies=False)
            tokens = [token_of(await login(client, "alice")) for _ in range(3)]
            for token in tokens:
                assert await status(client, "/v1/auth/session", headers={"Authorization": token})
                cookie = {"Cookie": f"session_token={token}"}
                assert await status(client, "/v1/auth/session", headers=cookie) == 200
            assert await status(client, "/v1/auth/logout", headers={"Cookie": cookie["Cookie"]})
        files = await trio.to_thread.run_sync(user_db_bytes, tmp_path)
        for token in tokens:
            assert len(token) >= 43  # 256 bits, url-safe base64
            assert token.encode() not in files
            assert token[:16] not in caplog.text
        # The sessions are in those files, as hashes: the search looked in the right place.
        assert hash_token(tokens[0]).encode() in files
        assert "/v1/auth/session" in caplog.text and "<redacted>" in caplog.text
    finally:
        close_root(root)


async def test_a_token_in_the_query_string_is_ignored(root: Root, client: Any) -> None:
    make_user(root, "alice")
    token = token_of(await login(client, "alice"))
    for query in (f"token={token}", f"session_token={token}", f"access_token={token}"):
        assert await status(client, f"/v1/auth/session?{query}") == 401


async def test_logout_revokes_the_token_and_clears_the_cookie(root: Root, client: Any) -> None:
    make_user(root, "alice")
    first, second = await login(client, "alice"), await login(client, "alice")
    cookie = {"Cookie": f"session_token={token_of(first)}"}
    response = await client.post("/v1/auth/logout", headers=cookie)
    assert response.status_code == 200
    assert "session_token=;" in response.headers["Set-Cookie"]
    assert await status(client, "/v1/auth/session", headers=first) == 401
    assert await status(client, "/v1/auth/session", headers=cookie) == 401
    assert await status(client, "/v1/auth/session", headers=second) == 200


async def test_a_password_change_revokes_every_token(root: Root, client: Any) -> None:
    make_user(root, "alice", password="old-password")
    make_user(root, "bob")
    tokens = [await login(client, "alice", "old-password") for _ in range(2)]
    bystander = await login(client, "bob")
    root.users.set_password("alice", FAST_HASHER.hash("new-password"), must_exist=True)
    for headers in tokens:
        assert await status(client, "/v1/auth/session", headers=headers) == 401
    assert await status(client, "/v1/auth/session", headers=bystander) == 200
    old = {"user_handle": "alice", "password": "old-password"}
    assert (await client.post("/v1/auth/login", json=old)).status_code == 401
    fresh = await login(client, "alice", "new-password")
    assert await status(client, "/v1/auth/session", headers=fresh) == 200


@pytest.mark.parametrize(
    ("column", "age"), [("created_at", SESSION_ABSOLUTE_SECS), ("last_used_at", SESSION_IDLE_SECS)]
)
async def test_expired_sessions_are_401(root: Root, client: Any, column: str, age: int) -> None:
    make_user(root, "alice")
    headers = await login(client, "alice")
    past = int(time.time()) - age - 60
    with root.users.db.write() as conn:
        # `column` is one of the two literals above.
        conn.execute(f"UPDATE sessions SET {column} = ?", (past,))  # noqa: S608
    assert await status(client, "/v1/auth/session", headers=headers) == 401


async def test_login_failures_look_the_same(root: Root, client: Any) -> None:
    make_user(root, "alice")
    root.users.create_user("nopass", (Role.Regular,))
    attempts = [
        {"user_handle": "alice", "password": "wrong-password"},
        {"user_handle": "nobody", "password": "wrong-password"},
        {"user_handle": "nopass", "password": "wrong-password"},
    ]
    answers = []
    for body in attempts:
        response = await client.post("/v1/auth/login", json=body)
        cookie = "Set-Cookie" in response.headers
        answers.append((response.status_code, await response.get_json(), cookie))
    assert answers[0][0] == 401
    assert all(answer == answers[0] for answer in answers), answers


async def test_a_login_on_a_full_disk_answers_503_and_creates_nothing(
    root: Root, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(root, "alice")
    monkeypatch.setattr(UserStore, "create_session", full_for(1, UserStore.create_session))
    body = {"user_handle": "alice", "password": "secret-password"}
    refused = await client.post("/v1/auth/login", json=body)
    assert refused.status_code == 503
    assert (await refused.get_json())["code"] == "STORAGE_UNAVAILABLE"
    assert refused.headers["Retry-After"] == "30"
    assert "Set-Cookie" not in refused.headers
    with root.users.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    # Once there is room again, the same login works.
    assert (await client.post("/v1/auth/login", json=body)).status_code == 201


async def login_from(client: Any, address: str, handle: str, password: str) -> Any:
    body = {"user_handle": handle, "password": password}
    scope = {"client": (address, 40000)}
    return await client.post("/v1/auth/login", json=body, scope_base=scope)


async def test_repeated_failures_from_one_address_are_throttled(root: Root) -> None:
    clock = [1000.0]
    make_user(root, "alice")
    async with serve(root, throttle=LoginThrottle(clock=lambda: clock[0])) as client:
        # Guesses spread over handles are counted against the address they come from.
        for n in range(PER_ADDRESS):
            failed = await login_from(client, "10.0.0.1", f"guess{n}", "wrong-password")
            assert failed.status_code == 401
        limited = await login_from(client, "10.0.0.1", "alice", "secret-password")
        assert limited.status_code == 429
        assert (await limited.get_json())["code"] == "TOO_MANY_REQUESTS"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert "Set-Cookie" not in limited.headers
        # Another address is not held back by this one's failures.
        assert (await login_from(client, "10.0.0.2", "alice", "secret-password")).status_code == 201
        clock[0] += 61
        assert (await login_from(client, "10.0.0.1", "alice", "secret-password")).status_code == 201


async def test_repeated_failures_on_one_handle_from_one_address_are_throttled(
    root: Root, client: Any
) -> None:
    make_user(root, "alice")
    make_user(root, "bob")
    for _ in range(PER_HANDLE_AND_ADDRESS):
        failed = await login_from(client, "10.0.0.1", "alice", "wrong-password")
        assert failed.status_code == 401
    limited = await login_from(client, "10.0.0.1", "alice", "secret-password")
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    # The address has failures left for other handles, and alice elsewhere is not held back.
    assert (await login_from(client, "10.0.0.1", "bob", "secret-password")).status_code == 201
    assert (await login_from(client, "10.0.0.2", "alice", "secret-password")).status_code == 201


async def test_guessing_at_a_handle_from_everywhere_never_locks_its_user_out(
    root: Root, client: Any
) -> None:
    make_user(root, "alice")
    for n in range(3 * PER_ADDRESS):
        failed = await login_from(client, f"10.0.1.{n}", "alice", "wrong-password")
        assert failed.status_code == 401
    assert (await login_from(client, "10.0.2.1", "alice", "secret-password")).status_code == 201


def test_failures_spread_over_new_keys_do_not_pile_up() -> None:
    # Guesses from ever new addresses on ever new handles, a minute apart: only the keys that
    # failed within the window are worth keeping, whatever came before.
    clock = [0.0]
    throttle = LoginThrottle(clock=lambda: clock[0])
    for minute in range(40):
        clock[0] = minute * 61.0
        for n in range(500):
            throttle.failed(f"10.{minute}.{n // 256}.{n % 256}", f"handle-{minute}-{n}")
        assert len(throttle) <= 4 * 1000  # 1,000 keys fail within any one window
    # The keys of the last minute still count, and an old one no longer does.
    for n in range(PER_ADDRESS - 1):
        throttle.failed("10.39.0.7", f"another-{n}")
    assert throttle.retry_after("10.39.0.7", "anyone") == 60
    assert throttle.retry_after("10.0.0.7", "handle-0-7") is None


def test_huge_made_up_handles_cost_the_throttle_a_few_bytes() -> None:
    throttle = LoginThrottle()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(50):
            throttle.failed(f"10.0.0.{n}", str(n) * 100_000)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Holding the handles themselves would take 5 MB.
    assert held - before < 100_000


def argon2_parameters(encoded: str) -> tuple[int, int, int]:
    match = ARGON2.match(encoded)
    assert match is not None, encoded
    memory, rounds, lanes = (int(g) for g in match.groups())
    return memory, rounds, lanes


def test_production_hashes_meet_the_owasp_floor(tmp_path: Path) -> None:
    root = open_test_root(Config(db_dir=tmp_path, media_path=tmp_path), hasher=None)
    try:
        for hasher in (PasswordHasher(), root.hasher):
            memory, rounds, lanes = argon2_parameters(hasher.hash("correct horse"))
            assert memory >= OWASP_MIN_MEMORY_KIB and rounds >= OWASP_MIN_TIME and lanes >= 1
    finally:
        close_root(root)


async def test_a_weak_hash_is_upgraded_at_login(tmp_path: Path) -> None:
    root = open_test_root(Config(db_dir=tmp_path, media_path=tmp_path), hasher=None)
    try:
        weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        root.users.create_user("alice", (Role.Regular,), pw_hash=weak.hash("secret-password"))
        before = root.users.password_hash("alice")
        assert before is not None and argon2_parameters(before[1]) == (1024, 1, 1)
        app = create_app(root)
        async with app.test_app():
            client = app.test_client(use_cookies=False)
            await login(client, "alice")
            after = root.users.password_hash("alice")
            assert after is not None
            memory, rounds, _ = argon2_parameters(after[1])
            assert memory >= OWASP_MIN_MEMORY_KIB and rounds >= OWASP_MIN_TIME
            assert not root.hasher.check_needs_rehash(after[1])
            # The upgraded hash still takes the same password, and only that one.
            await login(client, "alice")
            wrong = {"user_handle": "alice", "password": "secret-passwore"}
            assert (await client.post("/v1/auth/login", json=wrong)).status_code == 401
    finally:
        close_root(root)
