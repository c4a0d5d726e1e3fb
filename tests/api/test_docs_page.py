"""`/docs` (SPEC §11): a readable view of the OpenAPI document, served from the package without
a session and loading nothing from elsewhere (it works offline)."""

from __future__ import annotations

import re
from typing import Any

ASSET = re.compile(r'(?:src|href)="([^"]+)"')
OUTSIDE = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


async def test_the_docs_page_and_its_assets_are_served_without_outside_urls(client: Any) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = (await page.get_data()).decode()
    assets = ASSET.findall(html)
    assert {"/docs/docs.js", "/docs/docs.css", "/openapi.json"} <= set(assets)
    texts = [html]
    for asset in assets:
        response = await client.get(asset)
        assert response.status_code == 200, asset
        texts.append((await response.get_data()).decode())
    for text in texts:
        assert not OUTSIDE.search(text), OUTSIDE.search(text)
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "/openapi.json" in texts[assets.index("/docs/docs.js") + 1]


async def test_the_docs_are_not_an_api_operation(client: Any) -> None:
    paths = (await (await client.get("/openapi.json")).get_json())["paths"]
    assert not [path for path in paths if path.startswith("/docs")]
    assert (await client.get("/docs/nope.js")).status_code == 404
