"""Reading a media file to serve it (`storage.files.MediaRead`): pieces, the file's identity,
descriptors, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage.files import READ_PIECE_BYTES, MediaLayout, MediaRead

PIECE = READ_PIECE_BYTES


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def media(tmp_path: Path) -> MediaLayout:
    return MediaLayout(tmp_path / "media")


def track(media: MediaLayout, content: bytes) -> Path:
    path = media.audio_dir / "track.flac"
    path.write_bytes(content)
    return path


def whole(size: int) -> tuple[int, int]:
    return 0, size


def test_a_short_span_is_one_call_and_leaves_no_file_open(media: MediaLayout) -> None:
    path = track(media, bytes(range(256)) * 10)
    before = open_descriptors()
    read = MediaRead.open(media.root, path, lambda size: (10, 20))
    assert (read.size, read.begin, read.end) == (2560, 10, 20)
    assert read.first == bytes(range(10, 20))
    assert read.remaining == 0
    assert open_descriptors() == before


def test_a_file_replaced_while_read_is_read_whole_as_it_was(media: MediaLayout) -> None:
    old = b"o" * (2 * PIECE + 7)
    path = track(media, old)
    read = MediaRead.open(media.root, path, whole)
    new = path.with_name("new.part")
    new.write_bytes(b"n" * (3 * PIECE))
    new.replace(path)  # how a download publishes a new version
    pieces = [read.first]
    while read.remaining:
        pieces.append(read.next_piece())
    assert [len(p) for p in pieces] == [PIECE, PIECE, 7]
    assert b"".join(pieces) == old


def test_stopping_early_closes_the_file(media: MediaLayout) -> None:
    path = track(media, b"x" * (PIECE + 1))
    before = open_descriptors()
    read = MediaRead.open(media.root, path, whole)
    assert open_descriptors() == before + 1
    read.close()
    assert open_descriptors() == before
    with pytest.raises(ValueError, match="closed"):
        read.next_piece()


def test_a_span_refused_closes_the_file(media: MediaLayout) -> None:
    path = track(media, b"x" * 10)
    before = open_descriptors()

    def refuse(size: int) -> tuple[int, int]:
        raise LookupError(size)

    with pytest.raises(LookupError):
        MediaRead.open(media.root, path, refuse)
    assert open_descriptors() == before


def test_a_file_cut_short_while_read_is_an_error_not_a_short_body(media: MediaLayout) -> None:
    path = track(media, b"x" * (PIECE + 100))
    read = MediaRead.open(media.root, path, whole)
    os.truncate(path, PIECE + 50)
    with pytest.raises(OSError, match="ended before its size"):
        read.next_piece()


def test_symlinks_and_folders_leading_outside_are_absent(
    media: MediaLayout, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.flac").write_bytes(b"private")
    link = media.audio_dir / "link.flac"
    link.symlink_to(outside / "secret.flac")
    with pytest.raises(OSError, match="symbolic links"):  # ELOOP: O_NOFOLLOW refused it
        MediaRead.open(media.root, link, whole)
    linked_folder = media.root / "linked"
    linked_folder.symlink_to(outside)
    with pytest.raises(FileNotFoundError):
        MediaRead.open(media.root, linked_folder / "secret.flac", whole)
    with pytest.raises(FileNotFoundError):
        MediaRead.open(media.root, media.audio_dir / "absent.flac", whole)
