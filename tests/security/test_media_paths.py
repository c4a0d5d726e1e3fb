"""SEC-7: ids never lead outside the media folder.

Every content route that takes an id (found from the route table) answers 400 or 404 with a JSON
error to traversal attempts, raw and percent-encoded, including look-alike dots, NUL bytes and
very long ids. A symlink planted in the media folder is treated as a missing file, so no request
can read what it points to.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from bench.seed import synthetic_bundles
from daemon.config import Config
from daemon.root import Root
from tests.security.routes import Route, routes

TRAVERSALS = ("../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/etc/passwd",
              "/etc/passwd", "a%00b", "..%5c..%5cetc%5cpasswd", "%252e%252e%252fetc%252fpasswd",
              "\u2024\u2024/\u2024\u2024/etc/passwd", "." * 22, "../" + "A" * 19, "A" * 5000,
              "images/../" + "0" * 40, "AAAAAAAAAAAAAAAAAAAAAA/../../user.db")  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # Media in a subfolder, so the database folder is "outside" it.
    return Config(db_dir=tmp_path, media_path=tmp_path / "media")


def content_routes(app: Any) -> list[Route]:
    found = [r for r in routes(app) if r.rule.startswith("/v1/content/") and r.arguments]
    assert found, "no content route takes an id"
    return found


def with_id(route: Route, text: str) -> str:
    return re.sub(r"<[^<>]+>", lambda _: text, route.rule, count=1)


async def test_traversal_ids_on_content_routes_are_400_or_404(
    app: Any, client: Any, user_headers: dict[str, str]
) -> None:
    failures = []
    for route in content_routes(app):
        for payload in TRAVERSALS:
            for text in (quote(payload, safe="/%.\\"), quote(payload, safe="")):
                path = with_id(route, text)
                response = await client.get(path, headers=user_headers)
                data = await response.get_data()
                if response.status_code not in (400, 404) or not response.is_json:
                    failures.append(f"{path[:120]}: {response.status_code} {data[:80]!r}")
    assert not failures, "\n".join(failures)


async def test_symlinks_in_the_media_folder_are_not_followed(
    root: Root, client: Any, user_headers: dict[str, str]
) -> None:
    bundle = next(synthetic_bundles(1, 1))
    root.catalog.ingest_many([bundle])
    track, cover = bundle.tracks[0].id, bundle.album.image_ids[0]
    root.catalog.set_track_audio(track, "flac")
    outside = root.config.db_dir / "outside.bin"
    outside.write_bytes(b"not media: private bytes")
    root.media.audio_path(track, "flac").symlink_to(outside)
    root.media.image_path(cover).symlink_to(outside)
    for path in (f"/v1/content/stream/{track}", f"/v1/content/image/{cover}"):
        response = await client.get(path, headers=user_headers)
        assert response.status_code == 404, path
        assert b"private bytes" not in await response.get_data()
    # A real file in the same place is served: the refusal is about the link.
    root.media.image_path(cover).unlink()
    root.media.image_path(cover).write_bytes(b"\xff\xd8 cover")
    response = await client.get(f"/v1/content/image/{cover}", headers=user_headers)
    assert response.status_code == 200
    assert await response.get_data() == b"\xff\xd8 cover"
