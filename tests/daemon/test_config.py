"""Configuration resolution and every error of SPEC §2, case by case."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from daemon.config import (
    KNOWN_JOBS,
    Config,
    ConfigError,
    DownloadManagerConfig,
    JobSettings,
    load_config,
)
from daemon.main import main

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def test_defaults_from_db_dir_only(tmp_path: Path) -> None:
    config = load_config(["--db-dir", str(tmp_path)])
    assert config.db_dir == tmp_path.resolve()
    assert config.media_path == config.db_dir
    assert (config.host, config.port, config.metrics_port) == ("0.0.0.0", 3001, 9091)
    assert config.logging_level == "path" and config.log_level == "info"
    assert config.content_cache_age_sec == 3600
    assert config.downloader_url is None and not config.download_enabled
    assert config.shutdown_timeout_sec == 30
    assert config.download_manager == DownloadManagerConfig()
    assert config.sources["port"] == "default"
    assert config.sources["db_dir"] == "command line"


def test_toml_wins_over_explicit_flag(tmp_path: Path) -> None:
    path = write(tmp_path, f'db_dir = "{tmp_path}"\nport = 4000\n')
    config = load_config(["--config", path, "--port", "5000", "--metrics-port", "9999"])
    assert config.port == 4000 and config.sources["port"] == "config file"
    assert config.metrics_port == 9999 and config.sources["metrics_port"] == "command line"


def test_download_manager_and_jobs_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'db_dir = "{tmp_path}"\ndownloader_url = "http://127.0.0.1:8080"\n'
        "[download_manager]\nmax_albums_per_hour = 3\nbackoff_multiplier = 1.5\n"
        "[background_jobs.popular_content]\ninterval_hours = 2\nenabled = false\n",
    )
    config = load_config(["--config", path])
    assert config.download_enabled
    assert config.download_manager.max_albums_per_hour == 3
    assert config.download_manager.backoff_multiplier == 1.5
    assert config.download_manager.max_albums_per_day == 60
    job = config.job("popular_content")
    assert job.enabled is False and job.interval_hours == 2
    assert config.job("prune_events").enabled is True


@pytest.mark.parametrize(
    ("toml", "args", "message"),
    [
        ("", [], "db_dir must be specified via --db-dir or in config file"),
        ('db_dir = "/nonexistent/x"', [], "does not exist"),
        ("portt = 1\ndb_dir = '{d}'", [], "unknown config key 'portt'"),
        ("db_dir = '{d}'\nport = 'x'", [], "port must be an integer"),
        ("db_dir = '{d}'\nport = 70000", [], "port must be an integer >= 0 and <= 65535"),
        ("db_dir = '{d}'\nlogging_level = 'loud'", [], "logging_level must be one of"),
        (
            "db_dir = '{d}'\n[download_manager]\nmax_retries = -1",
            [],
            "download_manager.max_retries",
        ),
        (
            "db_dir = '{d}'\n[download_manager]\nfoo = 1",
            [],
            "unknown config key 'download_manager.foo'",
        ),
        (
            "db_dir = '{d}'\n[background_jobs.nope]\nenabled = true",
            [],
            "unknown config key 'background_jobs.nope'",
        ),
        ("db_dir = '{d}'\n[background_jobs.prune_events]\nenabled = 1", [], "enabled must be"),
        ("db_dir = '{d}'\ndownloader_url = 'ftp://x'", [], "downloader_url must be an http(s) URL"),
        ("db_dir = [", [], "is not valid TOML"),
        ("", ["--port", "abc"], "--port must be an integer"),
    ],
)
def test_errors_name_the_problem(tmp_path: Path, toml: str, args: list[str], message: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    argv = [*args]
    if toml:
        argv = ["--config", write(tmp_path, toml.replace("{d}", str(data))), *argv]
    elif "--port" in args:
        argv = ["--db-dir", str(data), *argv]
    with pytest.raises(ConfigError, match=None) as info:
        load_config(argv)
    assert message in str(info.value)
    assert list(data.iterdir()) == []


def test_db_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        load_config(["--db-dir", str(target)])


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(["--config", str(tmp_path / "missing.toml")])


def test_main_prints_one_line_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, f'db_dir = "{tmp_path / "db"}"\n')
    (tmp_path / "db").mkdir()
    (tmp_path / "config.toml").write_text(f'db_dir = "{tmp_path / "db"}"\nbogus = 1\n')
    assert main(["--config", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pezzottify-server: unknown config key 'bogus'"]
    assert list((tmp_path / "db").iterdir()) == []


def test_port_in_use_is_refused_before_anything_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["--db-dir", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)])
    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        f"pezzottify-server: flag --port {port} on 127.0.0.1: in use"
    ]
    assert list(tmp_path.iterdir()) == []


def test_example_config_documents_every_key() -> None:
    from daemon.config import DM_KEYS, JOB_KEYS, JOB_OWN_KEYS, KNOWN_JOBS, TOP_KEYS

    text = (ROOT / "config.example.toml").read_text()
    own = [key for keys in JOB_OWN_KEYS.values() for key in keys]
    for key in [*TOP_KEYS, *DM_KEYS, *JOB_KEYS, *KNOWN_JOBS, *own]:
        assert key in text, key


def test_example_config_states_the_defaults(tmp_path: Path) -> None:
    """Every value the example sets is the documented default, so loading it changes nothing."""
    text = (ROOT / "config.example.toml").read_text()
    assert 'db_dir = "/var/lib/pezzottify"' in text
    path = write(tmp_path, text.replace('"/var/lib/pezzottify"', f'"{tmp_path}"'))
    config = load_config(["--config", path], {})
    assert replace(config, background_jobs={}) == Config(
        db_dir=config.db_dir, media_path=config.db_dir
    )
    assert all(config.job(job).enabled == JobSettings.defaults(job).enabled for job in KNOWN_JOBS)
    assert not config.job("backup").enabled
    assert config.sources["download_manager.max_file_bytes"] == "config file"


def test_the_backup_job_is_off_unless_enabled_and_then_needs_its_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not load_config(["--db-dir", str(tmp_path)], {}).job("backup").enabled
    with pytest.raises(ConfigError) as refused:
        load_config(
            ["--db-dir", str(tmp_path)], {"PEZZOTTIFY_BACKGROUND_JOBS__BACKUP__ENABLED": "true"}
        )
    assert str(refused.value) == (
        "background_jobs.backup.dir (PEZZOTTIFY_BACKGROUND_JOBS__BACKUP__DIR) must be set when "
        "the backup job is enabled"
    )
    monkeypatch.chdir(tmp_path)  # a relative dir is taken from the working directory
    config = load_config(
        ["--db-dir", str(tmp_path)],
        {
            "PEZZOTTIFY_BACKGROUND_JOBS__BACKUP__ENABLED": "TRUE",
            "PEZZOTTIFY_BACKGROUND_JOBS__BACKUP__DIR": "backups",
            "PEZZOTTIFY_BACKGROUND_JOBS__BACKUP__KEEP": "3",
        },
    )
    assert config.job("backup") == JobSettings(enabled=True, dir=tmp_path / "backups", keep=3)
    assert config.sources["background_jobs.backup.dir"] == "environment"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[background_jobs.backup]\nenabled = true\ndir = "/b"\nkeep = 0',
            "config key background_jobs.backup.keep must be an integer >= 1, got 0",
        ),
        (
            '[background_jobs.backup]\ndir = ""',
            "config key background_jobs.backup.dir must be a non-empty string, got ''",
        ),
        (
            "[background_jobs.prune_events]\nkeep = 3",
            "unknown config key 'background_jobs.prune_events.keep'",
        ),
    ],
)
def test_backup_keys_are_checked_and_belong_to_the_backup_job(
    tmp_path: Path, body: str, message: str
) -> None:
    path = write(tmp_path, f'db_dir = "{tmp_path}"\n{body}\n')
    with pytest.raises(ConfigError) as refused:
        load_config(["--config", path], {})
    assert str(refused.value) == message
