"""Fixtures the download API tests share."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.messages import WakeProcessor


@pytest.fixture
def wake_channel() -> tuple[Any, trio.MemoryReceiveChannel[WakeProcessor]]:
    """The processor's wake-up channel, for a root the test builds and a test that reads it."""
    return trio.open_memory_channel[WakeProcessor](1)
