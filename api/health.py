"""`GET /health` (SPEC §15): the daemon's health for Docker's `HEALTHCHECK`, a load balancer or
a monitor, without a session.

200 `{"status": "ok", "version", "uptime_sec", "checks": {"databases", "disk", "downloader"}}`
while every database answers and the disk takes writes; 503 with `"status": "degraded"` and the
same shape otherwise, the failing check's value saying what failed. A downloader that does not
answer is reported (`"unreachable"`) with a 200: the API still serves. The checks and their
bounds are `daemon.health`'s.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_response

from api.auth import public
from api.context import root
from api.openapi import HealthBody

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@document_response(HealthBody, 200)
@document_response(HealthBody, 503)
@public
async def health() -> tuple[dict[str, Any], int]:
    found = await root().health.report(root())
    return found.json(), 200 if found.ok else 503
