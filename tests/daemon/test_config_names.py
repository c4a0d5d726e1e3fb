"""Configuration errors name what the user typed; enumerations in any case; trusted proxies.

SPEC §2 rev 2: a flag as `--downloader-timeout-sec`, a TOML key as `downloader_timeout_sec` (a
section key as `download_manager.max_retries`), a variable as `PEZZOTTIFY_DOWNLOADER_TIMEOUT_SEC`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from daemon.config import Config, ConfigError, describe, load_config
from daemon.main import main


def toml(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(f'db_dir = "{tmp_path}"\n{body}\n')
    return ["--config", str(path)]


def refusal(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(argv, env or {})
    return str(info.value)


@pytest.mark.parametrize(
    ("args", "body", "env", "message"),
    [
        (
            ["--downloader-timeout-sec", "abc"],
            "",
            {},
            "flag --downloader-timeout-sec must be a number > 0, got 'abc'",
        ),
        (
            [],
            'downloader_timeout_sec = "abc"',
            {},
            "config key downloader_timeout_sec must be a number > 0, got 'abc'",
        ),
        (
            [],
            "",
            {"PEZZOTTIFY_DOWNLOADER_TIMEOUT_SEC": "abc"},
            "environment variable PEZZOTTIFY_DOWNLOADER_TIMEOUT_SEC must be a number > 0, "
            "got 'abc'",
        ),
        (
            [],
            "[download_manager]\nmax_retries = -1",
            {},
            "config key download_manager.max_retries must be an integer >= 0, got -1",
        ),
        (
            [],
            "",
            {"PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_RETRIES": "-1"},
            "environment variable PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_RETRIES must be an integer "
            ">= 0, got -1",
        ),
        (
            ["--shutdown-timeout-sec", "-5"],
            "",
            {},
            "flag --shutdown-timeout-sec must be a number >= 0, got -5",
        ),
    ],
)
def test_a_bad_value_names_the_flag_key_or_variable_as_typed(
    tmp_path: Path, args: list[str], body: str, env: dict[str, str], message: str
) -> None:
    assert refusal([*toml(tmp_path, body), *args], env) == message


def test_the_daemon_prints_the_flag_as_typed_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--db-dir", str(tmp_path), "--downloader-timeout-sec", "0"])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        "pezzottify-server: flag --downloader-timeout-sec must be a number > 0, got 0"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_names_where_it_came_from(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert refusal(["--db-dir", str(missing)]) == f"flag --db-dir {missing} does not exist"
    assert (
        refusal([], {"PEZZOTTIFY_DB_DIR": str(missing)})
        == f"environment variable PEZZOTTIFY_DB_DIR {missing} does not exist"
    )
    assert (
        refusal(toml(tmp_path, f'media_path = "{missing}"'))
        == f"config key media_path {missing} does not exist"
    )


def test_enumerated_values_in_any_case_are_stored_lower_case(tmp_path: Path) -> None:
    config = load_config([*toml(tmp_path, 'log_level = "INFO"'), "--logging-level", "PATH"], {})
    assert (config.log_level, config.logging_level) == ("info", "path")
    config = load_config(
        ["--db-dir", str(tmp_path)],
        {"PEZZOTTIFY_LOG_LEVEL": "Warning", "PEZZOTTIFY_LOGGING_LEVEL": "Headers"},
    )
    assert (config.log_level, config.logging_level) == ("warning", "headers")
    assert refusal([*toml(tmp_path, 'log_level = "LOUD"')]).startswith(
        "config key log_level must be one of debug, info, warning, error, got 'LOUD'"
    )


def test_trusted_proxies_from_each_source_become_networks(tmp_path: Path) -> None:
    body = 'trusted_proxies = ["10.0.0.1", "192.168.0.0/16", "::1", "172.16.5.4/12"]'
    config = load_config(toml(tmp_path, body), {})
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("172.16.0.0/12"),
    )
    assert all(
        isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network) for n in config.trusted_proxies
    )
    assert (
        "trusted_proxies = [10.0.0.1/32, 192.168.0.0/16, ::1/128, 172.16.0.0/12] (config file)"
        in describe(config)
    )

    env = {"PEZZOTTIFY_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}
    config = load_config(["--db-dir", str(tmp_path)], env)
    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert config.sources["trusted_proxies"] == "environment"
    config = load_config(["--db-dir", str(tmp_path), "--trusted-proxies", "fd00::/8"], {})
    assert config.trusted_proxies == (ipaddress.ip_network("fd00::/8"),)
    assert load_config(["--db-dir", str(tmp_path)], {}).trusted_proxies == ()


def test_a_config_is_built_with_networks_by_the_code_that_consumes_them(tmp_path: Path) -> None:
    config = Config(
        db_dir=tmp_path,
        media_path=tmp_path,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    assert ipaddress.ip_address("127.0.0.1") in config.trusted_proxies[0]


@pytest.mark.parametrize(
    ("body", "args", "env", "message"),
    [
        (
            'trusted_proxies = ["10.0.0.1", "10.0.0.300"]',
            [],
            {},
            "config key trusted_proxies: '10.0.0.300' is not an IP address or network",
        ),
        (
            "",
            [],
            {"PEZZOTTIFY_TRUSTED_PROXIES": "10.0.0.1,proxy.lan"},
            "environment variable PEZZOTTIFY_TRUSTED_PROXIES: 'proxy.lan' is not an IP "
            "address or network",
        ),
        (
            "",
            ["--trusted-proxies", "10.0.0.0/33"],
            {},
            "flag --trusted-proxies: '10.0.0.0/33' is not an IP address or network",
        ),
        (
            'trusted_proxies = "10.0.0.1"',
            [],
            {},
            "config key trusted_proxies must be a list of IP addresses or networks, got '10.0.0.1'",
        ),
    ],
)
def test_a_bad_trusted_proxy_is_named_with_its_key(
    tmp_path: Path, body: str, args: list[str], env: dict[str, str], message: str
) -> None:
    assert refusal([*toml(tmp_path, body), *args], env) == message
