"""`python -m tests.reliability.faulty_daemon STEP [server flags...]`: the daemon, killed at STEP.

The crash tests start this instead of `pezzottify-server` to die at a named step of publishing
a file or recording its completion (`storage.files.Faults`): the process exits at once, with no
cleanup, as SIGKILL would leave it.
"""

from __future__ import annotations

import os
import sys

from daemon.main import main
from storage.files import Faults

KILLED = 137  # the status of a process ended by SIGKILL, as the tests expect


def kill_at(step: str) -> Faults:
    def faults(reached: str) -> None:
        if reached == step:
            os._exit(KILLED)

    return faults


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], faults=kill_at(sys.argv[1])))
