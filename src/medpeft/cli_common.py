"""What the command-line modules share: the console, the error exit, method options."""
from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich import get_console

# rich's global console: progress bars (which default to it) and medpeft's own lines share one
# console, which medpeft.quiet keeps on the terminal while library output goes to log.txt
console = get_console()


def fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", soft_wrap=True)  # one line, however long
    raise typer.Exit(code=2)


def reflow_help(app: typer.Typer) -> None:
    """Join the lines of each paragraph of ``app``'s command docstrings (sub-apps included): rich
    help keeps a docstring's line breaks, which then break mid-sentence at any other width."""
    for command in app.registered_commands:
        doc = inspect.getdoc(command.callback) or ""
        command.callback.__doc__ = "\n\n".join(" ".join(p.split()) for p in doc.split("\n\n"))
    for group in app.registered_groups:
        reflow_help(group.typer_instance)


VERBOSE_HELP = "also show library warnings and Flower's log lines (always in OUT/log.txt)"


def warn_if_trusted(trust: bool, path) -> None:
    """Say it out loud when a checkpoint is about to be unpickled in full."""
    if trust:
        console.print(f"[bold yellow]warning:[/] {path}: --trust-checkpoint unpickles the file in "
                      "full (weights_only=False); it can run code while it loads")


def method_options(rank: Optional[int], alpha: Optional[float], targets: Optional[list[str]],
                   bottleneck: Optional[int], scale: Optional[float], kernel: Optional[int]) -> dict:
    """The options given on the command line (the method's own defaults fill the rest)."""
    given = {"rank": rank, "alpha": alpha, "targets": targets or None, "bottleneck": bottleneck,
             "scale": scale, "kernel": kernel}
    return {k: v for k, v in given.items() if v is not None}


def say_float32(bf16: bool) -> None:
    """Tell the user, before a long run, that bf16 was asked for but will not run here."""
    from medpeft.device import float32_notice, resolve_device
    notice = float32_notice(resolve_device(), bf16)
    if notice:
        console.print(f"[yellow]{notice}[/yellow]")


def say_unlearnt(labels: list[str]) -> None:
    """Name the support labels an adapter will not learn, and how to learn them."""
    if labels:
        console.print(f"[yellow]not learnt (the foundation does not segment them; their voxels "
                      f"count as background): {', '.join(labels)}. To learn them, list every organ "
                      f"to segment with --organ (an organ the foundation does not know gets a new "
                      f"head row).[/yellow]")


INTERRUPTED = 130  # the exit code a shell gives a command ended by Ctrl-C


@contextmanager
def said_on_interrupt(what_is_kept: str | Callable[[], str], *, say: bool = True
                      ) -> Iterator[None]:
    """Ctrl-C ends a long command with one line saying what was kept and how to go on (a callable:
    read when Ctrl-C comes), and exit code INTERRUPTED; without it the user saw the progress bar
    stop and nothing else. ``say``: False in the ranks of a distributed run other than the first."""
    try:
        yield
    except KeyboardInterrupt:
        if say:
            kept = what_is_kept if isinstance(what_is_kept, str) else what_is_kept()
            console.print(f"\n[yellow]interrupted:[/] {kept}", soft_wrap=True)
        raise typer.Exit(INTERRUPTED) from None


def checkpoint_kept(out: Path) -> str:
    """What an interrupted training run in ``out`` left (its last checkpoint), and how to go on."""
    latest = Path(out) / "checkpoints" / "latest.json"
    try:
        step = json.loads(latest.read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"no checkpoint had been written in {out} yet; run the command again"
    return (f"step {step} is kept in {latest.parent}; the same command with --resume continues "
            "from it")
