"""The route table as test data, and a fully wired API root for the security tests.

Everything the security tests iterate over comes from `app.url_map` and the views' own
declarations (`api.auth.PERMISSION_ATTR`, quart-schema's body and query-string models), so a route
added later is covered without editing a test. Path parameters get syntactically valid values
chosen by the parameter's name and the route it sits in; an unknown name gets a content id, the
most common kind.

`prepared` adds to a root built by `daemon.services.open_root` what the daemon's wiring adds (a
running scheduler), so every route can answer something other than "not running"; the modules
that need it make it their `root`.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import string
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
from pydantic import BaseModel
from quart_schema.validation import (
    QUART_SCHEMA_QUERYSTRING_ATTRIBUTE,
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
)

from actors.jobs.registry import core_jobs
from actors.messages import SchedulerMessage
from actors.scheduler import Scheduler
from api.app import STATIC_ENDPOINTS
from api.auth import PERMISSION_ATTR
from daemon.config import Config
from daemon.root import Root, SchedulerHandle
from storage.users import Permission, Role
from tests.conftest import make_user

IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
UNREACHABLE_DOWNLOADER = "http://127.0.0.1:9"
BASE62 = string.digits + string.ascii_letters
# The logged-in personas of the matrix: roles and extra grants.
PERSONAS: dict[str, tuple[tuple[Role, ...], tuple[Permission, ...]]] = {
    "user": ((Role.Regular,), ()),
    "requester": ((Role.Regular,), (Permission.RequestContent,)),
    "admin": ((Role.Admin,), ()),
}
# Holds every permission, for tests about input rather than authorization.
SUPERUSER = "root"
# The user that user-admin routes act on, so the matrix never demotes one of its own personas.
TARGET = "target-user"
# Plausible body values by field name, then by JSON type (see `example_body`).
NAMED_VALUES = {"user_handle": "new-handle", "password": "a-long-enough-password",
                "role": "Regular", "permission": "LikeContent"}  # fmt: skip
EXAMPLES = {"string": "Example", "integer": 1, "number": 1.5, "boolean": True, "array": []}


def security_config(tmp_path: Path, **overrides: Any) -> Config:
    """A configuration with the download manager enabled (its downloader is unreachable)."""
    values: dict[str, Any] = {"db_dir": tmp_path, "media_path": tmp_path}
    return Config(**{**values, "downloader_url": UNREACHABLE_DOWNLOADER, **overrides})


def random_content_id() -> str:
    return "".join(secrets.choice(BASE62) for _ in range(22))


def random_image_id() -> str:
    return secrets.token_hex(20)


@dataclass(frozen=True)
class Route:
    """One (rule, method) pair of the app, with what its view declares."""

    rule: str
    method: str
    arguments: tuple[str, ...]
    permissions: tuple[Permission, ...] | None
    view: Callable[..., Any]

    @property
    def body_model(self) -> type[BaseModel] | None:
        model = getattr(self.view, QUART_SCHEMA_REQUEST_ATTRIBUTE, None)
        return model[0] if isinstance(model, tuple) else model

    @property
    def query_model(self) -> type[BaseModel] | None:
        model: type[BaseModel] | None = getattr(self.view, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, None)
        return model

    def allows(self, held: frozenset[Permission] | None) -> bool | None:
        """True if `held` passes the declaration, False if it lacks some, None if anonymous."""
        if self.permissions is None:
            return True
        if held is None:
            return None
        return set(self.permissions) <= held

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"


def routes(app: Any) -> list[Route]:
    """Every (rule, method) of the API except HEAD and OPTIONS, which the framework answers.
    The console's static files are not the API (tests/api/test_console_files.py covers them)."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in STATIC_ENDPOINTS:
            continue
        view = app.view_functions[rule.endpoint]
        declared = getattr(view, PERMISSION_ATTR)
        arguments = tuple(re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule.rule))
        for method in sorted((rule.methods or set()) - IGNORED_METHODS):
            found.append(Route(rule.rule, method, arguments, declared, view))
    return sorted(found, key=lambda r: (r.rule, r.method))


def json_type(schema: dict[str, Any]) -> str:
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("type") not in (None, "null"):
            return str(option["type"])
    return "string"


def properties(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    props: dict[str, dict[str, Any]] = model.model_json_schema().get("properties", {})
    return props


def example_body(model: type[BaseModel]) -> dict[str, Any]:
    """A plausible body: every field with a value of its type (ids valid, names by role)."""
    body: dict[str, Any] = {}
    for name, schema in properties(model).items():
        if name in NAMED_VALUES:
            body[name] = NAMED_VALUES[name]
        elif name.endswith("_id") and json_type(schema) == "string":
            body[name] = random_content_id()
        else:
            body[name] = EXAMPLES.get(json_type(schema), "Example")
    return body


@dataclass
class Samples:
    """Valid values for path parameters; `named` wins over the kind guessed from the route."""

    named: dict[str, str]
    queue_item: str
    content: str
    image: str

    def value(self, route: Route, argument: str) -> str:
        if argument in self.named:
            return self.named[argument]
        if "/image/" in route.rule or argument.startswith("image"):
            return self.image
        if route.rule.startswith("/v1/download/") and not argument.endswith(
            ("artist_id", "album_id", "track_id")
        ):
            return self.queue_item
        return self.content

    def path(self, route: Route, overrides: Mapping[str, str] | None = None) -> str:
        """The rule with every parameter filled (percent-encoded, so any text survives)."""
        values = {arg: self.value(route, arg) for arg in route.arguments}
        values.update(overrides or {})
        return re.sub(
            r"<(?:[^:<>]+:)?([^<>]+)>",
            lambda m: quote(values[m.group(1)], safe=""),
            route.rule,
        )


def samples_for(root: Root) -> Samples:
    jobs = root.scheduler.view.jobs()
    named = {
        "handle": TARGET,
        "role": Role.Regular.value,
        "permission": Permission.LikeContent.name,
        "job_id": jobs[0].id if jobs else "popular_content",
    }
    return Samples(named, str(uuid.uuid4()), random_content_id(), random_image_id())


def seed_personas(root: Root) -> None:
    """Create the matrix personas, the target user and the superuser (blocking)."""
    for handle, (roles, extra) in PERSONAS.items():
        make_user(root, handle, roles, extra=extra)
    make_user(root, TARGET, (Role.Regular,))
    make_user(root, SUPERUSER, (Role.Admin, Role.Regular), extra=tuple(Permission))


def held_permissions(root: Root, handle: str) -> frozenset[Permission]:
    return root.users.require(handle).permissions


def session_headers(root: Root, handle: str) -> dict[str, str]:
    """A fresh session straight from the store, so a logout in one case cannot break another."""
    token = secrets.token_urlsafe(32)
    root.users.create_session(root.users.require(handle).id, token, {})
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def prepared(root: Root, nursery: trio.Nursery) -> AsyncIterator[Root]:
    """The root with what the daemon's wiring adds: a scheduler running the core jobs, reading
    the root's inbox (the downloader client comes with the root)."""
    send, recv = trio.open_memory_channel[SchedulerMessage](16)
    ready = replace(root, scheduler=SchedulerHandle(send, root.scheduler.view))
    actor = Scheduler(
        core_jobs(ready),
        ready.jobs,
        ready.metrics,
        recv,
        shutdown=trio.Event(),
        shutdown_timeout=1,
        view=ready.scheduler.view,
    )
    # The test's nursery cancels the actor when the test ends.
    view = await nursery.start(actor.run)
    # Startup runs write to server.db; let them finish so tests see a quiet database. The
    # view offers no event to wait on, hence the bounded poll.
    with trio.fail_after(10):
        while any(view.running_run_id(job.id) is not None for job in view.jobs()):  # noqa: ASYNC110
            await trio.sleep(0.01)
    yield ready


def table_counts(db_dir: Path) -> dict[str, Any]:
    """Schema and row count of every table of every database, read through fresh connections."""
    state: dict[str, Any] = {}
    for path in sorted(db_dir.glob("*.db")):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            schema = conn.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall()
            tables = [name for kind, name, _ in schema if kind == "table"]
            counts = {
                # Names come from sqlite_master, not from a request.
                name: conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]  # noqa: S608
                for name in tables
            }
        finally:
            conn.close()
        state[path.name] = {"schema": schema, "counts": counts}
    return state


def table_rows(db_dir: Path, skip: frozenset[str] = frozenset({"sessions"})) -> dict[str, Any]:
    """Every row of every table (but `skip`): "nothing changed" means this is equal."""
    state: dict[str, Any] = {}
    for path in sorted(db_dir.glob("*.db")):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            for (name,) in names:
                if name not in skip:
                    rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()  # noqa: S608
                    state[f"{path.name}:{name}"] = sorted(map(repr, rows))
        finally:
            conn.close()
    return state
