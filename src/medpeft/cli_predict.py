"""``medpeft predict``: segment NIfTI volumes or DICOM CT series, in each input's geometry."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from medpeft.cli_common import VERBOSE_HELP, console, said_on_interrupt
from medpeft.cli_common import fail as _fail
from medpeft.quiet import quiet_console


def predict_command(base: Path = typer.Option(..., help="foundation checkpoint folder"),
            adapter: Optional[Path] = typer.Option(None, help="adapter folder (none: the base model)"),
            inp: Path = typer.Option(..., "--in", help="a NIfTI file, a folder of them, or a folder "
                                     "of DICOM CT series (any names; found by SeriesInstanceUID)"),
            out: Path = typer.Option(..., help="folder for one label map per input"),
            fmt: str = typer.Option("nifti", "--format", help="nifti | dicom-seg (DICOM input: "
                                    "a DICOM Segmentation over each series)"),
            overwrite: bool = typer.Option(False, help="redo outputs that already exist"),
            blackbox: Optional[Path] = typer.Option(None, help="black-box adapters: the features "
                                                    "model they were trained on"),
            largest_component: bool = typer.Option(False, help="keep each organ's largest "
                                                   "connected component"),
            bf16: bool = typer.Option(False, help="bf16 autocast where the device runs it "
                                      "natively (see benchmarks/scaling.py)"),
            verbose: bool = typer.Option(False, help=VERBOSE_HELP)) -> None:
    """Segment CT volumes; each label map keeps its input's geometry (canonical organ ids)."""
    from medpeft.data.dicom import is_dicom_folder
    from medpeft.infer.predict import nifti_inputs, predict_files
    from medpeft.methods.adapter_io import open_adapter
    from medpeft.models.weights import load_foundation
    from medpeft.progress import progress_bar
    try:
        if fmt not in ("nifti", "dicom-seg"):
            raise ValueError(f"unknown --format {fmt!r}: nifti | dicom-seg")
        dicom = is_dicom_folder(inp)
        if fmt == "dicom-seg" and not dicom:
            raise ValueError(f"--format dicom-seg needs DICOM input; {inp} holds NIfTI or nothing")
        f = load_foundation(base)
        model, classes = open_adapter(adapter, f, blackbox) if adapter else (f.model, f.classes)
        inputs = None if dicom else nifti_inputs(inp)
        with said_on_interrupt(lambda: _kept_predictions(out)), \
                quiet_console(out, console, verbose=verbose), progress_bar() as progress:
            if dicom:
                from medpeft.infer.dicom_predict import predict_series
                written, failures = predict_series(
                    model, inp, out, f.preprocessing, classes=classes, fmt=fmt, overwrite=overwrite,
                    progress=progress, largest_component=largest_component, bf16=bf16)
            else:
                written, failures = predict_files(model, inputs, out, f.preprocessing, classes=classes,
                                                  overwrite=overwrite, progress=progress,
                                                  largest_component=largest_component, bf16=bf16)
    except (ValueError, FileNotFoundError, ImportError) as err:
        _fail(err)
    console.print(f"{len(written)} label maps in {out} (organ ids: {out / 'labels.json'})")
    _print_review(out, written)
    if failures:
        console.print(f"[bold red]{len(failures)} input(s) failed:[/]")
        for path, why in failures.items():
            console.print(f"  - {path}: {why}", soft_wrap=True)
        raise typer.Exit(code=1)


def _print_review(out: Path, written: list[Path]) -> None:
    """The organs of this run's outputs that a reader should check (``review.csv``)."""
    from medpeft.infer.predict import output_case
    from medpeft.infer.review import REVIEW_BELOW, REVIEW_FILE, flagged
    if not written:
        return
    rows = flagged(out, {output_case(p) for p in written})
    if not rows:
        console.print(f"every organ found with confidence >= {REVIEW_BELOW:.2f} ({out / REVIEW_FILE})")
        return
    console.print(f"{len(rows)} organ(s) to review (confidence under {REVIEW_BELOW:.2f} or not found; "
                  f"every organ's volume and confidence: {out / REVIEW_FILE}):")
    for r in rows:
        # truncated, not rounded: 0.79996 reads 0.799, under the threshold it was flagged by
        detail = f"confidence {math.floor(float(r['confidence']) * 1000) / 1000:.3f}, " \
                 f"{float(r['volume_ml']):.1f} mL" if r["confidence"] else "no voxel"
        console.print(f"  - {r['case']} {r['organ']}: {r['review']} ({detail})", soft_wrap=True)


def _kept_predictions(out: Path) -> str:
    """What an interrupted prediction left: its finished outputs (each written whole), which a
    re-run keeps and does not redo."""
    done = sum(1 for p in out.iterdir() if p.name.endswith((".nii.gz", ".dcm"))) if out.is_dir() else 0
    return (f"{done} finished output(s) are kept in {out}; the same command predicts the rest "
            "(--overwrite redoes them)")
