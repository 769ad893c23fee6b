"""nnU-Net v2 from scratch on the K support volumes, through nnU-Net's own code.

Each benchmark cell gets its own ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``
under ``<cell>/nnunet``: the support volumes are written as ``Dataset501_<name>`` (images linked,
labels rewritten to the task's classes 1..n, background absorbing what the task does not
segment), then nnU-Net fingerprints, plans, verifies and preprocesses it
(``nnUNetv2_plan_and_preprocess``), trains ``nnUNetTrainer`` on fold ``all`` on the CPU and
predicts the test volumes with ``nnUNetPredictor``, in their own geometry. Training and
prediction run in a child process (``medpeft.peers.nnunet_worker``) with a time limit; every
command's output goes to ``<cell>/nnunet/nnunet.log``.

What is changed from nnU-Net's defaults, to fit 2 CPU cores (stated in the benchmark report):
the plan's target spacing is the foundation's working spacing (``-overwrite_target_spacing``,
plans ``nnUNetPlans_medpeft``), its memory target (``-gpu_memory_target``, which shrinks the
planned patch and network), the epoch budget (``NnUNetBudget``: epochs x iterations instead of
1000 x 250), one augmentation process, and no test-time mirroring (no medpeft row uses it).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from medpeft.data.msd import MSDDataset
from medpeft.data.ontology import ClassMapping
from medpeft.io import save_nifti, write_json
from medpeft.peers import PeerError

DATASET_ID = 501
PLANS = "nnUNetPlans_medpeft"
CONFIGURATION = "3d_fullres"
INSTALL_HINT = "pip install -e '.[peers]' torch==2.13.0  (nnU-Net v2, CPU torch kept)"


@dataclass(frozen=True)
class NnUNetBudget:
    """nnU-Net's training length (its default is 1000 epochs x 250 iterations on a GPU)."""

    # 80 iterations of batch 2 at the planned 80x64x80 patch: about as many voxels as the scratch
    # peer's 400 steps of 64x64x32 see; ~7 s an iteration on 2 cores (16.5 M parameters)
    epochs: int = 8
    iterations: int = 10  # training iterations per epoch (batch and patch as nnU-Net plans)
    val_iterations: int = 1
    timeout_s: int = 3600  # training and prediction together
    target_spacing: tuple[float, float, float] = (5.0, 5.0, 5.0)
    # nnU-Net's planner caps patch and network by this (its default is 8 GB); the phantom's
    # volumes (about 71x60x78 at 5 mm) fit one patch either way
    memory_target_gb: float = 2.0


def require_nnunet() -> None:
    """Fail with the install command when the ``peers`` extra is missing."""
    if importlib.util.find_spec("nnunetv2") is None:
        raise PeerError(f"nnU-Net v2 is not installed; install the peers extra: {INSTALL_HINT}")


def dataset_name(name: str) -> str:
    return f"Dataset{DATASET_ID:03d}_{name}"


def write_raw_dataset(ds: MSDDataset, mapping: ClassMapping, support: list[str], raw: Path,
                      *, name: str) -> Path:
    """The support volumes as an nnU-Net v2 raw dataset; labels are ``mapping``'s local classes."""
    folder = Path(raw) / dataset_name(name)
    shutil.rmtree(folder, ignore_errors=True)
    lut = mapping.value_lut()
    for case_name in support:
        case = ds.case(case_name)
        image = folder / "imagesTr" / f"{case_name}_0000.nii.gz"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.symlink_to(Path(case.image).resolve())
        label = nib.load(str(case.label))
        local = lut[np.asarray(label.dataobj).astype(np.int64)]
        save_nifti(folder / "labelsTr" / f"{case_name}.nii.gz", local, label.affine)
    write_json(folder / "dataset.json", {
        "channel_names": {"0": "CT"},
        "labels": {organ: i for i, organ in enumerate(mapping.local_names)},
        "numTraining": len(support), "file_ending": ".nii.gz", "name": name,
        "description": f"medpeft support volumes of {ds.root}"})
    return folder


def nnunet_env(root: Path) -> dict[str, str]:
    """nnU-Net's three folders under ``root``, one augmentation process, no compile."""
    root = Path(root).resolve()
    return {**os.environ, "nnUNet_raw": str(root / "raw"),
            "nnUNet_preprocessed": str(root / "preprocessed"),
            "nnUNet_results": str(root / "results"), "nnUNet_n_proc_DA": "1",
            "nnUNet_compile": "false", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def _run(cmd: list[str], env: dict, log: Path, timeout: int, *, what: str) -> None:
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            done = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PeerError(f"nnU-Net {what} ran past {timeout} s; its log: {log}") from None
    if done.returncode:
        raise PeerError(f"nnU-Net {what} failed (exit {done.returncode}); its log: {log}")


def plan_and_preprocess(root: Path, budget: NnUNetBudget, log: Path) -> None:
    """nnU-Net's fingerprint, dataset integrity check, planning and preprocessing."""
    exe = Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess")
    cmd = [str(exe), "-d", str(DATASET_ID), "-c", CONFIGURATION, "-np", "1", "-npfp", "1",
           "--verify_dataset_integrity", "-overwrite_plans_name", PLANS,
           "-gpu_memory_target", str(budget.memory_target_gb),
           "-overwrite_target_spacing", *[str(s) for s in budget.target_spacing]]
    _run(cmd, nnunet_env(root), log, budget.timeout_s, what="planning / preprocessing")


def run_nnunet(ds: MSDDataset, mapping: ClassMapping, support: list[str], test: list[str],
               *, cell: Path, budget: NnUNetBudget = NnUNetBudget()) -> dict:
    """Train nnU-Net on ``support`` and predict ``test`` into ``<cell>/predictions``, where every
    cell keeps its label maps (``mapping``'s local classes, in each input's geometry); nnU-Net's
    own folders stay in ``<cell>/nnunet``. A finished training is reused; an interrupted one
    continues from nnU-Net's latest checkpoint."""
    require_nnunet()
    root, predictions = Path(cell) / "nnunet", Path(cell) / "predictions"
    root.mkdir(parents=True, exist_ok=True)
    log, planning = root / "nnunet.log", root / "planning.json"
    name = "medpeft"
    if not (root / "preprocessed" / dataset_name(name) / f"{PLANS}.json").exists():
        t0 = time.perf_counter()
        write_raw_dataset(ds, mapping, support, root / "raw", name=name)
        plan_and_preprocess(root, budget, log)
        write_json(planning, {"seconds": time.perf_counter() - t0})
    job = {"dataset": DATASET_ID, "plans": PLANS, "configuration": CONFIGURATION,
           "budget": asdict(budget), "images": {n: str(Path(ds.case(n).image).resolve()) for n in test},
           "predictions": str(predictions.resolve())}
    write_json(root / "job.json", job)
    _run([sys.executable, "-m", "medpeft.peers.nnunet_worker", str(root / "job.json")],
         nnunet_env(root), log, budget.timeout_s, what="training / prediction")
    summary = json.loads((root / "summary.json").read_text())
    # conversion, planning and preprocessing + training + prediction, whichever process ran each
    # (a cell interrupted and continued reports nnU-Net's logged epoch times for its training;
    # planning done by a run before planning.json existed is not known and counts 0)
    summary["planning_seconds"] = json.loads(planning.read_text())["seconds"] \
        if planning.is_file() else None
    summary["seconds"] = (summary["planning_seconds"] or 0.0) + summary["train_seconds"] + \
        summary["predict_seconds"]
    summary["predictions"] = {n: str(predictions / f"{n}.nii.gz") for n in test}
    return summary
