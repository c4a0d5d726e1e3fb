"""The user's whole path through real processes: search, request, watch, read, stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_downloader import CatalogSpec, audio_bytes
from tests.reliability.harness import rig, running_fake

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

SPEC = CatalogSpec(
    seed=11,
    artists=2,
    albums_per_artist=2,
    tracks_per_album=3,
    audio_bytes=48 * 1024,
    image_bytes=8 * 1024,
)


def test_a_requested_album_is_served_and_streams_the_fakes_bytes(tmp_path: Path) -> None:
    with running_fake(SPEC) as fake, rig(tmp_path, fake) as r:
        r.start()
        client = r.client()
        album_id = fake.catalog.album_ids[1]
        found = client.get(
            "/v1/download/search", params={"q": fake.catalog.album_names[1], "type": "album"}
        ).json()
        hit = next(a for a in found["results"] if a["id"] == album_id)
        assert (hit["in_catalog"], hit["in_queue"]) == (False, False)

        (request_id,) = r.request_albums([1])
        r.wait_idle()
        item = client.get(f"/v1/download/request/{request_id}").json()
        assert item["status"] == "COMPLETED"
        assert item["progress"]["completed"] == item["progress"]["total_children"] == 3 + 2
        assert len(item["children"]) == 5

        album = client.get(f"/v1/content/album/{album_id}").json()
        track_ids = album["discs"][0]["track_ids"]
        assert len(track_ids) == 3
        for track_id in track_ids:
            track = client.get(f"/v1/content/track/{track_id}").json()
            assert (track["audio_available"], track["audio_format"]) == (True, "flac")
            full = client.get(f"/v1/content/stream/{track_id}")
            assert full.status_code == 200
            assert full.headers["content-type"].startswith("audio/flac")
            assert full.content == audio_bytes(SPEC, track_id)
        part = client.get(f"/v1/content/stream/{track_ids[0]}", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206
        assert part.content == audio_bytes(SPEC, track_ids[0])[10:20]
        cover = client.get(f"/v1/content/image/{album['image_ids'][0]}")
        assert (cover.status_code, cover.headers["content-type"]) == (200, "image/jpeg")

        again = client.get(
            "/v1/download/search", params={"q": fake.catalog.album_names[1], "type": "album"}
        ).json()
        assert next(a for a in again["results"] if a["id"] == album_id)["in_catalog"] is True
        refused = client.post(
            "/v1/download/request/album",
            json={"album_id": album_id, "album_name": "x", "artist_name": "y"},
        )
        assert (refused.status_code, refused.json()["code"]) == (409, "ALREADY_IN_CATALOG")
        assert r.stop() == 0
