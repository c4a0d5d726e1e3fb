"""The OpenAPI document's success answers (SPEC §11): every JSON route documents its body."""

from __future__ import annotations

from typing import Any

BARE = {"type": "object"}  # what a route without a body model used to document
# The operations whose success is not JSON: files, audio and the live event stream.
NOT_JSON = {
    "GET /v1/content/image/{raw_id}",
    "GET /v1/content/stream/{raw_id}",
    "GET /v1/download/image/{image_id}",
    "GET /v1/events",
}


async def test_every_json_success_documents_its_body(client: Any) -> None:
    """A 2xx answer with no content, or with a JSON body described only as `{"type": "object"}`,
    is a route whose `document_response` model is missing."""
    paths = (await (await client.get("/openapi.json")).get_json())["paths"]
    bare, not_json, successes = [], set(), set()
    for path, operations in paths.items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                successes.add(label)
                content = response.get("content", {})
                if content and "application/json" not in content:
                    not_json.add(label)
                elif content.get("application/json", {}).get("schema", {}) in ({}, BARE):
                    bare.append(f"{label} {status}")
    assert not bare
    assert not_json == NOT_JSON
    assert successes == {f"{m.upper()} {p}" for p, ops in paths.items() for m in ops}
