"""`pezzottify-auth` (SPEC §4.4): locating user.db, every command, exit codes, the prompt, real
processes, and use of the same database while another connection reads and writes it."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import argon2
import pytest

from daemon.auth_cli import main
from daemon.config import Config
from storage.users import Permission, Role, UserStore
from tests.conftest import login
from tests.support.process import run_cli

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

PASSWORD = "correct horse"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def db(tmp_path: Path) -> list[str]:
    """Options that point the CLI at a fresh db_dir."""
    return ["--db-dir", str(tmp_path)]


def stored_hash(path: Path, handle: str) -> str:
    store = UserStore.open(path)
    try:
        found = store.password_hash(handle)
        assert found is not None
        return found[1]
    finally:
        store.db.close()


def test_db_dir_creates_user_db_and_add_user_gives_regular(
    tmp_path: Path, db: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert not (tmp_path / "user.db").exists()
    status, out, _ = cli(capsys, *db, "add-user", "alice")
    assert status == 0 and "created user alice" in out
    assert (tmp_path / "user.db").is_file()
    status, out, _ = cli(capsys, *db, "show", "alice")
    assert status == 0
    assert out.splitlines() == [
        "user_handle: alice",
        "roles: Regular",
        "extra permissions: (none)",
        "permissions: AccessCatalog, LikeContent, OwnPlaylists",
        "password: not set",
    ]


def test_login_commands_and_exit_codes(
    tmp_path: Path, db: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, *db, "add-user", "alice")
    assert cli(capsys, *db, "add-login", "alice", PASSWORD)[0] == 0
    status, _, err = cli(capsys, *db, "add-login", "alice", "another one")
    assert status == 1 and "already has a password" in err and len(err.splitlines()) == 1
    assert cli(capsys, *db, "check-password", "alice", PASSWORD)[:2] == (0, "password matches\n")
    assert cli(capsys, *db, "check-password", "alice", "wrong one")[0] == 1
    assert cli(capsys, *db, "update-login", "alice", "new password")[0] == 0
    assert cli(capsys, *db, "check-password", "alice", PASSWORD)[0] == 1
    assert cli(capsys, *db, "check-password", "alice", "new password")[0] == 0
    status, out, _ = cli(capsys, *db, "show", "alice")
    assert "password: set" in out and "$argon2" not in out
    assert cli(capsys, *db, "delete-login", "alice")[0] == 0
    status, _, err = cli(capsys, *db, "check-password", "alice", "new password")
    assert status == 1 and "has no password" in err
    assert cli(capsys, *db, "delete-login", "alice")[0] == 1
    assert cli(capsys, *db, "update-login", "alice", "new password")[0] == 1


def test_passwords_are_argon2id_with_default_parameters(
    tmp_path: Path, db: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, *db, "add-user", "alice")
    cli(capsys, *db, "add-login", "alice", PASSWORD)
    params = argon2.extract_parameters(stored_hash(tmp_path / "user.db", "alice"))
    assert params.type is argon2.Type.ID
    assert params.memory_cost >= 19456 and params.time_cost >= 2


def test_update_login_revokes_sessions(
    tmp_path: Path, db: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, *db, "add-user", "alice")
    cli(capsys, *db, "add-login", "alice", PASSWORD)
    store = UserStore.open(tmp_path / "user.db")
    try:
        store.create_session(store.require("alice").id, "tok", {})
        assert store.session_user("tok") is not None
        assert cli(capsys, *db, "update-login", "alice", "new password")[0] == 0
        assert store.session_user("tok") is None
    finally:
        store.db.close()


def test_roles_and_permissions(
    tmp_path: Path, db: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, *db, "add-user", "alice")
    status, out, _ = cli(capsys, *db, "add-role", "alice", "admin")
    assert status == 0 and "roles: Admin, Regular" in out
    status, out, _ = cli(capsys, *db, "remove-role", "alice", "Regular")
    assert status == 0 and "roles: Admin\n" in out and "LikeContent" not in out
    status, out, _ = cli(capsys, *db, "add-permission", "alice", "LikeContent")
    assert status == 0 and "extra permissions: LikeContent" in out
    store = UserStore.open(tmp_path / "user.db")
    try:
        alice = store.require("alice")
        assert alice.roles == (Role.Admin,)
        assert alice.permissions == Role.Admin.permissions | {Permission.LikeContent}
    finally:
        store.db.close()
    status, out, _ = cli(capsys, *db, "remove-permission", "alice", "likecontent")
    assert status == 0 and "extra permissions: (none)" in out
    status, _, err = cli(capsys, *db, "add-role", "alice", "Root")
    assert status == 1 and "unknown role 'Root'" in err
    status, _, err = cli(capsys, *db, "add-permission", "alice", "Fly")
    assert status == 1 and "unknown permission 'Fly'" in err
    status, _, err = cli(capsys, *db, "add-role", "ghost", "Admin")
    assert status == 1 and "no user 'ghost'" in err


def test_listing_commands(db: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    for handle in ("zed", "bea"):
        cli(capsys, *db, "add-user", handle)
    assert cli(capsys, *db, "user-handles")[:2] == (0, "bea\nzed\n")
    status, out, _ = cli(capsys, *db, "list-roles")
    assert status == 0
    assert "Regular: AccessCatalog, LikeContent, OwnPlaylists\n" in out
    assert "Admin: AccessCatalog, EditCatalog, ManagePermissions, " in out
    status, out, _ = cli(capsys, *db, "help")
    assert status == 0
    for name in ("add-user HANDLE", "check-password HANDLE PASSWORD", "where", "exit"):
        assert name in out


def test_bad_input_fails_with_one_line(db: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (("add-user", "a b"), 1, "user handle must be"),
        (("show", "ghost"), 1, "no user 'ghost'"),
        (("add-user",), 2, "usage: add-user HANDLE"),
        (("show", "a", "b"), 2, "usage: show HANDLE"),
        (("frobnicate",), 2, "unknown command 'frobnicate'"),
    ]
    cli(capsys, *db, "add-user", "alice")
    cases.append((("add-login", "alice", "short"), 1, "password must be 8-1024"))
    for args, expected, message in cases:
        status, out, err = cli(capsys, *db, *args)
        assert (status, out) == (expected, ""), args
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_three_ways_to_find_user_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "user.db"
    assert cli(capsys, "--db-dir", str(tmp_path), "where") == (0, f"{path}\n", "")
    assert cli(capsys, str(path), "where") == (0, f"{path}\n", "")
    config = tmp_path / "server.toml"
    config.write_text(f'db_dir = "{tmp_path}"\nport = 3001\n')
    assert cli(capsys, "--config", str(config), "where") == (0, f"{path}\n", "")


def test_where_the_db_cannot_be_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_db_dir = tmp_path / "empty.toml"
    no_db_dir.write_text("port = 3001\n")
    cases = [
        ([], 2, "say where user.db is"),
        (["show", "alice"], 1, "show is not an existing user.db"),
        ([str(tmp_path / "missing.db"), "user-handles"], 1, "is not an existing user.db"),
        (["--db-dir", str(tmp_path / "nope"), "where"], 1, "is not an existing directory"),
        (["--config", str(no_db_dir), "where"], 1, "sets no db_dir"),
        (["--config", str(tmp_path / "absent.toml"), "where"], 1, "cannot read config file"),
        ([str(no_db_dir), "where"], 1, "cannot open"),
    ]
    for argv, expected, message in cases:
        status, _, err = cli(capsys, *argv)
        assert status == expected and message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.toml"]
    status, _, err = cli(capsys, "--db-dir", str(tmp_path), "--config", str(no_db_dir))
    assert status == 2 and "not allowed with" in err


def test_interactive_prompt_reads_until_exit(
    tmp_path: Path,
    db: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = (
        "add-user bob\n"
        "\n"
        'add-login bob "pass word 12"\n'
        "bogus\n"
        'check-password bob "unterminated\n'
        "check-password bob 'pass word 12'\n"
        "exit\n"
        "add-user never\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    status, out, err = cli(capsys, *db)
    assert status == 0
    assert out.startswith("pezzottify> created user bob")
    assert out.count("pezzottify> ") == 7
    assert "password matches" in out
    assert "unknown command 'bogus'" in err and "cannot parse the line" in err
    assert cli(capsys, *db, "user-handles")[1] == "bob\n"


def test_interactive_prompt_ends_at_end_of_input(
    db: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("add-user carol\nshow ghost"))
    status, out, err = cli(capsys, *db)
    assert status == 0
    assert "created user carol" in out and "no user 'ghost'" in err
    assert out.endswith("pezzottify> \n")


def test_real_process_one_shot_and_interactive(tmp_path: Path) -> None:
    done = run_cli("pezzottify-auth", ["--db-dir", str(tmp_path), "add-user", "alice"])
    assert (done.returncode, done.stderr) == (0, "")
    done = run_cli("pezzottify-auth", [str(tmp_path / "user.db"), "show", "nobody"])
    assert done.returncode == 1 and done.stderr == "error: no user 'nobody'\n"
    stdin = f"add-login alice '{PASSWORD}'\nadd-role alice Admin\nshow alice\nexit\n"
    done = run_cli("pezzottify-auth", [str(tmp_path / "user.db")], stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pezzottify> password set for alice")
    assert "roles: Admin, Regular" in done.stdout and "password: set" in done.stdout
    done = run_cli("pezzottify-auth", ["--db-dir", str(tmp_path), "check-password", "alice", "no"])
    assert done.returncode == 1


def test_writes_while_another_connection_reads(
    tmp_path: Path, db: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = UserStore.open(tmp_path / "user.db")
    try:
        with store.db.read() as conn:
            conn.execute("BEGIN")
            assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0
            assert cli(capsys, *db, "add-user", "alice")[0] == 0
            # The reader's snapshot is untouched; the write is committed for everyone else.
            assert conn.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0
        assert store.handles() == ["alice"]
    finally:
        store.db.close()


def test_waits_for_another_writer_instead_of_failing(
    tmp_path: Path, db: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = UserStore.open(tmp_path / "user.db")
    holding, release = threading.Event(), threading.Event()

    def hold_write_lock() -> None:
        with store.db.write() as conn:
            conn.execute("INSERT INTO users (handle, created_at) VALUES ('server-side', 0)")
            holding.set()
            release.wait(5)

    writer = threading.Thread(target=hold_write_lock)
    writer.start()
    try:
        assert holding.wait(5)
        threading.Timer(0.3, release.set).start()
        status, _, err = cli(capsys, *db, "add-user", "alice")
        assert (status, err) == (0, "")
    finally:
        release.set()
        writer.join(5)
        store.db.close()
    assert cli(capsys, *db, "user-handles")[1] == "alice\nserver-side\n"


async def test_admin_made_by_the_cli_logs_in_to_the_running_api(
    config: Config, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db-dir", str(config.db_dir)]
    for args in (
        ["add-user", "root"],
        ["add-login", "root", PASSWORD],
        ["add-role", "root", "Admin"],
    ):
        assert cli(capsys, *db, *args)[0] == 0
    headers = await login(client, "root", PASSWORD)
    r = await client.get("/v1/admin/users", headers=headers)
    assert r.status_code == 200
    assert [u["user_handle"] for u in (await r.get_json())["users"]] == ["root"]
