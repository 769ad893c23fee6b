"""The ``medpeft`` command line: phantom, pretrain, split, adapt, evaluate, demo."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Few-shot, parameter-efficient adaptation of 3D CT segmentation models.")
console = Console()


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(code=2)


@app.command()
def phantom(out: Path = typer.Argument(..., help="folder to write the collection into"),
            size: str = typer.Option("demo", help="demo or tiny"),
            seed: int = typer.Option(0, help="same seed -> identical files")) -> None:
    """Write the embedded phantom CT collection (MSD folders, partially labelled sources)."""
    from medpeft.data.phantom.collection import write_collection
    from medpeft.demo import progress_bar
    try:
        with progress_bar() as progress:
            index = write_collection(out, size, seed, progress=progress)
    except ValueError as err:
        _fail(err)
    for d in json.loads(index.read_text())["datasets"]:
        console.print(f"{d['role']:>15}  {out / d['name']}  ({d['site']})")


@app.command()
def pretrain(source: list[Path] = typer.Option(..., help="source MSD folder (repeat the option)"),
             out: Path = typer.Option(..., help="foundation checkpoint folder"),
             backbone: str = typer.Option("swin-fast", help="swin-fast | swin-small | swin-base"),
             steps: int = typer.Option(400), lr: float = typer.Option(2e-3),
             seed: int = typer.Option(0),
             resume: bool = typer.Option(False, help="continue from the last checkpoint")) -> None:
    """Supervised pre-training with the partial-label (marginal) loss."""
    from medpeft.demo import progress_bar
    from medpeft.train.loop import LoopConfig
    from medpeft.train.pretrain import pretrain as run
    try:
        with progress_bar() as progress:
            run(source, out, backbone, loop=LoopConfig(steps=steps, lr=lr, seed=seed),
                resume=resume, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"foundation model: {out}")


@app.command()
def split(dataset: Path = typer.Argument(..., help="target MSD folder"),
          k: int = typer.Option(5, help="number of labelled support volumes"),
          seed: int = typer.Option(0), n_test: int = typer.Option(6, help="held-out test volumes"),
          out: Path = typer.Option(..., help="manifest JSON to write")) -> None:
    """Sample K support volumes by seed (fixed test set) and write a manifest."""
    from medpeft.data.fewshot import make_split, write_manifest
    from medpeft.data.msd import DataError, load_msd
    try:
        manifest = make_split(load_msd(dataset), k, seed, n_test)
    except (ValueError, DataError) as err:
        _fail(err)
    write_manifest(out, manifest)
    console.print(f"support: {', '.join(manifest['support'])}\ntest: {', '.join(manifest['test'])}")


@app.command()
def adapt(foundation: Path = typer.Option(..., help="foundation checkpoint folder"),
          manifest: Path = typer.Option(..., help="few-shot manifest (medpeft split)"),
          method: str = typer.Option("lora", help="full | decoder | head | lora"),
          out: Path = typer.Option(..., help="adapter output folder"),
          steps: int = typer.Option(80), lr: Optional[float] = typer.Option(None),
          rank: int = typer.Option(4, help="LoRA rank"), seed: int = typer.Option(0),
          resume: bool = typer.Option(False)) -> None:
    """Few-shot adaptation; writes only the trained tensors (the delta) and their config."""
    from medpeft.demo import progress_bar
    from medpeft.train.adapt import adapt as run
    options = {"rank": rank} if method == "lora" else {}
    try:
        with progress_bar() as progress:
            summary = run(foundation, manifest, method, out, options, steps, lr, seed, resume,
                          progress)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    console.print(f"adapter: {out}  ({summary['seconds']:.1f} s)")


@app.command()
def evaluate(foundation: Path = typer.Option(...), manifest: Path = typer.Option(...),
             out: Path = typer.Option(..., help="folder for predictions and results"),
             adapter: Optional[Path] = typer.Option(None, help="adapter folder (none: zero-shot)")) -> None:
    """Sliding-window inference on the manifest's test volumes; per-organ Dice (CSV + JSON)."""
    from medpeft.adapters.io import load_adapter
    from medpeft.data.fewshot import read_manifest
    from medpeft.data.msd import load_msd
    from medpeft.demo import _evaluate, progress_bar
    from medpeft.evaluate.report import results_table, write_csv
    from medpeft.io import write_json
    from medpeft.models.weights import load_foundation
    try:
        f = load_foundation(foundation)
        model = load_adapter(adapter, f) if adapter else f.model
        split_ = read_manifest(manifest)
        ds = load_msd(split_["dataset"])
        with progress_bar() as progress:
            dice, organs, rows = _evaluate(model, ds, split_["test"], f, out / "predictions",
                                           progress, "evaluating")
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    write_json(out / "dice.json", rows)
    record = {"setting": ds.name, "method": str(adapter or "zero-shot"), "k": len(split_["support"]),
              "mean_dice": dice, "organs": organs, "trainable": 0, "trainable_pct": 0.0, "seconds": 0.0}
    write_csv(out / "results.csv", [record])
    console.print(results_table([record]))
    for organ, value in organs.items():
        console.print(f"  {organ:<20} {value:.3f}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="run folder"),
         cache: Path = typer.Option(Path("runs/cache"), help="reused phantom data and foundation"),
         pretrain_steps: int = typer.Option(1600), adapt_steps: int = typer.Option(80),
         seed: int = typer.Option(0),
         retrain: bool = typer.Option(False, help="pre-train even if the shipped model matches")) -> None:
    """The main job on the embedded phantom: pre-train, adapt at K=1 and K=5, report Dice."""
    from medpeft.demo import DemoConfig, run_demo
    run_demo(out, cache, DemoConfig(pretrain_steps=pretrain_steps, adapt_steps=adapt_steps,
                                    seed=seed, retrain=retrain), console)


if __name__ == "__main__":
    app()
