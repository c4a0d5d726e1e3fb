"""`user.db`: users, roles, extra permissions, password hashes, sessions, listening events.

Permissions and roles are persisted by id and name; a user's permissions are the union of its
roles' and its extra grants. Sessions are stored only as SHA-256 of the token. Password hashing is
not done here (it is CPU work the caller schedules): this module stores and returns hashes.
The model itself (permissions, roles, validation) lives in `storage.user_model`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from storage.db import Database
from storage.user_model import (  # re-exported: callers import the model from here too
    HANDLE_RE,
    PASSWORD_MAX,
    PASSWORD_MIN,
    ROLE_PERMISSIONS,
    InvalidHandle,
    InvalidInput,
    InvalidPassword,
    Permission,
    Role,
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

SESSION_ABSOLUTE_SECS = 90 * 86400
SESSION_IDLE_SECS = 30 * 86400
SESSION_TOUCH_SECS = 600
# How long a resolved session is trusted without asking the database again. Changes made
# through this store clear the cache at once; changes made by another process (the CLI) are
# seen within this many seconds. At most SESSION_CACHE_MAX sessions are held: a burst of
# distinct sessions empties the cache rather than growing it (each costs a read again).
SESSION_CACHE_SECS = 2.0
SESSION_CACHE_MAX = 4096

__all__ = [
    "HANDLE_RE",
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "ROLE_PERMISSIONS",
    "InvalidHandle",
    "InvalidInput",
    "InvalidPassword",
    "Permission",
    "Role",
    "UnknownPermission",
    "UnknownRole",
    "UnknownUser",
    "User",
    "UserError",
    "UserExists",
    "UserStore",
    "check_handle",
    "check_password",
    "hash_token",
    "parse_permission",
    "parse_role",
]


MIGRATIONS = [
    [
        """CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            handle TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL)""",
        """CREATE TABLE passwords (
            user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            hash TEXT NOT NULL,
            updated_at INTEGER NOT NULL)""",
        """CREATE TABLE user_roles (
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            PRIMARY KEY (user_id, role))""",
        """CREATE TABLE user_permissions (
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            permission INTEGER NOT NULL,
            PRIMARY KEY (user_id, permission))""",
        """CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at INTEGER NOT NULL,
            last_used_at INTEGER NOT NULL,
            device_uuid TEXT, device_type TEXT, device_name TEXT)""",
        "CREATE INDEX sessions_user ON sessions(user_id)",
        """CREATE TABLE listening_events (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            track_id TEXT NOT NULL,
            duration_ms INTEGER,
            played_at INTEGER NOT NULL)""",
        "CREATE INDEX listening_played_at ON listening_events(played_at)",
    ],
    [
        # Each user's notification targets (SPEC §16 rev 2): Apprise URLs and the events they
        # want, as JSON lists; read when a notification is delivered.
        """CREATE TABLE notification_settings (
            user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            urls TEXT NOT NULL,
            events TEXT NOT NULL)""",
    ],
]

# The events a user may choose (SPEC §16), and what one who never chose receives.
USER_EVENTS = ("request.completed", "request.failed")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    """Blocking operations on `user.db`; run them with `await store.db.run(...)` from trio."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sessions: dict[str, tuple[float, User]] = {}

    @classmethod
    def open(cls, path: Path) -> UserStore:
        return cls(Database(path, MIGRATIONS))

    def create_user(
        self, handle: str, roles: tuple[Role, ...] = (), *, pw_hash: str | None = None
    ) -> User:
        """Create a user, with its password hash if given, in one transaction."""
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE handle = ?", (handle,)).fetchone():
                raise UserExists(f"user {handle!r} already exists")
            cur = conn.execute(
                "INSERT INTO users (handle, created_at) VALUES (?, ?)", (handle, int(time.time()))
            )
            conn.executemany(
                "INSERT INTO user_roles (user_id, role) VALUES (?, ?)",
                [(cur.lastrowid, r.value) for r in roles],
            )
            if pw_hash is not None:
                conn.execute(
                    "INSERT INTO passwords (user_id, hash, updated_at) VALUES (?, ?, ?)",
                    (cur.lastrowid, pw_hash, int(time.time())),
                )
        return self.require(handle)

    def get(self, handle: str) -> User | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT id FROM users WHERE handle = ?", (handle,)).fetchone()
            return None if row is None else self._load(conn, row["id"], handle)

    def require(self, handle: str) -> User:
        user = self.get(handle)
        if user is None:
            raise UnknownUser(f"no user {handle!r}")
        return user

    def _load(self, c: sqlite3.Connection, user_id: int, handle: str) -> User:
        return self._load_many(c, {user_id: handle})[user_id]

    def _load_many(self, c: sqlite3.Connection, handles: dict[int, str]) -> dict[int, User]:
        """The users with these ids (and handles), in three statements whatever their number."""
        ids = json.dumps(list(handles))
        roles: dict[int, list[Role]] = {user_id: [] for user_id in handles}
        extra: dict[int, list[Permission]] = {user_id: [] for user_id in handles}
        for user_id, role in c.execute(
            "SELECT user_id, role FROM user_roles WHERE user_id IN (SELECT value FROM json_each(?))"
            " ORDER BY user_id, role",
            (ids,),
        ):
            roles[user_id].append(Role(role))
        for user_id, permission in c.execute(
            "SELECT user_id, permission FROM user_permissions"
            " WHERE user_id IN (SELECT value FROM json_each(?)) ORDER BY user_id, permission",
            (ids,),
        ):
            extra[user_id].append(Permission(permission))
        with_password = {
            r[0]
            for r in c.execute(
                "SELECT user_id FROM passwords WHERE user_id IN (SELECT value FROM json_each(?))",
                (ids,),
            )
        }
        return {
            user_id: User(
                user_id, handle, tuple(roles[user_id]), tuple(extra[user_id]),
                user_id in with_password,
            )
            for user_id, handle in handles.items()
        }  # fmt: skip

    def handles(self) -> list[str]:
        with self.db.read() as conn:
            return [r[0] for r in conn.execute("SELECT handle FROM users ORDER BY handle")]

    def all_users(self) -> list[User]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT id, handle FROM users ORDER BY handle").fetchall()
            return list(self._load_many(conn, {r["id"]: r["handle"] for r in rows}).values())

    def password_hash(self, handle: str) -> tuple[User, str] | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT u.id, p.hash FROM users u JOIN passwords p ON p.user_id = u.id "
                "WHERE u.handle = ?",
                (handle,),
            ).fetchone()
            return None if row is None else (self._load(conn, row["id"], handle), row["hash"])

    def set_password(self, handle: str, pw_hash: str, *, must_exist: bool | None) -> None:
        """Store a hash. must_exist: True = update only, False = add only, None = either.

        Changing a password revokes every session of the user.
        """
        with self._changing() as conn:
            user_id = self._user_id(conn, handle)
            exists = conn.execute("SELECT 1 FROM passwords WHERE user_id = ?", (user_id,))
            has = exists.fetchone() is not None
            if must_exist is True and not has:
                raise UserError(f"user {handle!r} has no password yet; use add-login")
            if must_exist is False and has:
                raise UserError(f"user {handle!r} already has a password; use update-login")
            conn.execute(
                "INSERT INTO passwords (user_id, hash, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(user_id) DO UPDATE SET hash = excluded.hash, "
                "updated_at = excluded.updated_at",
                (user_id, pw_hash, int(time.time())),
            )
            if has:
                conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def rehash_password(self, user_id: int, pw_hash: str) -> None:
        """Replace a hash after login with stronger parameters (sessions stay)."""
        with self.db.write() as conn:
            conn.execute("UPDATE passwords SET hash = ? WHERE user_id = ?", (pw_hash, user_id))

    def delete_password(self, handle: str) -> None:
        with self._changing() as conn:
            user_id = self._user_id(conn, handle)
            conn.execute("DELETE FROM passwords WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def add_role(self, handle: str, role: Role) -> None:
        self._grant(handle, "INSERT OR IGNORE INTO user_roles VALUES (?, ?)", role.value)

    def remove_role(self, handle: str, role: Role) -> None:
        self._grant(handle, "DELETE FROM user_roles WHERE user_id = ? AND role = ?", role.value)

    def add_permission(self, handle: str, permission: Permission) -> None:
        self._grant(handle, "INSERT OR IGNORE INTO user_permissions VALUES (?, ?)", permission)

    def remove_permission(self, handle: str, permission: Permission) -> None:
        self._grant(
            handle,
            "DELETE FROM user_permissions WHERE user_id = ? AND permission = ?",
            int(permission),
        )

    def _grant(self, handle: str, sql: str, value: object) -> None:
        with self._changing() as conn:
            conn.execute(sql, (self._user_id(conn, handle), value))

    @staticmethod
    def _user_id(conn: sqlite3.Connection, handle: str) -> int:
        row = conn.execute("SELECT id FROM users WHERE handle = ?", (handle,)).fetchone()
        if row is None:
            raise UnknownUser(f"no user {handle!r}")
        return int(row[0])

    # Sessions -----------------------------------------------------------------------------

    def create_session(self, user_id: int, token: str, device: dict[str, str | None]) -> None:
        now = int(time.time())
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    hash_token(token),
                    user_id,
                    now,
                    now,
                    device.get("device_uuid"),
                    device.get("device_type"),
                    device.get("device_name"),
                ),
            )

    @contextlib.contextmanager
    def _changing(self) -> Iterator[sqlite3.Connection]:
        """A write that can change what a session means; cached sessions are dropped after it."""
        with self.db.write() as conn:
            yield conn
        self._sessions.clear()

    def cached_session(self, token: str) -> User | None:
        """The user of a session resolved in the last seconds, without touching the database
        (cheap enough for the event loop); None means "ask `session_user`"."""
        hit = self._sessions.get(hash_token(token))
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def session_user(self, token: str) -> User | None:
        """The user a token belongs to, or None if unknown or expired."""
        token_hash = hash_token(token)
        now = int(time.time())
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT s.user_id, s.created_at, s.last_used_at, u.handle FROM sessions s "
                "JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
                (token_hash,),
            ).fetchone()
            if row is None:
                return None
            if now - row["created_at"] > SESSION_ABSOLUTE_SECS:
                return None
            if now - row["last_used_at"] > SESSION_IDLE_SECS:
                return None
            user = self._load(conn, row["user_id"], row["handle"])
        if now - row["last_used_at"] > SESSION_TOUCH_SECS:
            with self.db.write() as wconn:
                wconn.execute(
                    "UPDATE sessions SET last_used_at = ? WHERE token_hash = ?", (now, token_hash)
                )
        if len(self._sessions) >= SESSION_CACHE_MAX:
            self._sessions.clear()
        self._sessions[token_hash] = (time.monotonic() + SESSION_CACHE_SECS, user)
        return user

    def session_users(self, tokens: list[str]) -> dict[str, User]:
        """The user of each token still valid (the open event streams' periodic check): a
        token revoked or expired since is left out. One read for every token, the users in three
        more, and the sessions due a touch touched in one transaction: a thousand open streams
        cost one check, not a thousand."""
        hashes = {hash_token(token): token for token in tokens}
        now = int(time.time())
        found: dict[str, User] = {}
        stale: list[str] = []
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT s.token_hash, s.user_id, s.created_at, s.last_used_at, u.handle "
                "FROM sessions s JOIN users u ON u.id = s.user_id "
                "WHERE s.token_hash IN (SELECT value FROM json_each(?))",
                (json.dumps(list(hashes)),),
            ).fetchall()
            valid = [
                row
                for row in rows
                if now - row["created_at"] <= SESSION_ABSOLUTE_SECS
                and now - row["last_used_at"] <= SESSION_IDLE_SECS
            ]
            users = self._load_many(conn, {row["user_id"]: row["handle"] for row in valid})
            for row in valid:
                found[hashes[row["token_hash"]]] = users[row["user_id"]]
                if now - row["last_used_at"] > SESSION_TOUCH_SECS:
                    stale.append(row["token_hash"])
        if stale:
            with self.db.write() as wconn:
                wconn.execute(
                    "UPDATE sessions SET last_used_at = ? "
                    "WHERE token_hash IN (SELECT value FROM json_each(?))",
                    (now, json.dumps(stale)),
                )
        return found

    def delete_session(self, token: str) -> None:
        with self._changing() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (hash_token(token),))

    # Listening ----------------------------------------------------------------------------

    def notification_settings(self, handle: str) -> tuple[list[str], list[str]]:
        """A user's notification URLs and events (none and every event until they set them);
        `UnknownUser` if there is no such user."""
        with self.db.read() as conn:
            user_id = self._user_id(conn, handle)
            row = conn.execute(
                "SELECT urls, events FROM notification_settings WHERE user_id = ?", (user_id,)
            ).fetchone()
        if row is None:
            return [], list(USER_EVENTS)
        return json.loads(row[0]), json.loads(row[1])

    def set_notification_settings(self, handle: str, urls: list[str], events: list[str]) -> None:
        with self.db.write() as conn:
            conn.execute(
                """INSERT INTO notification_settings (user_id, urls, events) VALUES (?, ?, ?)
                    ON CONFLICT (user_id) DO UPDATE SET urls = excluded.urls,
                    events = excluded.events""",
                (self._user_id(conn, handle), json.dumps(urls), json.dumps(events)),
            )

    def record_listening(
        self, user_id: int, track_id: str, duration_ms: int | None, played_at: int
    ) -> int:
        with self.db.write() as conn:
            cur = conn.execute(
                "INSERT INTO listening_events (user_id, track_id, duration_ms, played_at) "
                "VALUES (?, ?, ?, ?)",
                (user_id, track_id, duration_ms, played_at),
            )
            return int(cur.lastrowid or 0)

    def play_counts_since(self, since: int) -> dict[str, int]:
        """Plays per track id since a unix time."""
        with self.db.read() as conn:
            return {
                r[0]: r[1]
                for r in conn.execute(
                    "SELECT track_id, COUNT(*) FROM listening_events WHERE played_at >= ? "
                    "GROUP BY track_id",
                    (since,),
                )
            }
