"""Builds the running daemon from a configuration: stores, channels, actors, supervisor.

Channel sizes are chosen here and explained where they are made. The wiring owns every channel
endpoint and closes them when the supervisor returns; actors borrow them (an actor that is
restarted after a crash keeps receiving on the same channel).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from actors.http_server import HttpServer
from actors.messages import SchedulerMessage, WakeProcessor
from api.app import create_app
from api.context import AppContext
from daemon.config import Config
from daemon.metrics import Metrics, metrics_app
from daemon.services import build_context, close_context
from daemon.supervisor import ActorSpec, Shutdown, Supervisor

log = logging.getLogger("pezzottify.daemon")


async def run_daemon(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    context: AppContext | None = None,
    task_status: trio.TaskStatus[AppContext] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until shutdown. Reports the context (with bound URLs) when ready."""
    shutdown = shutdown or trio.Event()
    if context is None:
        context = await trio.to_thread.run_sync(build_context, config, Metrics())
    # Hooks, triggers and cancels for the scheduler: bursts are small (one hook per completed
    # album or ingestion), and senders that find it full log and drop a hook rather than block.
    scheduler_send, scheduler_recv = trio.open_memory_channel[SchedulerMessage](64)
    # One pending wake-up is all the processor needs: it drains every ready item when it wakes.
    wake_send, wake_recv = trio.open_memory_channel[WakeProcessor](1)
    context.scheduler = scheduler_send
    context.wake_processor = wake_send
    specs = actor_specs(config, context, shutdown, scheduler_recv, wake_recv)
    supervisor = Supervisor(
        specs,
        shutdown=shutdown,
        shutdown_timeout=config.shutdown_timeout_sec,
        metrics=context.metrics,
    )
    try:
        async with scheduler_send, scheduler_recv, wake_send, wake_recv, trio.open_nursery() as n:
            await n.start(supervisor.run)
            task_status.started(context)
    finally:
        with trio.move_on_after(5, shield=True):
            if context.downloader is not None:
                await context.downloader.aclose()
            await trio.to_thread.run_sync(close_context, context)
    log.info("stopped")


def actor_specs(
    config: Config,
    context: AppContext,
    shutdown: trio.Event,
    scheduler_recv: trio.MemoryReceiveChannel[SchedulerMessage],
    wake_recv: trio.MemoryReceiveChannel[WakeProcessor],
) -> list[ActorSpec]:
    """The actors in start order; the HTTP API comes last so 'listening' means ready."""
    app = create_app(context)
    specs: list[ActorSpec] = []

    def http(app: Any, port: int, announce: str) -> HttpServer:
        return HttpServer(
            app,
            host=config.host,
            port=port,
            shutdown=shutdown,
            graceful_timeout=config.shutdown_timeout_sec,
            announce=announce,
        )

    specs.append(
        ActorSpec(
            "metrics",
            lambda: http(
                metrics_app(context.metrics), config.metrics_port, "metrics on {url}/metrics"
            ),
            Shutdown.GRACEFUL,
        )
    )
    specs.append(
        ActorSpec("http", lambda: http(app, config.port, "listening on {url}"), Shutdown.GRACEFUL)
    )
    return specs
