"""Fixtures of the reliability tests.

`--chaos-iterations N` (registered in the root `tests/conftest.py` so that every invocation
accepts it) sets how many random kill-and-restart iterations `test_chaos.py` runs: `make chaos`
passes 30, the default of 3 keeps `make test` short. `CHAOS_SEED` replays a run.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def chaos_iterations(request: pytest.FixtureRequest) -> int:
    iterations: int = request.config.getoption("--chaos-iterations")
    return iterations
