"""The main job end to end on the embedded phantom: data -> foundation -> few-shot -> Dice report.

Every stage is cached or resumable: the phantom collection and the foundation model are reused
when their settings match, and each finished (K, method) cell is skipped on a re-run, so an
interrupted demo loses at most the cell it was in.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.data.phantom.collection import write_collection
from medpeft.evaluate.html_report import scroller, write_html_report
from medpeft.evaluate.metrics import evaluate_cases, mean_dice, organ_means
from medpeft.evaluate.report import overlay_png, results_table, write_csv, write_report
from medpeft.io import write_json, write_text
from medpeft.methods import ADAPT_STEPS, DEFAULT_METHOD, SCRATCH, check_method
from medpeft.methods.blackbox.adapt import adapter_config, blackbox_adapt, open_adapter
from medpeft.methods.blackbox.heads import blackbox_kind
from medpeft.models.backbones import count_parameters
from medpeft.models.weights import load_foundation, shipped_foundation
from medpeft.train.adapt import adapt
from medpeft.train.loop import LoopConfig
from medpeft.train.pretrain import pretrain

SOURCE_ROLE, HOLDOUT_ROLE, TARGET_ROLE = "source", "source-holdout", "target"
# `medpeft adapt`'s default method with its default recipe, beside the peer (the same network
# from random weights on the same volumes). The other methods are compared in
# benchmarks/adapt_recipe.py and benchmarks/peers.py; `--method` adds rows here.
DEMO_METHODS = (DEFAULT_METHOD,)


@dataclass
class DemoConfig:
    size: str = "demo"
    seed: int = 0
    backbone: str = "swin-fast"
    # the shipped foundation's recipe (README "Why organs collapsed, and the recipe that fixed it")
    pretrain_steps: int = 6400
    pretrain_lr: float = 2e-3
    pretrain_augment: str = "phase"  # medpeft.data.augment
    pretrain_sampling: str = "organ-balanced"  # medpeft.data.balance
    retrain: bool = False
    adapt_steps: int = ADAPT_STEPS
    shots: tuple[int, ...] = (1, 5)
    methods: tuple[str, ...] = DEMO_METHODS
    n_test: int = 6
    options: dict = field(default_factory=lambda: {"lora": {"rank": 4}})
    federated_rounds: int = 3  # the federated section (3 phantom hospitals); 0 leaves it out
    # Methods that run only at some K, to keep the demo within 10 minutes on 2 cores: the peer,
    # the same network from random weights on the same K volumes, runs at K=5
    # (benchmarks/peers.py has every K, 3 seeds, 5x the steps and nnU-Net)
    only_at: dict = field(default_factory=lambda: {SCRATCH: (5,)})
    scratch_steps: int | None = None  # None: as many as adaptation; stopped on a loss plateau
    scratch_patience: int = 40
    federated_steps: int = 10


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn())


def pretrain_recipe(sources_hash: str, cfg: DemoConfig) -> dict:
    """Everything that determines the demo's foundation model (the source datasets, not the target)."""
    return {"sources": sources_hash, "backbone": cfg.backbone, "steps": cfg.pretrain_steps,
            "lr": cfg.pretrain_lr, "seed": cfg.seed, "augment": cfg.pretrain_augment,
            "sampling": cfg.pretrain_sampling}


def _foundation_dir(cache: Path, recipe: dict) -> Path:
    key = json.dumps(recipe, sort_keys=True)
    return cache / f"foundation-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _provide_foundation(fdir: Path, recipe: dict, sources: list[Path], cfg: DemoConfig,
                        progress, console: Console) -> None:
    """Reuse the cache, else the shipped checkpoint if made by the same recipe, else pre-train."""
    if (fdir / "foundation.json").exists():
        return
    shipped = shipped_foundation()
    if shipped is not None and not cfg.retrain and \
            json.loads((shipped / "foundation.json").read_text()).get("recipe") == recipe:
        console.print(f"using the shipped foundation model ({shipped}); --retrain to pre-train")
        shutil.copytree(shipped, fdir)
        return
    pretrain(sources, fdir, cfg.backbone,
             loop=LoopConfig(steps=cfg.pretrain_steps, lr=cfg.pretrain_lr, seed=cfg.seed),
             resume=True, progress=progress, recipe=recipe, augment=cfg.pretrain_augment,
             sampling=cfg.pretrain_sampling)


def _evaluate(model, ds, names, foundation, pred_dir, progress, desc,
              classes: tuple[str, ...] | None = None) -> tuple[float, dict, list]:
    classes = classes or foundation.classes
    mapping = class_mapping(ds.labels, classes)
    rows = evaluate_cases(model, ds, names, mapping, foundation.preprocessing, classes,
                          pred_dir=pred_dir, progress=progress, desc=desc)
    return mean_dice(rows), organ_means(rows), rows


@dataclass
class PhantomSetting:
    """The demo's world: a cached phantom collection and the foundation model pre-trained on it."""

    foundation_dir: Path
    holdout: object  # MSDDataset of the source site's held-out volumes
    target: object  # MSDDataset of the new site


def phantom_setting(cache: Path, cfg: DemoConfig, progress, console: Console,
                    foundation_dir: Path | None = None) -> PhantomSetting:
    """Write (or reuse) the phantom collection and provide the foundation model for ``cfg``
    (or use the one in ``foundation_dir``: benchmarks of other foundations)."""
    index_path = write_collection(cache / f"phantom-{cfg.size}-s{cfg.seed}", cfg.size, cfg.seed,
                                  progress=progress)
    index = json.loads(index_path.read_text())
    root = index_path.parent
    by_role = lambda role: [root / d["name"] for d in index["datasets"] if d["role"] == role]  # noqa: E731
    fdir = foundation_dir
    if fdir is None:
        recipe = pretrain_recipe(index["source_hash"], cfg)
        fdir = _foundation_dir(cache, recipe)
        _provide_foundation(fdir, recipe, by_role(SOURCE_ROLE), cfg, progress, console)
    return PhantomSetting(Path(fdir), load_msd(by_role(HOLDOUT_ROLE)[0]), load_msd(by_role(TARGET_ROLE)[0]))


def evaluate_adapter(cell: Path, setting: PhantomSetting, test: list[str], progress,
                     desc: str) -> tuple[float, dict]:
    """Mean and per-organ Dice of the adapter in ``cell`` on the target's ``test`` volumes."""
    foundation = load_foundation(setting.foundation_dir)
    model, classes = open_adapter(cell, foundation)
    d, organs, _ = _evaluate(model, setting.target, test, foundation, cell / "predictions",
                             progress, desc, classes)
    return d, organs


def demo_rows(cfg: DemoConfig, k: int) -> list[str]:
    """The methods the demo runs at ``k``: its methods and the scratch peer, where ``only_at``
    lets them."""
    return [m for m in cfg.methods + (SCRATCH,) if k in cfg.only_at.get(m, (k,))]


def _adapt_demo_cell(fdir: Path, manifest: Path, method: str, cell: Path, cfg: DemoConfig,
                     progress) -> dict:
    """Adapt one demo cell (resuming it); the scratch peer gets its own longer schedule."""
    if blackbox_kind(method):
        return blackbox_adapt(fdir, manifest, cell, blackbox_kind(method), steps=cfg.adapt_steps,
                              seed=cfg.seed, resume=True, progress=progress)
    steps, patience = (cfg.scratch_steps or cfg.adapt_steps, cfg.scratch_patience) \
        if method == SCRATCH \
        else (cfg.adapt_steps, 0)
    return adapt(fdir, manifest, method, cell, options=cfg.options.get(method), steps=steps,
                 seed=cfg.seed, resume=True, patience=patience, progress=progress)


def run_demo(out: Path, cache: Path, cfg: DemoConfig = DemoConfig(),
             console: Console | None = None) -> list[dict]:
    """Run the whole demo into ``out``; returns the result records (also in results.json)."""
    console = console or Console()
    for method in cfg.methods:
        if blackbox_kind(method) is None:
            check_method(method)
    out, cache = Path(out), Path(cache)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    t_start = time.perf_counter()
    with progress_bar() as progress:
        setting = phantom_setting(cache, cfg, progress, console)
        fdir, holdout, target = setting.foundation_dir, setting.holdout, setting.target
        foundation = load_foundation(fdir)
        n_total = count_parameters(foundation.model)
        records: list[dict] = []

        def record(setting, method, k, dice, organs, trainable, seconds):
            records.append({"setting": setting, "method": method, "k": k, "mean_dice": dice,
                            "organs": organs, "trainable": trainable,
                            "trainable_pct": 100.0 * trainable / n_total, "seconds": seconds})

        zero_dir = out / "zero-shot"
        d, organs, _ = _evaluate(foundation.model, holdout, [c.name for c in holdout.cases],
                                 foundation, None, progress, "source site, zero-shot")
        record("source site (held out)", "foundation", 0, d, organs, 0, 0.0)
        split_any = make_split(target, max(cfg.shots), cfg.seed, cfg.n_test)
        d, organs, _ = _evaluate(foundation.model, target, split_any["test"], foundation,
                                 zero_dir / "predictions", progress, "new site, zero-shot")
        record("new site", "zero-shot", 0, d, organs, 0, 0.0)
        for k in cfg.shots:
            manifest = write_manifest(out / f"k{k}" / "manifest.json",
                                      make_split(target, k, cfg.seed, cfg.n_test))
            for method in demo_rows(cfg, k):
                cell = out / f"k{k}" / method
                result_path = cell / "result.json"
                if result_path.exists():  # finished in an earlier run: keep it
                    records.append(json.loads(result_path.read_text()))
                    continue
                summary = _adapt_demo_cell(fdir, manifest, method, cell, cfg, progress)
                d, organs = evaluate_adapter(cell, setting, split_any["test"], progress,
                                             f"evaluate {method} K={k}")
                config = adapter_config(cell)
                record("new site", method, k, d, organs, config["trainable_parameters"],
                       summary["seconds"])
                write_json(result_path, records[-1])
    case = split_any["test"][0]
    k_max = max(cfg.shots)
    overlay = out / "overlay.png"
    predictions = {"zero-shot": zero_dir / "predictions" / f"{case}.nii.gz",
                   **{f"{m} K={k_max}": out / f"k{k_max}" / m / "predictions" / f"{case}.nii.gz"
                      for m in demo_rows(cfg, k_max)}}
    overlay_png(overlay, target.case(case).image, target.case(case).label, target.labels,
                predictions)
    write_json(out / "results.json", records)
    write_csv(out / "results.csv", records)
    facts = {"title": "medpeft demo: few-shot adaptation to a new CT site (phantom)",
             "command": "medpeft demo", "backbone": f"{cfg.backbone} ({n_total:,} parameters)",
             "foundation": str(fdir),
             "target": f"{target.root} ({cfg.n_test} held-out test volumes)",
             "wall time (s)": f"{time.perf_counter() - t_start:.0f}"}
    write_report(out / "report.md", records, facts, overlay.name)
    write_html_report(out / "report.html", title=facts["title"],
                      facts={k: v for k, v in facts.items() if k != "title"}, records=records,
                      cases=[scroller(target.case(case).image, target.case(case).label,
                                      target.labels, predictions)])
    console.print(results_table(records, "medpeft demo: mean Dice on held-out volumes"))
    if cfg.federated_rounds:
        _federated_section(out, setting, cfg, console)
    console.print(f"report: {out / 'report.md'} (and report.html)  overlay: {overlay}")
    return records


def _federated_section(out: Path, setting: PhantomSetting, cfg: DemoConfig,
                       console: Console) -> None:
    """Three phantom hospitals federate; the table is printed and added to ``report.md``."""
    from medpeft.federated.demo import demo_federation, demo_federation_config, federation_table
    fed_cfg = demo_federation_config(Path(setting.target.root), setting.foundation_dir,
                                     out / "federated", cfg.federated_rounds, cfg.federated_steps,
                                     cfg.seed)
    console.print(f"federated section: {len(fed_cfg.sites)} hospitals on Flower's simulation "
                  f"runtime ({fed_cfg.out})")
    report = demo_federation(fed_cfg)
    console.print(federation_table(report, fed_cfg))
    section = (Path(fed_cfg.out) / "report.md").read_text().replace("# Federation", "## Federation", 1)
    write_text(out / "report.md", (out / "report.md").read_text() + "\n" + section)
