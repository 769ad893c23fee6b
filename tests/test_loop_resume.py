"""An interrupted run resumes from its last complete checkpoint; a half-written one is ignored."""
from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch

from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.data.transforms import Preprocessing, cached_dataset, case_dicts
from medpeft.methods import apply_method
from medpeft.models.backbones import PRESETS, build_backbone
from medpeft.train.checkpoints import load_checkpoint
from medpeft.train.loop import LoopConfig, train_loop
from medpeft.train.losses import MarginalDiceCELoss


def _head_run(collection):
    """A head-only run on the liver set: the network and its cached crops."""
    ds = load_msd(collection / "Task02_Liver")
    mapping = class_mapping(ds.labels, ("liver",))
    data = cached_dataset(case_dicts(ds, mapping), Preprocessing(), {ds.name: mapping})
    torch.manual_seed(0)
    model = build_backbone(PRESETS["swin-fast"], 2)
    apply_method(model, "head")
    return model, data


def test_resume_continues_after_crash(collection, tmp_path):
    model, data = _head_run(collection)
    cfg = LoopConfig(steps=6, lr=1e-2, checkpoint_every=2, log_every=1)
    out = train_loop(model, data, MarginalDiceCELoss(), cfg, run_dir=tmp_path, stop_after=5)  # "crash"
    assert out["stopped"]
    ckpts = tmp_path / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 4
    (ckpts / "ckpt-0000006").mkdir()  # a half-written checkpoint that never got committed
    fresh = build_backbone(PRESETS["swin-fast"], 2)
    apply_method(fresh, "head")
    initial = fresh.out.conv.conv.weight.detach().clone()
    assert load_checkpoint(ckpts, fresh) == 4
    assert not torch.equal(fresh.out.conv.conv.weight, initial)
    earlier = json.loads((ckpts / "ckpt-0000004" / "state.json").read_text())["seconds"]
    assert earlier > 0  # what steps 1..4 took in the process that crashed
    t0 = time.perf_counter()
    resumed = train_loop(fresh, data, MarginalDiceCELoss(), cfg, run_dir=tmp_path, resume=True)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    # the run's training seconds: steps 1..4 from the checkpoint, then this process's
    assert earlier < resumed["seconds"] <= earlier + time.perf_counter() - t0
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 5, 6]  # steps 5.. redone once after the crash, none lost


def test_a_crash_between_checkpoint_files_resumes_the_previous_one_with_its_adam_moments(
        collection, tmp_path, monkeypatch):
    """The writer dies after the step-4 weights, before its optimizer file: the step-2 checkpoint
    stays the committed one and restores the exact Adam moments and schedule it was saved with."""
    from medpeft.train import checkpoints as checkpoint_module
    ds = load_msd(collection / "Task02_Liver")
    mapping = class_mapping(ds.labels, ("liver",))
    data = cached_dataset(case_dicts(ds, mapping), Preprocessing(), {ds.name: mapping})

    def model():
        torch.manual_seed(0)
        m = build_backbone(PRESETS["swin-fast"], 2)
        apply_method(m, "head")
        return m

    saved, real_save = {}, checkpoint_module.save_state

    def faulty_save(path, tensors):
        if path.name == "optimizer.safetensors" and path.parent.name == "ckpt-0000004":
            raise OSError("disk full (injected)")
        if path.name == "optimizer.safetensors":
            saved.update({k: v.clone() for k, v in tensors.items()})
        return real_save(path, tensors)

    monkeypatch.setattr(checkpoint_module, "save_state", faulty_save)
    cfg = LoopConfig(steps=6, lr=1e-2, checkpoint_every=2, log_every=1)
    with pytest.raises(OSError, match="injected"):
        train_loop(model(), data, MarginalDiceCELoss(), cfg, run_dir=tmp_path)
    monkeypatch.setattr(checkpoint_module, "save_state", real_save)
    ckpts = tmp_path / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 2
    assert (ckpts / "ckpt-0000004" / "trainable.safetensors").is_file()  # the torn write

    fresh = model()
    params = [p for p in fresh.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    assert load_checkpoint(ckpts, fresh, optimizer, scheduler) == 2
    state = optimizer.state_dict()["state"]
    moments = [k for k in saved if k.endswith(("exp_avg", "exp_avg_sq"))]
    assert moments and all(torch.equal(state[int(k.split(".")[0])][k.split(".", 1)[1]], saved[k])
                           for k in moments)
    assert all(float(state[i]["step"]) == 2 for i in state) and scheduler.last_epoch == 2
    resumed = train_loop(fresh, data, MarginalDiceCELoss(), cfg, run_dir=tmp_path, resume=True)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 6


class _NanAt:
    """The real loss, except NaN at the given calls (a bad batch)."""

    def __init__(self, bad_calls: set[int]) -> None:
        self.loss, self.bad, self.calls = MarginalDiceCELoss(), bad_calls, 0

    def __call__(self, *args):
        self.calls += 1
        value = self.loss(*args)
        return value * float("nan") if self.calls in self.bad else value


def test_a_step_with_a_nan_loss_is_not_taken_and_the_weights_stay_finite(collection, tmp_path):
    from medpeft.train.loop import TrainingDiverged
    model, data = _head_run(collection)
    cfg = LoopConfig(steps=6, lr=1e-2, checkpoint_every=100, log_every=1)
    out = train_loop(model, data, _NanAt({3}), cfg, run_dir=tmp_path / "one")
    assert out["skipped_steps"] == 1 and out["steps"] == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())
    logged = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 4, 5, 6]  # the skipped step logs no loss
    with pytest.raises(TrainingDiverged, match=r"not finite for 10 steps in a row.*--lr"):
        train_loop(model, data, _NanAt(set(range(2, 100))), LoopConfig(steps=20, lr=1e-2),
                   run_dir=tmp_path / "diverged")


def test_the_progress_bar_names_skipped_steps_instead_of_showing_a_nan_loss(collection, tmp_path):
    from rich.progress import Progress
    model, data = _head_run(collection)
    progress = Progress()
    train_loop(model, data, _NanAt({4}), LoopConfig(steps=4, lr=1e-2, checkpoint_every=100),
               run_dir=tmp_path / "bar", progress=progress, desc="adapt")
    text = progress.tasks[0].description
    assert "nan" not in text and text.startswith("adapt") and text.endswith("(1 skipped)")


def test_snapshots_keep_the_weights_of_every_nth_step_after_the_run(collection, tmp_path):
    """Checkpoints keep only the newest; snapshots are the pre-training curve's points, kept
    after the run finishes, each its step's weights (what pretrain_milestones.py scores)."""
    from safetensors.torch import load_file
    model, data = _head_run(collection)
    cfg = LoopConfig(steps=4, lr=1e-2, checkpoint_every=1, snapshot_every=2, log_every=1)
    train_loop(model, data, MarginalDiceCELoss(), cfg, run_dir=tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    snaps = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert snaps == ["step-0000002", "step-0000004"]
    last = load_file(str(tmp_path / "snapshots" / "step-0000004" / "trainable.safetensors"))
    mid = load_file(str(tmp_path / "snapshots" / "step-0000002" / "trainable.safetensors"))
    assert torch.equal(last["out.conv.conv.weight"], model.out.conv.conv.weight.detach())
    assert not torch.equal(mid["out.conv.conv.weight"], last["out.conv.conv.weight"])
    train_loop(model, data, MarginalDiceCELoss(), replace(cfg, steps=1), run_dir=tmp_path)
    assert not (tmp_path / "snapshots").exists()  # a fresh run keeps nothing of the last one
