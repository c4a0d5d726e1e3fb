"""Configuration: a TOML file, the environment and CLI flags parsed once into frozen dataclasses.

Resolution per key: the TOML value if present, else the environment (`PEZZOTTIFY_<KEY>`, a
section key as `PEZZOTTIFY_<SECTION>__<KEY>`), else the CLI flag, else the default. TOML wins
even over an explicit flag; `Config.sources` records where each value came from so the startup
log can say it. Every problem is a `ConfigError` with one line naming what the user typed (a
flag as `--db-dir`, a key as `db_dir`, a variable as `PEZZOTTIFY_DB_DIR`); a bad value is an
error in any source, even one a higher source overrides, since a typo must not wait for the day
the override goes. Nothing is created on disk before the whole configuration is valid, and the
HTTP host is resolved and bound (on port 0) here, so that a host the listeners could never use
is refused as configuration too.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actors.notify_urls import NotificationSettings
from daemon.config_keys import (
    DM_KEYS,
    ENV_PREFIX,
    JOB_KEYS,
    JOB_OWN_KEYS,
    JOBS,
    KNOWN_JOBS,
    LOG_LEVELS,
    LOGGING_LEVELS,
    NOTIFICATION_KEYS,
    OFF_BY_DEFAULT,
    TOP_KEYS,
    Key,
    all_keys,
    env_name,
    flag_name,
    is_table,
    rule_for,
)
from daemon.config_values import Refused, bindable_host
from storage.queue.model import DownloadManagerConfig  # the section's dataclass, read by the queue

# Re-exported: the schema is read from here by the rest of the daemon and the tests.
__all__ = [
    "DM_KEYS",
    "JOB_KEYS",
    "JOB_OWN_KEYS",
    "KNOWN_JOBS",
    "LOGGING_LEVELS",
    "LOG_LEVELS",
    "NOTIFICATION_KEYS",
    "TOP_KEYS",
    "Config",
    "ConfigError",
    "DownloadManagerConfig",
    "JobSettings",
    "describe",
    "load_config",
    "read_toml",
]

# Where a value came from, as `Config.sources` and the startup log say it.
FILE, ENVIRONMENT, FLAG, DEFAULT = "config file", "environment", "command line", "default"


class ConfigError(Exception):
    """The configuration is unusable; the message is one line for the operator."""


@dataclass(frozen=True)
class JobSettings:
    """`[background_jobs.<id>]`: every job takes `enabled` and `interval_hours`; `dir` and
    `keep` are the backup job's."""

    enabled: bool = True
    interval_hours: float | None = None
    dir: Path | None = None
    keep: int | None = None

    @classmethod
    def defaults(cls, job_id: str) -> JobSettings:
        return cls(enabled=job_id not in OFF_BY_DEFAULT)


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
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    download_manager: DownloadManagerConfig = field(default_factory=DownloadManagerConfig)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    background_jobs: Mapping[str, JobSettings] = field(default_factory=dict)
    # "port", "download_manager.max_retries", "background_jobs.<id>.enabled" -> FILE, ENVIRONMENT…
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def job(self, job_id: str) -> JobSettings:
        return self.background_jobs.get(job_id, JobSettings.defaults(job_id))

    @property
    def download_enabled(self) -> bool:
        return self.downloader_url is not None


def typed_name(key: Key, source: str) -> str:
    """The key as the user typed it in `source`, for error messages."""
    if source == FILE:
        return "config key " + ".".join(key)
    if source == ENVIRONMENT:
        return "environment variable " + env_name(key)
    if source == FLAG:
        return "flag " + flag_name(key)
    return ".".join(key) + " (default)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pezzottify-server",
        description="Pezzottify catalog server. Each value comes from the TOML file, else the "
        "environment (PEZZOTTIFY_<KEY>), else the flag, else its default.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    for key, rule in TOP_KEYS.items():
        default = getattr(Config, key, None) if key not in ("db_dir", "media_path") else None
        listed = ", comma-separated" if key == "trusted_proxies" else ""
        parser.add_argument(
            flag_name((key,)),
            dest=key,
            metavar=key.split("_")[-1].upper(),
            help=f"{rule.expected}{listed}; env {env_name((key,))} "
            f"(default: {rule.show(default) if default != () else 'none'})",
        )
    return parser


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Config:
    """Parse flags, `environ` and the TOML file into a validated `Config` (or `ConfigError`)."""
    args = vars(build_parser().parse_args(argv))
    toml = read_toml(Path(args.pop("config"))) if "config" in args else {}
    layers = [
        (FILE, _accepted(_file_layer(toml), FILE, textual=False)),
        (ENVIRONMENT, _accepted(_env_layer(environ), ENVIRONMENT, textual=True)),
        (FLAG, _accepted({(k,): v for k, v in args.items()}, FLAG, textual=True)),
    ]
    resolved: dict[Key, tuple[Any, str]] = {}
    for source, layer in layers:  # highest first: the first source to give a key keeps it
        for key, value in layer.items():
            resolved.setdefault(key, (value, source))
    return _build(resolved)


def _file_layer(table: Mapping[str, Any], prefix: Key = ()) -> dict[Key, Any]:
    layer: dict[Key, Any] = {}
    for name, value in table.items():
        key = (*prefix, name)
        if is_table(key):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {'.'.join(key)} must be a table")
            layer.update(_file_layer(value, key))
        elif rule_for(key) is not None:
            layer[key] = value
        else:
            jobs = f" (jobs: {', '.join(KNOWN_JOBS)})" if prefix == (JOBS,) else ""
            raise ConfigError(f"unknown config key {'.'.join(key)!r}{jobs}")
    return layer


def _env_layer(environ: Mapping[str, str]) -> dict[Key, str]:
    """Every `PEZZOTTIFY_*` variable as a key; one that names no key is refused like a typo."""
    layer: dict[Key, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        key = tuple(name.removeprefix(ENV_PREFIX).lower().split("__"))
        if rule_for(key) is None or env_name(key) != name:
            hint = " (the config file is named with --config)" if key == ("config",) else ""
            raise ConfigError(f"unknown environment variable {name}{hint}")
        layer[key] = raw
    return layer


def _accepted(layer: Mapping[Key, Any], source: str, *, textual: bool) -> dict[Key, Any]:
    """Each value of one source read (from text if `textual`) and checked by its key's rule."""
    accepted = {}
    for key, given in layer.items():
        rule = rule_for(key)
        assert rule is not None  # the layers hold known keys only
        value = rule.from_text(given) if textual else given
        try:
            accepted[key] = rule.accept(value)
        except Refused as refused:
            raise ConfigError(rule.refusal(typed_name(key, source), value, refused)) from None
    return accepted


def _build(resolved: Mapping[Key, tuple[Any, str]]) -> Config:
    def named(key: Key) -> str:
        return typed_name(key, resolved[key][1] if key in resolved else DEFAULT)

    top = {key[0]: value for key, (value, _) in resolved.items() if len(key) == 1}
    if "db_dir" not in top:
        raise ConfigError(
            "db_dir must be specified via --db-dir or in config file (or as PEZZOTTIFY_DB_DIR)"
        )
    dirs = {
        name: _existing_dir(top.pop(name), named((name,)))
        for name in ("db_dir", "media_path", "frontend_dir_path")
        if name in top
    }
    try:
        host = bindable_host(top.pop("host", Config.host))
    except Refused as refused:
        raise ConfigError(f"{named(('host',))}: {refused.detail}") from None
    return Config(
        db_dir=dirs["db_dir"],
        media_path=dirs.get("media_path", dirs["db_dir"]),
        frontend_dir_path=dirs.get("frontend_dir_path"),
        host=host,
        download_manager=DownloadManagerConfig(**_section(resolved, "download_manager")),
        notifications=NotificationSettings(**_section(resolved, "notifications")),
        background_jobs=_jobs(resolved),
        sources=_sources(resolved),
        **top,
    )


def _section(resolved: Mapping[Key, tuple[Any, str]], section: str) -> dict[str, Any]:
    return {key[1]: value for key, (value, _) in resolved.items() if key[0] == section}


def _jobs(resolved: Mapping[Key, tuple[Any, str]]) -> dict[str, JobSettings]:
    settings: dict[str, dict[str, Any]] = {}
    for key, (value, _) in resolved.items():
        if key[0] == JOBS:
            settings.setdefault(key[1], {})[key[2]] = value
    jobs = {}
    for job_id, values in settings.items():
        if "dir" in values:  # relative to the working directory, as db_dir is
            values["dir"] = Path(values["dir"]).expanduser().resolve()
        jobs[job_id] = replace(JobSettings.defaults(job_id), **values)
    backup = jobs.get("backup")
    if backup is not None and backup.enabled and backup.dir is None:
        raise ConfigError(
            "background_jobs.backup.dir (PEZZOTTIFY_BACKGROUND_JOBS__BACKUP__DIR) must be set "
            "when the backup job is enabled"
        )
    return jobs


def _sources(resolved: Mapping[Key, tuple[Any, str]]) -> dict[str, str]:
    """Every top-level and section key (defaults too), then the job keys given."""
    keys = all_keys() + sorted(key for key in resolved if key[0] == JOBS)
    return {".".join(key): resolved[key][1] if key in resolved else DEFAULT for key in keys}


def _existing_dir(raw: str, name: str) -> Path:
    path = Path(raw).expanduser()
    if not path.exists():
        raise ConfigError(f"{name} {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{name} {path} is not a directory")
    return path.resolve()


def describe(config: Config) -> list[str]:
    """One line per key with its value and where it came from (secrets never shown whole)."""
    lines = []
    for dotted, source in config.sources.items():
        key = tuple(dotted.split("."))
        rule = rule_for(key)
        if rule is None:
            continue
        if key[0] == JOBS:
            value = getattr(config.job(key[1]), key[2])
        else:  # a top-level key, or a section's key in the section's dataclass
            value = getattr(config, key[0])
            value = getattr(value, key[1]) if len(key) == 2 else value
        lines.append(f"{dotted} = {rule.show(value)} ({source})")
    return lines
