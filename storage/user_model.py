"""The user model: permissions, roles, users, and the rules for handles and passwords.

Pure values and validation, shared by the store, the HTTP API and the `pezzottify-auth` CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, IntEnum


class Permission(IntEnum):
    AccessCatalog = 1
    LikeContent = 2
    OwnPlaylists = 3
    EditCatalog = 4
    ManagePermissions = 5
    IssueContentDownload = 6
    ServerAdmin = 7
    ViewAnalytics = 8
    RequestContent = 9


class Role(Enum):
    Admin = "Admin"
    Regular = "Regular"

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS[self]


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.Admin: frozenset(
        {
            Permission.AccessCatalog,
            Permission.EditCatalog,
            Permission.ManagePermissions,
            Permission.IssueContentDownload,
            Permission.ServerAdmin,
            Permission.ViewAnalytics,
            Permission.RequestContent,
        }
    ),
    Role.Regular: frozenset(
        {Permission.AccessCatalog, Permission.LikeContent, Permission.OwnPlaylists}
    ),
}


class UserError(Exception):
    """A user operation that cannot be done (unknown user, duplicate handle, …)."""


class UnknownUser(UserError):
    pass


class UserExists(UserError):
    pass


class InvalidInput(UserError):
    """A handle, password, role or permission name this server does not accept."""


class InvalidHandle(InvalidInput):
    pass


class InvalidPassword(InvalidInput):
    pass


class UnknownRole(InvalidInput):
    pass


class UnknownPermission(InvalidInput):
    pass


# Handles appear in URL paths, so they are kept to URL-safe characters; "." and ".." are
# refused because clients normalise them away as path segments.
HANDLE_RE = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.-]{1,64}")
PASSWORD_MIN, PASSWORD_MAX = 8, 1024


def check_handle(handle: str) -> str:
    if not HANDLE_RE.fullmatch(handle):
        raise InvalidHandle(
            "user handle must be 1-64 characters of A-Z a-z 0-9 _ . - (and not . or ..)"
        )
    return handle


def check_password(password: str) -> str:
    # The upper bound keeps one request from buying an arbitrarily long hash computation.
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidPassword(f"password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters long")
    return password


def parse_role(name: str) -> Role:
    """A role by name, case-insensitively."""
    for role in Role:
        if role.value.lower() == name.lower():
            return role
    raise UnknownRole(f"unknown role {name!r} (roles: {', '.join(r.value for r in Role)})")


def parse_permission(name: str) -> Permission:
    """A permission by name, case-insensitively."""
    for permission in Permission:
        if permission.name.lower() == name.lower():
            return permission
    known = ", ".join(p.name for p in Permission)
    raise UnknownPermission(f"unknown permission {name!r} (permissions: {known})")


@dataclass(frozen=True)
class User:
    id: int
    handle: str
    roles: tuple[Role, ...]
    extra: tuple[Permission, ...]
    has_password: bool

    @property
    def permissions(self) -> frozenset[Permission]:
        granted: set[Permission] = set(self.extra)
        for role in self.roles:
            granted |= role.permissions
        return frozenset(granted)

    def permission_names(self) -> list[str]:
        return [p.name for p in sorted(self.permissions)]
