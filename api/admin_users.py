"""User administration over HTTP (SPEC §4.3): create and list users, grant and revoke roles and
extra permissions. Every route needs ManagePermissions.

The input rules live in `storage.users` and are shared with `pezzottify-auth`: handles are 1-64
characters of `[A-Za-z0-9_.-]` (not `.` or `..`), passwords 8-1024 characters, role and
permission names match case-insensitively. Revoking a role or permission the user does not hold
answers 200 with the user unchanged, so a retried DELETE gets the same answer.

Creating a user fires the `OnUserCreated` hook without waiting on the scheduler: if its channel
is full or closed the hook is dropped with a warning, because the user already exists and failing
the request would invite a retry that answers 409.

A request cancelled after hashing still commits or rolls back its one write whole
(`Database.run` finishes the call), so a user is never left half-created.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import trio
from pydantic import Field
from quart import Blueprint, Response, jsonify
from quart_schema import document_response

from actors.messages import Hook, HookFired, SchedulerMessage
from api.auth import requires
from api.bodies_admin import UserInfo, UserList
from api.context import root
from api.errors import ApiError
from api.openapi import answers, path_schemas
from api.schemas import (
    HANDLE,
    PERMISSION,
    ROLE,
    Handle,
    PermissionName,
    RoleName,
    StrictBody,
    json_body,
)
from storage.users import (
    PASSWORD_MAX,
    PASSWORD_MIN,
    InvalidHandle,
    InvalidPassword,
    Permission,
    UnknownPermission,
    UnknownRole,
    UnknownUser,
    User,
    UserError,
    UserExists,
    check_handle,
    check_password,
    parse_permission,
    parse_role,
)

log = logging.getLogger(__name__)
blueprint = Blueprint("admin_users", __name__, url_prefix="/v1/admin/users")
T = TypeVar("T")

# Most specific class first: the first match in the exception's MRO wins.
ERRORS: dict[type[UserError], tuple[int, str]] = {
    UserExists: (409, "USER_EXISTS"),
    UnknownUser: (404, "USER_NOT_FOUND"),
    InvalidHandle: (400, "INVALID_HANDLE"),
    InvalidPassword: (400, "INVALID_PASSWORD"),
    UnknownRole: (400, "UNKNOWN_ROLE"),
    UnknownPermission: (400, "UNKNOWN_PERMISSION"),
}

# What `check_password` accepts (400 otherwise), as the OpenAPI document states it.
Password = Annotated[
    str, Field(json_schema_extra={"minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX})
]


class CreateUserBody(StrictBody):
    user_handle: Handle
    password: Password | None = None
    roles: list[RoleName] = Field(default_factory=lambda: ["Regular"])


class RoleBody(StrictBody):
    role: RoleName


class PermissionBody(StrictBody):
    permission: PermissionName


def user_json(user: User) -> dict[str, Any]:
    """The public shape of a user: names only, never a hash."""
    return {
        "user_handle": user.handle,
        "roles": [role.value for role in user.roles],
        "permissions": user.permission_names(),
        "extra_permissions": [p.name for p in user.extra],
        "has_password": user.has_password,
    }


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Answer a refused user operation with its status and code."""
    try:
        yield
    except UserError as exc:
        status, code = next(
            (ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS), (400, "BAD_REQUEST")
        )
        raise ApiError(status, str(exc), code) from exc


def fire_user_created(inbox: trio.MemorySendChannel[SchedulerMessage]) -> None:
    try:
        inbox.send_nowait(HookFired(Hook.OnUserCreated))
    except trio.WouldBlock:
        log.warning("scheduler channel full; OnUserCreated hook dropped")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        log.warning("scheduler not running; OnUserCreated hook dropped")


@blueprint.post("")
@document_response(UserInfo, 201)
@answers(201, 409)
@requires(Permission.ManagePermissions)
@json_body(CreateUserBody)
async def create_user(data: CreateUserBody) -> tuple[Response, int]:
    users = root().users
    with user_errors():
        handle = check_handle(data.user_handle)
        roles = tuple(dict.fromkeys(parse_role(name) for name in data.roles))
        if data.password is not None:
            check_password(data.password)
        # Checked before hashing so a duplicate costs no Argon2 run; create_user re-checks.
        if await users.db.run(users.get, handle) is not None:
            raise UserExists(f"user {handle!r} already exists")
        pw_hash = None
        if data.password is not None:
            pw_hash = await root().hashing.run(root().hasher.hash, data.password)
        user = await users.db.run(users.create_user, handle, roles, pw_hash=pw_hash)
    fire_user_created(root().scheduler.inbox)
    return jsonify(user_json(user)), 201


@blueprint.get("")
@document_response(UserList)
@requires(Permission.ManagePermissions)
async def list_users() -> Response:
    users = root().users
    return jsonify({"users": [user_json(u) for u in await users.db.run(users.all_users)]})


async def apply_change(
    change: Callable[[str, T], None], handle: str, parse: Callable[[str], T], name: str
) -> Response:
    """Parse a role or permission name, apply the change, answer with the updated user."""
    users = root().users
    with user_errors():
        value = parse(name)
        await users.db.run(change, handle, value)
        user = await users.db.run(users.require, handle)
    return jsonify(user_json(user))


@blueprint.post("/<handle>/roles")
@document_response(UserInfo)
@answers(404)
@path_schemas(handle=HANDLE)
@requires(Permission.ManagePermissions)
@json_body(RoleBody)
async def add_role(handle: str, data: RoleBody) -> Response:
    return await apply_change(root().users.add_role, handle, parse_role, data.role)


@blueprint.delete("/<handle>/roles/<role>")
@document_response(UserInfo)
@answers(404)
@path_schemas(handle=HANDLE, role=ROLE)
@requires(Permission.ManagePermissions)
async def remove_role(handle: str, role: str) -> Response:
    return await apply_change(root().users.remove_role, handle, parse_role, role)


@blueprint.post("/<handle>/permissions")
@document_response(UserInfo)
@answers(404)
@path_schemas(handle=HANDLE)
@requires(Permission.ManagePermissions)
@json_body(PermissionBody)
async def add_permission(handle: str, data: PermissionBody) -> Response:
    users = root().users
    return await apply_change(users.add_permission, handle, parse_permission, data.permission)


@blueprint.delete("/<handle>/permissions/<permission>")
@document_response(UserInfo)
@answers(404)
@path_schemas(handle=HANDLE, permission=PERMISSION)
@requires(Permission.ManagePermissions)
async def remove_permission(handle: str, permission: str) -> Response:
    users = root().users
    return await apply_change(users.remove_permission, handle, parse_permission, permission)
