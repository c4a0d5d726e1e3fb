"""`pezzottify-server` (and `python -m daemon`): parse the configuration, run the daemon.

Exit statuses: 0 after a graceful shutdown, 2 for a configuration error, 1 for anything that
stops the daemon otherwise (a database it cannot open, a port in use, a crash loop).
"""

from __future__ import annotations

import errno
import gc
import logging
import socket
import sys
from collections.abc import Sequence
from functools import partial

import trio

from daemon.config import DEFAULT, Config, ConfigError, describe, load_config, typed_name
from daemon.logs import flush_logging, setup_logging, write_line
from daemon.supervisor import CrashLoop
from daemon.wiring import run_daemon
from storage.db import StorageError
from storage.files import Faults, no_faults

log = logging.getLogger("pezzottify.daemon")

# CPython collects the old generation after every 10 collections of the middle one (once a
# quarter more objects have reached it since the last time). A full collection walks every object
# the daemon holds, and an open event stream holds about 270 (its connection, request and tasks):
# with a thousand open, each stops the event loop for about a quarter of a second, and on a busy
# day one came every 20 s. After 3,000 (9,000 young collections) they are minutes apart. Every
# wake-up of a stream also leaves objects that live seconds, which the middle generation
# collects: after every 3 young collections instead of 10, each of its collections finds a third
# as many and takes a few ms instead of up to 20 (docs/decisions.md, "Garbage collection").
MIDDLE_COLLECTION_AFTER = 3
FULL_COLLECTION_AFTER = 3000


def fail(message: str, status: int) -> int:
    write_line(f"pezzottify-server: {message}")
    return status


def check_port_free(host: str, port: int, name: str) -> None:
    """Refuse early (before any file is created) when a port is taken; `name` is the port's
    flag, key or variable as the user gave it."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ConfigError(f"{name} {port} on {host}: {reason}") from exc


def collect_rarely() -> None:
    """Space the collector's full collections out, and collect the middle generation more often
    (`FULL_COLLECTION_AFTER`, `MIDDLE_COLLECTION_AFTER`)."""
    young, _, _ = gc.get_threshold()
    gc.set_threshold(young, MIDDLE_COLLECTION_AFTER, FULL_COLLECTION_AFTER)


def main(argv: Sequence[str] | None = None, *, faults: Faults = no_faults) -> int:
    """Run the daemon; `faults` is the crash tests' hook (`storage.files.Faults`)."""
    try:
        config: Config = load_config(sys.argv[1:] if argv is None else argv)
        for key in ("port", "metrics_port"):
            name = typed_name((key,), config.sources.get(key, DEFAULT))
            check_port_free(config.host, getattr(config, key), name)
    except ConfigError as exc:
        return fail(str(exc), 2)
    setup_logging(config.log_level)
    collect_rarely()
    for line in describe(config):
        log.info("config: %s", line)
    try:
        trio.run(partial(run_daemon, config, faults=faults))
    except BaseException as exc:
        flush_logging()  # the daemon's last lines before the reason it stopped
        return exit_status(exc)
    finally:
        flush_logging()
    return 0


def exit_status(exc: BaseException) -> int:
    """Map what stopped the daemon to a message and an exit status (re-raise the unknown)."""
    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, StorageError | CrashLoop):
            return fail(str(leaf), 1)
        if isinstance(leaf, OSError):
            return fail(f"cannot start: {leaf}", 1)
    if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return 0
    raise exc


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


if __name__ == "__main__":
    sys.exit(main())
