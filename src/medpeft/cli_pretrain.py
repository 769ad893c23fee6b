"""``medpeft pretrain``: the foundation model, on one process or as DDP ranks under torchrun."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Optional

import typer

from medpeft.cli_common import checkpoint_kept, console, fail, said_on_interrupt, say_float32


def pretrain_command(source: list[Path] = typer.Option(..., help="source MSD folder (repeat the option)"),
             out: Path = typer.Option(..., help="foundation checkpoint folder"),
             backbone: str = typer.Option("swin-fast", help="swin-fast | swin-wide | swin-small | swin-base"),
             steps: int = typer.Option(400, min=1), lr: float = typer.Option(2e-3),
             seed: int = typer.Option(0),
             checkpoint_every: int = typer.Option(50, min=1, help="steps between checkpoints (a crash "
                                                  "loses at most this many)"),
             snapshot_every: int = typer.Option(0, help="keep the weights every N steps in "
                                                "OUT/snapshots (the pre-training curve; "
                                                "checkpoints keep only the newest); 0: none"),
             bf16: bool = typer.Option(False, help="bf16 autocast (where the device runs it "
                                       "natively: bf16 GPUs, AVX512-bf16/AMX CPUs)"),
             grad_checkpoint: bool = typer.Option(False, help="recompute the Swin blocks in "
                                                  "backward: less memory, more time"),
             channels_last: Optional[bool] = typer.Option(
                 None, "--channels-last/--no-channels-last",
                 help="channels-last 3D weights and crops (default: with --bf16 where it runs "
                      "natively, 1.2-1.4x for full training on an AVX512-bf16 CPU)"),
             cache_dir: Optional[Path] = typer.Option(None, help="keep preprocessed volumes on "
                                                      "disk here, keyed by the preprocessing "
                                                      "(default: in memory)"),
             workers: int = typer.Option(0, help="data-loading worker processes"),
             augment: str = typer.Option("contrast", help="augmentation: contrast (each "
                                         "labelled organ's intensity moved by its own random "
                                         "offset, as contrast phases do; measured best for a "
                                         "first stage) | contrast-shape (contrast, and random "
                                         "rotation and scaling; for continued stages) | phase, "
                                         "phase-shape (contrast, contrast-shape with a random "
                                         "intensity curve, noise and blur: v6's) | "
                                         "soft-phase-shape (phase-shape, organ offsets blurred "
                                         "across their edges) | enhancement-shape (phase-shape "
                                         "with each organ's textbook contrast enhancement "
                                         "instead of random offsets) | contrast-strong-shape "
                                         "(contrast-shape, rotation and scaling on 80% of the "
                                         "patches and by up to 30%) | shape | light (scale "
                                         "and shift only)"),
             steady_organ: list[str] = typer.Option([], "--steady-organ", help="an organ the "
                                                    "random per-organ offsets never move "
                                                    "(repeat for more); the shipped foundation's "
                                                    "(v8) last stages hold the spleen, whose thin "
                                                    "crescents are found by their intensity step"),
             init: Optional[Path] = typer.Option(None, help="start from this foundation's "
                                                 "weights (continued pre-training; same "
                                                 "backbone and organs)"),
             sampling: str = typer.Option("organ-balanced", help="organ-balanced (every organ the "
                                          "same share of the draws, however few datasets label "
                                          "it; measured best) | uniform (every volume equally)"),
             preprocessing: Optional[str] = typer.Option(
                 None, help="working grid and intensity window: cpu-fast (5 mm, 64x64x32 "
                 "patches; the default) | seed-1.5mm | btcv | monai-ssl; with --init, by "
                 "default the foundation's own"),
             spacing: Optional[tuple[float, float, float]] = typer.Option(
                 None, help="working spacing X Y Z in mm, overriding the preset's (or the --init "
                 "foundation's)"),
             patch: Optional[tuple[int, int, int]] = typer.Option(
                 None, help="training ROI X Y Z in voxels (each a multiple of 32), overriding "
                 "the preset's (or the --init foundation's); inference uses the same"),
             resume: bool = typer.Option(False, help="continue from the last checkpoint")) -> None:
    """Supervised pre-training with the partial-label (marginal) loss.

    Several processes: torchrun --nproc-per-node N $(which medpeft) pretrain ... (DDP; gloo on
    CPU, NCCL on GPUs)."""
    from medpeft.progress import progress_bar
    from medpeft.train import distributed
    from medpeft.train.loop import LoopConfig
    from medpeft.train.pretrain import finished
    from medpeft.train.pretrain import pretrain as run
    try:
        if resume and finished(out, steps) and distributed.is_main():
            console.print(f"{out} already holds the foundation of {steps} steps; nothing to "
                          "resume")
        pp = working_grid(preprocessing, spacing, patch=patch, init=init)
        if distributed.is_main():
            say_float32(bf16)
        with said_on_interrupt(partial(checkpoint_kept, out), say=distributed.is_main()), \
                distributed.process_group(), progress_bar() as progress:
            run(source, out, backbone, pp, loop=LoopConfig(steps=steps, lr=lr, seed=seed,
                                                       checkpoint_every=checkpoint_every,
                                                       snapshot_every=snapshot_every,
                                                       log_every=min(10, checkpoint_every),
                                                       bf16=bf16, grad_checkpoint=grad_checkpoint,
                                                       channels_last=channels_last,
                                                       workers=workers),
                resume=resume, progress=progress, cache_dir=cache_dir, augment=augment,
                sampling=sampling, init=init, steady_organs=tuple(steady_organ))
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    if distributed.is_main():
        console.print(f"foundation model: {out}")


def working_grid(preset: str | None, spacing: tuple[float, float, float] | None, *,
                 patch: tuple[int, int, int] | None = None, init: Path | None = None):
    """The preprocessing of the run: preset ``preset`` (by default the ``init`` foundation's own,
    or the 5 mm CPU preset), at ``spacing`` and with ROI ``patch`` when given; None leaves the
    choice to :func:`pretrain`, which makes the same one. Swin UNETR halves the grid five times,
    so each side of the ROI must be a multiple of 32."""
    from dataclasses import replace

    from medpeft.data.transforms import PRESETS
    from medpeft.models.weights import describe_foundation
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"--preprocessing {preset!r} is not one of {sorted(PRESETS)}")
    if spacing is not None and min(spacing) <= 0:
        raise ValueError(f"--spacing must be positive millimetres, not {spacing}")
    if patch is not None and any(side <= 0 or side % 32 for side in patch):
        raise ValueError(f"--patch sides must be positive multiples of 32 voxels, not {patch}")
    if spacing is None and patch is None:
        return PRESETS[preset] if preset else None
    base = (PRESETS[preset] if preset else
            describe_foundation(init).preprocessing if init else PRESETS["cpu-fast"])
    return replace(base, spacing=tuple(spacing or base.spacing), patch=tuple(patch or base.patch))
