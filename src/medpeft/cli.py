"""The ``medpeft`` command line: phantom, pretrain, split, adapt, evaluate, predict, export, inspect,
convert, demo.

Each command imports its machinery inside its own body (start-up time): ``medpeft --help`` and a
command that needs no network answer in a second, without loading torch, MONAI and Flower for
the other commands.
"""
from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Optional

import typer

from medpeft.adapt_defaults import ADAPT_AUGMENT, ADAPT_BF16, ADAPT_STEPS, DEFAULT_METHOD
from medpeft.cli_common import (
    VERBOSE_HELP,
    checkpoint_kept,
    console,
    method_options,
    reflow_help,
    said_on_interrupt,
    say_float32,
    say_unlearnt,
)
from medpeft.cli_common import fail as _fail
from medpeft.cli_federate import federate_command
from medpeft.cli_import import convert_command, import_weights_command
from medpeft.cli_inspect import inspect_app
from medpeft.cli_predict import predict_command
from medpeft.cli_pretrain import pretrain_command
from medpeft.progress import progress_bar
from medpeft.quiet import quiet_console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Few-shot, parameter-efficient adaptation of 3D CT segmentation models.")
app.add_typer(inspect_app, name="inspect")


@app.callback()
def main(device: str = typer.Option("auto", envvar="MEDPEFT_DEVICE",
                                    help="auto (a CUDA GPU when visible, else the CPU), cpu, cuda[:N]")
         ) -> None:
    """Few-shot, parameter-efficient adaptation of 3D CT segmentation models."""
    if device == "auto" and "MEDPEFT_DEVICE" not in os.environ:
        return  # the default, nothing to check: no PyTorch import (``medpeft CMD --help`` is quick)
    from medpeft.device import set_device
    try:
        set_device(device)
    except ValueError as err:
        _fail(err)


@app.command()
def phantom(out: Path = typer.Argument(..., help="folder to write the collection into"),
            size: str = typer.Option("demo", help="demo or tiny"),
            seed: int = typer.Option(0, help="same seed -> identical files")) -> None:
    """Write the embedded phantom CT collection (MSD folders, partially labelled sources)."""
    from medpeft.data.phantom.collection import write_collection
    try:
        with progress_bar() as progress:
            index = write_collection(out, size, seed, progress=progress)
    except ValueError as err:
        _fail(err)
    for d in json.loads(index.read_text())["datasets"]:
        console.print(f"{d['role']:>15}  {out / d['name']}  ({d['site']})")


@app.command()
def split(dataset: Path = typer.Argument(..., help="target dataset: any supported layout, or a "
                                          "folder of DICOM CT series with DICOM SEG labels"),
          k: int = typer.Option(5, help="number of labelled support volumes"),
          seed: int = typer.Option(0), n_test: int = typer.Option(6, help="held-out test volumes"),
          out: Path = typer.Option(..., help="manifest JSON to write")) -> None:
    """Sample K support volumes by seed (fixed test set) and write a manifest."""
    from medpeft.data.fewshot import make_split, write_manifest
    from medpeft.data.layouts import read_dataset
    from medpeft.data.msd import DataError
    try:
        ds = read_dataset(dataset)
        manifest = make_split(ds, k, seed, n_test)
    except (ValueError, DataError, ImportError) as err:
        _fail(err)
    show_skipped(ds)
    write_manifest(out, manifest)
    console.print(f"support: {', '.join(manifest['support'])}\ntest: {', '.join(manifest['test'])}")


def _adapter_size(adapter: Path | None, foundation) -> dict:
    """What the evaluated adapter trained (none for zero-shot): its parameters and seconds."""
    from medpeft.methods import base_parameter_count
    from medpeft.methods.adapter_io import adapter_config
    if adapter is None:
        return {"trainable": 0, "trainable_pct": 0.0, "seconds": 0.0}
    config = adapter_config(adapter)
    trainable = int(config.get("trainable_parameters", 0))
    # the backbone's own parameters: open_adapter has put a white-box adapter's sites into it
    return {"trainable": trainable, "trainable_pct": 100 * trainable / base_parameter_count(foundation.model),
            "seconds": float(config.get("train", {}).get("seconds", 0.0))}


def show_skipped(ds) -> None:
    """What a dataset reader left out (a DICOM folder's broken or unlabelled series), by name."""
    for line in ds.meta.get("skipped", []):
        console.print(f"[yellow]skipped[/]: {line}", soft_wrap=True)


def parse_rates(text: Optional[str]) -> float | dict[str, float] | None:
    """``--lr``: one rate ("0.01") or rates per group ("lora=0.03,head=0.01")."""
    if not text:
        return None
    try:
        if "=" not in text:
            return float(text)
        return {k.strip(): float(v) for k, v in (part.split("=", 1) for part in text.split(","))}
    except ValueError:
        raise ValueError(f"--lr {text!r}: give a number or group=rate pairs joined by commas "
                         "(e.g. lora=0.03,head=0.01)") from None


@app.command()
def adapt(foundation: Path = typer.Option(..., help="foundation checkpoint folder"),
          manifest: Path = typer.Option(..., help="few-shot manifest (medpeft split)"),
          method: str = typer.Option(DEFAULT_METHOD, help="full | decoder | decoder-skips | head | lora | "
                                     "bitfit | affine | adaptformer | adapter | conv-adapter | ssf | ia3, "
                                     "kinds joined by + (lora+affine), sea-peft (searched), or "
                                     "blackbox-linear | blackbox-spatial | blackbox-spatial1"),
          out: Path = typer.Option(..., help="adapter output folder"),
          steps: Optional[int] = typer.Option(
              None, min=1, help=f"training steps (default {ADAPT_STEPS}; decoder, decoder-skips, full and "
              f"sea-peft's refine: 96 per support volume, from {ADAPT_STEPS} to 960)"),
          lr: Optional[str] = typer.Option(
              None, help="one rate for all groups, or group=rate pairs (lora=0.03,head=0.01); "
              "default: each adapter kind and the head at its own rate; decoder: 3e-3 per support "
              "volume, at most 1.2e-2; full: 1e-3 per support volume, at most 4e-3; decoder-skips: "
              "1e-3 at K=1, 8e-3 from K=5 (at most 4e-3 under 240 steps); sea-peft's kinds: "
              "their rate per support volume, at most 4x; under 240 steps only decoder-skips grows"),
          rank: Optional[int] = typer.Option(None, help="LoRA rank (default 4)"),
          alpha: Optional[float] = typer.Option(None, help="LoRA alpha (default 2 x rank)"),
          targets: Optional[list[str]] = typer.Option(
              None, help="glob over module names, repeatable; 'kind:pattern' in a combination"),
          bottleneck: Optional[int] = typer.Option(None, help="adapter bottleneck width (default 8)"),
          scale: Optional[float] = typer.Option(None, help="AdaptFormer scale s (default 0.1)"),
          kernel: Optional[int] = typer.Option(None, help="conv-adapter kernel, 1 or 3 (default 3)"),
          budget: Optional[float] = typer.Option(
              None, help="sea-peft: parameter budget, a fraction of the model (0.01) or a count"),
          sea_config: Optional[Path] = typer.Option(
              None, help="sea-peft: YAML of search settings (configs/sea-peft.yaml lists them)"),
          audit_volume: Optional[str] = typer.Option(
              None, help="sea-peft: audit on this extra labelled volume instead of the support "
              "crops (the report says so)"),
          blackbox: Optional[Path] = typer.Option(
              None, help="blackbox-*: a TorchScript / ONNX model returning features, called only "
              "(default: the foundation, sealed)"),
          head_init: Optional[str] = typer.Option(
              None, help="head rows a model has not learnt: random | prototype (default: random "
              "for a novel organ's row, measured best at K >= 5; prototype for a black-box head)"),
          organ: Optional[list[str]] = typer.Option(
              None, help="an organ to segment (repeatable; default: the foundation's; one organ: "
              "a binary task; 'all': the foundation's). An organ the foundation does not know is "
              "novel: it gets a new head row. The support volumes must label every one"),
          transductive: bool = typer.Option(False, help="blackbox-*: also adapt on unlabelled scans "
                                            "of the site with the support masks' size prior"),
          unlabelled: Optional[Path] = typer.Option(None, help="--transductive: folder of the site's "
                                                    "unlabelled scans (NIfTI)"),
          gamma: float = typer.Option(0.2, help="--transductive: size band [(1-g) S, (1+g) S]"),
          patience: int = typer.Option(0, help="stop early once the training loss's moving "
                                       "average has been flat this many steps (0: never)"),
          seed: int = typer.Option(0), resume: bool = typer.Option(False),
          bf16: bool = typer.Option(ADAPT_BF16, help="bf16 autocast where the device runs it natively "
                                    "(same Dice, about 2x faster on AVX512-bf16/AMX CPUs); "
                                    "a no-op elsewhere"),
          grad_checkpoint: bool = typer.Option(False, help="recompute the Swin blocks in backward"),
          augment: str = typer.Option(ADAPT_AUGMENT, help="the support patches' augmentation: "
                                      "light | shape | phase | phase-shape"),
          verbose: bool = typer.Option(False, help=VERBOSE_HELP),
          ) -> None:
    """Few-shot adaptation; writes only the trained tensors (the delta) and their config.

    White-box methods also run under torchrun (DDP over the support volumes). With one support
    volume, decoder-skips (the default) takes 2.0 and decoder tuning 1.0 off the head's background
    bias (measured; docs/quality.md)."""
    from medpeft.infer.predict import nifti_inputs
    from medpeft.methods.sea.loop import read_sea_settings
    from medpeft.pipelines import AdaptRequest, check, unlearnt_labels
    from medpeft.pipelines import adapt as run
    from medpeft.train import distributed
    try:
        sea = {**(read_sea_settings(sea_config) if sea_config else {}),
               **({"budget": budget} if budget is not None else {})}
        if transductive and unlabelled is None:
            raise ValueError("--transductive needs --unlabelled DIR (the site's scans)")
        if head_init is not None and "@" not in method:
            method = f"{method}@{head_init}"  # the registry's spelling: head@random
        request = AdaptRequest(
            foundation, manifest, method, out, steps=steps, seed=seed, resume=resume,
            patience=patience, organs=tuple(organ or ()), lr=parse_rates(lr),
            options=method_options(rank, alpha, targets, bottleneck, scale, kernel),
            bf16=bf16, grad_checkpoint=grad_checkpoint, augment=augment, sea=sea,
            audit_volume=audit_volume,
            blackbox=blackbox, gamma=gamma,
            unlabelled=tuple(nifti_inputs(unlabelled)) if transductive else ())
        check(request)
        if distributed.is_main():
            say_float32(bf16)
            say_unlearnt(unlearnt_labels(request))
        with said_on_interrupt(partial(checkpoint_kept, out), say=distributed.is_main()), \
                quiet_console(out, console, verbose=verbose), distributed.process_group(), \
                progress_bar() as progress:
            summary = run(request, progress)
    except (ValueError, TypeError, FileNotFoundError) as err:
        _fail(err)
    if distributed.is_main():
        console.print(f"adapter: {out}  ({summary['seconds']:.1f} s)")


@app.command()
def export(adapter: Path = typer.Argument(..., help="adapter folder (medpeft adapt)"),
           foundation: Path = typer.Option(..., help="the foundation checkpoint it was trained on"),
           out: Optional[Path] = typer.Option(None, help="folder for the merged checkpoint"),
           merge: bool = typer.Option(False, "--merge", help="fold the adapter into the weights"),
           bundle: Optional[Path] = typer.Option(
               None, help="write a MONAI bundle here instead (merged weights, inference.json: "
               "runs with python -m monai.bundle, MONAI Label, 3D Slicer)")) -> None:
    """Write a stand-alone checkpoint (merged weights or a MONAI bundle).

    --merge folds LoRA (and BitFit, SSF, IA3, LayerNorm affine) into the base weights, giving a
    plain foundation checkpoint with the base model's keys; --bundle writes the same weights as a
    MONAI bundle."""
    from medpeft.methods.adapter_io import export_merged
    from medpeft.models.weights import load_foundation
    if bundle is None and not (merge and out):
        _fail(ValueError("export writes merged weights: pass --merge --out DIR, or --bundle DIR "
                         "(an unmerged adapter is already portable: its folder plus the base "
                         "checkpoint)"))
    try:
        if bundle is not None:
            from medpeft.infer.bundle import write_bundle
            write_bundle(adapter, load_foundation(foundation), bundle)
        else:
            export_merged(adapter, load_foundation(foundation), out)
    except (ValueError, FileNotFoundError, NotImplementedError) as err:
        _fail(err)
    console.print(f"MONAI bundle: {bundle}" if bundle is not None else f"merged checkpoint: {out}")


@app.command()
def evaluate(foundation: Path = typer.Option(...), manifest: Path = typer.Option(...),
             out: Path = typer.Option(..., help="folder for predictions and results"),
             adapter: Optional[Path] = typer.Option(None, help="adapter folder (none: zero-shot)"),
             blackbox: Optional[Path] = typer.Option(None, help="black-box adapters: the features "
                                                     "model they were trained on"),
             verbose: bool = typer.Option(False, help=VERBOSE_HELP)) -> None:
    """Sliding-window inference on the manifest's test volumes; per-organ Dice (CSV + JSON)."""
    from medpeft.data.fewshot import read_manifest
    from medpeft.data.layouts import read_dataset
    from medpeft.evaluate.metrics import score_model
    from medpeft.evaluate.report import results_table, write_csv
    from medpeft.io import write_json
    from medpeft.methods.adapter_io import open_adapter
    from medpeft.models.weights import load_foundation
    try:
        with quiet_console(out, console, verbose=verbose):
            f = load_foundation(foundation)
            model, classes = open_adapter(adapter, f, blackbox) if adapter else (f.model, f.classes)
            split_ = read_manifest(manifest)
            ds = read_dataset(split_["dataset"], label_files=True)
            show_skipped(ds)
            with progress_bar() as progress:
                dice, organs, rows = score_model(model, ds, split_["test"], f,
                                                 pred_dir=out / "predictions", progress=progress,
                                                 classes=classes)
    except (ValueError, FileNotFoundError, ImportError) as err:
        _fail(err)
    write_json(out / "dice.json", rows)
    record = {"setting": ds.name, "method": str(adapter or "zero-shot"), "k": len(split_["support"]),
              "mean_dice": dice, "organs": organs, **_adapter_size(adapter, f)}
    write_csv(out / "results.csv", [record])
    from medpeft.evaluate.html_report import scroller, write_html_report
    case = ds.case(split_["test"][0])
    write_html_report(out / "report.html", title=f"medpeft evaluate: {ds.name}",
                      facts={"foundation": foundation, "adapter": adapter or "none (zero-shot)",
                             "manifest": manifest}, records=[record],
                      cases=[scroller(case.image, case.label, ds.labels, {
                          record["method"]: out / "predictions" / f"{case.name}.nii.gz"})])
    console.print(results_table([record]))
    for organ, value in organs.items():
        console.print(f"  {organ:<20} {value:.3f}")
    from medpeft.evaluate.review_check import review_check, review_check_line
    console.print(review_check_line(review_check(rows)))
    console.print(f"report: {out / 'report.html'}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="run folder"),
         cache: Path = typer.Option(Path("runs/cache"), help="reused phantom data and foundation"),
         pretrain_steps: Optional[int] = typer.Option(None, min=1, help="first stage; default: the shipped "
                                                      "foundation's recipe"),
         adapt_steps: Optional[int] = typer.Option(None, min=1,
                                                   help="default: adapt's for each method and K"),
         method: Optional[list[str]] = typer.Option(
             None, help=f"methods to compare (repeatable; default {DEFAULT_METHOD}, adapt's "
             "default; the from-scratch peer runs at K=5); 'all' for every preset"),
         shots: Optional[list[int]] = typer.Option(None, help="K values (repeatable; default 1 and 5)"),
         seed: int = typer.Option(0),
         retrain: bool = typer.Option(False, help="pre-train even if the shipped model matches"),
         federated_rounds: int = typer.Option(3, help="rounds of the federated section (3 phantom "
                                              "hospitals on Flower); 0 leaves it out"),
         workers: Optional[int] = typer.Option(None, min=1, help="jobs at once (the cells, the "
                                               "federation); default one per core on a CPU"),
         verbose: bool = typer.Option(False, help=VERBOSE_HELP)) -> None:
    """The main job on the embedded phantom: adapt at K=1 and K=5, report Dice, federate.

    The foundation is pre-trained unless the shipped one matches the recipe; then three phantom
    hospitals adapt together on Flower (only adapters travel)."""
    from medpeft.experiments.demo import run_demo
    from medpeft.experiments.demo_config import DEMO_METHODS, DemoConfig
    from medpeft.methods import PRESETS
    methods = tuple(PRESETS) if method == ["all"] else tuple(method or DEMO_METHODS)
    try:
        steps = {"pretrain_steps": pretrain_steps} if pretrain_steps is not None else {}
        cfg = DemoConfig(**steps, adapt_steps=adapt_steps, methods=methods,
                         shots=tuple(shots or (1, 5)), seed=seed, retrain=retrain,
                         federated_rounds=federated_rounds, workers=workers)  # checked: before any file
        say_float32(ADAPT_BF16)  # the demo adapts with adapt's defaults
        kept = (f"the finished cells (and a finished federation) are kept in {out}; the same "
                "command resumes them, an adaptation in progress from its last checkpoint")
        with said_on_interrupt(kept), quiet_console(out, console, verbose=verbose):
            run_demo(out, cache, cfg, console)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)


@app.command()
def benchmark(config: Path = typer.Argument(..., help="grid YAML (see configs/)"),
              workers: int = typer.Option(1, min=1, help="cells at once, each in its own process "
                                          "on its share of the cores (1: one after the other; "
                                          "the cells' seconds are then each beside the others)"),
              verbose: bool = typer.Option(False, help=VERBOSE_HELP)) -> None:
    """Datasets x methods x K x seeds; resumable; results.csv, paired.csv, report.md with plots."""
    from rich.markup import escape

    from medpeft.evaluate.grid_report import write_grid_report
    from medpeft.experiments.grid import load_grid, paired, run_grid, write_rows
    try:
        cfg = load_grid(config)
        failures: list[str] = []
        kept = f"the finished cells are kept in {cfg.out}; the same command resumes the grid"
        with said_on_interrupt(kept), quiet_console(cfg.out, console, verbose=verbose), \
                progress_bar() as progress:
            rows, datasets = run_grid(cfg, progress, failures, workers=workers)
            out = Path(cfg.out)
            pairs = paired(rows, cfg.reference or cfg.methods[0])
            if pairs:
                write_rows(out / "paired.csv", pairs, tuple(pairs[0]))
            report = write_grid_report(out, rows, pairs, datasets,
                                       command=f"medpeft benchmark {config}")
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"{len(rows)} rows in {out / 'results.csv'}; report: {report}")
    for failure in failures:
        console.print(f"[bold red]not run:[/] {escape(failure)}", soft_wrap=True)
    if failures:
        raise typer.Exit(code=1)


app.command("pretrain")(pretrain_command)
app.command("federate")(federate_command)
app.command("predict")(predict_command)
app.command("import-weights")(import_weights_command)
app.command("convert")(convert_command)
reflow_help(app)

if __name__ == "__main__":
    app()
