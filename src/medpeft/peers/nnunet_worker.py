"""The child process of the nnU-Net peer: train ``nnUNetTrainer`` (fold ``all``, CPU, the job's
epoch budget) and predict the job's images with ``nnUNetPredictor``. Run as
``python -m medpeft.peers.nnunet_worker JOB.json`` with nnU-Net's folders in the environment."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import torch

EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")


def train(job: dict) -> tuple[Path, int, float]:
    """Train (or continue) nnU-Net; returns its output folder, trainable parameters, seconds."""
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
    budget = job["budget"]
    trainer = get_trainer_from_args(str(job["dataset"]), job["configuration"], "all",
                                    plans_identifier=job["plans"], device=torch.device("cpu"))
    trainer.num_epochs = budget["epochs"]
    trainer.num_iterations_per_epoch = budget["iterations"]
    trainer.num_val_iterations_per_epoch = budget["val_iterations"]
    trainer.save_every = 1  # a killed run loses at most one epoch
    out = Path(trainer.output_folder)
    t0 = time.perf_counter()
    continued = (out / "checkpoint_latest.pth").exists() or (out / "checkpoint_final.pth").exists()
    if not (out / "checkpoint_final.pth").exists():
        maybe_load_checkpoint(trainer, (out / "checkpoint_latest.pth").exists(), False)
        trainer.run_training()
    seconds = time.perf_counter() - t0
    if continued:  # part or all of the training ran in an earlier, interrupted process
        seconds = logged_epoch_seconds(out)
    if trainer.network is None:
        trainer.initialize()
    n_params = sum(p.numel() for p in trainer.network.parameters())
    return out.parent, n_params, seconds


def logged_epoch_seconds(fold_dir: Path) -> float:
    """The training time nnU-Net logged ("Epoch time: N s" per finished epoch), over every
    training log in ``fold_dir``: what a run continued across processes took to train."""
    return sum(float(m.group(1)) for log in sorted(fold_dir.glob("training_log_*.txt"))
               for m in EPOCH_TIME.finditer(log.read_text()))


def predict(job: dict, model_dir: Path) -> float:
    """Predict every job image into the job's predictions folder; returns seconds."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=("all",))
    out = Path(job["predictions"])
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(job["images"])
    t0 = time.perf_counter()
    predictor.predict_from_files_sequential([[job["images"][n]] for n in names],
                                            [str(out / n) for n in names],
                                            save_probabilities=False, overwrite=True)
    return time.perf_counter() - t0


def main(job_path: str) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    job = json.loads(Path(job_path).read_text())
    model_dir, n_params, train_s = train(job)
    predict_s = predict(job, model_dir)
    summary = {"trainable_parameters": n_params, "train_seconds": train_s,
               "predict_seconds": predict_s, "model": str(model_dir), "budget": job["budget"]}
    tmp = Path(job_path).with_name(".summary.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, Path(job_path).with_name("summary.json"))


if __name__ == "__main__":
    main(sys.argv[1])
