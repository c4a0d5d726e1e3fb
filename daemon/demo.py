"""`make demo`: the fake downloader and the daemon on `./demo-data`, an admin, and the flow.

Starts both services as real processes (the fake downloader speaking the real service's shapes),
creates (or resets) the `admin` user with `pezzottify-auth`, walks the flow itself (log in,
search, request an album, watch it complete, stream a track), then prints the credentials and
`curl` lines to paste as they are, with the ids the walk used. It keeps both services running for
you to try the printed lines until Ctrl+C, which stops them cleanly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DATA = Path("demo-data")
PASSWORD = "demo-password"
SEARCH = "Album"  # every album of the fake downloader's catalog is named "Album …"


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError("no free port")


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def start(args: list[str], pattern: str, log_path: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a service, echo nothing, wait for its ready line; return it and the matched URL."""
    # Own session: Ctrl+C reaches only the demo, which then stops each service exactly once.
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        with open(log_path, "a") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                if not url and (m := re.search(pattern, line)):
                    url.append(m.group(1))
                    found.set()
        found.set()

    threading.Thread(target=pump, daemon=True).start()
    if not found.wait(30) or not url:
        proc.kill()
        raise SystemExit(f"{args[0]} did not start; see {log_path}")
    return proc, url[0]


def write_config(port: int, metrics_port: int, downloader: str) -> Path:
    config = DATA / "config.toml"
    config.write_text(
        f'db_dir = "{DATA.resolve()}"\n'
        f'host = "127.0.0.1"\nport = {port}\nmetrics_port = {metrics_port}\n'
        f'downloader_url = "{downloader}"\nshutdown_timeout_sec = 10\n'
        "[download_manager]\nprocess_interval_secs = 1\ninitial_backoff_secs = 2\n"
        "max_albums_per_hour = 100\nmax_albums_per_day = 500\n"
    )
    return config


def create_admin(config: Path) -> None:
    auth = [tool("pezzottify-auth"), "--config", str(config)]
    subprocess.run([*auth, "add-user", "admin"], capture_output=True, check=False)
    subprocess.run([*auth, "add-role", "admin", "Admin"], capture_output=True, check=True)
    subprocess.run([*auth, "delete-login", "admin"], capture_output=True, check=False)
    subprocess.run([*auth, "add-login", "admin", PASSWORD], capture_output=True, check=True)


def print_curl_lines(api: str, shown: Shown) -> None:
    """Lines to paste as they are: the ids are those the walk just used, and the request is
    for an album it left for you."""
    request = json.dumps(
        {"album_id": shown.next_album["id"], "album_name": shown.next_album["name"],
         "artist_name": shown.next_album.get("artist_name") or ""}
    )  # fmt: skip
    print(
        f"""
Admin user: admin / {PASSWORD}
Web console: open {api}/ in a browser and sign in as admin.

Try it yourself (bash; paste the lines as they are):
  TOKEN=$(curl -s -X POST {api}/v1/auth/login -H 'Content-Type: application/json' \\
      -d '{{"user_handle": "admin", "password": "{PASSWORD}"}}' \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  curl -s -H "Authorization: Bearer $TOKEN" '{api}/v1/download/search?q={SEARCH}&type=album'
  curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
      {api}/v1/download/request/album -d {shlex.quote(request)}
  curl -s -H "Authorization: Bearer $TOKEN" {api}/v1/download/my-requests
  curl -s -H "Authorization: Bearer $TOKEN" {api}/v1/content/album/{shown.album_id}
  curl -s -H "Authorization: Bearer $TOKEN" -o track.flac {api}/v1/content/stream/{shown.track_id}
  curl -N -H "Authorization: Bearer $TOKEN" {api}/v1/events   # live events; Ctrl+C leaves
""",
        flush=True,
    )


@dataclass(frozen=True)
class Shown:
    """What the walk used, for the lines printed after it."""

    album_id: str
    track_id: str
    next_album: dict[str, Any]


def walk_flow(api: str) -> Shown | None:
    with httpx.Client(base_url=api, timeout=30) as client:
        r = client.post("/v1/auth/login", json={"user_handle": "admin", "password": PASSWORD})
        r.raise_for_status()
        client.headers["Authorization"] = f"Bearer {r.json()['token']}"
        print("1. logged in as admin", flush=True)
        results = client.get("/v1/download/search", params={"q": SEARCH, "type": "album"}).json()
        fresh = [a for a in results["results"] if not a["in_catalog"] and not a["in_queue"]]
        print(f"2. search for {SEARCH!r} found {results['total']} albums", flush=True)
        if len(fresh) < 2:
            print("   the albums found are already in the catalog; remove demo-data to start "
                  "again", flush=True)  # fmt: skip
            return None
        pick = fresh[0]
        body = {
            "album_id": pick["id"],
            "album_name": pick["name"],
            "artist_name": pick.get("artist_name") or "",
        }
        request = client.post("/v1/download/request/album", json=body).json()
        print(f"3. requested {pick['name']!r} by {pick.get('artist_name')}: {request}", flush=True)
        item = watch(client, request["request_id"])
        print(f"4. request {item['status']}: {item['bytes_downloaded']} bytes", flush=True)
        album = client.get(f"/v1/content/album/{pick['id']}").json()
        track = album["discs"][0]["track_ids"][0]
        audio = client.get(f"/v1/content/stream/{track}", headers={"Range": "bytes=0-15"})
        print(
            f"5. streamed track {track}: HTTP {audio.status_code}, "
            f"{audio.headers.get('content-type')}, {audio.headers.get('content-range')}",
            flush=True,
        )
        return Shown(pick["id"], track, fresh[1])


def watch(client: httpx.Client, request_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        item: dict[str, object] = client.get(f"/v1/download/request/{request_id}").json()
        progress = item.get("progress") or {}
        print(f"   {item['status']}: {progress}", flush=True)
        if item["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return item
        time.sleep(1)
    raise SystemExit("the request did not finish in two minutes")


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo the way Ctrl+C does, services included


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    DATA.mkdir(exist_ok=True)
    log = DATA / "demo.log"
    downloader, dl_url = start(
        [
            tool("pezzottify-fake-downloader"),
            "--port",
            str(free_port(8080)),
            "--seed",
            "7",
            "--shapes",
            "real",  # what the service users actually run answers
        ],
        r"listening on (http://\S+)",
        log,
    )
    port, metrics_port = free_port(3001), free_port(9091)
    config = write_config(port, metrics_port, dl_url)
    create_admin(config)
    server, api = start(
        [tool("pezzottify-server"), "--config", str(config)], r"listening on (http://\S+)", log
    )
    print(
        f"fake downloader on {dl_url}\nPezzottify API on {api}\n"
        f"metrics on http://127.0.0.1:{metrics_port}/metrics\nlogs in {log}",
        flush=True,
    )
    try:
        shown = walk_flow(api)
        if shown is not None:
            print_curl_lines(api, shown)
        print("\nThe services keep running; press Ctrl+C to stop them.", flush=True)
        while server.poll() is None and downloader.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    finally:
        for proc in (server, downloader):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        statuses = [proc.wait(30) for proc in (server, downloader)]
        print(f"stopped (exit statuses {statuses})", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
