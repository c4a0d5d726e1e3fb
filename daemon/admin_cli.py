"""`pezzottify-admin`: back up, check and restore the server's databases (SPEC §15).

    pezzottify-admin [--config PATH | --db-dir DIR] backup DEST [--keep N]
    pezzottify-admin verify SRC
    pezzottify-admin [--config PATH | --db-dir DIR] restore SRC

The databases are found the way the server finds them: `db_dir` from the TOML file named by
`--config`, else `PEZZOTTIFY_DB_DIR`, else `--db-dir` (relative paths from the working
directory); the command says which it used. `backup` works while the server runs and writes
`DEST/<UTC time>/` (`storage.backup`); `--keep N` then deletes all but the newest N backups in
DEST. `verify` checks a backup folder. `restore` refuses while a server runs on the db_dir, and
keeps the files it replaces in `<db_dir>/pre-restore-<UTC time>/`.

Exit status: 0 done, 1 the command failed (one line on stderr saying why: a damaged backup names
each bad database), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from daemon.config import ConfigError, read_toml
from daemon.config_keys import env_name
from storage.backup import (
    BackupError,
    make_backup,
    prune_backups,
    restore_backup,
    verify_backup,
)
from storage.db import StorageError
from storage.lock import DirInUse

PROG = "pezzottify-admin"
DB_DIR_VARIABLE = env_name(("db_dir",))


class CliError(Exception):
    """The command cannot be done; the message is one line."""


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        status: int = args.command(args, environ)
        return status
    except DirInUse as exc:
        return fail(f"{exc}; stop the server before restoring")
    except (CliError, BackupError, ConfigError, StorageError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


# Commands -----------------------------------------------------------------------------------


def backup(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    db_dir = locate(args, environ)
    if args.keep is not None and args.keep < 1:
        raise CliError("--keep must be at least 1")
    dest: Path = args.dest.expanduser().resolve()
    made = make_backup(db_dir, dest, datetime.now(UTC))
    assert made is not None  # no stop event: it completes or raises
    print(f"backed up {db_dir} to {made.folder}")
    for copy in made.copies:
        print(f"  {copy.name:<18} {size(copy.bytes):>10}  integrity ok")
    print("media files are not copied (the integrity watchdog fetches missing ones again)")
    if args.keep is not None:
        for name in prune_backups(dest, args.keep):
            print(f"deleted old backup {name}")
    return 0


def verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    folder: Path = args.src.expanduser().resolve()
    checks = verify_backup(folder)
    for check in checks:
        print(f"  {check.name:<18} {'ok' if check.problem is None else 'BAD: ' + check.problem}")
    bad = [c.name for c in checks if c.problem is not None]
    if bad:
        return fail(f"{folder} is damaged: {', '.join(bad)}")
    print(f"{folder} is a sound backup")
    return 0


def restore(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    db_dir = locate(args, environ)
    folder: Path = args.src.expanduser().resolve()
    restored = restore_backup(folder, db_dir, datetime.now(UTC), holder=f"{PROG} restore")
    print(f"restored {', '.join(restored.databases)} from {folder} into {db_dir}")
    if restored.set_aside is not None:
        print(
            f"the files it replaced are in {restored.set_aside}; delete that folder once the "
            "restored server works"
        )
    print("media files were not touched; the integrity watchdog fetches missing ones again")
    return 0


# Finding the databases ----------------------------------------------------------------------


def locate(args: argparse.Namespace, environ: Mapping[str, str]) -> Path:
    """The db_dir the server would use: the config file's, else the environment's, else the
    flag's (SPEC §2's order); said on stderr with where it came from."""
    config: Path | None = getattr(args, "config", None)  # absent when not given
    flag: Path | None = getattr(args, "db_dir", None)
    found: tuple[str, str] | None = None
    if config is not None:
        raw = read_toml(config.expanduser()).get("db_dir")
        if raw is not None:
            if not isinstance(raw, str) or not raw:
                raise CliError(f"config file {config}: db_dir must be a non-empty string")
            found = (raw, f"config file {config}")
    if found is None and environ.get(DB_DIR_VARIABLE):
        found = (environ[DB_DIR_VARIABLE], DB_DIR_VARIABLE)
    if found is None and flag is not None:
        found = (str(flag), "--db-dir")
    if found is None:
        raise CliError(
            f"say where the databases are: --config PATH, --db-dir DIR or {DB_DIR_VARIABLE}"
        )
    raw, source = found
    db_dir = Path(raw).expanduser()
    if not db_dir.is_dir():
        raise CliError(f"db_dir {db_dir} (from {source}) is not an existing directory")
    print(f"db_dir {db_dir.resolve()} (from {source})", file=sys.stderr)
    return db_dir.resolve()


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def build_parser() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: given before or after the command, the value is kept either way.
    group = where.add_mutually_exclusive_group()
    group.add_argument(
        "--config", type=Path, metavar="PATH", default=argparse.SUPPRESS,
        help="the server's TOML config (its db_dir)",
    )  # fmt: skip
    group.add_argument(
        "--db-dir", type=Path, metavar="DIR", default=argparse.SUPPRESS,
        help=f"the server's db_dir (or {DB_DIR_VARIABLE})",
    )  # fmt: skip
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[where],
        description="Back up, check and restore the Pezzottify server's databases.",
        epilog="Exit status: 0 done, 1 the command failed, 2 usage error.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    made = commands.add_parser(
        "backup",
        parents=[where],
        help="copy every database to DEST/<UTC time>/ (works while the server runs)",
        description="Write a consistent copy of every database to DEST/<UTC time>/, check "
        "each copy with PRAGMA integrity_check, and print what was written. Media files are "
        "not copied.",
    )
    made.add_argument("dest", type=Path, metavar="DEST", help="folder holding the backups")
    made.add_argument(
        "--keep", type=int, metavar="N", help="then delete all but the newest N backups in DEST"
    )
    made.set_defaults(command=backup)
    checked = commands.add_parser(
        "verify",
        help="check a backup folder",
        description="Check each database of a backup (its size and SHA-256 as written, and "
        "PRAGMA integrity_check). Exit 1 naming the damaged ones.",
    )
    checked.add_argument("src", type=Path, metavar="SRC", help="a backup folder DEST/<UTC time>")
    checked.set_defaults(command=verify)
    put = commands.add_parser(
        "restore",
        parents=[where],
        help="put a backup back into the db_dir (the server must be stopped)",
        description="Check the backup, then replace the databases of the db_dir with its "
        "copies. Refuses while a server runs on the db_dir; the files it replaces are kept "
        "in <db_dir>/pre-restore-<UTC time>/.",
    )
    put.add_argument("src", type=Path, metavar="SRC", help="a backup folder DEST/<UTC time>")
    put.set_defaults(command=restore)
    return parser


if __name__ == "__main__":
    sys.exit(main())
