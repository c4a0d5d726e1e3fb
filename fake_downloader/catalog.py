"""The synthetic catalog: a deterministic function of a `CatalogSpec`.

Artists, albums and tracks are numbered by index; artist ``a`` owns albums
``a * albums_per_artist ...`` and album ``b`` owns tracks ``b * tracks_per_album ...``.
Ids are derived by hashing ``seed:kind:index`` (content ids: 22 base62 characters,
image ids: 40 lowercase hex characters), and the index maps are built once, so lookups are O(1)
and a 100k-track catalog builds well under a second.

Names read like ``"Artist 4 Velvet Harbor"``, ``"Album 4-2 Midnight Echo"`` and
``"Track 3 Golden Signal"`` (numbers are 1-based), so searching a word such as "midnight" or
"velvet" finds something. Audio of the N-th, 2N-th, ... track (1-based global position) is
always missing (404) when ``missing_every = N > 0``. Adjectives are dealt by index, so each of
the 24 in `ADJECTIVES` names one of any 24 consecutive albums (and artists).
"""

from __future__ import annotations

import hashlib
import zlib
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from fake_downloader.content import (
    DEFAULT_CHUNK_BYTES,
    audio_period,
    iter_cyclic,
    make_audio_bytes,
    make_image_bytes,
)

_B62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62_TABLE = bytes(_B62[b % 62] for b in range(256))

ADJECTIVES = (
    "Velvet", "Midnight", "Golden", "Electric", "Silver", "Crimson", "Hollow", "Neon",
    "Paper", "Wild", "Quiet", "Broken", "Lunar", "Amber", "Frozen", "Distant",
    "Restless", "Northern", "Faded", "Burning", "Gentle", "Static", "Hidden", "Open",
)  # fmt: skip
NOUNS = (
    "Harbor", "Echo", "Garden", "Signal", "River", "Mirror", "Engine", "Lantern",
    "Canyon", "Satellite", "Horizon", "Orchard", "Tide", "Meadow", "Circuit", "Parade",
    "Comet", "Window", "Forest", "Highway", "Island", "Thunder", "Cathedral", "Desert",
)  # fmt: skip
GENRES = (
    "rock", "pop", "jazz", "electronic", "folk", "hip hop", "classical", "ambient",
    "blues", "soul", "metal", "indie",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CatalogSpec:
    """Shape of the synthetic catalog; equal specs give identical catalogs and bytes."""

    seed: int = 0
    artists: int = 10
    albums_per_artist: int = 3
    tracks_per_album: int = 10
    audio_bytes: int = 256 * 1024
    image_bytes: int = 16 * 1024
    missing_every: int = 0

    def __post_init__(self) -> None:
        for name in ("artists", "albums_per_artist", "tracks_per_album"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("audio_bytes", "image_bytes", "missing_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def album_count(self) -> int:
        return self.artists * self.albums_per_artist

    @property
    def track_count(self) -> int:
        return self.album_count * self.tracks_per_album


def content_id_for(seed: int, kind: str, index: int) -> str:
    """The 22-character base62 id of entity `index` of `kind` ("artist", "album", "track")."""
    digest = hashlib.sha256(f"{seed}:{kind}:{index}".encode()).digest()
    return digest.translate(_B62_TABLE)[:22].decode("ascii")


def image_id_for(seed: int, kind: str, index: int) -> str:
    """The 40-hex image id of the `kind` ("cover", "portrait", "cover-small" or
    "portrait-small") image of entity `index`."""
    return hashlib.sha1(f"{seed}:{kind}:{index}".encode(), usedforsecurity=False).hexdigest()


def _mix(text: str) -> int:
    return zlib.crc32(text.encode("ascii"))


def _words(seed: int, index: int, text: str) -> str:
    """Adjective by index (stride 7 visits all 24 in turn), noun by hash of `text`."""
    adjective = ADJECTIVES[(index * 7 + seed) % len(ADJECTIVES)]
    return f"{adjective} {NOUNS[_mix(text) % len(NOUNS)]}"


class NameIndex:
    """Case-insensitive substring search over a fixed list of names, in C-speed `str.find`."""

    def __init__(self, names: list[str]) -> None:
        self._starts: list[int] = []
        offset = 0
        for name in names:
            self._starts.append(offset)
            offset += len(name) + 1
        self._blob = "\n".join(name.lower() for name in names)

    def find(self, query: str, limit: int) -> list[int]:
        """Indices of the first `limit` names containing `query`, in index order."""
        needle = query.lower()
        if "\n" in needle:
            return []
        found: list[int] = []
        pos = 0
        while len(found) < limit:
            hit = self._blob.find(needle, pos)
            if hit < 0:
                break
            index = bisect_right(self._starts, hit) - 1
            found.append(index)
            if index + 1 >= len(self._starts):
                break
            pos = self._starts[index + 1]
        return found


class Catalog:
    """Index maps and per-entity derivations of one `CatalogSpec`."""

    def __init__(self, spec: CatalogSpec) -> None:
        self.spec = spec
        seed = spec.seed
        self.artist_ids = [content_id_for(seed, "artist", i) for i in range(spec.artists)]
        self.album_ids = [content_id_for(seed, "album", i) for i in range(spec.album_count)]
        self.track_ids = [content_id_for(seed, "track", i) for i in range(spec.track_count)]
        self.portrait_ids = [image_id_for(seed, "portrait", i) for i in range(spec.artists)]
        self.cover_ids = [image_id_for(seed, "cover", i) for i in range(spec.album_count)]
        # A second, smaller image of each, listed only by the real service's shapes.
        self.small_portrait_ids = [
            image_id_for(seed, "portrait-small", i) for i in range(spec.artists)
        ]
        self.small_cover_ids = [
            image_id_for(seed, "cover-small", i) for i in range(spec.album_count)
        ]
        self._artist_pos = {cid: i for i, cid in enumerate(self.artist_ids)}
        self._album_pos = {cid: i for i, cid in enumerate(self.album_ids)}
        self._track_pos = {cid: i for i, cid in enumerate(self.track_ids)}
        self._image_ids = frozenset(
            [*self.portrait_ids, *self.cover_ids, *self.small_portrait_ids, *self.small_cover_ids]
        )
        self.artist_names = [
            f"Artist {i + 1} {_words(seed, i, cid)}" for i, cid in enumerate(self.artist_ids)
        ]
        self.album_names = [self._album_name(i, cid) for i, cid in enumerate(self.album_ids)]
        self.artist_search = NameIndex(self.artist_names)
        self.album_search = NameIndex(self.album_names)

    def _album_name(self, index: int, album_id: str) -> str:
        artist, nth = divmod(index, self.spec.albums_per_artist)
        return f"Album {artist + 1}-{nth + 1} {_words(self.spec.seed, index, album_id)}"

    # Lookups: index of an id, or None when the id is not in the catalog.
    def artist_index(self, artist_id: str) -> int | None:
        return self._artist_pos.get(artist_id)

    def album_index(self, album_id: str) -> int | None:
        return self._album_pos.get(album_id)

    def track_index(self, track_id: str) -> int | None:
        return self._track_pos.get(track_id)

    def has_image(self, image_id: str) -> bool:
        return image_id in self._image_ids

    # Relations between indices.
    def album_artist(self, album: int) -> int:
        return album // self.spec.albums_per_artist

    def artist_albums(self, artist: int) -> range:
        per = self.spec.albums_per_artist
        return range(artist * per, (artist + 1) * per)

    def album_tracks(self, album: int) -> range:
        per = self.spec.tracks_per_album
        return range(album * per, (album + 1) * per)

    def track_album(self, track: int) -> int:
        return track // self.spec.tracks_per_album

    def track_number(self, track: int) -> int:
        return track % self.spec.tracks_per_album + 1

    def track_name(self, track: int) -> str:
        words = _words(self.spec.seed, track, self.track_ids[track])
        return f"Track {self.track_number(track)} {words}"

    def mix(self, content_id: str) -> int:
        """A stable pseudo-random integer for `content_id` (drives years, genres, ...)."""
        return _mix(content_id)

    # Missing audio.
    def is_audio_missing(self, track: int) -> bool:
        every = self.spec.missing_every
        return every > 0 and (track + 1) % every == 0

    @property
    def missing_track_ids(self) -> list[str]:
        """Ids of the tracks whose audio always answers 404."""
        every = self.spec.missing_every
        if every <= 0:
            return []
        return [self.track_ids[i] for i in range(every - 1, len(self.track_ids), every)]

    @property
    def available_track_ids(self) -> list[str]:
        """Ids of the tracks whose audio can be downloaded."""
        return [cid for i, cid in enumerate(self.track_ids) if not self.is_audio_missing(i)]


@lru_cache(maxsize=4)
def build_catalog(spec: CatalogSpec) -> Catalog:
    """The catalog of `spec`; cached, so repeated calls with an equal spec are free."""
    return Catalog(spec)


def audio_bytes(spec: CatalogSpec, track_id: str) -> bytes:
    """The exact bytes the service serves as the audio of `track_id`."""
    return make_audio_bytes(track_id, spec.audio_bytes)


def iter_audio(
    spec: CatalogSpec, track_id: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """`audio_bytes(spec, track_id)` in chunks, without building the whole file."""
    return iter_cyclic(audio_period(track_id), 0, spec.audio_bytes, chunk_bytes)


def image_bytes(spec: CatalogSpec, image_id: str) -> bytes:
    """The exact bytes the service serves as the image `image_id`."""
    return make_image_bytes(image_id, spec.image_bytes)
