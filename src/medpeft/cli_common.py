"""What the command-line modules share: the console, the error exit, method options."""
from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

console = Console()


def fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


def method_options(rank: Optional[int], alpha: Optional[float], targets: Optional[list[str]],
                   bottleneck: Optional[int], scale: Optional[float], kernel: Optional[int]) -> dict:
    """The options given on the command line (the method's own defaults fill the rest)."""
    given = {"rank": rank, "alpha": alpha, "targets": targets or None, "bottleneck": bottleneck,
             "scale": scale, "kernel": kernel}
    return {k: v for k, v in given.items() if v is not None}
