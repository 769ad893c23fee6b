"""What the command-line modules share: the console, the error exit, method options."""
from __future__ import annotations

from typing import Optional

import typer
from rich import get_console

# rich's global console: progress bars (which default to it) and medpeft's own lines share one
# console, which medpeft.quiet keeps on the terminal while library output goes to log.txt
console = get_console()


def fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", soft_wrap=True)  # one line, however long
    raise typer.Exit(code=2)


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
