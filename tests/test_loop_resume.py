"""An interrupted run resumes from its last complete checkpoint; a half-written one is ignored."""
from __future__ import annotations

import json

import torch

from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.data.transforms import Preprocessing, cached_dataset, case_dicts
from medpeft.methods import apply_method
from medpeft.models.backbones import PRESETS, build_backbone
from medpeft.train.losses import MarginalDiceCELoss
from medpeft.train.loop import LoopConfig, load_checkpoint, train_loop


def test_resume_continues_after_crash(collection, tmp_path):
    ds = load_msd(collection / "Task02_Liver")
    mapping = class_mapping(ds.labels, ("liver",))
    data = cached_dataset(case_dicts(ds, mapping), Preprocessing(), {ds.name: mapping})
    torch.manual_seed(0)
    model = build_backbone(PRESETS["swin-fast"], 2)
    apply_method(model, "head")
    cfg = LoopConfig(steps=6, lr=1e-2, checkpoint_every=2, log_every=1)
    out = train_loop(model, data, MarginalDiceCELoss(), cfg, tmp_path, stop_after=5)  # "crash"
    assert out["stopped"]
    ckpts = tmp_path / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 4
    (ckpts / "ckpt-0000006").mkdir()  # a half-written checkpoint that never got committed
    fresh = build_backbone(PRESETS["swin-fast"], 2)
    apply_method(fresh, "head")
    initial = fresh.out.conv.conv.weight.detach().clone()
    assert load_checkpoint(ckpts, fresh) == 4
    assert not torch.equal(fresh.out.conv.conv.weight, initial)
    resumed = train_loop(fresh, data, MarginalDiceCELoss(), cfg, tmp_path, resume=True)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 5, 6]  # steps 5.. redone once after the crash, none lost
