"""The ``medpeft`` command: skip the optional packages no command uses, then run the CLI."""
from __future__ import annotations

import os
import sys
import threading
import time

from medpeft.cli_common import INTERRUPTED  # typer and rich only: nothing MONAI would import
from medpeft.startup import skip_unused_optional_packages


def main() -> None:
    skip_unused_optional_packages()  # before the CLI's imports reach MONAI
    from medpeft.cli import app
    try:
        app()
    except SystemExit as ended:
        if ended.code == INTERRUPTED:
            leave_without_stuck_threads()
        raise


def leave_without_stuck_threads(grace_s: float = 5.0) -> None:
    """After Ctrl-C, end this process even if threads a library started are still waiting: Flower's
    simulation leaves threads blocked on the Ray cluster it has shut down, and Python's exit would
    join them for ever (`medpeft federate` was still running minutes after Ctrl-C). They get
    ``grace_s`` to finish (a second Ctrl-C ends the wait); the command's own output is written and
    flushed by then."""
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon]
    deadline = time.monotonic() + grace_s
    try:
        for thread in others:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass  # asked twice: leave now
    if any(t.is_alive() for t in others):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
