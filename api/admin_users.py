"""Blueprint under construction."""

from __future__ import annotations

from quart import Blueprint

blueprint = Blueprint("admin_users", __name__)
