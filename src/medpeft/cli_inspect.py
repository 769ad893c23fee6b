"""``medpeft inspect``: adapter sites and trainable counts of a backbone, dataset folders,
published checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medpeft.cli_common import console, method_options, warn_if_trusted
from medpeft.cli_common import fail as _fail

inspect_app = typer.Typer(no_args_is_help=True,
                          help="Look inside a backbone, a dataset folder or a checkpoint.")


def _model_for_inspection(foundation: Optional[Path], backbone: str):
    from medpeft.models.backbones import PRESETS, build_backbone
    from medpeft.models.weights import load_foundation
    if foundation is not None:
        return load_foundation(foundation).model
    if backbone not in PRESETS:
        _fail(ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(PRESETS)}"))
    return build_backbone(PRESETS[backbone], 2)


@inspect_app.command("sites")
def inspect_sites(foundation: Optional[Path] = typer.Option(
                      None, help="checkpoint (default: a fresh backbone)"),
                  backbone: str = typer.Option("swin-fast"),
                  kind: Optional[list[str]] = typer.Option(None, help="adapter kind (repeatable)"),
                  rank: Optional[int] = typer.Option(None), bottleneck: Optional[int] = typer.Option(None),
                  summary: bool = typer.Option(False, help="one line per kind")) -> None:
    """Every place each adapter kind can go, with its exact parameter cost."""
    from rich.table import Table

    from medpeft.adapters.kinds import KINDS, candidate_sites
    from medpeft.models.backbones import count_parameters
    model = _model_for_inspection(foundation, backbone)
    total = count_parameters(model)
    shared = {"rank": rank, "bottleneck": bottleneck}
    options = {k: {o: v for o, v in shared.items() if v is not None and o in KINDS[k].options}
               for k in KINDS}
    try:
        rows = candidate_sites(model, kind or None, options=options)
    except ValueError as err:
        _fail(err)
    table = Table(title=f"candidate adapter sites ({total:,} model parameters)")
    if summary:
        for col in ("kind", "sites", "parameters", "% of model", "what it does"):
            table.add_column(col, justify="left" if col in ("kind", "what it does") else "right")
        for k in dict.fromkeys(r["kind"] for r in rows):
            n = sum(r["n_params"] for r in rows if r["kind"] == k)
            table.add_row(k, str(sum(r["kind"] == k for r in rows)), f"{n:,}",
                          f"{100 * n / total:.3f}", KINDS[k].doc)
    else:
        for col in ("kind", "location", "layer", "parameters", "% of model"):
            table.add_column(col, justify="right" if col in ("parameters", "% of model") else "left")
        for r in rows:
            table.add_row(r["kind"], r["location"], r["layer"], f"{r['n_params']:,}",
                          f"{100 * r['n_params'] / total:.4f}")
    console.print(table)


@inspect_app.command("model")
def inspect_model(foundation: Optional[Path] = typer.Option(
                      None, help="checkpoint (default: a fresh backbone)"),
                  backbone: str = typer.Option("swin-fast"),
                  method: str = typer.Option("full", help="method whose trainable set to count"),
                  rank: Optional[int] = typer.Option(None),
                  bottleneck: Optional[int] = typer.Option(None)) -> None:
    """Trainable vs frozen parameters of each part (encoder, decoder, head, adapter sites)."""
    from rich.table import Table

    from medpeft.adapters.base import sites_of
    from medpeft.methods import apply_method
    from medpeft.models.backbones import part_of
    model = _model_for_inspection(foundation, backbone)
    try:
        state = apply_method(model, method, method_options(rank, None, None, bottleneck, None, None))
    except (ValueError, TypeError) as err:
        _fail(err)
    adapter_ids = {id(p) for s in sites_of(model) for p in s.adapter_parameters()}
    counts: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        part = "adapter sites" if id(p) in adapter_ids else part_of(name.replace(".base.", "."))
        row = counts.setdefault(part, [0, 0])
        row[0 if p.requires_grad else 1] += p.numel()
    table = Table(title=f"method {method}: {len(state.sites)} adapter sites")
    for col in ("part", "trainable", "frozen"):
        table.add_column(col, justify="left" if col == "part" else "right")
    for part, (trainable, frozen) in counts.items():
        table.add_row(part, f"{trainable:,}", f"{frozen:,}")
    n_train = sum(r[0] for r in counts.values())
    n_base = sum(r[0] + r[1] for k, r in counts.items() if k != "adapter sites")
    table.add_row("total", f"{n_train:,}", f"{sum(r[1] for r in counts.values()):,}")
    console.print(table)
    console.print(f"trainable: {n_train:,} = {100 * n_train / n_base:.3f}% of the {n_base:,} "
                  "base parameters")


@inspect_app.command("data")
def inspect_data(folder: Path = typer.Argument(..., help="dataset folder, any supported layout"),
                 layout: Optional[str] = typer.Option(None, help="msd | amos | flare22 | btcv | "
                                                      "kits19 | totalsegmentator (default: detect)"),
                 quick: bool = typer.Option(False, help="headers only: skip reading label voxels")
                 ) -> None:
    """Layout, volumes, spacing and shape ranges, organs, label coverage and every problem found.

    A folder of DICOM files: its series by UID, with every series' problems."""
    from rich.table import Table

    from medpeft.data.dicom import is_dicom_folder
    from medpeft.data.layouts import read_dataset
    if is_dicom_folder(folder):
        _inspect_dicom(folder)
        return
    from medpeft.data.msd import DataError
    from medpeft.data.survey import survey
    from medpeft.progress import progress_bar
    try:
        ds = read_dataset(folder, layout)
    except DataError as err:
        _fail(err)
    with progress_bar() as progress:
        s = survey(ds, read_labels=not quick, progress=progress)
    fmt = lambda t: " x ".join(f"{v:g}" for v in t) if t else "-"  # noqa: E731
    console.print(f"[bold]{s.name}[/] ({s.layout} layout): {s.n_cases} volumes\n"
                  f"  spacing (mm) {fmt(s.spacing_min)} .. {fmt(s.spacing_max)}\n"
                  f"  shape        {fmt(s.shape_min)} .. {fmt(s.shape_max)}")
    if s.sites:
        console.print("  sites        " + ", ".join(f"{k}: {n}" for k, n in sorted(s.sites.items())))
    table = Table(title="labels")
    for col in ("label", "canonical organ", "volumes with it"):
        table.add_column(col, justify="right" if col == "volumes with it" else "left")
    for name, organs in s.organs.items():
        table.add_row(name, organs or "[dim](not modelled)[/]",
                      "-" if quick else f"{s.coverage.get(name, 0)} / {s.n_cases}")
    console.print(table)
    if s.problems:
        console.print(f"[bold red]{len(s.problems)} problem(s):[/]")
        for problem in s.problems:
            console.print(f"  - {problem}", soft_wrap=True)
        raise typer.Exit(code=1)
    console.print("[green]no problems found[/]")


@inspect_app.command("checkpoint")
def inspect_checkpoint(path: Path = typer.Argument(..., help="published checkpoint file (.pt/.pth)"),
                       kind: str = typer.Option(..., help="fseft | monai-ssl | btcv | universal | "
                                                "suprem | universal-unet | suprem-unet"),
                       trust_checkpoint: bool = typer.Option(
                           False, help="unpickle in full (weights_only=False): may run code")) -> None:
    """Load a published checkpoint into the swin-base backbone and report every key's fate."""
    from collections import Counter

    from medpeft.models.backbones import part_of
    from medpeft.models.checkpoint_file import UnsafeCheckpointError
    from medpeft.models.published import CheckpointError, load_published
    warn_if_trusted(trust_checkpoint, path)
    try:
        _, report = load_published(path, kind, trust=trust_checkpoint)
    except (CheckpointError, UnsafeCheckpointError, FileNotFoundError, RuntimeError) as err:
        _fail(err)
    loaded = Counter(part_of(k) for k in report.loaded)
    new = Counter(part_of(k) for k in report.new)
    for part in ("encoder", "decoder", "head"):
        console.print(f"{part:>8}: {loaded[part]} tensors loaded, {new[part]} new")
    pp = report.preprocessing
    console.print(f"its preprocessing: {pp.spacing} mm, HU {pp.hu_window} -> [0, 1], ROI {pp.patch}")
    if report.ignored:
        console.print(f"ignored (not part of the backbone): {', '.join(report.ignored)}",
                      soft_wrap=True)


def _inspect_dicom(folder: Path) -> None:
    """Every series of a DICOM folder by UID; missing slices, uneven spacing, mixed orientations
    and non-CT series are listed by UID and the rest are still shown."""
    from rich.table import Table

    from medpeft.data.dicom import find_series
    series = find_series(folder)
    table = Table(title=f"DICOM series in {folder}")
    for col in ("SeriesInstanceUID", "modality", "slices", "description", "status"):
        table.add_column(col, overflow="fold")
    labels = [s for s in series if s.modality == "SEG"]  # ground truth of a labelled folder
    for s in series:
        status = "labels (SEG)" if s in labels else "ok" if s.usable else "[red]problem[/]"
        table.add_row(s.uid, s.modality, str(len(s.files)), s.description, status)
    console.print(table)
    problems = [p for s in series if s not in labels for p in s.problems]
    if problems:
        console.print(f"[bold red]{len(problems)} problem(s):[/]")
        for problem in problems:
            console.print(f"  - {problem}", soft_wrap=True)
        raise typer.Exit(code=1)
    console.print("[green]no problems found[/]")
