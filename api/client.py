"""Who is asking: the client's address and whether it came over HTTPS (SPEC §4.2 rev 2).

The client is the connection's peer, unless the peer is one of `trusted_proxies`: then it is the
right-most address of `X-Forwarded-For` that is not itself a trusted proxy. Everything left of
that entry was written by someone the server does not trust, so the client could have made it
up; everything right of it was written by our own proxies. When every entry is a trusted proxy
(a request made by a proxy host itself), the left-most is the client.

`X-Forwarded-For` entries that are not addresses (`unknown`, obfuscated names, garbage) are
skipped; an address may carry a port (`1.2.3.4:80`, `[2001:db8::1]:80`), which is dropped. An
IPv4 address seen as IPv6 (`::ffff:10.0.0.1`, a dual-stack listener) counts as the IPv4 one.

HTTPS: the connection's own scheme, or `X-Forwarded-Proto: https` from a trusted proxy. Proxies
either overwrite that header (one value) or append to it as to `X-Forwarded-For`: when both lists
have the same length, the value beside the chosen address is the one its proxy wrote; otherwise
the right-most value, the nearest proxy's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from quart import g, request

from api.context import root

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
UNKNOWN = "unknown"  # a peer without an IP address (a Unix socket)


@dataclass(frozen=True)
class Client:
    address: str
    https: bool


def parse_address(text: str) -> Address | None:
    """An address from an `X-Forwarded-For` entry or a peer, or None if it is not one."""
    host = text.strip().strip('"')
    if host.startswith("["):  # [v6] or [v6]:port
        host, closed, rest = host[1:].partition("]")
        if not closed or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return None
    elif host.count(":") == 1:  # v4:port (a bare v6 address has several colons)
        host, _, port = host.partition(":")
        if not _is_port(port):
            return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5


def _trusted(address: Address | None, trusted: Iterable[Network]) -> bool:
    # A v4 address is never "in" a v6 network (and the reverse): no error, just False.
    return address is not None and any(address in network for network in trusted)


def _split(values: Iterable[str]) -> list[str]:
    """The entries of a header that may come several times, each a comma-separated list."""
    return [entry.strip() for value in values for entry in value.split(",")]


def resolve(
    peer: str | None,
    scheme: str,
    forwarded_for: Sequence[str],
    forwarded_proto: Sequence[str],
    trusted: Sequence[Network],
) -> Client:
    """The client of a connection from `peer` carrying these header values (see the module)."""
    peer_address = parse_address(peer) if peer else None
    direct_https = scheme == "https"
    if not _trusted(peer_address, trusted):
        shown = str(peer_address) if peer_address is not None else (peer or UNKNOWN)
        return Client(shown, direct_https)
    assert peer_address is not None
    entries = _split(forwarded_for)
    parsed = [parse_address(entry) for entry in entries]
    chosen: int | None = None
    for index in reversed(range(len(parsed))):
        if parsed[index] is not None:
            chosen = index  # ends on the left-most address if every one is trusted
            if not _trusted(parsed[index], trusted):
                break
    address = parsed[chosen] if chosen is not None else peer_address
    protos = [p.lower() for p in _split(forwarded_proto)]
    if chosen is not None and len(protos) == len(entries):
        proto = protos[chosen]
    else:
        proto = protos[-1] if protos else ""
    return Client(str(address), direct_https or proto == "https")


def current_client() -> Client:
    """The client of the request being answered, resolved once per request."""
    client: Client | None = g.get("client")
    if client is None:
        client = resolve(
            request.remote_addr,
            request.scheme,
            request.headers.getlist("X-Forwarded-For"),
            request.headers.getlist("X-Forwarded-Proto"),
            root().config.trusted_proxies,
        )
        g.client = client
    return client
