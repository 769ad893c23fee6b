"""A quiet console: library chatter goes to the run folder's ``log.txt``, results stay on screen.

MONAI's FutureWarnings, Flower's INFO lines (with raw colour codes when not on a terminal), Ray's
forwarded actor output and child processes (nnU-Net, Flower's superlink) would otherwise bury the
tables a user came for. Inside :func:`quiet_console` medpeft's own console keeps the terminal,
while Python warnings, Flower's logger and, where stdout is a real file descriptor, everything
else written to file descriptors 1 and 2 (child processes included) are appended to ``log.txt``.
``verbose=True`` keeps everything on screen and still writes warnings and Flower's lines to the log.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from rich.console import Console

LOG_NAME = "log.txt"


def _real_stdout() -> bool:
    """True when sys.stdout writes straight to file descriptor 1 (not a test runner's buffer)."""
    try:
        return sys.stdout is sys.__stdout__ and sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        return False


@contextmanager
def _warnings_to(log: IO[str], verbose: bool) -> Iterator[None]:
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        log.write(warnings.formatwarning(message, category, filename, lineno, line))
        log.flush()
        if verbose:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


@contextmanager
def _flower_to(log: IO[str], verbose: bool) -> Iterator[None]:
    """Flower's logger writes to the log (and, verbose, still to its console handler)."""
    flower = logging.getLogger("flwr")
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved = list(flower.handlers), flower.propagate
    if not verbose:
        for h in saved[0]:
            flower.removeHandler(h)
        flower.propagate = False
    flower.addHandler(handler)
    try:
        yield
    finally:
        flower.removeHandler(handler)
        for h in saved[0]:
            if h not in flower.handlers:
                flower.addHandler(h)
        flower.propagate = saved[1]


@contextmanager
def _descriptors_to(log: IO[str], console: Console) -> Iterator[None]:
    """File descriptors 1 and 2 (this process and its children) into the log; the console keeps
    a duplicate of the terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    previous_file = getattr(console, "_file", None)  # None: follow sys.stdout, as before
    console.file = terminal
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        console.file = previous_file
        terminal.close()


@contextmanager
def quiet_console(run_dir: str | Path, console: Console, *, verbose: bool = False) -> Iterator[Path]:
    """Run the body with library output in ``run_dir/log.txt`` (appended); yields its path."""
    path = Path(run_dir) / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log, ExitStack() as stack:
        stack.enter_context(_warnings_to(log, verbose))
        stack.enter_context(_flower_to(log, verbose))
        if not verbose and _real_stdout():
            stack.enter_context(_descriptors_to(log, console))
        yield path
