"""Check an answer against the success schema `/openapi.json` publishes for its route.

The fuzzer (tests/security/test_fuzz_openapi.py) checks answers against the document too, but
against a nearly empty server; API tests that set up the interesting states (items in every
state, optional fields present and absent) use this to check that what those answers look like
is what the document says.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs


async def assert_documented(client: Any, method: str, route: str, status: int, body: Any) -> None:
    """Fail unless `body` is valid against the schema of `method route` answering `status`
    (`route` as the document spells it, `/v1/.../{item_id}`), for an app's test client."""
    document = await (await client.get("/openapi.json")).get_json()
    assert_valid(document, method, route, status, body)


def assert_valid(document: Any, method: str, route: str, status: int, body: Any) -> None:
    """`assert_documented` against a document already fetched (from a live daemon)."""
    response = document["paths"][route][method.lower()]["responses"][str(status)]
    schema = dict(response["content"]["application/json"]["schema"])
    assert schema != {"type": "object"}, f"{method} {route} documents no body"
    schema["components"] = document["components"]  # where its `$ref`s point
    errors = [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(body)]
    assert not errors, (method, route, errors)
