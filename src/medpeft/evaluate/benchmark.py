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
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.evaluate.metrics import evaluate_cases, score_label_files
from medpeft.evaluate.paired import case_paired_test
from medpeft.io import atomic_path, write_json
from medpeft.methods import ADAPT_STEPS, SEA, check_method
from medpeft.methods.blackbox.heads import blackbox_kind
from medpeft.methods.novel_organs import INITS, set_head_classes, task_classes
from medpeft.models.weights import describe_foundation, load_foundation
from medpeft.peers import PeerError
from medpeft.peers.nnunet import NnUNetBudget, run_nnunet

ZERO_SHOT = "zero-shot"
NNUNET = "nnunet"  # the nnU-Net v2 peer (extra `peers`), trained from scratch on the support set
COLUMNS = ("dataset", "task", "method", "k", "seed", "case", "organ", "dice", "hd95", "nsd", "trainable",
           "seconds")


@dataclass
class GridConfig:
    foundation: str
    datasets: list[dict]  # {path, n_test (6), layout (detected), name (folder name)}
    methods: list[str]
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = ADAPT_STEPS
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
    """Read and check a grid YAML; every error names the file and the entry."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the grid ({err})") from err
    known = {f.name for f in fields(GridConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown entries {unknown}; known: {sorted(known)}")
    try:
        cfg = GridConfig(**raw)
    except TypeError as err:
        raise ValueError(f"{path}: {err}") from err
    for method in cfg.methods:
        name, init = split_method(method)
        if init not in INITS:
            raise ValueError(f"{path}: method {method!r}: initialisation after '@' is one of "
                             f"{', '.join(INITS)}")
        if name not in (ZERO_SHOT, SEA, NNUNET) and blackbox_kind(name) is None:
            check_method(name)
    for task in cfg.tasks:
        try:
            task_classes(("all",), task_organs(task))
        except ValueError as err:
            raise ValueError(f"{path}: task {task!r}: {err}") from None
    for i, d in enumerate(cfg.datasets):
        if "path" not in d:
            raise ValueError(f"{path}: datasets[{i}] has no 'path'")
    for method, schedule in cfg.schedules.items():
        if method not in cfg.methods or not set(schedule) <= {"steps", "patience"}:
            raise ValueError(f"{path}: schedules[{method!r}] must name a method of the grid and "
                             f"only 'steps' / 'patience'")
    if cfg.reference and cfg.reference not in cfg.methods:
        raise ValueError(f"{path}: reference {cfg.reference!r} is not one of the methods")
    return cfg


def split_method(method: str) -> tuple[str, str]:
    """("head", "random") of "head@random"; the initialisation defaults to prototype."""
    name, _, init = method.partition("@")
    return name, init or "prototype"


def task_organs(task) -> tuple[str, ...]:
    return (task,) if isinstance(task, str) else tuple(task)


def task_name(task) -> str:
    return "+".join(task_organs(task))


def _adapt_cell(cfg: GridConfig, method: str, organs: tuple[str, ...], manifest: Path,
                cell: Path, seed: int, progress) -> dict:
    schedule = cfg.schedules.get(method, {})
    steps, patience = schedule.get("steps", cfg.steps), schedule.get("patience", cfg.patience)
    method, init = split_method(method)
    if method == SEA:
        if organs != ("all",):
            raise ValueError("sea-peft segments the foundation's classes: use it in task 'all'")
        from medpeft.methods.sea.adapt import sea_adapt
        from medpeft.methods.sea.loop import sea_config
        k = len(json.loads(manifest.read_text())["support"])
        return sea_adapt(Path(cfg.foundation), manifest, cell,
                         sea_config(k, seed=seed, **cfg.options.get(SEA, {})), steps,
                         resume=True, progress=progress)
    if blackbox_kind(method):
        from medpeft.methods.blackbox.adapt import blackbox_adapt
        return blackbox_adapt(Path(cfg.foundation), manifest, cell, blackbox_kind(method), init,
                              organs, steps, seed, patience=patience, resume=True,
                              progress=progress)
    from medpeft.train.adapt import adapt
    return adapt(Path(cfg.foundation), manifest, method, cell, options=cfg.options.get(method),
                 steps=steps, seed=seed, resume=True, organs=organs, head_init=init,
                 patience=patience, progress=progress)


def run_cell(cfg: GridConfig, ds, name: str, method: str, k: int, seed: int, n_test: int,
             progress=None, task="all") -> list[dict]:
    """Adapt and score one cell (or read its saved rows); none for the zero-shot cell of a task
    with novel organs (the foundation cannot segment them)."""
    out = Path(cfg.out) / name
    if task_name(task) != "all":
        out = out / task_name(task)
    cell = out / (ZERO_SHOT if method == ZERO_SHOT else f"k{k}-s{seed}/{method}")
    scores = cell / "scores.json"
    if scores.exists():
        return json.loads(scores.read_text())
    split = make_split(ds, max(k, 1), seed, n_test)
    if method == NNUNET:  # a peer: the foundation's classes, none of its weights
        classes = task_classes(describe_foundation(cfg.foundation).classes, task_organs(task))
        rows, trainable, seconds = _nnunet_cell(cfg, ds, split, classes, cell)
    else:
        foundation = load_foundation(cfg.foundation)
        classes = task_classes(foundation.classes, task_organs(task))
        if method == ZERO_SHOT and set(classes) - set(foundation.classes):
            return []
        rows, trainable, seconds = _model_cell(cfg, ds, name, method, k, seed, split, foundation,
                                               classes, out, cell, progress, task)
    rows = [{"dataset": name, "task": task_name(task), "method": method, "k": k, "seed": seed,
             **r, "trainable": trainable, "seconds": seconds} for r in rows]
    write_json(scores, rows)
    return rows


def _model_cell(cfg, ds, name, method, k, seed, split, foundation, classes, out, cell, progress,
                task) -> tuple[list[dict], int, float]:
    """Adapt (unless zero-shot) and score medpeft's model: rows, trainable parameters, seconds."""
    model, trainable, seconds = foundation.model, 0, 0.0
    if method == ZERO_SHOT:
        set_head_classes(model, foundation.classes, classes)
    else:
        manifest = write_manifest(out / f"k{k}-s{seed}" / "manifest.json", split)
        summary = _adapt_cell(cfg, method, task_organs(task), manifest, cell, seed, progress)
        from medpeft.methods.blackbox.adapt import adapter_config, open_adapter
        model, classes = open_adapter(cell, foundation)
        trainable = adapter_config(cell)["trainable_parameters"]
        seconds = summary["seconds"]
    rows = evaluate_cases(model, ds, split["test"], class_mapping(ds.labels, classes),
                          foundation.preprocessing, classes, cell / "predictions",
                          progress, f"{name} {method} K={k} seed {seed}", cfg.surface,
                          cfg.tolerance_mm, cfg.largest_component)
    return rows, trainable, seconds


def _nnunet_cell(cfg, ds, split, classes, cell) -> tuple[list[dict], int, float]:
    """nnU-Net v2 trained on the support volumes, its label maps scored by medpeft's metrics."""
    mapping = class_mapping(ds.labels, classes)
    summary = run_nnunet(ds, mapping, split["support"], split["test"], cell,
                         NnUNetBudget(**cfg.options.get(NNUNET, {})))
    rows = score_label_files(ds, summary["predictions"], mapping, cfg.surface, cfg.tolerance_mm)
    return rows, summary["trainable_parameters"], summary["seconds"]


def run_grid(cfg: GridConfig, progress=None, failures: list[str] | None = None
             ) -> tuple[list[dict], dict]:
    """Every cell of the grid, K-major within each dataset; writes ``results.csv`` as it goes.
    Returns the rows and the datasets by name. A peer that cannot run (``PeerError``: not
    installed, crashed, out of time) is added to ``failures`` and the other cells go on; without
    ``failures`` it raises."""
    rows: list[dict] = []
    datasets = {}
    for d in cfg.datasets:
        ds = read_dataset(d["path"], d.get("layout"), label_files=True)
        name = d.get("name") or Path(d["path"]).name
        datasets[name] = ds
        for task in cfg.tasks:
            for k in cfg.shots:
                for seed in cfg.seeds:
                    for method in cfg.methods:
                        if method == ZERO_SHOT and (k, seed) != (cfg.shots[0], cfg.seeds[0]):
                            continue  # the fixed test set: zero-shot is scored once per task
                        kk = 0 if method == ZERO_SHOT else k
                        try:
                            rows += run_cell(cfg, ds, name, method, kk, seed,
                                             d.get("n_test", 6), progress, task)
                        except PeerError as err:
                            if failures is None:
                                raise
                            failures.append(f"{method} K={kk} seed {seed}: {err}")
                        write_rows(Path(cfg.out) / "results.csv", rows)
    return rows, datasets


def write_rows(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    """Rewrite ``path`` atomically with ``rows`` (a tidy CSV, one row per observation)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)


def paired(rows: list[dict], reference: str, metric: str = "dice") -> list[dict]:
    """Each method against ``reference`` per task and K, one pair per test case (differences
    averaged over the case's organs and seeds first; ``medpeft.evaluate.paired``)."""
    def key(r):
        return (r["dataset"], r.get("task", "all"), r["case"], r["organ"], r["seed"])
    ref = {}
    for r in rows:
        if r["method"] == reference and not math.isnan(r[metric]):
            ref.setdefault(r["k"], {})[key(r)] = r[metric]
    zero = {key(r)[:4]: r[metric] for r in rows if r["method"] == ZERO_SHOT}
    out = []
    for (task, method, k) in sorted({(r.get("task", "all"), r["method"], r["k"]) for r in rows
                                     if r["method"] != reference}):
        diffs = []
        for r in rows:
            if (r.get("task", "all"), r["method"], r["k"]) != (task, method, k) \
                    or math.isnan(r[metric]):
                continue
            base = zero.get(key(r)[:4]) if reference == ZERO_SHOT else ref.get(k, {}).get(key(r))
            if base is not None and not math.isnan(base):
                diffs.append(((r["dataset"], r["case"]), r[metric] - base))
        if diffs:
            out.append({"task": task, "method": method, "k": k, "reference": reference,
                        **case_paired_test(diffs)})
    return out
