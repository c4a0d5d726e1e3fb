"""Configuration from the environment (SPEC §2 rev 2): names, types, order, unknown variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import ConfigError, describe, load_config
from daemon.main import main


def toml(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(f'db_dir = "{tmp_path}"\n{body}\n')
    return ["--config", str(path)]


def refusal(argv: list[str], env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(argv, env)
    return str(info.value)


def test_top_level_section_and_job_keys_from_the_environment(tmp_path: Path) -> None:
    config = load_config(
        [],
        {
            "PEZZOTTIFY_DB_DIR": str(tmp_path),
            "PEZZOTTIFY_PORT": "4000",
            "PEZZOTTIFY_DOWNLOADER_URL": "http://127.0.0.1:8080",
            "PEZZOTTIFY_DOWNLOADER_TIMEOUT_SEC": "12.5",
            "PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_ALBUMS_PER_HOUR": "20",
            "PEZZOTTIFY_DOWNLOAD_MANAGER__BACKOFF_MULTIPLIER": "1.5",
            "PEZZOTTIFY_BACKGROUND_JOBS__POPULAR_CONTENT__ENABLED": "false",
            "PEZZOTTIFY_BACKGROUND_JOBS__PRUNE_EVENTS__ENABLED": "TRUE",
            "PEZZOTTIFY_BACKGROUND_JOBS__PRUNE_EVENTS__INTERVAL_HOURS": "2",
            "PATH": "/usr/bin",  # not ours: ignored
            "PEZ_TEST_FAULT_POINT": "",
        },
    )
    assert config.db_dir == tmp_path.resolve()
    assert config.port == 4000 and isinstance(config.port, int)
    assert config.downloader_url == "http://127.0.0.1:8080" and config.download_enabled
    assert config.downloader_timeout_sec == 12.5
    assert config.download_manager.max_albums_per_hour == 20
    assert config.download_manager.backoff_multiplier == 1.5
    assert config.download_manager.max_albums_per_day == 60
    assert config.job("popular_content").enabled is False
    assert config.job("prune_events").enabled is True
    assert config.job("prune_events").interval_hours == 2
    lines = describe(config)
    assert "port = 4000 (environment)" in lines
    assert "download_manager.max_albums_per_hour = 20 (environment)" in lines
    assert "download_manager.max_albums_per_day = 60 (default)" in lines
    assert "background_jobs.popular_content.enabled = false (environment)" in lines


@pytest.mark.parametrize(
    ("in_file", "in_env", "in_flag", "port", "source"),
    [
        (True, True, True, 4000, "config file"),
        (False, True, True, 5000, "environment"),
        (False, False, True, 6000, "command line"),
        (False, False, False, 3001, "default"),
    ],
)
def test_file_then_environment_then_flag_then_default(
    tmp_path: Path, in_file: bool, in_env: bool, in_flag: bool, port: int, source: str
) -> None:
    argv = toml(tmp_path, "port = 4000" if in_file else "")
    argv += ["--port", "6000"] if in_flag else []
    config = load_config(argv, {"PEZZOTTIFY_PORT": "5000"} if in_env else {})
    assert config.port == port
    assert config.sources["port"] == source
    assert f"port = {port} ({source})" in describe(config)


def test_a_section_key_in_the_file_wins_over_the_environment(tmp_path: Path) -> None:
    argv = toml(tmp_path, "[download_manager]\nmax_retries = 2")
    config = load_config(
        argv,
        {
            "PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_RETRIES": "7",
            "PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_ALBUMS_PER_DAY": "9",
        },
    )
    assert config.download_manager.max_retries == 2
    assert config.download_manager.max_albums_per_day == 9
    assert config.sources["download_manager.max_retries"] == "config file"
    assert config.sources["download_manager.max_albums_per_day"] == "environment"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("PEZZOTTIFY_PORTT", "unknown environment variable PEZZOTTIFY_PORTT"),
        ("PEZZOTTIFY_port", "unknown environment variable PEZZOTTIFY_port"),
        ("PEZZOTTIFY_DOWNLOAD_MANAGER", "unknown environment variable PEZZOTTIFY_DOWNLOAD_MANAGER"),
        (
            "PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_ALBUMS",
            "unknown environment variable PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_ALBUMS",
        ),
        (
            "PEZZOTTIFY_BACKGROUND_JOBS__NOPE__ENABLED",
            "unknown environment variable PEZZOTTIFY_BACKGROUND_JOBS__NOPE__ENABLED",
        ),
        (
            "PEZZOTTIFY_CONFIG",
            "unknown environment variable PEZZOTTIFY_CONFIG (the config file is named with "
            "--config)",
        ),
        ("PEZZOTTIFY_FAULT_POINT", "unknown environment variable PEZZOTTIFY_FAULT_POINT"),
    ],
)
def test_an_unknown_variable_is_refused_by_name(tmp_path: Path, name: str, message: str) -> None:
    assert refusal(["--db-dir", str(tmp_path)], {name: "1"}) == message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PEZZOTTIFY_PORT", "abc", "must be an integer >= 0 and <= 65535, got 'abc'"),
        ("PEZZOTTIFY_PORT", "70000", "must be an integer >= 0 and <= 65535, got 70000"),
        ("PEZZOTTIFY_PORT", "3001.5", "must be an integer >= 0 and <= 65535, got '3001.5'"),
        ("PEZZOTTIFY_HOST", "", "must be a non-empty string, got ''"),
        ("PEZZOTTIFY_LOG_LEVEL", "loud", "must be one of debug, info, warning, error, got 'loud'"),
        ("PEZZOTTIFY_DOWNLOADER_URL", "ftp://x", "must be an http(s) URL, got 'ftp://x'"),
        ("PEZZOTTIFY_PRUNE_INTERVAL_HOURS", "inf", "must be a number > 0, got inf"),
        (
            "PEZZOTTIFY_BACKGROUND_JOBS__PRUNE_EVENTS__ENABLED",
            "yes",
            "must be true or false, got 'yes'",
        ),
    ],
)
def test_a_bad_value_names_the_variable(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    assert refusal(["--db-dir", str(tmp_path)], {name: value}) == (
        f"environment variable {name} {message}"
    )


def test_a_bad_variable_is_refused_even_when_the_file_overrides_it(tmp_path: Path) -> None:
    """A typo must not wait for the day the file's value goes away."""
    assert refusal(toml(tmp_path, "port = 4000"), {"PEZZOTTIFY_PORT": "40o0"}) == (
        "environment variable PEZZOTTIFY_PORT must be an integer >= 0 and <= 65535, got '40o0'"
    )


def test_the_daemon_refuses_an_unknown_variable_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_ALBUMS_PER_HOUR", "20")
    monkeypatch.setenv("PEZZOTTIFY_DOWLOADER_URL", "http://127.0.0.1:1")
    assert main(["--db-dir", str(tmp_path), "--host", "127.0.0.1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "pezzottify-server: unknown environment variable PEZZOTTIFY_DOWLOADER_URL"
    ]
    assert list(tmp_path.iterdir()) == []
