"""User administration over HTTP (SPEC §4.3): statuses, JSON shapes, hook, effects on login."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest
import trio

from actors.messages import Hook, HookFired
from daemon.root import Root, SchedulerHandle
from storage.users import Permission, Role
from tests.conftest import login, make_user, serve
from tests.support.openapi import assert_documented

USERS = "/v1/admin/users"
# Every route of the blueprint with a body it would accept.
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", USERS, {"user_handle": "newbie"}),
    ("GET", USERS, None),
    ("POST", f"{USERS}/regular/roles", {"role": "Admin"}),
    ("DELETE", f"{USERS}/regular/roles/Regular", None),
    ("POST", f"{USERS}/regular/permissions", {"permission": "ManagePermissions"}),
    ("DELETE", f"{USERS}/regular/permissions/AccessCatalog", None),
]


async def send(client: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return await client.open(path, method=method, json=body, headers=headers)


async def create(client: Any, headers: dict[str, str], **body: Any) -> Any:
    return await client.post(USERS, json=body, headers=headers)


async def test_create_user_answers_201_with_the_user_and_it_can_log_in(
    client: Any, admin_headers: dict[str, str]
) -> None:
    r = await create(
        client, admin_headers, user_handle="bob", password="long-enough", roles=["Regular"]
    )
    assert r.status_code == 201
    assert await r.get_json() == {
        "user_handle": "bob",
        "roles": ["Regular"],
        "permissions": ["AccessCatalog", "LikeContent", "OwnPlaylists"],
        "extra_permissions": [],
        "has_password": True,
    }
    bob = await login(client, "bob", "long-enough")
    session = await (await client.get("/v1/auth/session", headers=bob)).get_json()
    assert session == {
        "user_handle": "bob",
        "permissions": ["AccessCatalog", "LikeContent", "OwnPlaylists"],
    }


async def test_create_defaults_to_regular_without_password(
    client: Any, admin_headers: dict[str, str]
) -> None:
    r = await create(client, admin_headers, user_handle="carol")
    assert r.status_code == 201
    body = await r.get_json()
    assert (body["roles"], body["has_password"]) == (["Regular"], False)
    r = await client.post("/v1/auth/login", json={"user_handle": "carol", "password": "whatever1"})
    assert r.status_code == 401


async def test_create_with_several_or_no_roles(client: Any, admin_headers: dict[str, str]) -> None:
    r = await create(client, admin_headers, user_handle="boss", roles=["admin", "Regular", "Admin"])
    body = await r.get_json()
    assert r.status_code == 201
    assert body["roles"] == ["Admin", "Regular"]
    assert {"ManagePermissions", "LikeContent"} <= set(body["permissions"])
    r = await create(client, admin_headers, user_handle="nobody", roles=[])
    assert (await r.get_json())["permissions"] == []


async def test_existing_handle_is_409_and_leaves_the_user_alone(
    root: Root, client: Any, admin_headers: dict[str, str]
) -> None:
    make_user(root, "dave")
    r = await create(client, admin_headers, user_handle="dave", password="other-pass", roles=[])
    assert r.status_code == 409
    assert (await r.get_json())["code"] == "USER_EXISTS"
    await login(client, "dave")  # the old password still works
    assert root.users.require("dave").roles == (Role.Regular,)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"user_handle": ""}, "INVALID_HANDLE"),
        ({"user_handle": "a b"}, "INVALID_HANDLE"),
        ({"user_handle": "x" * 65}, "INVALID_HANDLE"),
        ({"user_handle": ".."}, "INVALID_HANDLE"),
        ({"user_handle": "zoë"}, "INVALID_HANDLE"),
        ({"user_handle": "a/b"}, "INVALID_HANDLE"),
        ({"user_handle": "eve", "password": "short"}, "INVALID_PASSWORD"),
        ({"user_handle": "eve", "password": "x" * 1025}, "INVALID_PASSWORD"),
        ({"user_handle": "eve", "roles": ["Superuser"]}, "UNKNOWN_ROLE"),
        ({"user_handle": "eve", "permissions": ["ServerAdmin"]}, "VALIDATION_ERROR"),
        ({"user_handle": 7}, "VALIDATION_ERROR"),
        ({"user_handle": "eve", "roles": "Admin"}, "VALIDATION_ERROR"),
        ({"password": "long-enough"}, "VALIDATION_ERROR"),
    ],
)
async def test_bad_create_bodies_are_400_and_create_nothing(
    root: Root, client: Any, admin_headers: dict[str, str], body: Any, code: str
) -> None:
    r = await client.post(USERS, json=body, headers=admin_headers)
    assert r.status_code == 400
    assert (await r.get_json())["code"] == code
    assert root.users.handles() == ["admin"]


async def test_longest_valid_handle_and_password_are_accepted(
    client: Any, admin_headers: dict[str, str]
) -> None:
    handle = "A-z_0." + "x" * 58
    r = await create(client, admin_headers, user_handle=handle, password="p" * 1024)
    assert r.status_code == 201
    r = await create(client, admin_headers, user_handle="eight", password="12345678")
    assert r.status_code == 201


async def test_list_users(root: Root, client: Any, admin_headers: dict[str, str]) -> None:
    make_user(root, "zed", (), extra=(Permission.RequestContent,))
    root.users.create_user("bea")
    r = await client.get(USERS, headers=admin_headers)
    assert r.status_code == 200
    users = (await r.get_json())["users"]
    assert [u["user_handle"] for u in users] == ["admin", "bea", "zed"]
    assert users[2] == {
        "user_handle": "zed",
        "roles": [],
        "permissions": ["RequestContent"],
        "extra_permissions": ["RequestContent"],
        "has_password": True,
    }
    assert users[1]["has_password"] is False
    assert all(set(u) == set(users[0]) for u in users)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_anonymous_is_401(client: Any, method: str, path: str, body: Any) -> None:
    r = await send(client, method, path, body, {})
    assert r.status_code == 401
    assert (await r.get_json())["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_regular_user_is_403_and_nothing_changes(
    root: Root,
    client: Any,
    user_headers: dict[str, str],
    method: str,
    path: str,
    body: Any,
) -> None:
    r = await send(client, method, path, body, user_headers)
    assert r.status_code == 403
    assert (await r.get_json())["code"] == "FORBIDDEN"
    assert root.users.handles() == ["regular"]
    assert root.users.require("regular").permissions == Role.Regular.permissions


async def test_permission_is_checked_before_the_body(
    client: Any, user_headers: dict[str, str]
) -> None:
    r = await client.post(USERS, json={"bogus": 1}, headers=user_headers)
    assert r.status_code == 403


async def test_granting_a_role_takes_effect_on_the_users_session(
    root: Root, client: Any, admin_headers: dict[str, str]
) -> None:
    make_user(root, "bob")
    bob = await login(client, "bob")
    assert (await client.get(USERS, headers=bob)).status_code == 403
    r = await client.post(f"{USERS}/bob/roles", json={"role": "Admin"}, headers=admin_headers)
    assert r.status_code == 200
    body = await r.get_json()
    assert body["roles"] == ["Admin", "Regular"]
    assert "ManagePermissions" in body["permissions"]
    assert (await client.get(USERS, headers=bob)).status_code == 200
    r = await client.delete(f"{USERS}/bob/roles/admin", headers=admin_headers)
    assert r.status_code == 200
    assert (await r.get_json())["roles"] == ["Regular"]
    assert (await client.get(USERS, headers=bob)).status_code == 403


async def test_extra_permission_grant_and_revoke(
    root: Root, client: Any, admin_headers: dict[str, str]
) -> None:
    make_user(root, "bob")
    path = f"{USERS}/bob/permissions"
    r = await client.post(path, json={"permission": "requestcontent"}, headers=admin_headers)
    assert r.status_code == 200
    body = await r.get_json()
    assert body["extra_permissions"] == ["RequestContent"]
    assert body["permissions"] == ["AccessCatalog", "LikeContent", "OwnPlaylists", "RequestContent"]
    assert Permission.RequestContent in root.users.require("bob").permissions
    r = await client.delete(f"{path}/RequestContent", headers=admin_headers)
    assert r.status_code == 200
    assert (await r.get_json())["extra_permissions"] == []
    assert Permission.RequestContent not in root.users.require("bob").permissions


async def test_revoking_what_is_not_held_is_200_and_unchanged(
    root: Root, client: Any, admin_headers: dict[str, str]
) -> None:
    make_user(root, "bob")
    for path in (f"{USERS}/bob/roles/Admin", f"{USERS}/bob/permissions/ServerAdmin"):
        r = await client.delete(path, headers=admin_headers)
        assert r.status_code == 200
        assert (await r.get_json())["permissions"] == [
            "AccessCatalog",
            "LikeContent",
            "OwnPlaylists",
        ]
    # A role's permission is not an extra grant: revoking it as one changes nothing.
    r = await client.delete(f"{USERS}/bob/permissions/AccessCatalog", headers=admin_headers)
    assert "AccessCatalog" in (await r.get_json())["permissions"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"{USERS}/ghost/roles", {"role": "Admin"}),
        ("DELETE", f"{USERS}/ghost/roles/Admin", None),
        ("POST", f"{USERS}/ghost/permissions", {"permission": "ServerAdmin"}),
        ("DELETE", f"{USERS}/ghost/permissions/ServerAdmin", None),
    ],
)
async def test_unknown_user_is_404(
    client: Any, admin_headers: dict[str, str], method: str, path: str, body: Any
) -> None:
    r = await send(client, method, path, body, admin_headers)
    assert r.status_code == 404
    assert (await r.get_json())["code"] == "USER_NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("POST", f"{USERS}/admin/roles", {"role": "Root"}, "UNKNOWN_ROLE"),
        ("DELETE", f"{USERS}/admin/roles/Root", None, "UNKNOWN_ROLE"),
        ("POST", f"{USERS}/admin/permissions", {"permission": "Fly"}, "UNKNOWN_PERMISSION"),
        ("POST", f"{USERS}/admin/permissions", {"permission": "9"}, "UNKNOWN_PERMISSION"),
        ("DELETE", f"{USERS}/admin/permissions/Fly", None, "UNKNOWN_PERMISSION"),
        ("POST", f"{USERS}/admin/roles", {"role": 1}, "VALIDATION_ERROR"),
        ("POST", f"{USERS}/admin/roles", {"role": "Admin", "x": 1}, "VALIDATION_ERROR"),
    ],
)
async def test_unknown_role_or_permission_is_400(
    root: Root,
    client: Any,
    admin_headers: dict[str, str],
    method: str,
    path: str,
    body: Any,
    code: str,
) -> None:
    r = await send(client, method, path, body, admin_headers)
    assert r.status_code == 400
    assert (await r.get_json())["code"] == code
    assert root.users.require("admin").roles == (Role.Admin,)


async def test_creating_a_user_fires_on_user_created(
    root: Root, admin_headers: dict[str, str]
) -> None:
    send_end, receive_end = trio.open_memory_channel[Any](4)
    with_scheduler = replace(root, scheduler=SchedulerHandle(send_end, root.scheduler.view))
    async with serve(with_scheduler) as client:
        assert (await create(client, admin_headers, user_handle="bob")).status_code == 201
        assert receive_end.receive_nowait() == HookFired(Hook.OnUserCreated)
        # Failed creations and other admin changes fire nothing.
        await create(client, admin_headers, user_handle="bob")
        await create(client, admin_headers, user_handle="a b")
        await client.post(f"{USERS}/bob/roles", json={"role": "Admin"}, headers=admin_headers)
        with pytest.raises(trio.WouldBlock):
            receive_end.receive_nowait()


async def test_a_full_or_closed_scheduler_channel_does_not_fail_creation(
    root: Root,
    admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    send_end, receive_end = trio.open_memory_channel[Any](0)
    with_scheduler = replace(root, scheduler=SchedulerHandle(send_end, root.scheduler.view))
    async with serve(with_scheduler) as client:
        with caplog.at_level(logging.WARNING, logger="api.admin_users"):
            assert (await create(client, admin_headers, user_handle="bob")).status_code == 201
            await receive_end.aclose()
            assert (await create(client, admin_headers, user_handle="carl")).status_code == 201
    assert "channel full" in caplog.text and "not running" in caplog.text
    assert root.users.handles() == ["admin", "bob", "carl"]


async def test_create_is_in_the_openapi_document(client: Any) -> None:
    paths = (await (await client.get("/openapi.json")).get_json())["paths"]
    assert USERS in paths


async def test_answers_are_as_the_document_says(client: Any, admin_headers: dict[str, str]) -> None:
    """Users with and without a password, roles and extra permissions: each answer is valid
    against its route's schema in /openapi.json."""

    async def check(method: str, route: str, path: str, body: Any, status: int = 200) -> Any:
        response = await send(client, method, path, body, admin_headers)
        assert response.status_code == status, await response.get_data()
        answer = await response.get_json()
        await assert_documented(client, method, USERS + route, status, answer)
        return answer

    bob = {"user_handle": "bob", "password": "long-enough", "roles": ["Admin", "Regular"]}
    assert (await check("POST", "", USERS, bob, 201))["has_password"] is True
    bare = await check("POST", "", USERS, {"user_handle": "nobody", "roles": []}, 201)
    assert (bare["roles"], bare["permissions"], bare["has_password"]) == ([], [], False)
    granted = await check("POST", "/{handle}/permissions", f"{USERS}/nobody/permissions",
                          {"permission": "ServerAdmin"})  # fmt: skip
    assert granted["extra_permissions"] == ["ServerAdmin"]
    await check("POST", "/{handle}/roles", f"{USERS}/nobody/roles", {"role": "Regular"})
    await check("DELETE", "/{handle}/roles/{role}", f"{USERS}/bob/roles/Admin", None)
    await check("DELETE", "/{handle}/permissions/{permission}",
                f"{USERS}/nobody/permissions/ServerAdmin", None)  # fmt: skip
    listed = await check("GET", "", USERS, None)
    assert [u["user_handle"] for u in listed["users"]] == ["admin", "bob", "nobody"]
