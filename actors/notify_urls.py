"""Notification targets (SPEC §16 rev 2): the `[notifications]` settings, what a user's Apprise
URL must be, how a URL is shown, and how one message is sent to one URL.

A user's URL must not turn the server into a probe of its own network: its scheme must be one of
`user_schemes`, and every address its host resolves to must be public, unless the host is in
`user_hosts_allowed`. Resolution runs off the event loop (`trio.socket.getaddrinfo`) under a
timeout. Admin URLs (the operator's own configuration) are not restricted.

Secrets are never shown: a URL is shown as Apprise's privacy form (`URLBase.url(privacy=True)`:
tokens and passwords elided), and one Apprise cannot parse as its scheme and host only. Apprise's
own loggers and urllib3's (which write request paths, where webhook tokens live) are kept quiet
for the same reason: the notifier logs each failure itself, with the URL masked.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import apprise
import trio

# The public services' schemes (SPEC §16); the secure variants only.
DEFAULT_USER_SCHEMES = ("ntfys", "discord", "tgram", "gotifys", "pover", "mailtos")
RESOLVE_TIMEOUT_S = 5.0
MAX_URLS = 10
MAX_URL_LENGTH = 2048

for _name in ("apprise", "urllib3"):
    # Their debug and warning lines carry request URLs, where webhook tokens live.
    logging.getLogger(_name).setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class NotificationSettings:
    """`[notifications]`: who hears of operator events and what users may aim the server at."""

    admin_urls: tuple[str, ...] = ()
    user_schemes: tuple[str, ...] = DEFAULT_USER_SCHEMES
    user_hosts_allowed: tuple[str, ...] = ()
    max_attempts: int = 5  # deliveries tried before a notification is recorded as failed
    timeout_sec: float = 10.0  # one delivery's connect and read timeouts
    # SPEC §16's schedule: the first retry after this many seconds, each next one 4 times later.
    # Not a configuration key: tests shorten it.
    first_retry_sec: float = 5.0


class BadTarget(ValueError):
    """A URL a user may not use; the message names it masked."""


def masked(url: str) -> str:
    """The URL with its secrets elided (Apprise's privacy form), for every response and log."""
    plugin = _plugin(url)
    if plugin is not None:
        shown: str = plugin.url(privacy=True)  # type: ignore[no-untyped-call]
        return shown.split("?", 1)[0]  # Apprise's default options say nothing to a reader
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…" if parts.scheme else "…"


def url_id(url: str) -> str:
    """A stable name for a URL that reveals nothing: what the outbox records as delivered."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _plugin(url: str) -> apprise.plugins.NotifyBase | None:
    try:
        plugin: apprise.plugins.NotifyBase | None = apprise.Apprise.instantiate(url)
    except Exception:  # any parse error is "not a URL Apprise can use"
        return None
    return plugin


def network_host(plugin: apprise.plugins.NotifyBase) -> str | None:
    """The host a plugin will connect to when the URL chooses it; None when the service's
    endpoint is fixed (Discord, Telegram, Pushover, ntfy.sh: the URL's "host" is an id there)."""
    mode = getattr(plugin, "mode", None)
    if mode is not None and str(getattr(mode, "value", mode)) == "cloud":
        return None  # ntfy without a server of its own: ntfy.sh
    smtp: object = getattr(plugin, "smtp_host", None)
    if isinstance(smtp, str) and smtp:
        return smtp
    fixed = getattr(type(plugin), "notify_url", None)
    if isinstance(fixed, str) and fixed.startswith("https://"):
        return None
    host: object = getattr(plugin, "host", None)
    return host if isinstance(host, str) and host else None


def public(address: str) -> bool:
    """Whether an address is on the public internet (not loopback, private, link-local,
    multicast, reserved or unspecified)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_user_url(url: str, settings: NotificationSettings) -> None:
    """Raise `BadTarget` unless `url` is one a user may set (see the module's docstring)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in settings.user_schemes:
        allowed = ", ".join(settings.user_schemes)
        raise BadTarget(f"{masked(url)}: the scheme must be one of {allowed}")
    plugin = _plugin(url)
    if plugin is None:
        raise BadTarget(f"{masked(url)}: not a notification URL this server understands")
    host = network_host(plugin)
    if host is None or host.lower() in {h.lower() for h in settings.user_hosts_allowed}:
        return  # no host of its own (a service's fixed endpoint), or the operator allowed it
    try:
        with trio.fail_after(RESOLVE_TIMEOUT_S):
            infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, trio.TooSlowError) as exc:
        raise BadTarget(f"{masked(url)}: its host cannot be resolved") from exc
    for info in infos:
        if not public(str(info[4][0])):
            raise BadTarget(f"{masked(url)}: its host is not on the public internet")


def send(url: str, title: str, body: str, timeout: float) -> str | None:
    """Send one message to one URL (blocking: run in a worker thread); None when it was
    delivered, else why not (with nothing secret in it)."""
    plugin = _plugin(url)
    if plugin is None:
        return "not a notification URL this server understands"
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    try:
        delivered = bool(plugin.notify(body=body, title=title))
    except Exception as exc:  # a plugin's bug is this target's failure, not the notifier's
        return f"the sender failed ({type(exc).__name__})"
    return None if delivered else "the target refused or did not answer"
