"""Login, session, logout and the 401/403 rules (SPEC §4.2)."""

from __future__ import annotations

import re
from typing import Any

from api.app import STATIC_ENDPOINTS
from daemon.root import Root
from storage.users import Role
from tests.conftest import login, make_user


async def test_login_returns_token_cookie_and_permissions(root: Root, client: Any) -> None:
    make_user(root, "alice", (Role.Regular,))
    response = await client.post(
        "/v1/auth/login", json={"user_handle": "alice", "password": "secret-password"}
    )
    assert response.status_code == 201
    body = await response.get_json()
    assert body["user_handle"] == "alice"
    assert body["permissions"] == ["AccessCatalog", "LikeContent", "OwnPlaylists"]
    assert len(body["token"]) >= 43
    cookie = response.headers["Set-Cookie"]
    assert f"session_token={body['token']}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie


async def test_wrong_password_and_unknown_user_look_the_same(root: Root, client: Any) -> None:
    make_user(root, "alice")
    wrong = await client.post("/v1/auth/login", json={"user_handle": "alice", "password": "x"})
    unknown = await client.post("/v1/auth/login", json={"user_handle": "bob", "password": "x"})
    assert wrong.status_code == unknown.status_code == 401
    assert await wrong.get_json() == await unknown.get_json()


async def test_token_in_header_raw_or_cookie(root: Root, client: Any) -> None:
    make_user(root, "alice")
    headers = await login(client, "alice")
    token = headers["Authorization"].removeprefix("Bearer ")
    for h in (
        {"Authorization": f"Bearer {token}"},
        {"Authorization": token},
        {"Cookie": f"session_token={token}"},
    ):
        response = await client.get("/v1/auth/session", headers=h)
        assert response.status_code == 200, h
        assert (await response.get_json())["user_handle"] == "alice"
    # The header wins over the cookie.
    mixed = {"Authorization": "Bearer nope", "Cookie": f"session_token={token}"}
    assert (await client.get("/v1/auth/session", headers=mixed)).status_code == 401


async def test_logout_revokes_only_that_token(root: Root, client: Any) -> None:
    make_user(root, "alice")
    first = await login(client, "alice")
    second = await login(client, "alice")
    assert (await client.post("/v1/auth/logout", headers=first)).status_code == 200
    assert (await client.get("/v1/auth/session", headers=first)).status_code == 401
    assert (await client.get("/v1/auth/session", headers=second)).status_code == 200


async def test_no_token_is_401_with_json(client: Any) -> None:
    response = await client.get("/v1/auth/session")
    assert response.status_code == 401
    assert (await response.get_json())["code"] == "UNAUTHORIZED"


async def test_repeated_failures_are_throttled(root: Root, client: Any) -> None:
    make_user(root, "alice")
    statuses = []
    for _ in range(12):
        r = await client.post("/v1/auth/login", json={"user_handle": "alice", "password": "bad"})
        statuses.append(r.status_code)
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    assert int(r.headers["Retry-After"]) >= 1
    # Even the right password waits out the window.
    r = await client.post(
        "/v1/auth/login", json={"user_handle": "alice", "password": "secret-password"}
    )
    assert r.status_code == 429


async def test_bad_login_bodies_are_400_or_415(client: Any) -> None:
    cases = [
        ({"json": {"user_handle": "a"}}, 400),
        ({"json": {"user_handle": "a", "password": "b", "admin": True}}, 400),
        ({"json": {"user_handle": 1, "password": "b"}}, 400),
        ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": "user_handle=a", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": [1, 2]}, 400),
    ]
    for kwargs, status in cases:
        response = await client.post("/v1/auth/login", **kwargs)
        assert response.status_code == status, kwargs
        body = await response.get_json()
        assert set(body) >= {"error", "code"}


async def test_unknown_route_and_method_are_json(client: Any) -> None:
    r = await client.get("/v1/nope")
    assert r.status_code == 404 and (await r.get_json())["code"] == "NOT_FOUND"
    r = await client.delete("/v1/auth/login")
    assert r.status_code == 405 and (await r.get_json())["code"] == "METHOD_NOT_ALLOWED"


async def test_body_over_one_mib_is_413(client: Any) -> None:
    big = b'{"user_handle": "' + b"a" * (1024 * 1024 + 10) + b'", "password": "x"}'
    r = await client.post("/v1/auth/login", data=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert (await r.get_json())["code"] == "PAYLOAD_TOO_LARGE"


async def test_openapi_lists_the_routes(client: Any) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    paths = (await r.get_json())["paths"]
    assert "/v1/auth/login" in paths


async def test_openapi_documents_every_route(app: Any, client: Any) -> None:
    paths = (await (await client.get("/openapi.json")).get_json())["paths"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint in STATIC_ENDPOINTS:
            continue  # the console's files, not the API
        path = re.sub(r"<(?:[^:>]*:)?(\w+)>", r"{\1}", rule.rule)
        assert path in paths, path
        documented = {m.upper() for m in paths[path]}
        assert (rule.methods or set()) - {"HEAD", "OPTIONS"} <= documented, path


async def test_bad_text_in_a_login_is_400_and_creates_no_session(root: Root, client: Any) -> None:
    make_user(root, "alice")
    bodies = [
        b'{"user_handle": "\\ud800", "password": "x"}',
        b'{"user_handle": "alice", "password": "secret-password\\u0000"}',
        b'{"user_handle": "alice", "password": "secret-password", "device_name": "\\udfff"}',
        b'{"user_handle": "alice", "password": "secret-password", "device_type": "a\\u0000"}',
    ]
    for body in bodies:
        r = await client.post(
            "/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, body
        answer = await r.get_json()
        assert answer["code"] == "INVALID_TEXT" and "invalid text in" in answer["error"]
        assert "Set-Cookie" not in r.headers
    with root.users.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


async def test_malformed_login_json_says_where(client: Any) -> None:
    r = await client.post(
        "/v1/auth/login",
        data='{"user_handle": "alice",\n "password": }',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert await r.get_json() == {
        "code": "MALFORMED_JSON",
        "error": "malformed JSON at line 2, column 14: Expecting value",
    }


async def test_the_cookie_is_secure_only_over_https(root: Root, client: Any) -> None:
    make_user(root, "alice")
    body = {"user_handle": "alice", "password": "secret-password"}
    plain = await client.post("/v1/auth/login", json=body)
    secure = await client.post("/v1/auth/login", json=body, scheme="https")
    assert plain.status_code == secure.status_code == 201
    assert "Secure" not in plain.headers["Set-Cookie"]
    assert "Secure" in secure.headers["Set-Cookie"]
