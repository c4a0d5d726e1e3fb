"""The method table of every path: a 405's (and an OPTIONS answer's) `Allow` lists exactly the
methods that path has, and a path never reaches a route of a sibling that merely looks like it."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from api.app import STATIC_ENDPOINTS

IGNORED = {"HEAD", "OPTIONS"}
SAMPLE_ID = "0123456789abcdefABCDEF"  # fits every id parameter's pattern


def allowed(response: Any) -> set[str]:
    return {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()} - IGNORED


async def test_allow_lists_the_real_methods_of_every_path(app: Any, client: Any) -> None:
    methods: dict[str, set[str]] = defaultdict(set)
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in STATIC_ENDPOINTS:
            methods[re.sub(r"<[^>]+>", SAMPLE_ID, rule.rule)] |= set(rule.methods or ()) - IGNORED
    wrong = {}
    for path, expected in methods.items():
        got = allowed(await client.options(path))
        if got != expected:
            wrong[path] = (sorted(got), sorted(expected))
    assert not wrong


async def test_the_album_request_path_is_post_only(client: Any) -> None:
    for path in ("/v1/download/request/album", "/v1/download/request/discography"):
        for method in ("GET", "PUT", "DELETE"):
            response = await client.open(path, method=method)
            assert response.status_code == 405, (method, path)
            assert allowed(response) == {"POST"}, (method, path)
            assert (await response.get_json())["code"] == "METHOD_NOT_ALLOWED"


async def test_an_api_path_never_advertises_the_console_files(client: Any) -> None:
    response = await client.delete("/v1/auth/login")
    assert response.status_code == 405 and allowed(response) == {"POST"}
    response = await client.put("/v1/no-such-route")
    assert response.status_code == 404
    assert (await response.get_json())["code"] == "NOT_FOUND"
    response = await client.get("/v1/no-such-route")
    assert response.status_code == 404
    assert (await response.get_json())["code"] == "NOT_FOUND"
