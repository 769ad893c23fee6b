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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from rich.console import Console

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.msd import load_msd
from medpeft.data.phantom.collection import write_collection
from medpeft.evaluate.html_report import scroller, write_html_report
from medpeft.evaluate.metrics import score_model
from medpeft.evaluate.report import overlay_png, results_table, write_csv, write_report
from medpeft.experiments.cell import adapt_and_open, cached
from medpeft.experiments.demo_config import DemoConfig, pretrain_recipe
from medpeft.experiments.side_by_side import Job, cpu_cores, run_side_by_side, worker_count
from medpeft.io import atomic_path, copy_folder, write_json, write_text
from medpeft.methods import SCRATCH
from medpeft.methods.adapter_io import open_adapter
from medpeft.methods.registry import TUNE, resolve
from medpeft.models.backbones import count_parameters
from medpeft.models.weights import load_foundation, shipped_foundation
from medpeft.pipelines import AdaptRequest
from medpeft.progress import Reporter, progress_bar
from medpeft.train.loop import LoopConfig
from medpeft.train.pretrain import pretrain

SOURCE_ROLE, HOLDOUT_ROLE, TARGET_ROLE = "source", "source-holdout", "target"
def _foundation_dir(cache: Path, recipe: dict) -> Path:
    key = json.dumps(recipe, sort_keys=True)
    return cache / f"foundation-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _refresh_shipped_copy(fdir: Path, shipped: Path, console: Console) -> None:
    """A cached copy of the shipped weights takes the shipped metadata (``foundation.json`` says
    how to adapt, e.g. its adaptation crop): a cache made by an older release must not keep the
    old settings for the same weights. Weights from any other origin are left alone."""
    cached_meta, shipped_meta = fdir / "foundation.json", shipped / "foundation.json"
    if cached_meta.read_bytes() == shipped_meta.read_bytes() or \
            json.loads(cached_meta.read_text()).get("sha256") != \
            json.loads(shipped_meta.read_text()).get("sha256"):
        return
    console.print(f"{fdir}: a copy of the shipped weights with older metadata; refreshing it")
    for item in shipped.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            with atomic_path(fdir / item.name) as tmp:
                shutil.copyfile(item, tmp)


def _provide_foundation(fdir: Path, recipe: dict, sources: Callable[[int], list[Path]],
                        cfg: DemoConfig, *, progress: Reporter | None, console: Console) -> None:
    """Reuse the cache, else the shipped checkpoint if made by the same recipe, else pre-train
    every stage (a finished stage is reused). ``sources(n)``: the source tasks of n collections."""
    shipped = shipped_foundation()
    if (fdir / "foundation.json").exists():
        if shipped is not None:
            _refresh_shipped_copy(fdir, shipped, console)
        return
    if shipped is not None and not cfg.retrain and \
            json.loads((shipped / "foundation.json").read_text()).get("recipe") == recipe:
        console.print(f"using the shipped foundation model ({shipped}); --retrain to pre-train")
        copy_folder(shipped, fdir)
        return
    loop = LoopConfig(steps=cfg.pretrain_steps, lr=cfg.pretrain_lr, seed=cfg.seed,
                      bf16=cfg.pretrain_bf16, channels_last=cfg.pretrain_bf16)
    stages = [fdir.parent / f"{fdir.name}-stage{i + 1}" for i in range(len(cfg.continued))] + [fdir]
    if not (stages[0] / "foundation.json").exists():
        pretrain(sources(1), stages[0], cfg.backbone, loop=loop, resume=True, progress=progress,
                 augment=cfg.pretrain_augment, sampling=cfg.pretrain_sampling,
                 recipe=recipe if stages[0] == fdir else None)
    for stage, previous, out in zip(cfg.continued, stages, stages[1:]):
        if (out / "foundation.json").exists():
            continue
        pp = None if stage.patch is None else \
            replace(load_foundation(previous).preprocessing, patch=tuple(stage.patch))
        seed = loop.seed if stage.draw_seed is None else stage.draw_seed
        pretrain(sources(stage.collections), out, cfg.backbone, pp,
                 loop=replace(loop, steps=stage.steps, lr=stage.lr, seed=seed), resume=True,
                 progress=progress, recipe=recipe if out == fdir else None,
                 augment=stage.augment, sampling=cfg.pretrain_sampling, init=previous,
                 steady_organs=stage.steady_organs)


@dataclass
class PhantomSetting:
    """The demo's world: a cached phantom collection and the foundation model pre-trained on it."""

    foundation_dir: Path
    holdout: object  # MSDDataset of the source site's held-out volumes
    target: object  # MSDDataset of the new site


def phantom_setting(cache: Path, cfg: DemoConfig, progress: Reporter | None, console: Console,
                    *, foundation_dir: Path | None = None) -> PhantomSetting:
    """Write (or reuse) the phantom collection and provide the foundation model for ``cfg``
    (or use the one in ``foundation_dir``: benchmarks of other foundations)."""
    collection = partial(_collection_tasks, cache, cfg.size, progress=progress)
    source_hash, by_role = collection(cfg.seed)
    fdir = foundation_dir
    if fdir is None:
        recipe = pretrain_recipe(source_hash, cfg)
        fdir = _foundation_dir(cache, recipe)
        sources = lambda n: [task for seed in range(cfg.seed, cfg.seed + n)  # noqa: E731
                             for task in collection(seed)[1][SOURCE_ROLE]]
        _provide_foundation(fdir, recipe, sources, cfg, progress=progress, console=console)
    return PhantomSetting(Path(fdir), load_msd(by_role[HOLDOUT_ROLE][0]),
                          load_msd(by_role[TARGET_ROLE][0]))


def _collection_tasks(cache: Path, size: str, seed: int, *,
                      progress: Reporter | None) -> tuple[str, dict[str, list[Path]]]:
    """Write (or reuse) phantom collection ``seed``: its source hash and its task folders by role."""
    index_path = write_collection(cache / f"phantom-{size}-s{seed}", size, seed, progress=progress)
    index = json.loads(index_path.read_text())
    by_role: dict[str, list[Path]] = {}
    for d in index["datasets"]:
        by_role.setdefault(d["role"], []).append(index_path.parent / d["name"])
    return index["source_hash"], by_role


def evaluate_adapter(cell: Path, setting: PhantomSetting, test: list[str], progress: Reporter | None,
                     *, desc: str) -> tuple[float, dict]:
    """Mean and per-organ Dice of the adapter in ``cell`` on the target's ``test`` volumes."""
    foundation = load_foundation(setting.foundation_dir)
    model, classes = open_adapter(cell, foundation)
    d, organs, _ = score_model(model, setting.target, test, foundation,
                               pred_dir=cell / "predictions", progress=progress, desc=desc,
                               classes=classes)
    return d, organs


def trained_and_scored(cell: Path, setting: PhantomSetting, test: list[str], train: Callable[[], object],
                       progress: Reporter | None, *, desc: str) -> dict:
    """A benchmark cell's record: ``train()`` writes an adapter to ``cell``; its seconds, and its
    mean and per-organ Dice on the target's ``test`` volumes."""
    t0 = time.perf_counter()
    train()
    seconds = time.perf_counter() - t0
    dice, organs = evaluate_adapter(cell, setting, test, progress, desc=desc)
    return {"dice": dice, "organs": organs, "seconds": seconds}


def demo_rows(cfg: DemoConfig, k: int) -> list[str]:
    """The methods the demo runs at ``k``: its methods and the scratch peer, where ``only_at``
    lets them."""
    return [m for m in cfg.methods + (SCRATCH,) if k in cfg.only_at.get(m, (k,))]


def demo_request(fdir: Path, manifest: Path, method: str, cell: Path,
                 *, cfg: DemoConfig) -> AdaptRequest:
    """One demo cell's adaptation (resuming it); the scratch peer gets its own longer schedule."""
    spec = resolve(method)
    peer = spec.is_peer
    return AdaptRequest(fdir, manifest, method, cell,
                        steps=(cfg.scratch_steps or cfg.adapt_steps) if peer else cfg.adapt_steps,
                        patience=cfg.scratch_patience if peer else 0, seed=cfg.seed, resume=True,
                        options=cfg.options.get(method) if spec.family == TUNE else None)


def _record(setting: str, method: str, k: int, *, dice: float, organs: dict, trainable: int,
            seconds: float, n_total: int) -> dict:
    return {"setting": setting, "method": method, "k": k, "mean_dice": dice, "organs": organs,
            "trainable": trainable, "trainable_pct": 100.0 * trainable / n_total,
            "seconds": seconds}


def _cell_record(request: AdaptRequest, target_root: Path, test: list[str], k: int,
                 *, n_total: int, progress: Reporter | None) -> dict:
    """A demo cell's record: read back from its ``result.json`` when the cell finished before,
    else adapted and scored now (and kept there)."""
    return cached(request.out / "result.json", partial(
        _adapted_record, request, target_root, test, k, n_total=n_total, progress=progress))


def _adapted_record(request: AdaptRequest, target_root: Path, test: list[str], k: int,
                    *, n_total: int, progress: Reporter | None) -> dict:
    """Adapt one demo cell and score it on the new site's test volumes."""
    adapted = adapt_and_open(request, progress)
    d, organs, _ = score_model(adapted.model, load_msd(target_root), test, adapted.foundation,
                               pred_dir=request.out / "predictions", progress=progress,
                               desc=f"evaluate {request.method} K={k}", classes=adapted.classes)
    return _record("new site", request.method, k, dice=d, organs=organs,
                   trainable=adapted.trainable, seconds=adapted.seconds, n_total=n_total)


def _zero_shot_records(out: Path, foundation_dir: Path, holdout_root: Path, target_root: Path,
                       test: list[str], *, progress: Reporter | None) -> list[dict]:
    """The foundation unadapted: at its own held-out source site and at the new site."""
    foundation = load_foundation(foundation_dir)
    holdout, n_total = load_msd(holdout_root), count_parameters(foundation.model)
    d, organs, _ = score_model(foundation.model, holdout, [c.name for c in holdout.cases],
                               foundation, pred_dir=None, progress=progress,
                               desc="source site, zero-shot")
    records = [_record("source site (held out)", "foundation", 0, dice=d, organs=organs, trainable=0,
                       seconds=0.0, n_total=n_total)]
    d, organs, _ = score_model(foundation.model, load_msd(target_root), test, foundation,
                               pred_dir=out / "zero-shot" / "predictions", progress=progress,
                               desc="new site, zero-shot")
    return records + [_record("new site", "zero-shot", 0, dice=d, organs=organs, trainable=0, seconds=0.0,
                              n_total=n_total)]


def _federation(fed_cfg, *, progress: Reporter | None) -> dict:
    """The federated section's run (or its finished report); a job beside the cells."""
    from medpeft.federated.demo import demo_federation
    return demo_federation(fed_cfg)


def _cell_jobs(out: Path, setting: PhantomSetting, cfg: DemoConfig, test: list[str], *,
               n_total: int) -> list[Job]:
    """The demo's cells, largest K first (each worker takes the next job when it is free, so
    the longest go first), then the zero-shot scores."""
    target_root, cells = Path(setting.target.root), []
    for k in sorted(cfg.shots, reverse=True):
        manifest = write_manifest(out / f"k{k}" / "manifest.json",
                                  make_split(setting.target, k, cfg.seed, cfg.n_test))
        cells += [Job(_cell_record, (demo_request(setting.foundation_dir, manifest, method,
                                                     out / f"k{k}" / method, cfg=cfg),
                                        target_root, test, k), {"n_total": n_total})
                  for method in demo_rows(cfg, k)]
    return cells + [Job(_zero_shot_records, (out, setting.foundation_dir,
                                             Path(setting.holdout.root), target_root, test))]


def run_demo(out: Path, cache: Path, cfg: DemoConfig = DemoConfig(),
             console: Console | None = None) -> list[dict]:
    """Run the whole demo into ``out``; returns the result records (also in results.json).
    Each finished (K, method) cell is kept in its ``result.json`` and read back on a re-run.
    The cells and the federation run side by side, one per core (``cfg.workers``)."""
    console = console or Console()
    for method in cfg.methods:
        resolve(method)
    out, cache = Path(out), Path(cache)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    t_start = time.perf_counter()
    with progress_bar() as progress:
        setting = phantom_setting(cache, cfg, progress, console)
        n_total = count_parameters(load_foundation(setting.foundation_dir).model)
        test = make_split(setting.target, max(cfg.shots), cfg.seed, cfg.n_test)["test"]
        cells = _cell_jobs(out, setting, cfg, test, n_total=n_total)
        fed_cfg = _federation_config(out, setting, cfg) if cfg.federated_rounds else None
        workers = cfg.workers or worker_count(len(cells) + bool(fed_cfg))
        if fed_cfg and workers > 1:  # one job beside the cells, not a second user of every core
            fed_cfg = replace(fed_cfg, simulation_workers=max(1, cpu_cores() // workers))
        if fed_cfg:
            console.print(f"federated section: {len(fed_cfg.hospitals)} hospitals on Flower's "
                          f"simulation runtime ({fed_cfg.out}); {workers} jobs at a time")
        # the federation goes second: it takes about as long as the largest cell
        jobs = cells[:1] + ([Job(_federation, (fed_cfg,))] if fed_cfg else []) + cells[1:]
        results = run_side_by_side(jobs, progress, workers=workers)
    fed_report = results.pop(1) if fed_cfg else None
    # the zero-shot records first, then the cells by K (each K's rows in the order of demo_rows)
    records = sorted(results.pop() + results, key=lambda record: record["k"])
    _write_reports(out, setting, cfg, records, case=test[0], n_total=n_total,
                   seconds=time.perf_counter() - t_start)
    console.print(results_table(records, "medpeft demo: mean Dice on held-out volumes"))
    if fed_cfg:
        _federated_section(out, fed_cfg, fed_report, console)
    console.print(f"report: {out / 'report.md'} (and report.html)  overlay: {out / 'overlay.png'}")
    return records


def _write_reports(out: Path, setting: PhantomSetting, cfg: DemoConfig, records: list[dict],
                   *, case: str, n_total: int, seconds: float) -> None:
    """results.json / .csv, report.md with the overlay of ``case``, report.html with its scroller."""
    target, k_max = setting.target, max(cfg.shots)
    overlay = out / "overlay.png"
    predictions = {"zero-shot": out / "zero-shot" / "predictions" / f"{case}.nii.gz",
                   **{f"{m} K={k_max}": out / f"k{k_max}" / m / "predictions" / f"{case}.nii.gz"
                      for m in demo_rows(cfg, k_max)}}
    overlay_png(overlay, target.case(case).image, target.case(case).label, target.labels,
                predictions=predictions)
    write_json(out / "results.json", records)
    write_csv(out / "results.csv", records)
    facts = {"title": "medpeft demo: few-shot adaptation to a new CT site (phantom)",
             "command": "medpeft demo", "backbone": f"{cfg.backbone} ({n_total:,} parameters)",
             "foundation": str(setting.foundation_dir),
             "target": f"{target.root} ({cfg.n_test} held-out test volumes)",
             "wall time (s)": f"{seconds:.0f}"}
    write_report(out / "report.md", records, facts, overlay.name)
    write_html_report(out / "report.html", title=facts["title"],
                      facts={k: v for k, v in facts.items() if k != "title"}, records=records,
                      cases=[scroller(target.case(case).image, target.case(case).label,
                                      target.labels, predictions)])


def _federation_config(out: Path, setting: PhantomSetting, cfg: DemoConfig):
    """The federated section: three phantom hospitals on the new site's volumes."""
    from medpeft.federated.demo import demo_federation_config
    return demo_federation_config(Path(setting.target.root), setting.foundation_dir,
                                  out / "federated", cfg.federated_rounds,
                                  plan=cfg.federated_plan, steps=cfg.federated_steps,
                                  server_lr=cfg.federated_server_lr, seed=cfg.seed)


def _federated_section(out: Path, fed_cfg, report: dict, console: Console) -> None:
    """The federation's table is printed and its section added to ``report.md``."""
    from medpeft.federated.demo import federation_table
    console.print(federation_table(report, fed_cfg))
    section = (Path(fed_cfg.out) / "report.md").read_text().replace("# Federation", "## Federation", 1)
    write_text(out / "report.md", (out / "report.md").read_text() + "\n" + section)
