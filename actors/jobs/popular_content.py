"""The `popular_content` job: the most played albums and artists of the last 30 days (SPEC §6).

Play counts per track come from the listening events in one grouped query; each played track is
then resolved to its album and artists in the catalog and the counts are summed in Python. The
catalog lookups run in worker threads a chunk of tracks at a time, so a cancel (shutdown, admin)
takes effect between chunks instead of after the whole scan. Tracks no longer in the catalog are
left out. The top `STORED_TOP` albums and artists are stored, enough for the API's largest limit;
ties are broken by name, then id, so the ranking is stable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from actors.jobs.base import JobSpec, Schedule, ShutdownBehavior, utc_now
from actors.messages import Hook
from storage.catalog import CatalogStore
from storage.jobs import JobStore
from storage.users import UserStore

JOB_ID = "popular_content"
DEFAULT_INTERVAL_HOURS = 6.0
WINDOW = timedelta(days=30)
STORED_TOP = 50
CHUNK = 500


def _count_chunk(
    catalog: CatalogStore, plays: Sequence[tuple[str, int]]
) -> tuple[Counter[str], Counter[str]]:
    """Plays per album and per artist for one chunk of (track_id, plays) (blocking)."""
    albums: Counter[str] = Counter()
    artists: Counter[str] = Counter()
    for track_id, count in plays:
        track = catalog.get_track(track_id)
        if track is None:
            continue
        albums[track["album_id"]] += count
        for artist_id in dict.fromkeys(track["artist_ids"]):
            artists[artist_id] += count
    return albums, artists


def _top(counts: Counter[str], names: dict[str, str]) -> list[tuple[str, int]]:
    ranked = sorted(
        (item for item in counts.items() if item[0] in names),
        key=lambda item: (-item[1], names[item[0]], item[0]),
    )
    return ranked[:STORED_TOP]


def _candidates(counts: Counter[str]) -> list[str]:
    """Ids that can reach the top list: the best counts with room for entries the catalog
    lost, and every id tied with the last of them (the name decides among ties)."""
    ranked = counts.most_common()
    room = STORED_TOP * 2
    if len(ranked) > room:
        cutoff = ranked[room - 1][1]
        ranked = [item for item in ranked if item[1] >= cutoff]
    return [item_id for item_id, _ in ranked]


def _resolve(
    catalog: CatalogStore, albums: Counter[str], artists: Counter[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Name the best albums and artists (blocking); ids the catalog lost are dropped."""
    album_rows = {a: catalog.get_album(a) for a in _candidates(albums)}
    artist_rows = {a: catalog.get_artist(a) for a in _candidates(artists)}
    album_names = {k: v["name"] for k, v in album_rows.items() if v is not None}
    artist_names = {k: v["name"] for k, v in artist_rows.items() if v is not None}
    top_albums = []
    for album_id, count in _top(albums, album_names):
        row = album_rows[album_id]
        assert row is not None
        by_id = {a["id"]: a["name"] for a in row["artists"]}
        top_albums.append(
            {
                "id": album_id,
                "name": album_names[album_id],
                "artist_names": [by_id[a] for a in row["artist_ids"] if a in by_id],
                "play_count": count,
            }
        )
    top_artists = [
        {"id": artist_id, "name": artist_names[artist_id], "play_count": count}
        for artist_id, count in _top(artists, artist_names)
    ]
    return top_albums, top_artists


async def compute_popular(
    users: UserStore, catalog: CatalogStore, since: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Top albums, top artists and the number of plays counted since `since`.

    If cancelled, stops after the chunk in progress and nothing is stored.
    """
    plays = await users.db.run(users.play_counts_since, int(since.timestamp()))
    items = sorted(plays.items())
    albums: Counter[str] = Counter()
    artists: Counter[str] = Counter()
    for start in range(0, len(items), CHUNK):
        chunk_albums, chunk_artists = await catalog.db.run(
            _count_chunk, catalog, items[start : start + CHUNK]
        )
        albums.update(chunk_albums)
        artists.update(chunk_artists)
    top_albums, top_artists = await catalog.db.run(_resolve, catalog, albums, artists)
    return top_albums, top_artists, sum(plays.values())


def popular_content_job(
    users: UserStore,
    catalog: CatalogStore,
    store: JobStore,
    *,
    interval_hours: float = DEFAULT_INTERVAL_HOURS,
    wall_clock: Callable[[], datetime] = utc_now,
) -> JobSpec:
    async def run() -> dict[str, Any]:
        now = wall_clock()
        albums, artists, plays = await compute_popular(users, catalog, now - WINDOW)
        await store.db.run(store.save_popular, albums, artists, now)
        return {"plays_counted": plays, "albums": len(albums), "artists": len(artists)}

    return JobSpec(
        id=JOB_ID,
        name="Popular content",
        description="Computes the most played albums and artists of the last 30 days",
        schedule=Schedule(interval_secs=interval_hours * 3600, hooks=(Hook.OnStartup,)),
        shutdown=ShutdownBehavior.CANCELLABLE,
        run=run,
    )
