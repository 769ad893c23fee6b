"""Score pre-training checkpoints as they stand: per-organ Dice at the phantom's held-out source
site and zero-shot at its new site (the fixed 6 test volumes). This is how the milestones of the
shipped foundation were measured (docs/quality.md).

A checkpoint is a `snapshots/step-*` folder of `medpeft pretrain --snapshot-every N`, a `ckpt-*`
folder of `--checkpoint-every N` (copied aside while the run went on: the loop keeps only the
newest) or a finished foundation folder. `--save DIR`
also writes the checkpoint as a foundation folder, for `benchmarks/adapt_recipe.py --foundation`.

Usage: python benchmarks/pretrain_milestones.py 800=runs/pt/snap-800 6400=runs/pt/run \
       --out milestones.json [--save 6400=runs/pt/f-6400] [--backbone swin-small] [--patch 64 64 64]
       [--seed 1]  (phantom collection 1's source site and new site)
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from safetensors.torch import load_file

from medpeft.data.fewshot import make_split
from medpeft.evaluate.metrics import score_model
from medpeft.experiments.demo import phantom_setting
from medpeft.experiments.demo_config import DemoConfig
from medpeft.io import write_json
from medpeft.models.backbones import PRESETS, build_backbone
from medpeft.models.weights import load_foundation, save_foundation, shipped_foundation


def load_checkpoint_weights(foundation, folder: Path) -> None:
    """Put a loop checkpoint's (or a foundation folder's) weights into ``foundation.model``."""
    for name in ("trainable.safetensors", "foundation.safetensors"):
        if (folder / name).is_file():
            missing, unexpected = foundation.model.load_state_dict(load_file(str(folder / name)),
                                                                   strict=False)
            if unexpected or any("relative_position_index" not in k for k in missing):
                raise ValueError(f"{folder}: weights do not fit the foundation ({unexpected or missing})")
            return
    raise FileNotFoundError(f"{folder}: no trainable.safetensors or foundation.safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="STEP=FOLDER")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--save", action="append", default=[], help="STEP=FOLDER: also save it")
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    ap.add_argument("--backbone", default="swin-fast", choices=sorted(PRESETS),
                    help="the checkpoints' backbone")
    ap.add_argument("--patch", type=int, nargs=3, default=None,
                    help="the checkpoints' ROI (their run's --patch; default the shipped one's)")
    ap.add_argument("--seed", type=int, default=0,
                    help="the phantom collection (runs/cache/phantom-demo-sSEED) and split seed")
    args = ap.parse_args()
    cfg = DemoConfig(seed=args.seed)
    setting = phantom_setting(args.cache, cfg, None, Console(), foundation_dir=shipped_foundation())
    holdout, target = setting.holdout, setting.target
    test = make_split(target, 5, cfg.seed, cfg.n_test)["test"]
    saves = dict(s.split("=", 1) for s in args.save)
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    foundation = load_foundation(shipped_foundation())  # the classes and preprocessing
    if args.backbone != "swin-fast":
        foundation = replace(foundation, backbone=PRESETS[args.backbone], model=build_backbone(
            PRESETS[args.backbone], len(foundation.classes) + 1))
    if args.patch:
        foundation = replace(foundation, preprocessing=replace(foundation.preprocessing,
                                                               patch=tuple(args.patch)))
    for item in args.checkpoints:
        step, folder = item.split("=", 1)
        load_checkpoint_weights(foundation, Path(folder))  # every weight: nothing of the last stays
        scores = {}
        for site, ds, names in (("holdout", holdout, [c.name for c in holdout.cases]),
                                ("zeroshot", target, test)):
            dice, organs, _ = score_model(foundation.model, ds, names, foundation, pred_dir=None,
                                          desc=site)
            scores[site] = {"dice": dice, "organs": organs}
        result[step] = scores
        print(step, {s: round(v["dice"], 3) for s, v in scores.items()})
        if step in saves:
            save_foundation(saves[step], foundation.model, foundation.backbone, foundation.classes,
                            pp=foundation.preprocessing, extra={"checkpoint": folder})
    write_json(args.out, dict(sorted(result.items(), key=lambda kv: int(kv[0]))))


if __name__ == "__main__":
    main()
