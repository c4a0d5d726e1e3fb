"""Configuration: CLI flags and a TOML file parsed once into frozen dataclasses.

Resolution per key: the TOML value if present, else the CLI flag (explicit or its default). TOML
wins even over an explicit flag; `Config.sources` records where each value came from so the
startup log can say it. Every problem is a `ConfigError` with one line naming the key; nothing is
created on disk before the whole configuration is valid.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

LOGGING_LEVELS = ("none", "path", "headers", "body")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The configuration is unusable; the message is one line for the operator."""


@dataclass(frozen=True)
class DownloadManagerConfig:
    max_albums_per_hour: int = 10
    max_albums_per_day: int = 60
    user_max_requests_per_day: int = 100
    user_max_queue_size: int = 200
    process_interval_secs: float = 5.0
    stale_in_progress_threshold_secs: int = 3600
    max_retries: int = 5
    initial_backoff_secs: float = 60.0
    max_backoff_secs: float = 3600.0
    backoff_multiplier: float = 2.0
    audit_log_retention_days: int = 90
    max_file_bytes: int = 2 * 1024**3
    unavailable_recheck_days: int = 7


@dataclass(frozen=True)
class JobSettings:
    """`[background_jobs.<id>]`: every job takes `enabled` and `interval_hours`."""

    enabled: bool = True
    interval_hours: float | None = None


KNOWN_JOBS = ("popular_content", "prune_events", "integrity_watchdog", "audit_log_cleanup")


@dataclass(frozen=True)
class Config:
    db_dir: Path
    media_path: Path
    host: str = "0.0.0.0"
    port: int = 3001
    metrics_port: int = 9091
    logging_level: str = "path"
    log_level: str = "info"
    content_cache_age_sec: int = 3600
    frontend_dir_path: Path | None = None
    downloader_url: str | None = None
    downloader_timeout_sec: float = 300.0
    event_retention_days: int = 30
    prune_interval_hours: float = 24.0
    shutdown_timeout_sec: float = 30.0
    trusted_proxies: tuple[str, ...] = ()
    download_manager: DownloadManagerConfig = field(default_factory=DownloadManagerConfig)
    background_jobs: Mapping[str, JobSettings] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def job(self, job_id: str) -> JobSettings:
        return self.background_jobs.get(job_id, JobSettings())

    @property
    def download_enabled(self) -> bool:
        return self.downloader_url is not None


# key -> (type checker, description of the accepted values)
Check = Callable[[Any], bool]


def _int(lo: int, hi: int | None = None) -> tuple[Check, str]:
    def ok(v: Any) -> bool:
        return (
            isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
        )

    return ok, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")


def _num(lo: float, *, strict: bool = False) -> tuple[Check, str]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False
        return v > lo if strict else v >= lo

    return ok, f"a number {'>' if strict else '>='} {lo:g}"


def _choice(values: Sequence[str]) -> tuple[Check, str]:
    return (lambda v: v in values), "one of " + ", ".join(values)


def _str() -> tuple[Check, str]:
    return (lambda v: isinstance(v, str) and v != ""), "a non-empty string"


def _url() -> tuple[Check, str]:
    def ok(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        parsed = urlparse(v)
        return parsed.scheme in ("http", "https") and bool(parsed.netloc)

    return ok, "an http(s) URL"


TOP_KEYS: dict[str, tuple[Check, str]] = {
    "db_dir": _str(),
    "media_path": _str(),
    "host": _str(),
    "port": _int(0, 65535),
    "metrics_port": _int(0, 65535),
    "logging_level": _choice(LOGGING_LEVELS),
    "log_level": _choice(LOG_LEVELS),
    "content_cache_age_sec": _int(0),
    "frontend_dir_path": _str(),
    "downloader_url": _url(),
    "downloader_timeout_sec": _num(0, strict=True),
    "event_retention_days": _int(0),
    "prune_interval_hours": _num(0, strict=True),
    "shutdown_timeout_sec": _num(0),
}

DM_KEYS: dict[str, tuple[Check, str]] = {
    "max_albums_per_hour": _int(0),
    "max_albums_per_day": _int(0),
    "user_max_requests_per_day": _int(0),
    "user_max_queue_size": _int(0),
    "process_interval_secs": _num(0, strict=True),
    "stale_in_progress_threshold_secs": _int(1),
    "max_retries": _int(0),
    "initial_backoff_secs": _num(0),
    "max_backoff_secs": _num(0),
    "backoff_multiplier": _num(1),
    "audit_log_retention_days": _int(0),
    "max_file_bytes": _int(1),
    "unavailable_recheck_days": _int(0),
}

JOB_KEYS: dict[str, tuple[Check, str]] = {
    "enabled": ((lambda v: isinstance(v, bool)), "true or false"),
    "interval_hours": _num(0, strict=True),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pezzottify-server",
        description="Pezzottify catalog server. TOML values win over flags.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    for key in TOP_KEYS:
        default = getattr(Config, key, None) if key not in ("db_dir", "media_path") else None
        parser.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            metavar=key.split("_")[-1].upper(),
            help=f"(default: {default if default is not None else 'none'})",
        )
    return parser


def _coerce_cli(key: str, raw: str) -> Any:
    """CLI values arrive as strings; give them the type the TOML checker expects."""
    check, _ = TOP_KEYS[key]
    for convert in (int, float):
        try:
            value = convert(raw)
        except ValueError:
            continue
        if check(value):
            return value
    return raw


def _validate(
    table: Mapping[str, Any], schema: Mapping[str, tuple[Check, str]], where: str
) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(f"unknown config key {where}{key!r}")
        check, expected = schema[key]
        if not check(value):
            raise ConfigError(f"config key {where}{key} must be {expected}, got {value!r}")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(argv: Sequence[str]) -> Config:
    """Parse flags and the TOML file into a validated `Config` (raises `ConfigError`)."""
    args = vars(build_parser().parse_args(argv))
    toml: dict[str, Any] = read_toml(Path(args.pop("config"))) if "config" in args else {}
    dm_table = _table(toml.pop("download_manager", {}), "download_manager")
    jobs_table = _table(toml.pop("background_jobs", {}), "background_jobs")
    _validate(toml, TOP_KEYS, "")
    _validate(dm_table, DM_KEYS, "download_manager.")
    cli = {k: _coerce_cli(k, v) for k, v in args.items()}
    _validate(cli, TOP_KEYS, "--")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in TOP_KEYS:
        if key in toml:
            values[key], sources[key] = toml[key], "config file"
        elif key in cli:
            values[key], sources[key] = cli[key], "command line"
        else:
            sources[key] = "default"
    if "db_dir" not in values:
        raise ConfigError("db_dir must be specified via --db-dir or in config file")
    db_dir = _existing_dir(values.pop("db_dir"), "db_dir")
    media = (
        _existing_dir(values.pop("media_path"), "media_path") if "media_path" in values else db_dir
    )
    frontend = values.pop("frontend_dir_path", None)
    return Config(
        db_dir=db_dir,
        media_path=media,
        frontend_dir_path=_existing_dir(frontend, "frontend_dir_path") if frontend else None,
        download_manager=DownloadManagerConfig(**dm_table),
        background_jobs=_jobs(jobs_table),
        sources=sources,
        **values,
    )


def _table(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"config key {name} must be a table")
    return value


def _jobs(table: Mapping[str, Any]) -> dict[str, JobSettings]:
    jobs = {}
    for job_id, settings in table.items():
        if job_id not in KNOWN_JOBS:
            raise ConfigError(
                f"unknown config key background_jobs.{job_id!r} (jobs: {', '.join(KNOWN_JOBS)})"
            )
        settings = _table(settings, f"background_jobs.{job_id}")
        _validate(settings, JOB_KEYS, f"background_jobs.{job_id}.")
        jobs[job_id] = JobSettings(**settings)
    return jobs


def _existing_dir(raw: str, key: str) -> Path:
    path = Path(raw).expanduser()
    if not path.exists():
        raise ConfigError(f"{key} {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{key} {path} is not a directory")
    return path.resolve()


def describe(config: Config) -> list[str]:
    """One line per top-level key with its value and where it came from."""
    lines = []
    for f in fields(config):
        if f.name in config.sources:
            lines.append(f"{f.name} = {getattr(config, f.name)!s} ({config.sources[f.name]})")
    return lines
