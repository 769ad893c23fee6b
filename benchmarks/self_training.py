"""Self-training at small K on the phantom's new site: does a site's unlabelled scans help?

A K-shot adapter (the teacher) labels the site's other scans outside the test set; a second
adaptation (the student) learns from the K labelled volumes plus those pseudo-labelled ones. Both
are scored on the same held-out test volumes. Cells are read back when already done.

Usage: python benchmarks/self_training.py --foundation src/medpeft/assets/phantom-foundation \
       --seed 0 --shots 1
"""
from __future__ import annotations

import argparse
import json
import os
from functools import partial
from pathlib import Path

from rich.console import Console

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.evaluate.metrics import score_model
from medpeft.experiments.cell import cached
from medpeft.experiments.demo import phantom_setting, trained_and_scored
from medpeft.experiments.demo_config import DemoConfig
from medpeft.io import write_json
from medpeft.methods.adapter_io import open_adapter
from medpeft.models.weights import load_foundation
from medpeft.pipelines import AdaptRequest, adapt
from medpeft.progress import progress_bar


def pseudo_dataset(setting, teacher: Path, support: list[str], pool: list[str], out: Path,
                   progress) -> Path:
    """A dataset folder: the support volumes' true labels, the pool's teacher labels."""
    foundation = load_foundation(setting.foundation_dir)
    model, classes = open_adapter(teacher, foundation)
    preds = out / "pseudo-labels"
    quality = cached(out / "pseudo-quality.json", lambda: dict(zip(("dice", "organs"), score_model(
        model, setting.target, pool, foundation, pred_dir=preds, progress=progress,
        desc="pseudo-labels", classes=classes)[:2])))
    root = out / "dataset"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in support + pool:
        image = setting.target.root / "imagesTr" / f"{name}.nii.gz"
        label = (setting.target.root / "labelsTr" if name in support else preds) / f"{name}.nii.gz"
        for src, dst in ((image, root / "imagesTr" / image.name), (label, root / "labelsTr" / image.name)):
            if not dst.exists():
                os.symlink(src.resolve(), dst)
    meta = json.loads((setting.target.root / "dataset.json").read_text())
    meta["training"] = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
                        for n in support + pool]
    meta["numTraining"] = len(meta["training"])
    write_json(root / "dataset.json", meta)
    print("pseudo-label quality", quality)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--foundation", type=Path, default=None)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="decoder")
    ap.add_argument("--student-steps", type=int, default=None)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=Path("runs/self-training"))
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    args = ap.parse_args()
    cfg = DemoConfig(seed=args.seed)
    out = args.out / f"s{args.seed}-k{args.shots}"
    with progress_bar() as progress:
        setting = phantom_setting(args.cache, cfg, progress, Console(), foundation_dir=args.foundation)
        split = make_split(setting.target, args.shots, args.seed, cfg.n_test)
        names = sorted(c.name for c in setting.target.cases)
        pool = [n for n in names if n not in split["test"] and n not in split["support"]]
        manifest = write_manifest(out / "manifest.json", split)

        def run(cell: Path, manifest: Path, steps=None) -> dict:
            train = partial(adapt, AdaptRequest(setting.foundation_dir, manifest, args.method, cell,
                                                seed=args.seed, steps=steps), progress)
            return cached(cell / "result.json", partial(
                trained_and_scored, cell, setting, split["test"], train, progress,
                desc=f"evaluate {cell.name}"))
        teacher = run(out / "teacher", manifest)
        root = pseudo_dataset(setting, out / "teacher", split["support"], pool, out, progress)
        student_manifest = write_manifest(out / f"student{args.tag}-manifest.json", {
            **split, "dataset": str(root), "support": split["support"] + pool,
            "test": split["support"][:1]})
        student = run(out / f"student{args.tag}", student_manifest, args.student_steps)
    for name, r in (("teacher", teacher), ("student", student)):
        print(f"{name}: {r['dice']:.3f} ({r['seconds']:.0f} s) "
              + " ".join(f"{o}={v:.2f}" for o, v in r["organs"].items()))


if __name__ == "__main__":
    main()
