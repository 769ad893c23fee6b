"""The commands that bring outside material into medpeft's formats: a published checkpoint as a
foundation folder, a dataset in any supported layout as an MSD folder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medpeft.cli_common import console, fail, warn_if_trusted
from medpeft.progress import progress_bar


def import_weights_command(
        path: Path = typer.Argument(..., help="published checkpoint (.pt/.pth)"),
        kind: str = typer.Option(..., help="fseft | monai-ssl | btcv | universal | suprem | "
                                           "universal-unet | suprem-unet"),
        out: Path = typer.Option(..., help="foundation folder to write"),
        classes: Optional[str] = typer.Option(
            None, help="organs of a new head, comma-separated (checkpoints without one)"),
        trust_checkpoint: bool = typer.Option(
            False, help="unpickle in full (weights_only=False): may run code")) -> None:
    """Turn a published checkpoint into a medpeft foundation folder (strict key check)."""
    from medpeft.models.checkpoint_file import UnsafeCheckpointError
    from medpeft.models.published import CheckpointError, import_checkpoint
    warn_if_trusted(trust_checkpoint, path)
    try:
        folder, report = import_checkpoint(path, kind, out, tuple(classes.split(",")) if classes
                                           else None, trust=trust_checkpoint)
    except (CheckpointError, UnsafeCheckpointError, FileNotFoundError, RuntimeError) as err:
        fail(err)
    console.print(f"foundation: {folder} ({len(report.loaded)} tensors loaded, "
                  f"{len(report.new)} new, {len(report.ignored)} ignored)")


def convert_command(
        folder: Path = typer.Argument(..., help="dataset folder, any supported layout"),
        out: Path = typer.Argument(..., help="MSD folder to write (images are linked)"),
        layout: Optional[str] = typer.Option(None, help="default: detect")) -> None:
    """Write a dataset as an MSD folder (per-structure masks combined into one label map)."""
    from medpeft.data.layouts import read_dataset, write_msd
    from medpeft.data.msd import DataError, check_dataset
    try:
        ds = read_dataset(folder, layout)
        check_dataset(ds)
        with progress_bar() as progress:
            write_msd(ds, out, progress)
    except DataError as err:
        fail(err)
    console.print(f"{len(ds.cases)} cases of {ds.name} written to {out}")
