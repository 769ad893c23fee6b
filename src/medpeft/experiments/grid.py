"""The evaluation grid: datasets x tasks x methods x K x seeds, resumable, one tidy CSV.

A task is the organs segmented: "all" (the foundation's classes), one organ (a binary task, as in
FSEFT's protocol) or a list; a task's organ the foundation never saw is *novel* (a new head row;
its zero-shot cell is skipped). A method may name its novel rows' initialisation after an ``@``
(``head@random``, ``decoder@prototype``); ``blackbox-*`` methods train on the sealed foundation's
features. Each cell (dataset, task, K, seed, method) adapts on the seed's K support volumes and
scores every test
volume and organ (Dice, and HD95 / surface Dice when ``surface``); its rows are saved in the
cell's ``scores.json`` when it finishes, so a re-run skips finished cells and redoes at most the
one in progress (whose adaptation resumes from its checkpoint). ``zero-shot`` is the foundation
model without adaptation. ``paired`` compares every method with a reference on the same (case,
organ, seed) triples: mean difference, wins, Wilcoxon signed-rank p-value.
"""
from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.evaluate.metrics import evaluate_cases, score_label_files
from medpeft.evaluate.paired import ZERO_SHOT, paired
from medpeft.experiments.cell import adapt_and_open, cached
from medpeft.experiments.side_by_side import Job, run_side_by_side
from medpeft.io import atomic_path
from medpeft.methods import SEA
from medpeft.methods.novel_organs import set_head_classes, task_classes
from medpeft.methods.registry import SEARCHED, TUNE, resolve
from medpeft.models.weights import describe_foundation, load_foundation
from medpeft.peers import PeerError
from medpeft.peers.nnunet import NnUNetBudget, run_nnunet
from medpeft.pipelines import AdaptRequest
from medpeft.progress import Reporter

__all__ = ["GridConfig", "load_grid", "paired", "run_cell", "run_grid", "trained_precision", "with_precision",
           "write_rows"]

NNUNET = "nnunet"  # the nnU-Net v2 peer (extra `peers`), trained from scratch on the support set
COLUMNS = ("dataset", "task", "method", "k", "seed", "case", "organ", "dice", "hd95", "nsd", "trainable",
           "seconds", "precision")
NOT_TRAINED = "none"  # the zero-shot cell's precision: no training ran


@dataclass
class GridConfig:
    foundation: str
    datasets: list[dict]  # {path, n_test (6), layout (detected), name (folder name)}
    methods: list[str]
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int | None = None  # None: `medpeft adapt`'s default for each method and K
    reference: str | None = None  # of the paired comparison (default: the first method)
    surface: bool = True
    tolerance_mm: float = 2.0
    largest_component: bool = False  # post-process each organ to its largest component
    tasks: list = field(default_factory=lambda: ["all"])  # "all", an organ, or a list of organs
    patience: int = 0  # early stopping on the training loss's moving average (0: off)
    options: dict = field(default_factory=dict)  # method -> its options
    # method -> {steps, patience} over the grid's (the scratch peer gets 5x the steps)
    schedules: dict = field(default_factory=dict)
    out: str = "runs/benchmark"


def load_grid(path: str | Path) -> GridConfig:
    """Read and check a grid YAML; a ValueError naming the file and every problem found."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the grid ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a grid is a mapping of entries (foundation, datasets, methods, ...)")
    known = {f.name: f for f in fields(GridConfig)}
    problems = [f"unknown entries {sorted(set(raw) - set(known))}; known: {sorted(known)}"] \
        if set(raw) - set(known) else []
    required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
    problems += [f"missing entry '{name}'" for name in required if name not in raw]
    if not problems:
        cfg = GridConfig(**raw)
        problems = [*_method_problems(cfg), *_entry_problems(cfg)]
    if problems:
        raise ValueError(f"{path}: {problems[0]}" if len(problems) == 1 else
                         f"{path}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    return cfg


def _method_problems(cfg: GridConfig) -> list[str]:
    """Methods and tasks the grid cannot run."""
    problems = []
    for method in cfg.methods:
        if method not in (ZERO_SHOT, NNUNET):
            try:
                resolve(method)
            except ValueError as err:
                problems.append(str(err))
    for task in cfg.tasks:
        try:
            task_classes(("all",), task_organs(task))
        except ValueError as err:
            problems.append(f"task {task!r}: {err}")
    return problems


def _entry_problems(cfg: GridConfig) -> list[str]:
    """Datasets, schedules and the reference method, as the grid reads them."""
    problems = [f"datasets[{i}] must be a mapping with a 'path' (e.g. - path: DIR)"
                for i, d in enumerate(cfg.datasets) if not isinstance(d, dict) or "path" not in d]
    for method, schedule in cfg.schedules.items():
        if method not in cfg.methods or not set(schedule) <= {"steps", "patience"}:
            problems.append(f"schedules[{method!r}] must name a method of the grid and only "
                            "'steps' / 'patience'")
    if cfg.reference and cfg.reference not in cfg.methods:
        problems.append(f"reference {cfg.reference!r} is not one of the methods")
    if not cfg.shots or any(not isinstance(k, int) or k < 1 for k in cfg.shots):
        problems.append(f"shots {cfg.shots}: each K must be a whole number, at least 1")
    if not cfg.seeds:
        problems.append("seeds: list at least one")
    steps = [cfg.steps] + [s.get("steps") for s in cfg.schedules.values() if isinstance(s, dict)]
    if any(n is not None and (not isinstance(n, int) or n < 1) for n in steps):
        problems.append("steps must be a whole number, at least 1 (the grid's and each schedule's)")
    return problems


def task_organs(task) -> tuple[str, ...]:
    return (task,) if isinstance(task, str) else tuple(task)


def task_name(task) -> str:
    return "+".join(task_organs(task))


def adapt_request(cfg: GridConfig, method: str, organs: tuple[str, ...], manifest: Path,
                  *, cell: Path, seed: int) -> AdaptRequest:
    """The cell's adaptation: the grid's steps and patience (or the method's schedule), the
    method's options (SEA-PEFT's are its search settings)."""
    schedule, spec = cfg.schedules.get(method, {}), resolve(method)
    return AdaptRequest(Path(cfg.foundation), manifest, method, cell,
                        steps=schedule.get("steps", cfg.steps), seed=seed, resume=True,
                        patience=0 if spec.family == SEARCHED else
                        schedule.get("patience", cfg.patience), organs=organs,
                        options=cfg.options.get(spec.base) if spec.family == TUNE else None,
                        sea=cfg.options.get(SEA, {}) if spec.family == SEARCHED else {})


@dataclass(frozen=True)
class GridCell:
    """One cell: a dataset's task, a method, K support volumes chosen by the seed."""

    dataset: str
    task: object  # "all", an organ, or a list of organs
    method: str
    k: int
    seed: int
    root: Path  # the dataset's folder (its task's, for a task other than "all")

    @property
    def folder(self) -> Path:
        return self.root / (ZERO_SHOT if self.method == ZERO_SHOT
                            else f"k{self.k}-s{self.seed}/{self.method}")

    def rows(self, scores: list[dict], trainable: int, seconds: float) -> list[dict]:
        return [{"dataset": self.dataset, "task": task_name(self.task), "method": self.method,
                 "k": self.k, "seed": self.seed, **r, "trainable": trainable, "seconds": seconds}
                for r in scores]


def run_cell(cfg: GridConfig, ds, cell: GridCell, *, n_test: int,
             progress: Reporter | None = None) -> list[dict]:
    """Adapt and score one cell (or read its saved rows); none for the zero-shot cell of a task
    with novel organs (the foundation cannot segment them)."""
    rows = cached(cell.folder / "scores.json", lambda: _score_cell(cfg, ds, cell, n_test, progress=progress))
    return with_precision(rows, cell.folder, cell.method)


def trained_precision(folder: Path | None, method: str) -> str:
    """The arithmetic a cell trained in, from its records in ``folder``, so that a table mixing
    cells from machines with and without native bf16 says which is which ("" when no record
    says)."""
    if method == ZERO_SHOT:
        return NOT_TRAINED
    if method == NNUNET:  # nnU-Net v2 autocasts on CUDA only, and its peer cell runs on the CPU
        return "float32"
    summary = folder / "adapt_summary.json" if folder else None
    if summary is None or not summary.exists():
        return ""
    return json.loads(summary.read_text()).get("summary", {}).get("precision", "")


def with_precision(rows: list[dict], folder: Path, method: str) -> list[dict]:
    """``rows`` with their cell's training precision (cells saved before the column existed
    read it from their records)."""
    precision = trained_precision(folder, method)
    return [{**r, "precision": r.get("precision") or precision} for r in rows]


def _score_cell(cfg: GridConfig, ds, cell: GridCell, n_test: int,
                *, progress: Reporter | None) -> list[dict]:
    split = make_split(ds, max(cell.k, 1), cell.seed, n_test)
    if cell.method == NNUNET:  # a peer: the foundation's classes, none of its weights
        classes = task_classes(describe_foundation(cfg.foundation).classes, task_organs(cell.task))
        return cell.rows(*_nnunet_cell(cfg, ds, split, classes, cell=cell.folder))
    foundation = load_foundation(cfg.foundation)
    classes = task_classes(foundation.classes, task_organs(cell.task))
    if cell.method == ZERO_SHOT and set(classes) - set(foundation.classes):
        return []
    return cell.rows(*_model_cell(cfg, ds, cell, split, foundation=foundation, classes=classes,
                     progress=progress))


def _model_cell(cfg: GridConfig, ds, cell: GridCell, split: dict, *, foundation, classes,
                progress: Reporter | None) -> tuple[list[dict], int, float]:
    """Adapt (unless zero-shot) and score medpeft's model: rows, trainable parameters, seconds."""
    model, trainable, seconds = foundation.model, 0, 0.0
    if cell.method == ZERO_SHOT:
        set_head_classes(model, foundation.classes, classes)
    else:
        manifest = write_manifest(cell.root / f"k{cell.k}-s{cell.seed}" / "manifest.json", split)
        adapted = adapt_and_open(adapt_request(cfg, cell.method, task_organs(cell.task), manifest,
                                               cell=cell.folder, seed=cell.seed), progress)
        model, classes = adapted.model, adapted.classes
        trainable, seconds = adapted.trainable, adapted.seconds
    rows = evaluate_cases(model, ds, split["test"], class_mapping(ds.labels, classes),
                          pp=foundation.preprocessing, classes=classes, pred_dir=cell.folder / "predictions",
                          progress=progress, desc=f"{cell.dataset} {cell.method} K={cell.k} seed {cell.seed}",
                          surface=cfg.surface, tolerance_mm=cfg.tolerance_mm,
                          largest_component=cfg.largest_component)
    return rows, trainable, seconds


def _nnunet_cell(cfg, ds, split, classes, *, cell) -> tuple[list[dict], int, float]:
    """nnU-Net v2 trained on the support volumes, its label maps scored by medpeft's metrics."""
    mapping = class_mapping(ds.labels, classes)
    summary = run_nnunet(ds, mapping, split["support"], split["test"], cell=cell,
                         budget=NnUNetBudget(**cfg.options.get(NNUNET, {})))
    rows = score_label_files(ds, summary["predictions"], mapping, cfg.surface, tolerance_mm=cfg.tolerance_mm)
    return rows, summary["trainable_parameters"], summary["seconds"]


def grid_cells(cfg: GridConfig, name: str) -> Iterator[GridCell]:
    """The cells of dataset ``name`` in order: task, K, seed, method (zero-shot once per task:
    its test set is the same for every K and seed)."""
    for task, k, seed, method in itertools.product(cfg.tasks, cfg.shots, cfg.seeds, cfg.methods):
        if method == ZERO_SHOT and (k, seed) != (cfg.shots[0], cfg.seeds[0]):
            continue
        root = Path(cfg.out) / name / ("" if task_name(task) == "all" else task_name(task))
        yield GridCell(name, task, method, 0 if method == ZERO_SHOT else k, seed, root)


def run_grid(cfg: GridConfig, progress: Reporter | None = None, failures: list[str] | None = None,
             *, workers: int = 1) -> tuple[list[dict], dict]:
    """Every cell of the grid, K-major within each dataset; writes ``results.csv`` as it goes.
    Returns the rows and the datasets by name. A peer that cannot run (``PeerError``: not
    installed, crashed, out of time) is added to ``failures`` and the other cells go on; without
    ``failures`` it raises. ``workers`` > 1: that many cells at once, each in its own process on
    its share of the cores (``medpeft.experiments.side_by_side``; a cell's seconds are then its
    time beside the others)."""
    rows: list[dict] = []
    datasets, jobs = {}, []
    for d in cfg.datasets:
        ds = read_dataset(d["path"], d.get("layout"), label_files=True)
        name = d.get("name") or Path(d["path"]).name
        datasets[name] = ds
        jobs += [Job(_cell_or_failure, (cfg, ds, cell, d.get("n_test", 6)))
                 for cell in grid_cells(cfg, name)]

    def add(_: int, outcome: list[dict] | str) -> None:
        nonlocal rows
        if isinstance(outcome, str):
            if failures is None:
                raise PeerError(outcome)
            failures.append(outcome)
        else:
            rows += outcome
        write_rows(Path(cfg.out) / "results.csv", rows)
    run_side_by_side(jobs, progress, workers=workers, done=add)
    return rows, datasets


def _cell_or_failure(cfg: GridConfig, ds, cell: GridCell, n_test: int, *,
                     progress: Reporter | None) -> list[dict] | str:
    """A cell's rows, or why its peer could not run."""
    try:
        return run_cell(cfg, ds, cell, n_test=n_test, progress=progress)
    except PeerError as err:
        return f"{cell.method} K={cell.k} seed {cell.seed}: {err}"


def write_rows(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    """Rewrite ``path`` atomically with ``rows`` (a tidy CSV, one row per observation)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
