"""`pezzottify-admin backup | verify | restore` as an operator types them (SPEC §15).

What is checked is what the operator sees: the exit status, the lines printed, the folders and
files left on disk; a mistake gets one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.admin_cli import main
from storage.backup import MANIFEST, list_backups
from storage.lock import holding
from storage.users import Role, UserStore


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    users = UserStore.open(folder / "user.db")
    users.create_user("ann", (Role.Regular,))
    users.db.close()
    return folder


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    status = main(list(argv), env or {})
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def test_backup_verify_restore(
    db_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "backups"
    status, out, err = run(capsys, "--db-dir", str(db_dir), "backup", str(dest))
    assert status == 0, err
    (folder,) = list_backups(dest)
    assert out.splitlines()[0] == f"backed up {db_dir} to {folder}"
    assert "user.db" in out and "integrity ok" in out
    assert err == f"db_dir {db_dir} (from --db-dir)\n"

    status, out, _ = run(capsys, "verify", str(folder))
    assert status == 0
    assert out.splitlines()[-1] == f"{folder} is a sound backup"

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    status, out, err = run(capsys, "restore", str(folder), "--db-dir", str(fresh))
    assert status == 0, err
    assert out.splitlines()[0] == f"restored user.db from {folder} into {fresh}"
    store = UserStore.open(fresh / "user.db")
    assert store.handles() == ["ann"]
    store.db.close()


def test_backup_keep_deletes_the_oldest(
    db_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "backups"
    for _ in range(3):
        assert run(capsys, "--db-dir", str(db_dir), "backup", str(dest), "--keep", "2")[0] == 0
    assert len(list_backups(dest)) == 2
    status, _, err = run(capsys, "--db-dir", str(db_dir), "backup", str(dest), "--keep", "0")
    assert (status, err.splitlines()[-1]) == (1, "pezzottify-admin: --keep must be at least 1")


def test_the_databases_are_found_as_the_server_finds_them(
    db_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config file's db_dir, else PEZZOTTIFY_DB_DIR, else --db-dir (SPEC §2's order)."""
    dest = str(tmp_path / "backups")
    other = tmp_path / "other"
    other.mkdir()
    config = tmp_path / "server.toml"
    config.write_text(f'db_dir = "{db_dir}"\n')
    env = {"PEZZOTTIFY_DB_DIR": str(db_dir)}

    status, _, err = run(capsys, "--config", str(config), "backup", dest, env=env)
    assert (status, err) == (0, f"db_dir {db_dir} (from config file {config})\n")
    status, _, err = run(capsys, "--db-dir", str(other), "backup", dest, env=env)
    assert (status, err) == (0, f"db_dir {db_dir} (from PEZZOTTIFY_DB_DIR)\n")
    status, _, err = run(capsys, "backup", dest, env=env)
    assert (status, err) == (0, f"db_dir {db_dir} (from PEZZOTTIFY_DB_DIR)\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["backup", "{tmp}/b"],
            "say where the databases are: --config PATH, --db-dir DIR or PEZZOTTIFY_DB_DIR",
        ),
        (
            ["--db-dir", "{tmp}/missing", "backup", "{tmp}/b"],
            "db_dir {tmp}/missing (from --db-dir) is not an existing directory",
        ),
        (
            ["--db-dir", "{tmp}", "backup", "{tmp}/b"],
            "no database found in {tmp} (is it the server's db_dir?)",
        ),
        (
            ["--db-dir", "{tmp}/data", "backup", "{tmp}/data/user.db"],
            "{tmp}/data/user.db is not a directory",
        ),
        (["--config", "{tmp}/none.toml", "restore", "{tmp}"], "cannot read config file"),
        (["verify", "{tmp}/missing"], "{tmp}/missing is not a directory"),
        (["verify", "{tmp}"], "{tmp} holds no backup (no backup.json, no database)"),
        (["--db-dir", "{tmp}/data", "restore", "{tmp}/nothing"], "{tmp}/nothing is not a dir"),
    ],
)
def test_mistakes_get_one_clear_line(
    db_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    status, _, err = run(capsys, *args)
    assert status == 1
    last = err.splitlines()[-1]
    assert last.startswith("pezzottify-admin: " + message.replace("{tmp}", str(tmp_path)))


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "dance")[0] == 2
    assert run(capsys)[0] == 2
    assert run(capsys, "backup")[0] == 2
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "restore" in out


def test_verify_names_the_damaged_database(
    db_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "--db-dir", str(db_dir), "backup", str(tmp_path / "b"))
    (folder,) = list_backups(tmp_path / "b")
    (folder / "user.db").write_bytes(b"garbage" * 1000)
    status, out, err = run(capsys, "verify", str(folder))
    assert status == 1
    assert "user.db" in out and "BAD" in out
    assert err.splitlines() == [f"pezzottify-admin: {folder} is damaged: user.db"]
    assert (folder / MANIFEST).exists()  # verify changes nothing


def test_restore_refuses_while_a_server_holds_the_db_dir(
    db_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "--db-dir", str(db_dir), "backup", str(tmp_path / "b"))
    (folder,) = list_backups(tmp_path / "b")
    with holding(db_dir, "pezzottify-server"):
        before = sorted(p.name for p in db_dir.iterdir())
        status, _, err = run(capsys, "--db-dir", str(db_dir), "restore", str(folder))
        assert sorted(p.name for p in db_dir.iterdir()) == before
    assert status == 1
    assert err.splitlines()[-1] == (
        f"pezzottify-admin: {db_dir} is in use by pezzottify-server (pid {os.getpid()}); "
        "stop the server before restoring"
    )
