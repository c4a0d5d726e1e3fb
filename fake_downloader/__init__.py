"""A deterministic stand-in for the downloader service: synthetic catalog, audio and images.

Used by the demo, the test suite (in-process, on a free port) and benchmarks. The public API:
`CatalogSpec`, `Catalog`, `build_catalog`, `audio_bytes`, `iter_audio`, `image_bytes`,
`Knobs`, `Fault`, `FailRule`, `create_app`, `serve` and `open_fake_downloader`.
"""

from __future__ import annotations

from fake_downloader.app import create_app
from fake_downloader.catalog import (
    Catalog,
    CatalogSpec,
    audio_bytes,
    build_catalog,
    image_bytes,
    iter_audio,
)
from fake_downloader.knobs import FailRule, Fault, Knobs
from fake_downloader.server import FakeDownloader, open_fake_downloader, serve

__all__ = [
    "Catalog",
    "CatalogSpec",
    "FailRule",
    "FakeDownloader",
    "Fault",
    "Knobs",
    "audio_bytes",
    "build_catalog",
    "create_app",
    "image_bytes",
    "iter_audio",
    "open_fake_downloader",
    "serve",
]
