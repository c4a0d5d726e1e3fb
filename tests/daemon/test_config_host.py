"""A host the daemon cannot listen on is a configuration error (SPEC §2 rev 2).

It names `host`, exits with status 2 and is found before any file is created. The bad hosts
send nothing on the network: `999.1.1.1` is no address, a name under the reserved `.invalid`
domain fails to resolve locally, and 192.0.2.1 (TEST-NET-1) is refused by bind, which sends
nothing.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config
from tests.support.process import run_cli

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

UNRESOLVABLE = ("999.1.1.1", "nohost.invalid")
NOT_HERE = "192.0.2.1"


def not_here_is_refused() -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((NOT_HERE, 0))
        except OSError:
            return True
    return False  # a machine that binds any address (ip_nonlocal_bind): nothing to test


def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def server(db_dir: Path, *args: str) -> tuple[int, list[str]]:
    done = run_cli(
        "pezzottify-server", ["--db-dir", str(db_dir), "--port", "0", "--metrics-port", "0", *args]
    )
    return done.returncode, done.stderr.splitlines()


@pytest.mark.parametrize("host", UNRESOLVABLE)
def test_an_unresolvable_host_stops_the_daemon_before_anything_is_created(
    tmp_path: Path, host: str
) -> None:
    db_dir = data_dir(tmp_path)
    status, err = server(db_dir, "--host", host)
    assert status == 2, err
    assert len(err) == 1, err
    assert err[0].startswith(f"pezzottify-server: flag --host: {host!r} cannot be resolved ("), err
    assert list(db_dir.iterdir()) == []


def test_an_address_of_another_machine_in_the_file_stops_the_daemon(tmp_path: Path) -> None:
    if not not_here_is_refused():
        pytest.skip(f"this machine binds {NOT_HERE}")
    db_dir = data_dir(tmp_path)
    config = tmp_path / "config.toml"
    # The download manager on, as in a real setup: no job may run and no queue may be made.
    config.write_text(f'host = "{NOT_HERE}"\ndownloader_url = "http://127.0.0.1:9"\n')
    status, err = server(db_dir, "--config", str(config))
    assert status == 2, err
    assert err == [
        f"pezzottify-server: config key host: '{NOT_HERE}' is not an address of this machine"
    ]
    assert list(db_dir.iterdir()) == []


def test_a_host_from_the_environment_is_named_as_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["--db-dir", str(tmp_path)], {"PEZZOTTIFY_HOST": "nohost.invalid"})
    assert str(info.value).startswith(
        "environment variable PEZZOTTIFY_HOST: 'nohost.invalid' cannot be resolved"
    )


def test_names_and_addresses_of_this_machine_are_accepted(tmp_path: Path) -> None:
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        assert load_config(["--db-dir", str(tmp_path), "--host", host], {}).host == host


def test_a_bracketed_ipv6_address_is_stored_bare(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    config = load_config(["--db-dir", str(tmp_path), "--host", "[::1]"], {})
    assert config.host == "::1"
