"""Bad text stops at the door (SPEC §11 rev 2): what is not valid Unicode, and NUL characters.

SQLite and Argon2 take text as UTF-8: a lone surrogate (JSON lets `"\\ud800"` through) cannot be
encoded and escaped as a 500, and a NUL cuts a C string short. So text is checked where it enters,
once for every route rather than per field:
- a JSON body when it is decoded (`json_body`), every string in it, keys included;
- the path and the query string as the client sent them, percent-decoded to bytes, which must be
  UTF-8 without NUL (the server's own decoding replaces bad bytes with U+FFFD, which would hide
  them and match routes). `requires` runs this check after the permission check, so a route that
  needs a session answers 401/403 first (SPEC §4.2); a before-request hook runs it for public
  routes and for paths that match no route.

Each refusal is 400 `INVALID_TEXT`, naming where the bad text was and never echoing it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from quart import request

from api.errors import ApiError

CODE = "INVALID_TEXT"
NOT_UNICODE = "not valid Unicode (a lone surrogate)"
NOT_UTF8 = "not valid UTF-8"
NUL = "a NUL character"


def text_problem(text: str) -> str | None:
    """What is wrong with `text` for storage and hashing, or None if nothing is."""
    if "\x00" in text:
        return NUL
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return NOT_UNICODE
    return None


def bytes_problem(raw: bytes) -> str | None:
    """The same for percent-encoded bytes (a path or a query string as sent)."""
    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded:
        return NUL
    try:
        decoded.decode("utf-8")  # strict: also refuses encoded surrogates (ED A0 80)
    except UnicodeDecodeError:
        return NOT_UTF8
    return None


def refuse(where: str, problem: str) -> ApiError:
    return ApiError(400, f"invalid text in {where}: {problem}", CODE)


def check_url() -> None:
    """Refuse a path or query string carrying bad text (see the module docstring for when)."""
    scope = request.scope
    raw_path = scope.get("raw_path")
    # `raw_path` is optional in ASGI; without it the decoded path is all there is.
    problem = text_problem(scope["path"]) if raw_path is None else bytes_problem(raw_path)
    if problem is not None:
        raise refuse("the path", problem)
    problem = bytes_problem(scope.get("query_string", b""))
    if problem is not None:
        raise refuse("the query string", problem)


def decode_json(raw: bytes | str) -> Any:
    """A request body's JSON value; 400 for bytes that are not UTF-8 or not JSON, saying where."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise refuse("the request body", f"{NOT_UTF8} at byte {exc.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise ApiError(400, message, "MALFORMED_JSON") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply", "MALFORMED_JSON") from None


def check_json_text(value: Any) -> None:
    """Refuse a decoded JSON value holding bad text in any string, key or value, at any depth.

    Iterative: a document nested as deep as the decoder allows must not exhaust the stack here.
    """
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                raise refuse(where or "the request body", problem)
        elif isinstance(item, dict):
            for key, inner in item.items():
                problem = text_problem(key)
                if problem is not None:
                    raise refuse(f"a field name{' in ' + where if where else ''}", problem)
                pending.append((inner, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            pending.extend((inner, f"{where or 'body'}[{n}]") for n, inner in enumerate(item))
