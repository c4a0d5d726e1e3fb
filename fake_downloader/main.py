"""Command line of ``pezzottify-fake-downloader``: flags to `CatalogSpec` and `Knobs`, then serve.

Prints ``fake downloader listening on http://HOST:PORT`` to stderr once ready and exits with
status 0 on Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from functools import partial

import trio

from fake_downloader.catalog import CatalogSpec
from fake_downloader.knobs import SHAPES, Knobs, parse_fail, parse_fault
from fake_downloader.server import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pezzottify-fake-downloader",
        description="Deterministic fake of the downloader API over a synthetic catalog.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    add("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    add("--seed", type=int, default=0, help="catalog seed (default 0)")
    add("--shapes", choices=SHAPES, default="plan",
        help="JSON shapes: the plan's, or the real service's (default plan)")  # fmt: skip
    add("--artists", type=int, default=10)
    add("--albums-per-artist", type=int, default=3)
    add("--tracks-per-album", type=int, default=10)
    add("--audio-bytes", type=int, default=256 * 1024, help="size of every audio file")
    add("--image-bytes", type=int, default=16 * 1024, help="size of every image")
    add("--missing-every", type=int, default=0, metavar="N",
        help="audio of every N-th track (1-based) is always 404; 0 = none")  # fmt: skip
    add("--not-found-ids", default="", metavar="ID,ID...", help="ids answering 404")
    add("--latency-ms", type=float, default=0.0, help="delay before every response")
    add("--audio-bytes-per-sec", type=int, default=0, help="audio throttle; 0 = unlimited")
    add("--audio-content-type", default="audio/flac")
    add("--allow-parallel-audio", action="store_true",
        help="do not answer 429 to an audio download overlapping another one")  # fmt: skip
    add("--fail", action="append", default=[], metavar="ENDPOINT:STATUS:RATE",
        help="inject STATUS on ENDPOINT (or *) with probability RATE; repeatable")  # fmt: skip
    add("--fail-seed", type=int, default=None, help="seed of the failure RNG (default --seed)")
    add("--fault", action="append", default=[], metavar="MODE:ENDPOINT[:TIMES]",
        help="truncate, stall, stall_body, endless, trickle, bad_json or content_type=TYPE; "
        "repeatable")  # fmt: skip
    add("--stall-seconds", type=float, default=3600.0, help="how long a stall fault waits")
    add("--log-responses", metavar="PATH", default=None,
        help="append a JSON line per response to PATH (fake_downloader.response_log)")  # fmt: skip
    return parser


def _spec(args: argparse.Namespace) -> CatalogSpec:
    return CatalogSpec(
        seed=args.seed,
        artists=args.artists,
        albums_per_artist=args.albums_per_artist,
        tracks_per_album=args.tracks_per_album,
        audio_bytes=args.audio_bytes,
        image_bytes=args.image_bytes,
        missing_every=args.missing_every,
    )


def _knobs(args: argparse.Namespace) -> Knobs:
    knobs = Knobs(
        shapes=args.shapes,
        latency_ms=args.latency_ms,
        audio_bytes_per_sec=args.audio_bytes_per_sec,
        audio_content_type=args.audio_content_type,
        allow_parallel_audio=args.allow_parallel_audio,
        not_found_ids={i.strip() for i in args.not_found_ids.split(",") if i.strip()},
        fail_rules=[parse_fail(text) for text in args.fail],
        faults=[parse_fault(text) for text in args.fault],
        fail_seed=args.seed if args.fail_seed is None else args.fail_seed,
    )
    for fault in knobs.faults:
        fault.stall_seconds = args.stall_seconds
    return knobs


async def _run(spec: CatalogSpec, knobs: Knobs, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def until_signal() -> None:
            async for _ in signals:
                return

        async with trio.open_nursery() as nursery:
            run = partial(serve, spec, knobs, host=host, port=port, shutdown_trigger=until_signal)
            base_url = await nursery.start(run)
            print(f"fake downloader listening on {base_url}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec, knobs = _spec(args), _knobs(args)
    except ValueError as error:
        parser.error(str(error))
    if args.log_responses is None:
        trio.run(_run, spec, knobs, args.host, args.port)
        return 0
    with open(args.log_responses, "a", encoding="utf-8") as log:
        knobs.response_log = log
        trio.run(_run, spec, knobs, args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
