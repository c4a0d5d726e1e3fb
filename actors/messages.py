"""Messages the actors exchange over trio memory channels.

Commands are named for what they ask (`TriggerJob`), events for what happened (`HookFired`).
A command that needs an answer carries a one-shot reply channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import trio


class Hook(Enum):
    OnStartup = "OnStartup"
    OnCatalogChange = "OnCatalogChange"
    OnUserCreated = "OnUserCreated"
    OnDownloadComplete = "OnDownloadComplete"


@dataclass(frozen=True)
class HookFired:
    """Something happened that jobs may be scheduled on."""

    hook: Hook


@dataclass(frozen=True)
class TriggerJob:
    """Run a job now. Reply: ("triggered", run_id), ("not_found", None) or ("running", None)."""

    job_id: str
    reply: trio.MemorySendChannel[tuple[str, Any]]


@dataclass(frozen=True)
class CancelJob:
    """Cancel a running job. Reply: ("cancelled", run_id), ("not_found", None), ("idle", None)."""

    job_id: str
    reply: trio.MemorySendChannel[tuple[str, Any]]


@dataclass(frozen=True)
class WakeProcessor:
    """New work was queued; the processor should look now instead of at its next deadline."""


@dataclass(frozen=True)
class ScanRequest:
    """Run one integrity scan. Reply: ("completed", report) or ("failed", message).

    The asker sets `cancel` when it is cancelled itself; the watchdog then abandons the scan
    (or skips it if it has not started) and closes `reply` without an answer.
    """

    reply: trio.MemorySendChannel[tuple[str, Any]]
    cancel: trio.Event = field(default_factory=trio.Event)


SchedulerMessage = HookFired | TriggerJob | CancelJob


def offer(channel: trio.MemorySendChannel[Any] | None, message: object) -> bool:
    """Send without waiting; False if there is no channel, it is full, or its reader is gone.

    For notifications that may be dropped: a full wake-up channel already holds a wake-up, and a
    closed one means the daemon is stopping.
    """
    if channel is None:
        return False
    try:
        channel.send_nowait(message)
    except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def ask(send: trio.MemorySendChannel[Any], make: Any, *args: Any) -> tuple[str, Any]:
    """Send `make(*args, reply)` and wait for the one answer."""
    reply_send, reply_recv = trio.open_memory_channel[tuple[str, Any]](1)
    async with reply_recv:
        await send.send(make(*args, reply_send))
        return await reply_recv.receive()
