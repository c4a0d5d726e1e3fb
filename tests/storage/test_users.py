"""UserStore against a real `user.db`: permissions, passwords, sessions, input rules."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import argon2
import pytest

from daemon.config import Config
from daemon.services import close_root
from storage import users
from storage.users import (
    InvalidHandle,
    InvalidPassword,
    Permission,
    Role,
    UnknownPermission,
    UnknownRole,
    UnknownUser,
    UserError,
    UserExists,
    UserStore,
    check_handle,
    check_password,
    hash_token,
    parse_permission,
    parse_role,
)
from tests.conftest import open_test_root

NO_DEVICE: dict[str, str | None] = {}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[UserStore]:
    store = UserStore.open(tmp_path / "user.db")
    yield store
    store.db.close()


def test_permissions_are_the_union_of_roles_and_extra_grants(store: UserStore) -> None:
    store.create_user("alice", (Role.Regular,))
    store.add_permission("alice", Permission.RequestContent)
    alice = store.require("alice")
    assert alice.permissions == Role.Regular.permissions | {Permission.RequestContent}
    assert alice.extra == (Permission.RequestContent,)
    store.add_role("alice", Role.Admin)
    both = store.require("alice").permissions
    assert both == Role.Admin.permissions | Role.Regular.permissions
    store.remove_role("alice", Role.Admin)
    store.remove_role("alice", Role.Regular)
    assert store.require("alice").permissions == {Permission.RequestContent}
    store.remove_permission("alice", Permission.RequestContent)
    assert store.require("alice").permissions == frozenset()


def test_grants_are_idempotent_and_names_are_sorted(store: UserStore) -> None:
    store.create_user("alice")
    for _ in range(2):
        store.add_role("alice", Role.Regular)
        store.add_permission("alice", Permission.ViewAnalytics)
        store.add_permission("alice", Permission.LikeContent)
    alice = store.require("alice")
    assert alice.roles == (Role.Regular,)
    assert alice.extra == (Permission.LikeContent, Permission.ViewAnalytics)
    assert alice.permission_names() == [
        "AccessCatalog",
        "LikeContent",
        "OwnPlaylists",
        "ViewAnalytics",
    ]


def test_unknown_and_duplicate_users(store: UserStore) -> None:
    store.create_user("alice")
    with pytest.raises(UserExists):
        store.create_user("alice", (Role.Admin,))
    assert store.require("alice").roles == ()
    assert store.get("bob") is None
    for call in (
        lambda: store.require("bob"),
        lambda: store.add_role("bob", Role.Admin),
        lambda: store.remove_permission("bob", Permission.ServerAdmin),
        lambda: store.set_password("bob", "h", must_exist=None),
        lambda: store.delete_password("bob"),
    ):
        with pytest.raises(UnknownUser):
            call()
    assert store.handles() == ["alice"]


def test_create_user_with_password_hash_in_one_step(store: UserStore) -> None:
    user = store.create_user("alice", (Role.Regular,), pw_hash="$argon2id$stub")
    assert user.has_password
    found = store.password_hash("alice")
    assert found is not None and found[1] == "$argon2id$stub"


def test_add_only_and_update_only_passwords(store: UserStore) -> None:
    store.create_user("alice")
    with pytest.raises(UserError, match="no password"):
        store.set_password("alice", "h1", must_exist=True)
    store.set_password("alice", "h1", must_exist=False)
    with pytest.raises(UserError, match="already has a password"):
        store.set_password("alice", "h2", must_exist=False)
    store.set_password("alice", "h2", must_exist=True)
    found = store.password_hash("alice")
    assert found is not None and found[1] == "h2"


def test_password_change_and_removal_revoke_sessions(store: UserStore) -> None:
    alice = store.create_user("alice", pw_hash="h1")
    store.create_user("bob", pw_hash="h1")
    bob_id = store.require("bob").id
    store.create_session(alice.id, "alice-token", NO_DEVICE)
    store.create_session(bob_id, "bob-token", NO_DEVICE)
    store.rehash_password(alice.id, "h1-stronger")  # a rehash is not a change: sessions stay
    assert store.session_user("alice-token") is not None
    store.set_password("alice", "h2", must_exist=True)
    assert store.session_user("alice-token") is None
    assert store.session_user("bob-token") is not None
    store.create_session(alice.id, "alice-token-2", NO_DEVICE)
    store.delete_password("alice")
    assert store.session_user("alice-token-2") is None
    assert store.password_hash("alice") is None
    assert not store.require("alice").has_password


def test_the_sessions_served_from_memory_are_bounded(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users, "SESSION_CACHE_MAX", 3)
    alice = store.create_user("alice", pw_hash="h1")
    tokens = [f"token-{n}" for n in range(4)]
    for token in tokens:
        store.create_session(alice.id, token, NO_DEVICE)
        assert store.session_user(token) is not None
    # The fourth found the cache full: it holds that one alone, the others are read again.
    assert [store.cached_session(token) is not None for token in tokens] == [
        False, False, False, True,
    ]  # fmt: skip
    assert all(store.session_user(token) is not None for token in tokens)


def test_only_a_sha256_of_the_token_is_stored(tmp_path: Path) -> None:
    store = UserStore.open(tmp_path / "user.db")
    alice = store.create_user("alice")
    token = secrets.token_urlsafe(32)
    store.create_session(alice.id, token, {"device_name": "phone"})
    user = store.session_user(token)
    assert user is not None and user.handle == "alice"
    with store.db.read() as conn:
        stored = [r[0] for r in conn.execute("SELECT token_hash FROM sessions")]
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]
    # Search the bytes on disk (main file and WAL, before and after the checkpoint at close).
    for close in (False, True):
        if close:
            store.db.close()
        blob = b"".join(p.read_bytes() for p in tmp_path.glob("user.db*"))
        assert stored[0].encode() in blob
        assert token.encode() not in blob


def test_production_hasher_is_argon2id_with_strong_parameters(tmp_path: Path) -> None:
    root = open_test_root(Config(db_dir=tmp_path, media_path=tmp_path), hasher=None)
    try:
        pw_hash = root.hasher.hash("correct horse")
        root.users.create_user("alice", pw_hash=pw_hash)
        found = root.users.password_hash("alice")
        assert found is not None
        stored = found[1]
    finally:
        close_root(root)
    assert stored.startswith("$argon2id$")
    params = argon2.extract_parameters(stored)
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= 19456
    assert params.time_cost >= 2
    assert argon2.PasswordHasher().verify(stored, "correct horse")


@pytest.mark.parametrize(
    "handle", ["a", "Alice_01", "first.last", "with-dash", "...", ".hidden", "x" * 64]
)
def test_accepted_handles(handle: str) -> None:
    assert check_handle(handle) == handle


@pytest.mark.parametrize(
    "handle", ["", ".", "..", "x" * 65, "sp ace", "slash/", "zoë", "tab\t", "semi;colon", "a\n"]
)
def test_refused_handles(handle: str) -> None:
    with pytest.raises(InvalidHandle):
        check_handle(handle)


def test_password_length_bounds() -> None:
    assert check_password("12345678") == "12345678"
    assert check_password("p" * 1024) == "p" * 1024
    for bad in ("", "1234567", "p" * 1025):
        with pytest.raises(InvalidPassword):
            check_password(bad)


def test_role_and_permission_names_parse_case_insensitively() -> None:
    assert parse_role("admin") is Role.Admin
    assert parse_role("Regular") is Role.Regular
    assert parse_permission("requestCONTENT") is Permission.RequestContent
    with pytest.raises(UnknownRole, match="roles: Admin, Regular"):
        parse_role("root")
    for bad in ("9", "Request Content", ""):
        with pytest.raises(UnknownPermission):
            parse_permission(bad)


def test_the_event_streams_check_every_session_at_once(store: UserStore) -> None:
    alice = store.create_user("alice", (Role.Regular,))
    bob = store.create_user("bob", (Role.Admin,))
    store.add_permission("alice", Permission.RequestContent)
    for n in range(3):
        store.create_session(alice.id, f"alice-{n}", NO_DEVICE)
    store.create_session(bob.id, "bob-0", NO_DEVICE)
    store.create_session(bob.id, "bob-old", NO_DEVICE)
    month_ago = int(time.time()) - 31 * 86400
    day_ago = int(time.time()) - 86400
    with store.db.write() as conn:
        conn.execute("UPDATE sessions SET last_used_at = ?", (day_ago,))
        conn.execute(
            "UPDATE sessions SET last_used_at = ? WHERE token_hash = ?",
            (month_ago, hash_token("bob-old")),
        )
    store.delete_session("alice-2")
    found = store.session_users(["alice-0", "alice-1", "alice-2", "bob-0", "bob-old", "nobody"])
    assert {token: user.handle for token, user in found.items()} == {
        "alice-0": "alice", "alice-1": "alice", "bob-0": "bob"
    }  # fmt: skip
    assert Permission.ViewAnalytics in found["bob-0"].permissions
    assert Permission.ViewAnalytics not in found["alice-0"].permissions
    assert (found["alice-0"].extra, found["bob-0"].extra) == ((Permission.RequestContent,), ())
    assert (found["alice-0"].roles, found["bob-0"].roles) == ((Role.Regular,), (Role.Admin,))
    with store.db.read() as conn:
        touched = conn.execute(
            "SELECT COUNT(*) FROM sessions WHERE last_used_at > ?", (day_ago,)
        ).fetchone()[0]
    assert touched == 3  # the live sessions a day stale were touched; the expired one was not
