"""SEC-5..SEC-8: hostile input on every route, found from the route table.

Bodies: every route with a quart-schema request model refuses unknown fields (mass assignment),
wrong types, non-JSON content types, malformed JSON and bodies over 1 MiB, and changes nothing.
Paging: every query model with a `limit` (or `*_limit`) clamps huge values to the documented
maximum and refuses non-numbers. Injection: SQL payloads in every path parameter and query-string
filter never cause a 5xx, match nothing and leave every table as it was.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import generate_latest

from actors.jobs.base import utc_now
from api.app import MAX_BODY
from daemon.config import Config
from daemon.root import Root
from storage.queue import AuditEvent
from storage.queue.audit import append as append_audit
from tests.security.routes import (
    SUPERUSER,
    Route,
    Samples,
    example_body,
    json_type,
    prepared,
    properties,
    random_content_id,
    routes,
    samples_for,
    security_config,
    seed_personas,
    session_headers,
    table_counts,
    table_rows,
)
from tests.support.queue_rows import DEFAULTS

SEEDED_ITEMS = 510  # more than the largest documented page (500)
SEEDED_RUNS = 110  # more than the job-history page (100)
DOCUMENTED_MAX = {"/v1/admin/jobs/<job_id>/history": 100, "/v1/content/popular": 50}
PAGE_MAX = 500  # SPEC §8.10
SEEDED_LISTS = {"items", "entries", "requests", "history", "albums", "artists"}
INJECTIONS = ("' OR 1=1 --", '"; DROP TABLE users; --', "%' --", "1) UNION SELECT * FROM users --")
# Fields a client might try to assign; each body route gets those it does not declare.
MASS_ASSIGNMENT = {"role": "Admin", "permissions": ["ServerAdmin"], "is_admin": True,
                   "status": "COMPLETED", "requested_by": "x", "retry_count": 0}  # fmt: skip
WRONG = {"string": 123, "integer": "1", "number": "1.5", "boolean": "true", "array": "x",
         "object": []}  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return security_config(tmp_path)


@pytest.fixture
async def root(root: Root, nursery: trio.Nursery) -> AsyncIterator[Root]:
    async with prepared(root, nursery) as ready:
        yield ready


@pytest.fixture
def superuser(root: Root) -> dict[str, str]:
    """Headers of a user holding every permission."""
    seed_personas(root)
    return session_headers(root, SUPERUSER)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[Any]:
    async with app.test_app():
        yield app.test_client(use_cookies=False)


def body_routes(app: Any) -> list[Route]:
    found = [route for route in routes(app) if route.body_model is not None]
    assert found, "no route declares a request body"
    return found


async def send(client: Any, route: Route, headers: dict[str, str], **kwargs: Any) -> Any:
    path = samples_for(client.app.extensions["pezzottify"].root).path(route)
    return await client.open(path, method=route.method, headers=headers, **kwargs)


async def expect(
    client: Any, route: Route, headers: dict[str, str], status: int, **kwargs: Any
) -> dict[str, Any]:
    response = await send(client, route, headers, **kwargs)
    body: dict[str, Any] = await response.get_json(force=True, silent=True) or {}
    assert response.status_code == status, (str(route), kwargs, response.status_code, body)
    assert response.mimetype == "application/json" and "code" in body, (str(route), body)
    return body


async def test_unknown_fields_are_400_and_change_nothing(
    root: Root, app: Any, client: Any, superuser: dict[str, str]
) -> None:
    before = table_rows(root.config.db_dir)
    for route in body_routes(app):
        assert route.body_model is not None
        declared = properties(route.body_model)
        for field, value in MASS_ASSIGNMENT.items():
            if field in declared:
                continue
            body = {**example_body(route.body_model), field: value}
            answer = await expect(client, route, superuser, 400, json=body)
            assert field in {d["field"] for d in answer["details"]}, (str(route), answer)
    assert table_rows(root.config.db_dir) == before


async def test_wrong_types_are_400_and_change_nothing(
    root: Root, app: Any, client: Any, superuser: dict[str, str]
) -> None:
    before = table_rows(root.config.db_dir)
    for route in body_routes(app):
        assert route.body_model is not None
        for field, schema in properties(route.body_model).items():
            body = {**example_body(route.body_model), field: WRONG[json_type(schema)]}
            answer = await expect(client, route, superuser, 400, json=body)
            assert field in {d["field"] for d in answer["details"]}, (str(route), answer)
    assert table_rows(root.config.db_dir) == before


@pytest.mark.parametrize(
    ("content_type", "status"),
    [("text/plain", 415), ("application/x-www-form-urlencoded", 415), (None, 415),
     ("application/json", 400)],
)  # fmt: skip
async def test_non_json_and_malformed_bodies_are_refused(
    root: Root,
    app: Any,
    client: Any,
    superuser: dict[str, str],
    content_type: str | None,
    status: int,
) -> None:
    before = table_rows(root.config.db_dir)
    headers = (
        dict(superuser) if content_type is None else {**superuser, "Content-Type": content_type}
    )
    nested = b"[" * 50_000 + b"]" * 50_000
    malformed = (b"{", b"[]", b"null", b'"text"', b"1", b"\xff\xfe{}", b'{"a": NaN}', nested)
    for route in body_routes(app):
        assert route.body_model is not None
        if status == 415:
            example = json.dumps(example_body(route.body_model)).encode()
            await expect(client, route, headers, 415, data=example)
        else:
            for data in malformed:
                await expect(client, route, headers, 400, data=data)
    assert table_rows(root.config.db_dir) == before


async def test_bodies_over_one_mib_are_413(
    app: Any, client: Any, superuser: dict[str, str]
) -> None:
    headers = {**superuser, "Content-Type": "application/json"}
    filler = b'{"a": "' + b"x" * MAX_BODY + b'"}'
    at_cap = b'{"a": "' + b"x" * (MAX_BODY - 9) + b'"}'
    assert len(at_cap) == MAX_BODY
    for route in body_routes(app):
        await expect(client, route, headers, 413, data=filler[: MAX_BODY + 1])
        await expect(client, route, headers, 413, data=filler)
        # At the cap the body is read, and refused for what it says (an unknown field).
        await expect(client, route, headers, 400, data=at_cap)


def seed_pages(root: Root, handle: str) -> None:
    """More queue items, audit entries, inbox rows, failed notifications and job runs than any
    page holds (blocking)."""
    with root.downloads.requests.db.write() as conn:
        for n in range(SEEDED_ITEMS):
            row = {**DEFAULTS, "id": str(uuid.uuid4()), "content_id": random_content_id(),
                   "status": "FAILED", "requested_by": handle, "created_at": 1_700_000_000 + n,
                   "completed_at": 1_700_000_000 + n}  # fmt: skip
            conn.execute(
                f"INSERT INTO queue_items ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                list(row.values()),
            )
            append_audit(conn, AuditEvent.DOWNLOAD_FAILED, row, at=row["created_at"])
        # Each failure wrote its notifications (and inbox rows): recorded as failed deliveries.
        conn.execute("UPDATE outbox SET state = 'failed', attempts = 5, finished_at = created_at")
    job_id = samples_for(root).named["job_id"]
    with root.jobs.db.write() as conn:
        conn.executemany(
            "INSERT INTO job_runs (job_id, started_at, finished_at, status, triggered_by) "
            "VALUES (?, ?, ?, 'completed', 'manual')",
            [(job_id, 1_700_000_000 + n, 1_700_000_001 + n) for n in range(SEEDED_RUNS)],
        )
    popular = [{"id": random_content_id(), "name": "x", "play_count": 1} for _ in range(60)]
    root.jobs.save_popular(popular, popular, utc_now())


def limit_fields(route: Route) -> list[str]:
    model = route.query_model
    if route.method != "GET" or model is None:
        return []
    return [name for name in model.model_fields if name == "limit" or name.endswith("_limit")]


def lists_in(body: dict[str, Any]) -> dict[str, list[Any]]:
    return {key: value for key, value in body.items() if isinstance(value, list)}


async def test_limits_are_clamped_and_validated(
    root: Root, app: Any, client: Any, superuser: dict[str, str]
) -> None:
    seed_pages(root, SUPERUSER)
    samples = samples_for(root)
    checked = 0
    for route in routes(app):
        for field in limit_fields(route):
            overrides = {"handle": SUPERUSER} if "handle" in route.arguments else {}
            path = samples.path(route, overrides)
            maximum = DOCUMENTED_MAX.get(route.rule, PAGE_MAX)
            response = await client.get(f"{path}?{field}=100000", headers=superuser)
            assert response.status_code == 200, (str(route), await response.get_data())
            lists = lists_in(await response.get_json())
            governed = lists if field == "limit" else {field.removesuffix("_limit"): []}
            for key in governed:
                size = len(lists[key])
                assert size <= maximum, (str(route), key, size)
                # Seeded beyond the maximum: a clamp, not an empty answer, keeps it in bounds.
                assert size == maximum or key not in SEEDED_LISTS, (str(route), key, size)
            # A page of 0 is refused; popular content may ask for no albums (`albums_limit=0`).
            for bad in ("abc", "-1", "1.5", "", "0x10", *(["0"] if field == "limit" else [])):
                answer = await client.get(f"{path}?{field}={bad}", headers=superuser)
                assert answer.status_code == 400, (str(route), field, bad, answer.status_code)
            checked += 1
    assert checked >= 7, "fewer paged routes than the spec lists"


def injection_attempts(route: Route, samples: Samples) -> list[tuple[str, dict[str, str] | None]]:
    """(path, query) pairs carrying each payload in each path parameter and query field."""
    attempts: list[tuple[str, dict[str, str] | None]] = [
        (samples.path(route, {arg: payload}), None)
        for arg in route.arguments
        for payload in INJECTIONS
    ]
    if route.method == "GET" and route.query_model is not None:
        fields = route.query_model.model_fields
        attempts += [(samples.path(route), {f: p}) for f in fields for p in INJECTIONS]
    return attempts


async def test_sql_injection_in_paths_and_filters_matches_nothing(
    root: Root, app: Any, client: Any, superuser: dict[str, str]
) -> None:
    seed_pages(root, SUPERUSER)
    samples = samples_for(root)
    before = table_counts(root.config.db_dir)
    failures = []
    for route in routes(app):
        if route.rule.startswith("/v1/auth/logout"):
            continue
        for path, query in injection_attempts(route, samples):
            response = await client.open(
                path, method=route.method, headers=superuser, query_string=query
            )
            body = await response.get_json(force=True, silent=True) or {}
            if response.status_code >= 500 and not (
                response.status_code == 502 and body.get("code") == "DOWNLOADER_ERROR"
            ):
                failures.append(f"{route} {path} {query}: {response.status_code} {body}")
            elif response.status_code == 200 and any(lists_in(body).values()):
                failures.append(f"{route} {path} {query}: payload matched rows")
    assert not failures, "\n".join(failures)
    assert table_counts(root.config.db_dir) == before


async def test_login_with_injection_payloads_is_401(client: Any, superuser: dict[str, str]) -> None:
    for payload in INJECTIONS:
        for body in ({"user_handle": payload, "password": payload},
                     {"user_handle": SUPERUSER, "password": payload}):  # fmt: skip
            response = await client.post("/v1/auth/login", json=body)
            assert response.status_code == 401, (body, response.status_code)


async def test_made_up_methods_share_one_metrics_label(
    root: Root, client: Any, superuser: dict[str, str]
) -> None:
    """A client may send any token as a method: each must not become a time series of its own,
    or anyone could grow the daemon's memory and its /metrics page without end."""
    for n in range(20):
        response = await client.open("/v1/download/limits", method=f"BREW{n}", headers=superuser)
        assert 400 <= response.status_code < 500
        assert (await response.get_json(force=True))["code"]
    await client.get("/v1/download/limits", headers=superuser)
    registry = root.metrics.registry
    exposition = generate_latest(registry).decode()
    assert "BREW" not in exposition
    counter = "pezzottify_http_requests_total{"
    series = [line for line in exposition.splitlines() if line.startswith(counter)]
    assert any('method="OTHER"' in line and line.endswith(" 20.0") for line in series), series
    assert any('method="GET",route="/v1/download/limits",status="200"' in line for line in series)
