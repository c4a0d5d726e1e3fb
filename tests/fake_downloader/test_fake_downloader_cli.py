"""The fake downloader's command line: flags, and a real subprocess stopped by SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from fake_downloader.main import _knobs, _spec, build_parser, main

pytestmark = pytest.mark.process  # starts processes or servers: not in `make check`

ROOT = Path(__file__).resolve().parents[2]


def test_flags_map_to_spec_and_knobs() -> None:
    args = build_parser().parse_args(
        [
            "--seed", "4", "--artists", "2", "--albums-per-artist", "5", "--tracks-per-album",
            "6", "--audio-bytes", "1000", "--image-bytes", "10", "--missing-every", "3",
            "--not-found-ids", "a, b", "--latency-ms", "5", "--audio-bytes-per-sec", "9",
            "--audio-content-type", "audio/mpeg", "--allow-parallel-audio",
            "--fail", "audio:503:0.5", "--fail", "*:429:0.1", "--fault", "truncate:audio:2",
            "--fault", "content_type=text/html:audio", "--stall-seconds", "7",
        ]
    )  # fmt: skip
    spec, knobs = _spec(args), _knobs(args)
    assert (spec.seed, spec.artists, spec.albums_per_artist, spec.tracks_per_album) == (4, 2, 5, 6)
    assert (spec.audio_bytes, spec.image_bytes, spec.missing_every) == (1000, 10, 3)
    assert knobs.not_found_ids == {"a", "b"}
    assert (knobs.latency_ms, knobs.audio_bytes_per_sec) == (5, 9)
    assert knobs.audio_content_type == "audio/mpeg"
    assert knobs.allow_parallel_audio
    assert [(r.endpoint, r.status, r.rate) for r in knobs.fail_rules] == [
        ("audio", 503, 0.5),
        ("*", 429, 0.1),
    ]
    assert [(f.mode, f.times, f.stall_seconds) for f in knobs.faults] == [
        ("truncate", 2, 7),
        ("content_type", None, 7),
    ]
    assert knobs.fail_seed == 4


def test_bad_flag_values_exit_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--fault", "melt:audio"], ["--fail", "audio:503:7"], ["--artists", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "unknown fault" in capsys.readouterr().err


@pytest.mark.trio
async def test_subprocess_serves_and_exits_cleanly_on_sigterm() -> None:
    command = [sys.executable, "-m", "fake_downloader", "--port", "0", "--artists", "3"]
    process = await trio.lowlevel.open_process(command, cwd=ROOT, stderr=subprocess.PIPE)
    assert process.stderr is not None
    try:
        with trio.fail_after(15):
            output = b""
            while b"\n" not in output:
                chunk = await process.stderr.receive_some()
                assert chunk, f"exited early: {output!r}"
                output += chunk
        line = output.decode().splitlines()[0]
        assert line.startswith("fake downloader listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1]
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            response = await client.get("/search", params={"q": "album"})
        assert response.status_code == 200
        assert len(response.json()["results"]) == 9
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stderr.aclose()
