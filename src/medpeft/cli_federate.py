"""``medpeft federate``: federated few-shot PEFT over several hospitals on Flower."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medpeft.cli_common import VERBOSE_HELP, console, fail, said_on_interrupt
from medpeft.quiet import quiet_console


def federate_command(
        config: Path = typer.Argument(..., help="federation YAML (see configs/federated-phantom.yaml)"),
        deployment: bool = typer.Option(False, help="run on local flower-superlink / "
                                        "flower-supernode processes instead of the simulation"),
        rounds: Optional[int] = typer.Option(None, min=1, help="override the YAML's rounds"),
        local_steps: Optional[int] = typer.Option(None, min=1, help="override the YAML's local steps a "
                                                  "round (default 40, the measured best)"),
        server_lr: Optional[float] = typer.Option(None, help="override the YAML's server step "
                                                  "(default 1, plain FedAvg: the measured best "
                                                  "for SEA-PEFT)"),
        plan: Optional[str] = typer.Option(None, help="override the YAML's plan: sea-peft "
                                           "(default, the measured best) | affine (the best "
                                           "fixed plan: with dp or local tensors) | "
                                           "encoder-lora+head | lora-everywhere | lora+affine | "
                                           "decoder | full"),
        aggregation: Optional[str] = typer.Option(None, help="override the YAML's aggregation: "
                                                  "fedavg (default) | svd | ffa (FFA-LoRA)"),
        out: Optional[Path] = typer.Option(None, help="override the YAML's run folder"),
        verbose: bool = typer.Option(False, help=VERBOSE_HELP)) -> None:
    """Sites adapt on their own volumes; only adapter tensors travel; bytes are counted."""
    try:
        from medpeft.federated.config import load_fed_config
        from medpeft.federated.run import federate
    except ImportError as err:
        fail(ImportError(f"{err}: install the federated extra: pip install 'medpeft[fed]'"))
    try:
        cfg = load_fed_config(config)
        for key, value in (("rounds", rounds), ("local_steps", local_steps), ("plan", plan),
                           ("aggregation", aggregation), ("server_lr", server_lr),
                           ("out", out and str(out))):
            if value is not None:
                setattr(cfg, key, value)
        lost = f"the federation in {cfg.out} did not finish; the same command starts it anew"
        with said_on_interrupt(lost), quiet_console(cfg.out, console, verbose=verbose):
            report = federate(cfg, deployment=deployment)
        out = Path(report["out"])
    except typer.Exit:  # Ctrl-C, said (typer's Exit is a RuntimeError)
        raise
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        fail(err)
    from medpeft.federated.demo import federation_table
    console.print(federation_table(report, cfg))
    console.print(f"report (per-round bytes, excluded replies): {out / 'report.md'}")
    if report["excluded"]:
        console.print(f"[yellow]{len(report['excluded'])} hospital replies were left out (see report.md)[/]")
