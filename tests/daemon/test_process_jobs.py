"""Background jobs in a real `pezzottify-server`: listening, a manual popular_content run."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from bench.seed import synthetic_bundles
from storage.catalog import CatalogStore
from tests.support.process import DaemonProcess, run_cli

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`


def seed_catalog(db_dir: Path) -> list[str]:
    store = CatalogStore.open(db_dir / "catalog.db")
    bundles = list(synthetic_bundles(3, tracks_per_album=2, artists=2))
    store.ingest_many(bundles)
    store.db.close()
    return [track.id for bundle in bundles for track in bundle.tracks]


def test_listening_then_manual_popular_run_then_sigterm(tmp_path: Path) -> None:
    tracks = seed_catalog(tmp_path)
    for args in (
        ["add-user", "root"],
        ["add-login", "root", "root-password"],
        ["add-role", "root", "Admin"],
    ):
        assert run_cli("pezzottify-auth", ["--db-dir", str(tmp_path), *args]).returncode == 0
    daemon = DaemonProcess(tmp_path, "--shutdown-timeout-sec", "5")
    try:
        with httpx.Client(base_url=daemon.url, timeout=10) as client:
            token = client.post(
                "/v1/auth/login", json={"user_handle": "root", "password": "root-password"}
            ).json()["token"]
            client.headers["Authorization"] = f"Bearer {token}"
            for track in [tracks[0]] * 3 + [tracks[2]]:
                assert (
                    client.post("/v1/user/listening", json={"track_id": track}).status_code == 201
                )
            trigger = client.post("/v1/admin/jobs/popular_content/trigger")
            assert trigger.status_code == 202
            run_id = trigger.json()["run_id"]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                history = client.get("/v1/admin/jobs/popular_content/history").json()["history"]
                run = next(r for r in history if r["run_id"] == run_id)
                if run["status"] != "running":
                    break
                time.sleep(0.05)
            assert run["status"] == "completed"
            assert run["triggered_by"] == "manual"
            popular = client.get("/v1/content/popular").json()
            assert popular["computed_at"] is not None
            assert popular["albums"][0]["play_count"] == 3
            assert (
                popular["albums"][0]["id"]
                == client.get(f"/v1/content/track/{tracks[0]}").json()["album_id"]
            )
        assert daemon.stop() == 0
    finally:
        daemon.kill()
