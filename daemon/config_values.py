"""How one configuration value is read and checked: the `Rule` of each kind of key.

A TOML file gives typed values; a flag or an environment variable gives text, which `from_text`
turns into the value the same key would have in TOML (an integer, a number, a boolean, a list)
so that every source goes through one check. Text that does not parse is passed on unchanged and
refused by the check, so the message shows what the user typed. Rules know nothing of where a
value came from: they raise `Refused` and the caller names the flag, key or variable.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(ValueError):
    """A value a rule does not accept; `detail`, when given, replaces "must be <expected>"."""

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail


def _same(raw: str) -> Any:
    return raw


@dataclass(frozen=True)
class Rule:
    """One kind of value: what errors say it must be, how it is accepted, how text reads."""

    expected: str
    accept: Callable[[Any], Any]  # the value to store; raises `Refused`
    from_text: Callable[[str], Any] = _same
    secret: bool = False  # never shown whole, in the startup log or in an error

    def show(self, value: Any) -> str:
        """The value as the startup log and error messages write it."""
        if self.secret and isinstance(value, tuple | list):
            return "[" + ", ".join(self.show(item) for item in value) + "]"
        if self.secret and value is not None:
            parsed = urlparse(str(value))
            kept = f"{parsed.scheme}://{parsed.hostname}" if parsed.hostname else ""
            return f"{kept}/… (hidden)" if kept else "… (hidden)"
        if value is None:
            return "none"
        if isinstance(value, bool):
            return "true" if value else "false"  # as TOML and the environment write it
        if isinstance(value, tuple):
            return "[" + ", ".join(str(item) for item in value) + "]"
        return str(value)

    def refusal(self, name: str, value: Any, refused: Refused) -> str:
        """The error line for `value` given as `name` (a flag, a key or a variable)."""
        if refused.detail:
            return f"{name}: {refused.detail}"
        shown = self.show(value) if self.secret else repr(value)
        return f"{name} must be {self.expected}, got {shown}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_text(raw: str) -> Any:
    try:
        return int(raw)
    except ValueError:
        return raw


def _num_text(raw: str) -> Any:
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            continue
    return raw


def integer(lo: int, hi: int | None = None) -> Rule:
    def accept(v: Any) -> int:
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            raise Refused
        return int(v)

    expected = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
    return Rule(expected, accept, _int_text)


def number(lo: float, *, strict: bool = False) -> Rule:
    """A finite number: infinity is no duration anything downstream can schedule."""

    def accept(v: Any) -> float | int:
        if not (_is_int(v) or (isinstance(v, float) and math.isfinite(v))):
            raise Refused
        if not (v > lo if strict else v >= lo):
            raise Refused
        return v  # type: ignore[no-any-return]

    return Rule(f"a number {'>' if strict else '>='} {lo:g}", accept, _num_text)


def choice(values: Sequence[str]) -> Rule:
    """One of `values`, in any case ("INFO" is "info"); stored lower case."""

    def accept(v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in values:
            raise Refused
        return v.lower()

    return Rule("one of " + ", ".join(values), accept)


def text() -> Rule:
    def accept(v: Any) -> str:
        if not isinstance(v, str) or v == "":
            raise Refused
        return v

    return Rule("a non-empty string", accept)


def url(*, secret: bool = False) -> Rule:
    """An http(s) URL; a `secret` one (a webhook with its token) is never shown whole."""

    def accept(v: Any) -> str:
        if not isinstance(v, str):
            raise Refused
        parsed = urlparse(v)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise Refused
        return v

    return Rule("an http(s) URL", accept, secret=secret)


def _bool_text(raw: str) -> Any:
    return {"true": True, "false": False}.get(raw.strip().lower(), raw)


def boolean() -> Rule:
    def accept(v: Any) -> bool:
        if not isinstance(v, bool):
            raise Refused
        return v

    return Rule("true or false", accept, _bool_text)


def _list_text(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def strings(*, secret: bool = False) -> Rule:
    """A list of non-empty strings (comma-separated as text), stored as a tuple; a `secret` list
    (notification URLs with their tokens) is never shown whole."""

    def accept(v: Any) -> tuple[str, ...]:
        if not isinstance(v, list | tuple) or not all(isinstance(i, str) and i for i in v):
            raise Refused
        return tuple(v)

    return Rule("a list of non-empty strings", accept, _list_text, secret=secret)


def networks() -> Rule:
    """A list of IP addresses or CIDRs (an address is its own /32 or /128), stored as networks.

    Host bits are allowed (`10.0.0.1/8` is `10.0.0.0/8`): an operator writing a proxy's address
    with its subnet's prefix means that subnet.
    """

    def accept(v: Any) -> tuple[Network, ...]:
        if not isinstance(v, list | tuple) or not all(isinstance(item, str) for item in v):
            raise Refused
        found = []
        for item in v:
            try:
                found.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise Refused(f"{item!r} is not an IP address or network") from None
        return tuple(found)

    return Rule("a list of IP addresses or networks", accept, _list_text)


def bindable_host(host: str) -> str:
    """`host` as the HTTP listeners will bind it, or `Refused` saying why it cannot be.

    Resolved and bound the way hypercorn does (IPv6 when the value holds a colon, IPv4
    otherwise), on port 0 so that no port is taken: an address this machine does not have fails
    here, and binding sends nothing on the network.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        infos = socket.getaddrinfo(bare, None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise Refused(f"{host!r} cannot be resolved ({_reason(exc)})") from None
    address = infos[0][4][0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise Refused(f"{host!r} is not an address of this machine") from None
            raise Refused(f"{host!r} cannot be bound ({_reason(exc)})") from None
    return bare


def _reason(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
