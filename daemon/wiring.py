"""Builds the running daemon from a configuration: channels, the root, actors, supervisor.

Channel sizes are chosen here and explained where they are made. The wiring owns every channel
endpoint and closes them when the supervisor returns; actors borrow them (an actor that is
restarted after a crash keeps receiving on the same channel).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, fields
from typing import Any

import trio
from argon2 import PasswordHasher

from actors.events import EventPublisher
from actors.http_server import HttpServer
from actors.jobs.base import JobSpec
from actors.jobs.download_jobs import download_jobs
from actors.jobs.registry import core_jobs
from actors.messages import ScanRequest, SchedulerMessage, WakeProcessor
from actors.notifier import Notifier
from actors.processor import Processor
from actors.scheduler import Scheduler
from actors.stale_detector import StaleDetector
from actors.watchdog import IntegrityWatchdog
from api.app import create_app
from daemon.config import Config
from daemon.metrics import Metrics, metrics_app
from daemon.root import Downloads, Root
from daemon.services import close_root, open_root
from daemon.supervisor import ActorSpec, Shutdown, Supervisor
from storage.events import NewEvent
from storage.files import Faults, no_faults
from storage.lock import DirLock

log = logging.getLogger("pezzottify.daemon")


@dataclass
class Channels:
    """Every channel of the daemon; the wiring owns the endpoints and closes them at the end."""

    scheduler_send: trio.MemorySendChannel[SchedulerMessage]
    scheduler_recv: trio.MemoryReceiveChannel[SchedulerMessage]
    wake_send: trio.MemorySendChannel[WakeProcessor]
    wake_recv: trio.MemoryReceiveChannel[WakeProcessor]
    scan_send: trio.MemorySendChannel[ScanRequest]
    scan_recv: trio.MemoryReceiveChannel[ScanRequest]

    @classmethod
    def open(cls) -> Channels:
        # Hooks, triggers and cancels for the scheduler: bursts are small (one hook per
        # completed album or ingestion); a sender that finds it full logs and drops a hook.
        scheduler = trio.open_memory_channel[SchedulerMessage](64)
        # One pending wake-up is all the processor needs: it drains every ready item on waking.
        wake = trio.open_memory_channel[WakeProcessor](1)
        # One scan at a time: the watchdog job waits for its answer before asking again.
        scan = trio.open_memory_channel[ScanRequest](1)
        return cls(*scheduler, *wake, *scan)

    async def aclose(self) -> None:
        for f in fields(self):
            await getattr(self, f.name).aclose()


async def run_daemon(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    metrics: Metrics | None = None,
    hasher: PasswordHasher | None = None,
    faults: Faults = no_faults,
    task_status: trio.TaskStatus[Root] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until shutdown; report the root when every actor is ready.

    The data directory's lock is taken before any database is opened and released after the
    last is closed (`storage.lock`: a restore refuses while it is held, and a second daemon on
    the same files refuses to start). The channels are made next, then the root that carries
    their send ends. On return (or cancellation) the channels, the downloader client and the
    databases are closed.
    """
    shutdown = shutdown if shutdown is not None else trio.Event()
    lock = await trio.to_thread.run_sync(DirLock.acquire, config.db_dir, "pezzottify-server")
    try:
        await _run_locked(config, shutdown, metrics, hasher, faults, task_status)
    finally:
        lock.release()
    log.info("stopped")


async def _run_locked(
    config: Config,
    shutdown: trio.Event,
    metrics: Metrics | None,
    hasher: PasswordHasher | None,
    faults: Faults,
    task_status: trio.TaskStatus[Root],
) -> None:
    channels = Channels.open()
    root: Root | None = None
    try:
        root = await trio.to_thread.run_sync(
            functools.partial(
                open_root,
                config,
                scheduler_inbox=channels.scheduler_send,
                wake=channels.wake_send,
                metrics=metrics,
                hasher=hasher,
                faults=faults,
            )
        )
        supervisor = Supervisor(
            actor_specs(root, shutdown, channels),
            shutdown=shutdown,
            shutdown_timeout=config.shutdown_timeout_sec,
            metrics=root.metrics,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            task_status.started(root)
    finally:
        with trio.move_on_after(5, shield=True):
            await channels.aclose()
            if root is not None:
                if root.downloads is not None:
                    await root.downloads.downloader.aclose()
                await trio.to_thread.run_sync(close_root, root)


def actor_specs(root: Root, shutdown: trio.Event, channels: Channels) -> list[ActorSpec]:
    """The actors in start order; the HTTP API comes last so 'listening' means ready."""
    config = root.config
    jobs = core_jobs(root) + download_jobs(root, channels.scan_send)
    specs = [
        # Graceful: the scheduler itself cancels cancellable runs and bounds the others.
        ActorSpec("scheduler", lambda: scheduler(root, shutdown, jobs, channels), Shutdown.GRACEFUL)
    ]
    if root.downloads is not None:
        specs += download_actor_specs(root, root.downloads, shutdown, channels)

    def events() -> EventPublisher:
        feed = root.downloads.feed if root.downloads is not None else None
        return EventPublisher(root.hub, root.events, feed, root.users, shutdown=shutdown)

    # Cancellable: what it had not published yet is made again from its cursor at the next start.
    specs.append(ActorSpec("events", events, Shutdown.CANCELLABLE))
    app = create_app(root)

    def http(asgi: Any, port: int, announce: str) -> HttpServer:
        return HttpServer(
            asgi,
            host=config.host,
            port=port,
            shutdown=shutdown,
            graceful_timeout=config.shutdown_timeout_sec,
            announce=announce,
        )

    metrics = metrics_app(root.metrics)
    specs.append(
        ActorSpec(
            "metrics",
            lambda: http(metrics, config.metrics_port, "metrics on {url}/metrics"),
            Shutdown.GRACEFUL,
        )
    )
    specs.append(
        ActorSpec("http", lambda: http(app, config.port, "listening on {url}"), Shutdown.GRACEFUL)
    )
    return specs


def scheduler(
    root: Root, shutdown: trio.Event, jobs: list[JobSpec], channels: Channels
) -> Scheduler:
    # A restarted scheduler is a new object that fills the root's view again.
    return Scheduler(
        jobs,
        root.jobs,
        root.metrics,
        channels.scheduler_recv,
        shutdown=shutdown,
        shutdown_timeout=root.config.shutdown_timeout_sec,
        view=root.scheduler.view,
        publish=functools.partial(publish_job_event, root),
    )


def publish_job_event(root: Root, event: NewEvent) -> None:
    """A job's live event, and for a failed run the admins' `job.failed` notification."""
    root.hub.publish(event)
    data = event.data
    if event.name == "job.finished" and data.get("status") == "failed":
        root.bell.alarm(
            "job.failed",
            "Background job failed",
            f"Job {data['job_id']} (run {data['run_id']}) failed; its run history says why.",
        )


def download_actor_specs(
    root: Root, downloads: Downloads, shutdown: trio.Event, channels: Channels
) -> list[ActorSpec]:
    """The processor (graceful: the file in flight may finish), the watchdog and the stale
    detector (both cancellable: a scan or a check can be cut short and redone)."""
    config = root.config
    dm = config.download_manager

    def processor() -> Processor:
        return Processor(
            downloads.queue,
            root.catalog,
            downloads.downloader,
            root.media,
            root.metrics,
            dm,
            channels.wake_recv,
            channels.scheduler_send,
            shutdown=shutdown,
            shutdown_timeout=config.shutdown_timeout_sec,
            in_flight=downloads.in_flight,
        )

    def watchdog() -> IntegrityWatchdog:
        return IntegrityWatchdog(
            channels.scan_recv,
            root.catalog,
            downloads.queue_admin,
            root.media,
            wake=channels.wake_send,
        )

    def stale() -> StaleDetector:
        return StaleDetector(
            downloads.queue_admin,
            root.metrics,
            dm.stale_in_progress_threshold_secs,
            alarm=root.bell.alarm,
        )

    def notifier() -> Notifier:
        return Notifier(
            downloads.notices,
            root.users,
            root.bell,
            config.notifications,
            root.metrics,
            shutdown=shutdown,
            shutdown_timeout=config.shutdown_timeout_sec,
        )

    return [
        ActorSpec("processor", processor, Shutdown.GRACEFUL),
        ActorSpec("watchdog", watchdog, Shutdown.CANCELLABLE),
        ActorSpec("stale_detector", stale, Shutdown.CANCELLABLE),
        # Graceful: a delivery in flight has the grace to finish; what is left is delivered
        # after the next start.
        ActorSpec("notifier", notifier, Shutdown.GRACEFUL),
    ]
