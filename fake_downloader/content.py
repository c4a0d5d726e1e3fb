"""Deterministic byte content served by the fake downloader: audio files and images.

Every file is a cyclic repetition of a 64 KiB *period* derived from the content id, so any
slice of it can be produced cheaply and a test can rebuild exactly what the service sends.
Audio periods start with the FLAC magic ``fLaC`` and image periods with a JPEG SOI/APP0
marker, which keeps naive content sniffers happy; the rest is pseudo-random.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import lru_cache

PERIOD_BYTES = 64 * 1024
DEFAULT_CHUNK_BYTES = 64 * 1024

_AUDIO_MAGIC = b"fLaC"
_IMAGE_MAGIC = b"\xff\xd8\xff\xe0"


@lru_cache(maxsize=256)
def _period(kind: str, content_id: str) -> bytes:
    magic = _AUDIO_MAGIC if kind == "audio" else _IMAGE_MAGIC
    noise = random.Random(f"{kind}:{content_id}").randbytes(PERIOD_BYTES - len(magic))
    return magic + noise


def audio_period(track_id: str) -> bytes:
    """The 64 KiB block whose repetition forms the audio file of `track_id`."""
    return _period("audio", track_id)


def image_period(image_id: str) -> bytes:
    """The 64 KiB block whose repetition forms the image file of `image_id`."""
    return _period("image", image_id)


def cyclic_slice(period: bytes, start: int, end: int) -> bytes:
    """Bytes `[start, end)` of the infinite repetition of `period`."""
    size = len(period)
    if size == 0 or end <= start:
        return b""
    offset = start % size
    if end - start <= size - offset:
        return period[offset : offset + (end - start)]
    parts = bytearray(period[offset:])
    pos = start + (size - offset)
    while pos < end:
        take = min(size, end - pos)
        parts += period[:take]
        pos += take
    return bytes(parts)


def iter_cyclic(
    period: bytes, start: int, end: int | None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """Yield `[start, end)` of the repetition of `period` in chunks; `end=None` never stops."""
    pos = start
    while end is None or pos < end:
        stop = pos + chunk_bytes if end is None else min(end, pos + chunk_bytes)
        yield cyclic_slice(period, pos, stop)
        pos = stop


def make_audio_bytes(track_id: str, size: int) -> bytes:
    """The whole audio file of `track_id` when it is `size` bytes long."""
    return cyclic_slice(audio_period(track_id), 0, size)


def make_image_bytes(image_id: str, size: int) -> bytes:
    """The whole image file of `image_id` when it is `size` bytes long."""
    return cyclic_slice(image_period(image_id), 0, size)
