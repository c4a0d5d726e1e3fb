"""Id validation: the only gate between outside input and a path or a query.

Content ids (artists, albums, tracks) are base62, exactly 22 characters; image ids are lowercase
hex, exactly 40 characters. ASCII only: `str.isalnum` would accept look-alike Unicode digits.
"""

from __future__ import annotations

import re

CONTENT_ID_PATTERN = r"^[0-9A-Za-z]{22}$"
IMAGE_ID_PATTERN = r"^[0-9a-f]{40}$"
_CONTENT_ID = re.compile(CONTENT_ID_PATTERN.strip("^$"))
_IMAGE_ID = re.compile(IMAGE_ID_PATTERN.strip("^$"))


class InvalidId(ValueError):
    """An id that is not of the expected form."""


def is_content_id(value: object) -> bool:
    return isinstance(value, str) and _CONTENT_ID.fullmatch(value) is not None


def is_image_id(value: object) -> bool:
    return isinstance(value, str) and _IMAGE_ID.fullmatch(value) is not None


def content_id(value: object) -> str:
    """Return the value if it is a content id, else raise `InvalidId`."""
    if not is_content_id(value):
        raise InvalidId(f"not a content id (22 base62 characters): {str(value)[:64]!r}")
    assert isinstance(value, str)
    return value


def image_id(value: object) -> str:
    """Return the value if it is an image id, else raise `InvalidId`."""
    if not is_image_id(value):
        raise InvalidId(f"not an image id (40 lowercase hex characters): {str(value)[:64]!r}")
    assert isinstance(value, str)
    return value
