"""URL converters: which path a route's variable part may match.

A variable part that sits beside fixed siblings must not match their names, or the method
table of those paths is wrong: `/v1/download/request/<id>` (GET, DELETE) would also match
`/v1/download/request/album` (POST), so a 405 there advertised `Allow: GET, DELETE`, and a GET
reached the detail view. `other_than` is werkzeug's `path` converter that refuses a first
segment equal to one of its words; the OpenAPI document says so (`api.openapi`).
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.routing import Map, PathConverter


class OtherThanConverter(PathConverter):
    """`<other_than("album", "discography"):item_id>`: any path whose first segment is none of
    the words."""

    def __init__(self, url_map: Map, *words: str, **kwargs: Any) -> None:
        super().__init__(url_map, **kwargs)
        self.words = tuple(words)
        alternatives = "|".join(re.escape(word) for word in words)
        self.regex = rf"(?!(?:{alternatives})(?:/|$)){PathConverter.regex}"


CONVERTERS = {"other_than": OtherThanConverter}
