"""The web console's files (SPEC §17): served at `/` from the package, self-contained, and never
in the way of the API, whose unknown routes stay JSON 404s."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from api.app import CONSOLE_DIR
from daemon.root import Root
from tests.conftest import serve


async def test_the_console_is_served_at_the_root_without_a_session(client: Any) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = (await response.get_data()).decode()
    assert 'src="/app.js"' in page
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    script = await client.get("/app.js")
    assert script.status_code == 200
    assert script.mimetype in ("text/javascript", "application/javascript")


async def test_every_file_the_console_names_is_served_and_nothing_comes_from_elsewhere(
    client: Any,
) -> None:
    files = sorted(p for p in CONSOLE_DIR.rglob("*") if p.is_file())
    assert {p.suffix for p in files} == {".html", ".css", ".js"}
    for path in files:
        text = path.read_text()
        assert not re.search(
            r"""(?:src|href)=["']https?:|import\s.*["']https?:|url\(\s*["']?https?:""", text
        ), path
        for imported in re.findall(r"""from\s+["'](\.[^"']+)["']""", text):
            assert (path.parent / imported).resolve().is_file(), f"{path} imports {imported}"
        relative = path.relative_to(CONSOLE_DIR).as_posix()
        assert (await client.get(f"/{relative}")).status_code == 200, relative


async def test_api_paths_stay_json_errors(client: Any) -> None:
    for path in ("/v1/no-such-route", "/v1/", "/no-such-file.js"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert (await response.get_json())["code"] == "NOT_FOUND", path
    assert "/" not in (await (await client.get("/openapi.json")).get_json())["paths"]


async def test_a_configured_frontend_folder_replaces_the_console(
    root: Root, tmp_path: Path
) -> None:
    folder = tmp_path / "frontend"
    folder.mkdir()
    (folder / "index.html").write_text("<p>mine</p>")
    config = dataclasses.replace(root.config, frontend_dir_path=folder)
    async with serve(dataclasses.replace(root, config=config)) as client:
        response = await client.get("/")
        assert (await response.get_data()) == b"<p>mine</p>"
        assert "Content-Security-Policy" not in response.headers
        assert (await client.get("/app.js")).status_code == 404
