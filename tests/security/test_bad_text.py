"""SPEC §11 rev 2: bad text never reaches SQLite or Argon2, on any route, generated from the
route table.

Every route gets text that is not valid Unicode (lone surrogates, invalid UTF-8) and NUL
characters in each path parameter, each query parameter (those its query model declares, and one
it does not), each string field of its JSON body (nested ones and list items included) and a
field name, sent anonymously, as a user holding only the Regular role and as one holding every
permission. The answer is 401/403 where the caller lacks the route's session or permission
(the check runs first, SPEC §4.2), else 400 `INVALID_TEXT`; the databases are unchanged, and the
log holds no traceback and no 500. The table is the app's own (`routes.routes`), so a route added
later is sent the same cases without editing this file.

In-process, the path's raw bytes are set in the ASGI scope as hypercorn sets them (the test client
would re-encode them); `test_a_real_server_refuses_bad_bytes_in_the_path` checks that assumption
against hypercorn itself over a socket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import trio
from hypercorn.trio import serve
from pydantic import BaseModel

import api.app
from actors.http_server import hypercorn_config, shield_response_end
from daemon.config import Config
from daemon.root import Root
from tests.security.routes import (
    SUPERUSER,
    Route,
    example_body,
    held_permissions,
    prepared,
    routes,
    samples_for,
    security_config,
    seed_personas,
    session_headers,
    table_rows,
)

# Percent-encoded, as a client sends them in a path or a query string.
URL_PAYLOADS = {
    "invalid UTF-8": "%FF",
    "an encoded lone surrogate": "%ED%A0%80",
    "a cut-off UTF-8 sequence": "caf%C3",
    "an overlong encoding": "%C0%AF",
    "NUL": "a%00b",
}
# Inside a JSON string: escapes the decoder turns into text, and raw bytes that are not UTF-8.
PLACEHOLDER = "BAD-TEXT-HERE"  # survives percent-encoding and JSON as it is
JSON_PAYLOADS: dict[str, bytes] = {
    "a lone high surrogate": rb"\ud800",
    "a lone low surrogate": rb"x\udfff",
    "reversed surrogates": rb"\udc00\ud800",
    "NUL": rb"a\u0000b",
    "a raw invalid byte": b"\xff",
    "a raw encoded surrogate": b"\xed\xa0\x80",
}
PERSONAS = (None, "user", SUPERUSER)


@dataclass
class Case:
    route: Route
    label: str
    path: str
    raw_path: str | None = None  # what hypercorn would put in the scope, percent-encoded
    query: str = ""
    body: bytes | None = None

    def request(self, headers: dict[str, str]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"method": self.route.method, "headers": dict(headers)}
        if self.raw_path is not None:
            # Hypercorn's scope: the raw bytes, and the path decoded with replacement characters.
            raw = self.raw_path.encode("ascii")
            kwargs["scope_base"] = {"raw_path": raw, "path": unquote(self.raw_path)}
        if self.body is not None:
            kwargs["data"] = self.body
            kwargs["headers"]["Content-Type"] = "application/json"
        return kwargs

    def __str__(self) -> str:
        return f"{self.route} with {self.label}"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return security_config(tmp_path)


@pytest.fixture
async def root(root: Root, nursery: trio.Nursery) -> AsyncIterator[Root]:
    async with prepared(root, nursery) as ready:
        yield ready


@pytest.fixture
def ready(root: Root) -> Root:
    seed_personas(root)
    return root


def resolve_ref(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    for option in [schema, *schema.get("anyOf", [])]:
        ref = option.get("$ref")
        if isinstance(ref, str):
            resolved: dict[str, Any] = defs[ref.rsplit("/", 1)[-1]]
            return resolved
    return schema


Slot = tuple[tuple[str, ...], bool]  # the field's path in the body; whether it is a list


def text_slots(
    schema: dict[str, Any], defs: dict[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[Slot]:
    """Where a string can go in a body of this schema: each field, nested fields, list items."""
    for name, field_schema in schema.get("properties", {}).items():
        inner = resolve_ref(field_schema, defs)
        kinds = {o.get("type") for o in [inner, *inner.get("anyOf", [])]}
        if "properties" in inner:
            yield from text_slots(inner, defs, (*prefix, name))
        else:
            yield (*prefix, name), "array" in kinds


def placed(body: dict[str, Any], slot: Slot) -> dict[str, Any]:
    """A copy of `body` with the placeholder in the slot's field (nested objects made as needed)."""
    path, in_list = slot
    copy = json.loads(json.dumps(body))
    here = copy
    for name in path[:-1]:
        if not isinstance(here.get(name), dict):
            here[name] = {}
        here = here[name]
    here[path[-1]] = [PLACEHOLDER] if in_list else PLACEHOLDER
    return copy


def with_payload(body: dict[str, Any], payload: bytes) -> bytes:
    return json.dumps(body).encode().replace(PLACEHOLDER.encode(), payload)


def body_cases(route: Route, model: type[BaseModel], path: str) -> Iterator[Case]:
    schema = model.model_json_schema()
    example = example_body(model)
    slots = list(text_slots(schema, schema.get("$defs", {})))
    assert slots, f"{route}: a body without fields"
    for slot in slots:
        where = ".".join(slot[0]) + ("[0]" if slot[1] else "")
        for label, payload in JSON_PAYLOADS.items():
            body = with_payload(placed(example, slot), payload)
            yield Case(route, f"{label} in body field {where}", path, body=body)
    for label, payload in JSON_PAYLOADS.items():
        body = (
            json.dumps({**example, PLACEHOLDER: 1}).encode().replace(PLACEHOLDER.encode(), payload)
        )
        yield Case(route, f"{label} in a body field name", path, body=body)


def cases_for(route: Route, root: Root) -> list[Case]:
    samples = samples_for(root)
    path = samples.path(route)
    model = route.body_model
    body = json.dumps(example_body(model)).encode() if model is not None else None
    cases = []
    for label, payload in URL_PAYLOADS.items():
        for argument in route.arguments:
            raw = samples.path(route, {argument: PLACEHOLDER}).replace(PLACEHOLDER, payload)
            cases.append(Case(route, f"{label} in path parameter {argument}", path, raw, body=body))
        declared = list(route.query_model.model_fields) if route.query_model is not None else []
        for name in [*declared, "undeclared"]:
            query = f"{name}={payload}"
            cases.append(
                Case(route, f"{label} in query parameter {name}", path, query=query, body=body)
            )
        cases.append(Case(route, f"{label} in a query key", path, query=f"{payload}=1", body=body))
    if model is not None:
        cases.extend(body_cases(route, model, path))
    return cases


def expected(route: Route, held: Any) -> tuple[int, str]:
    allowed = route.allows(held)
    if allowed is None:
        return 401, "UNAUTHORIZED"
    if allowed is False:
        return 403, "FORBIDDEN"
    return 400, "INVALID_TEXT"


def problems_in_log(records: list[logging.LogRecord]) -> list[str]:
    found = []
    for record in records:
        message = record.getMessage()
        if record.exc_info or "Traceback" in message or record.levelno >= logging.ERROR:
            found.append(f"{record.name}: {message}")
        elif record.name == "pezzottify.http" and " -> 5" in message:
            found.append(message)
    return found


async def answer_problem(client: Any, case: Case, headers: dict[str, str], held: Any) -> str | None:
    """Why the answer to this case is wrong, or None if it is right."""
    status, code = expected(case.route, held)
    path = f"{case.path}?{case.query}" if case.query else case.path
    response = await client.open(path, **case.request(headers))
    body = await response.get_json(force=True, silent=True) or {}
    if (response.status_code, body.get("code")) == (status, code) and body.get("error"):
        return None
    return f"expected {status} {code}, got {response.status_code} {str(body)[:200]}"


async def test_bad_text_is_refused_on_every_route_and_changes_nothing(
    ready: Root, app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    table = routes(app)
    before = table_rows(ready.config.db_dir)
    headers = {p: {} if p is None else session_headers(ready, p) for p in PERSONAS}
    held = {p: None if p is None else held_permissions(ready, p) for p in PERSONAS}
    failures: list[str] = []
    sent = refused = 0
    async with app.test_app():
        client = app.test_client(use_cookies=False)
        for route in table:
            for case in cases_for(route, ready):
                for persona in PERSONAS:
                    why = await answer_problem(client, case, headers[persona], held[persona])
                    if why is not None:
                        failures.append(f"{persona or 'anonymous'} {case}: {why}")
                    sent += 1
                    refused += expected(route, held[persona])[0] == 400
    assert not failures, f"{len(failures)} of {sent}:\n" + "\n".join(failures[:60])
    assert sent > 20 * len(table)  # every route got cases, at least the query-string ones
    assert table_rows(ready.config.db_dir) == before
    assert not problems_in_log(caplog.records)
    # The log was captured: each refusal has its line.
    lines = [r.getMessage() for r in caplog.records if r.name == "pezzottify.http"]
    assert sum(" -> 400 " in line for line in lines) == refused
    # The table really is the app's: every blueprint contributed routes.
    modules = {route.view.__module__ for route in table}
    for module in api.app.BLUEPRINT_MODULES:
        assert module.__name__ in modules, f"no route of {module.__name__} was sent bad text"


async def test_a_refused_login_is_not_counted_as_a_failure(ready: Root, app: Any) -> None:
    async with app.test_app():
        client = app.test_client(use_cookies=False)
        bad = b'{"user_handle": "' + SUPERUSER.encode() + b'", "password": "\\ud800"}'
        for _ in range(30):
            response = await client.post(
                "/v1/auth/login", data=bad, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 400
        good = {"user_handle": SUPERUSER, "password": "secret-password"}
        assert (await client.post("/v1/auth/login", json=good)).status_code == 201


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"user_handle": ', "malformed JSON at line 1, column 17: Expecting value"),
        (b'{\n  "user_handle": "a",\n  "password": x}', "malformed JSON at line 3, column 15"),
        (b"", "malformed JSON at line 1, column 1: Expecting value"),
        (b'{"user_handle": "a" "password": "b"}', "malformed JSON at line 1, column 21"),
        (b'{"user_handle": "caf\xc3"}', "invalid text in the request body: not valid UTF-8 at"),
    ],
)  # fmt: skip
async def test_malformed_json_says_what_and_where(client: Any, body: bytes, message: str) -> None:
    response = await client.post(
        "/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    answer = await response.get_json()
    assert answer["error"].startswith(message), answer
    assert answer["code"] in {"MALFORMED_JSON", "INVALID_TEXT"}


async def raw_exchange(port: int, request: bytes) -> tuple[int, bytes]:
    """One request over a socket exactly as given; the status and body of the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_a_real_server_refuses_bad_bytes_in_the_path(
    ready: Root, app: Any, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = table_rows(ready.config.db_dir)
    shutdown = trio.Event()
    binds = await nursery.start(
        partial(
            serve,
            shield_response_end(app),
            hypercorn_config("127.0.0.1", 0, 1),
            shutdown_trigger=shutdown.wait,
        )
    )
    port = int(binds[0].rsplit(":", 1)[1])
    token = session_headers(ready, SUPERUSER)["Authorization"]

    async def get(target: bytes, *, signed_in: bool = True) -> tuple[int, bytes]:
        auth = f"Authorization: {token}\r\n".encode() if signed_in else b""
        head = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        return await raw_exchange(port, head + auth + b"\r\n")

    for target in (b"/v1/admin/users/%FF/roles/Regular", b"/v1/admin/jobs/%ED%A0%80",
                   b"/v1/admin/jobs/a%00b", b"/v1/download/search?q=%FF",
                   b"/v1/download/search?q=a%00", b"/v1/nowhere/%FF"):  # fmt: skip
        status, body = await get(target)
        assert status == 400, (target, status, body)
        assert json.loads(body)["code"] == "INVALID_TEXT", (target, body)
    assert (await get(b"/v1/admin/jobs/%FF", signed_in=False))[0] == 401
    # Bytes that are not even ASCII never reach the app: the HTTP parser refuses them.
    status, _ = await get(b"/v1/admin/jobs/\xff")
    assert status == 400
    login = b'{"user_handle": "root", "password": "\\ud800"}'
    status, body = await raw_exchange(
        port,
        b"POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(login), login),
    )
    assert status == 400 and json.loads(body)["code"] == "INVALID_TEXT"
    shutdown.set()
    assert table_rows(ready.config.db_dir) == before
    assert not problems_in_log(caplog.records)
