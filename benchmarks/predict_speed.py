"""Seconds per abdominal CT for `medpeft predict` (reading, inference, inversion, writing).

Arms, each on the same phantom volume of the demo's new site (about 390 x 300 x 355 mm, the
extent of an abdominal CT), fastest of --repeats runs, ratios against swin-fast float32 measured
in the same run:
- swin-fast at the shipped foundation's 5 mm (the phantom foundation), float32 and --bf16;
- swin-base (feature size 48, 7^3 windows) at the seeds' 1.5 mm / 96^3 preset, random weights
  (the time does not depend on them), float32;
- nnU-Net v2's own predictor on a model the peers benchmark trained (--nnunet-model, optional).
Goal (issue "Clinical I/O"): swin-fast <= 30 s per CT including I/O on 2 cores.

Usage: python benchmarks/predict_speed.py [--repeats 2] [--skip-base]
         [--nnunet-model runs/benchmark-peers/Task10_NewSite/k5-s0/nnunet/...]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from medpeft.data.transforms import PRESETS as PREPROCESSING
from medpeft.device import supports_bf16
from medpeft.infer.predict import predict_files
from medpeft.models.backbones import PRESETS, build_backbone
from medpeft.models.weights import load_foundation, shipped_foundation

VOLUMES = Path("runs/cache/phantom-demo-s0/Task10_NewSite/imagesTr")


def seconds(model, volume: Path, pp, classes, bf16: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            written, failures = predict_files(model, [volume], out, pp, classes=classes, bf16=bf16)
            best = min(best, time.perf_counter() - t0)
        if failures:
            raise RuntimeError(f"{volume}: {failures}")
    return best


def nnunet_seconds(model_dir: Path, volume: Path, repeats: int) -> float:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=("all",))
    best = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            predictor.predict_from_files([[str(volume)]], [str(Path(out) / volume.name)],
                                         save_probabilities=False, overwrite=True,
                                         num_processes_preprocessing=1,
                                         num_processes_segmentation_export=1)
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-base", action="store_true", help="leave out swin-base at 1.5 mm")
    ap.add_argument("--nnunet-model", type=Path, help="an nnU-Net v2 trained model folder")
    args = ap.parse_args()
    volume = sorted(VOLUMES.glob("*.nii.gz"))[0]  # run `make demo` first: it writes the phantom
    f = load_foundation(shipped_foundation())
    rows = [("swin-fast 5 mm, float32", seconds(f.model, volume, f.preprocessing, f.classes,
                                                 False, args.repeats))]
    cpu_bf16 = supports_bf16(torch.device("cpu"))
    rows.append((f"swin-fast 5 mm, --bf16{'' if cpu_bf16 else ' (no native bf16: float32)'}",
                 seconds(f.model, volume, f.preprocessing, f.classes, True, args.repeats)))
    if not args.skip_base:
        base = build_backbone(PRESETS["swin-base"], len(f.classes) + 1).eval()
        rows.append(("swin-base 1.5 mm / 96^3, float32",
                     seconds(base, volume, PREPROCESSING["seed-1.5mm"], f.classes, False, 1)))
    if args.nnunet_model:
        rows.append(("nnU-Net v2 predictor (its plans)",
                     nnunet_seconds(args.nnunet_model, volume, args.repeats)))
    print(f"{volume.name}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| arm | s per CT | vs swin-fast float32 |\n|---|---:|---:|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {s / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
