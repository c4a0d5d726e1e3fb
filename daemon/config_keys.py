"""Every configuration key: its place, its rule, and the names the user types for it.

A key is a path: `("port",)` at the top, `("download_manager", "max_retries")` in a section,
`("background_jobs", "<job id>", "enabled")` in a job's table. The same key is `port`,
`--port` and `PEZZOTTIFY_PORT`; `download_manager.max_retries` and
`PEZZOTTIFY_DOWNLOAD_MANAGER__MAX_RETRIES` (sections have no flags). A new key is one line in
its table here and a field with its default in `daemon.config`.
"""

from __future__ import annotations

from daemon.config_values import (
    Rule,
    boolean,
    choice,
    integer,
    networks,
    number,
    strings,
    text,
    url,
)

LOGGING_LEVELS = ("none", "path", "headers", "body")
LOG_LEVELS = ("debug", "info", "warning", "error")
ENV_PREFIX = "PEZZOTTIFY_"

TOP_KEYS: dict[str, Rule] = {
    "db_dir": text(),
    "media_path": text(),
    "host": text(),
    "port": integer(0, 65535),
    "metrics_port": integer(0, 65535),
    "logging_level": choice(LOGGING_LEVELS),
    "log_level": choice(LOG_LEVELS),
    "content_cache_age_sec": integer(0),
    "frontend_dir_path": text(),
    "downloader_url": url(),
    "downloader_timeout_sec": number(0, strict=True),
    "event_retention_days": integer(0),
    "prune_interval_hours": number(0, strict=True),
    "shutdown_timeout_sec": number(0),
    "trusted_proxies": networks(),
}

DM_KEYS: dict[str, Rule] = {
    "max_albums_per_hour": integer(0),
    "max_albums_per_day": integer(0),
    "user_max_requests_per_day": integer(0),
    "user_max_queue_size": integer(0),
    "process_interval_secs": number(0, strict=True),
    "stale_in_progress_threshold_secs": integer(1),
    "max_retries": integer(0),
    "initial_backoff_secs": number(0),
    "max_backoff_secs": number(0),
    "backoff_multiplier": number(1),
    "audit_log_retention_days": integer(0),
    "max_file_bytes": integer(1),
    "unavailable_recheck_days": integer(0),
}

# `[notifications]` (SPEC §16 rev 2): read into `actors.notifier.NotificationSettings`.
NOTIFICATION_KEYS: dict[str, Rule] = {
    "admin_urls": strings(secret=True),
    "user_schemes": strings(),
    "user_hosts_allowed": strings(),
    "max_attempts": integer(1, 100),
    "timeout_sec": number(0, strict=True),
}

# `[<section>]` tables of plain keys, each read into its own dataclass.
SECTIONS: dict[str, dict[str, Rule]] = {
    "download_manager": DM_KEYS,
    "notifications": NOTIFICATION_KEYS,
}

KNOWN_JOBS = (
    "popular_content", "prune_events", "integrity_watchdog", "audit_log_cleanup", "backup",
)  # fmt: skip
# Every job takes these.
JOB_KEYS: dict[str, Rule] = {
    "enabled": boolean(),
    "interval_hours": number(0, strict=True),
}
# Keys of one job only.
JOB_OWN_KEYS: dict[str, dict[str, Rule]] = {
    "backup": {"dir": text(), "keep": integer(1)},
}
# Jobs that run only when `enabled = true` is given (a backup needs its `dir`).
OFF_BY_DEFAULT = frozenset({"backup"})
JOBS = "background_jobs"

Key = tuple[str, ...]


def rule_for(key: Key) -> Rule | None:
    """The rule of a key, or None when no such key exists."""
    match key:
        case (name,):
            return TOP_KEYS.get(name)
        case (section, name) if section in SECTIONS:
            return SECTIONS[section].get(name)
        case (jobs, job_id, name) if jobs == JOBS and job_id in KNOWN_JOBS:
            return JOB_KEYS.get(name) or JOB_OWN_KEYS.get(job_id, {}).get(name)
    return None


def is_table(key: Key) -> bool:
    """Whether `key` names a table of keys (a section, the jobs, one job) rather than a value."""
    match key:
        case (name,):
            return name in SECTIONS or name == JOBS
        case (jobs, job_id):
            return jobs == JOBS and job_id in KNOWN_JOBS
    return False


def all_keys() -> list[Key]:
    """Every top-level and section key, in the order the startup log lists them."""
    keys: list[Key] = [(name,) for name in TOP_KEYS]
    return keys + [(section, name) for section, table in SECTIONS.items() for name in table]


def env_name(key: Key) -> str:
    return ENV_PREFIX + "__".join(key).upper()


def flag_name(key: Key) -> str:
    return "--" + key[-1].replace("_", "-")
