"""`pezzottify-auth`: administer the users in `user.db` from a shell (SPEC §4.4).

The database is found from `--config PATH` (its `db_dir`, relative paths taken from the working
directory as the server does), `--db-dir DIR`, or a path to `user.db` given as the first
positional argument. With `--config` or `--db-dir` a missing `user.db` is created with its schema,
so an admin can exist before the server's first start; a positional path must name an existing
file, so a mistyped command is never taken for a new database.

With a command after the options it runs that one command: exit 0 on success, 1 when the
command fails (one line on stderr), 2 for a usage error. With none it reads commands line by line
(`pezzottify> `, shell-style quoting, works on a pipe) until `exit` or end of input.

It opens the database through `UserStore`, so migrations, WAL and the busy timeout are those of
the server and it is safe to use while the server runs: a write waits for the server's write to
finish instead of failing. Passwords given as arguments are visible in the process list; the
interactive prompt avoids that.
"""

from __future__ import annotations

import argparse
import shlex
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from daemon.config import ConfigError, read_toml
from storage.db import StorageError
from storage.users import (
    Permission,
    Role,
    UserError,
    UserStore,
    check_handle,
    check_password,
    parse_permission,
    parse_role,
)

PROMPT = "pezzottify> "
# As over HTTP, a new user gets Regular unless told otherwise (here: remove-role).
DEFAULT_ROLES = (Role.Regular,)


class CliError(Exception):
    """A command or the database location is unusable; the message is one line."""

    status = 1


class UsageError(CliError):
    status = 2


@dataclass
class Shell:
    store: UserStore
    path: Path
    hasher: PasswordHasher

    def run_command(self, words: Sequence[str]) -> int:
        """Run one command; report a failure on stderr and return the exit status."""
        name, *args = words
        command = COMMANDS.get(name)
        try:
            if command is None:
                raise UsageError(f"unknown command {name!r}; try 'help'")
            if len(args) != len(command.params):
                raise UsageError(f"usage: {command.usage}")
            return command.fn(self, *args)
        except (CliError, UserError) as exc:
            return fail(exc)
        except sqlite3.Error as exc:
            return fail(CliError(f"database error: {exc}"))

    def interactive(self) -> int:
        """Prompt for commands until `exit` or end of input (then 0); a failed command only
        prints its error."""
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                print()
                return 0
            try:
                words = shlex.split(line)
            except ValueError as exc:
                fail(UsageError(f"cannot parse the line: {exc}"))
                continue
            if words and words[0] == "exit":
                return 0
            if words:
                self.run_command(words)


def fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return exc.status if isinstance(exc, CliError) else 1


# Commands -----------------------------------------------------------------------------------


def show(shell: Shell, handle: str) -> int:
    user = shell.store.require(handle)
    print(f"user_handle: {user.handle}")
    print(f"roles: {', '.join(r.value for r in user.roles) or '(none)'}")
    print(f"extra permissions: {', '.join(p.name for p in user.extra) or '(none)'}")
    print(f"permissions: {', '.join(user.permission_names()) or '(none)'}")
    print(f"password: {'set' if user.has_password else 'not set'}")
    return 0


def add_user(shell: Shell, handle: str) -> int:
    shell.store.create_user(check_handle(handle), DEFAULT_ROLES)
    print(f"created user {handle} with role Regular; set a password with add-login")
    return 0


def user_handles(shell: Shell) -> int:
    for handle in shell.store.handles():
        print(handle)
    return 0


def _hash(shell: Shell, handle: str, password: str) -> str:
    shell.store.require(handle)  # an unknown user fails before the hashing cost
    return shell.hasher.hash(check_password(password))


def add_login(shell: Shell, handle: str, password: str) -> int:
    shell.store.set_password(handle, _hash(shell, handle, password), must_exist=False)
    print(f"password set for {handle}")
    return 0


def update_login(shell: Shell, handle: str, password: str) -> int:
    shell.store.set_password(handle, _hash(shell, handle, password), must_exist=True)
    print(f"password updated for {handle}; their sessions are revoked")
    return 0


def delete_login(shell: Shell, handle: str) -> int:
    if not shell.store.require(handle).has_password:
        raise CliError(f"user {handle!r} has no password")
    shell.store.delete_password(handle)
    print(f"password removed for {handle}; their sessions are revoked and they cannot log in")
    return 0


def check_login(shell: Shell, handle: str, password: str) -> int:
    found = shell.store.password_hash(handle)
    if found is None:
        shell.store.require(handle)
        raise CliError(f"user {handle!r} has no password")
    try:
        shell.hasher.verify(found[1], password)
    except (VerificationError, InvalidHashError):
        print("password does not match")
        return 1
    print("password matches")
    return 0


def list_roles(shell: Shell) -> int:
    for role in Role:
        print(f"{role.value}: {', '.join(p.name for p in sorted(role.permissions))}")
    print(f"(permissions: {', '.join(p.name for p in Permission)})")
    return 0


def add_role(shell: Shell, handle: str, role: str) -> int:
    shell.store.add_role(handle, parse_role(role))
    return show(shell, handle)


def remove_role(shell: Shell, handle: str, role: str) -> int:
    shell.store.remove_role(handle, parse_role(role))
    return show(shell, handle)


def add_permission(shell: Shell, handle: str, permission: str) -> int:
    shell.store.add_permission(handle, parse_permission(permission))
    return show(shell, handle)


def remove_permission(shell: Shell, handle: str, permission: str) -> int:
    shell.store.remove_permission(handle, parse_permission(permission))
    return show(shell, handle)


def where(shell: Shell) -> int:
    print(shell.path.resolve())
    return 0


def help_text(shell: Shell) -> int:
    print(commands_help())
    return 0


def exit_shell(shell: Shell) -> int:
    return 0


@dataclass(frozen=True)
class Command:
    name: str
    params: tuple[str, ...]
    fn: Callable[..., int]
    help: str

    @property
    def usage(self) -> str:
        return " ".join((self.name, *self.params))


_H, _HP = ("HANDLE",), ("HANDLE", "PASSWORD")
COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("add-user", _H, add_user, "create a user with role Regular"),
        Command("show", _H, show, "roles, permissions and whether a password is set"),
        Command("user-handles", (), user_handles, "list every user handle"),
        Command("add-login", _HP, add_login, "set a first password"),
        Command("update-login", _HP, update_login, "change a password (revokes all sessions)"),
        Command("delete-login", _H, delete_login, "remove the password and all sessions"),
        Command("check-password", _HP, check_login, "exit 0 if the password matches, 1 if not"),
        Command("list-roles", (), list_roles, "roles with their permissions"),
        Command("add-role", ("HANDLE", "ROLE"), add_role, "grant a role"),
        Command("remove-role", ("HANDLE", "ROLE"), remove_role, "revoke a role"),
        Command("add-permission", ("HANDLE", "PERMISSION"), add_permission, "grant a permission"),
        Command(
            "remove-permission",
            ("HANDLE", "PERMISSION"),
            remove_permission,
            "revoke a permission granted with add-permission",
        ),
        Command("where", (), where, "print the path of user.db"),
        Command("help", (), help_text, "this list"),
        Command("exit", (), exit_shell, "leave the interactive prompt"),
    )
}


def commands_help() -> str:
    width = max(len(c.usage) for c in COMMANDS.values())
    return "commands:\n" + "\n".join(f"  {c.usage:<{width}}  {c.help}" for c in COMMANDS.values())


# Entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pezzottify-auth",
        usage="%(prog)s (--config PATH | --db-dir DIR | USER_DB) [COMMAND [ARG ...]]",
        description="Administer Pezzottify users. Without a command, start a prompt.",
        epilog=commands_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where_group = parser.add_mutually_exclusive_group()
    where_group.add_argument("--config", type=Path, metavar="PATH", help="server TOML config")
    where_group.add_argument("--db-dir", type=Path, metavar="DIR", help="directory of user.db")
    parser.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def locate(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """The user.db path and the command words left after it."""
    words: list[str] = list(args.words)
    if args.config is not None:
        raw = read_toml(args.config).get("db_dir")
        if not isinstance(raw, str) or not raw:
            raise CliError(f"config file {args.config} sets no db_dir")
        return _in_dir(Path(raw).expanduser()), words
    if args.db_dir is not None:
        return _in_dir(args.db_dir), words
    if not words:
        raise UsageError("say where user.db is: --config PATH, --db-dir DIR or a path to user.db")
    path = Path(words.pop(0)).expanduser()
    if not path.is_file():
        raise CliError(f"{path} is not an existing user.db (use --db-dir DIR to create one)")
    return path, words


def _in_dir(db_dir: Path) -> Path:
    if not db_dir.is_dir():
        raise CliError(f"db_dir {db_dir} is not an existing directory")
    return db_dir / "user.db"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        path, words = locate(args)
        store = UserStore.open(path)
    except (CliError, ConfigError, StorageError) as exc:
        return fail(exc)
    shell = Shell(store, path, PasswordHasher())
    try:
        return shell.run_command(words) if words else shell.interactive()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    finally:
        store.db.close()


if __name__ == "__main__":
    sys.exit(main())
