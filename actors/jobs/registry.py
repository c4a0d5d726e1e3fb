"""The core background jobs, built from the configuration.

`[background_jobs.<id>]` tables switch a job off (`enabled = false`) or change its period
(`interval_hours`). `popular_content` defaults to every 6 hours (plus once at startup);
`prune_events` defaults to `prune_interval_hours`; `backup` runs only when enabled, every 24 hours
unless told otherwise, into its `dir`. Jobs of other features (the download manager's)
are built by their own modules and added to this list by the daemon's wiring.
"""

from __future__ import annotations

from actors.jobs import backup, popular_content, prune_events
from actors.jobs.base import JobSpec
from daemon.root import Root


def core_jobs(root: Root) -> list[JobSpec]:
    config = root.config
    jobs: list[JobSpec] = []
    popular = config.job(popular_content.JOB_ID)
    if popular.enabled:
        jobs.append(
            popular_content.popular_content_job(
                root.users,
                root.catalog,
                root.jobs,
                interval_hours=popular.interval_hours or popular_content.DEFAULT_INTERVAL_HOURS,
            )
        )
    prune = config.job(prune_events.JOB_ID)
    if prune.enabled:
        jobs.append(
            prune_events.prune_events_job(
                root.jobs,
                retention_days=config.event_retention_days,
                interval_hours=prune.interval_hours or config.prune_interval_hours,
                events=root.events,
            )
        )
    saving = config.job(backup.JOB_ID)
    if saving.enabled and saving.dir is not None:  # the configuration refuses one without dir
        jobs.append(
            backup.backup_job(
                config.db_dir,
                saving.dir,
                keep=saving.keep or backup.DEFAULT_KEEP,
                interval_hours=saving.interval_hours or backup.DEFAULT_INTERVAL_HOURS,
            )
        )
    return jobs
