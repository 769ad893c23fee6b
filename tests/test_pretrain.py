"""Pre-training with partial labels learns, and yields a loadable foundation checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import datasets_with_role

from medpeft.data.phantom.collection import PHANTOM_ORGANS
from medpeft.models.weights import load_foundation
from medpeft.train.loop import LoopConfig
from medpeft.train.pretrain import pretrain


def test_pretraining_learns_and_saves(foundation_dir):
    f = load_foundation(foundation_dir)
    # every organ some source labels, and not the gallbladder, which no source labels
    assert f.classes == tuple(o for o in PHANTOM_ORGANS if o != "gallbladder")
    losses = [json.loads(line)["loss"]
              for line in (foundation_dir / "metrics.jsonl").read_text().splitlines()]
    # class-balanced patches make single logs noisy: compare the means of three logs (10 steps each)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"pre-training loss {first:.3f} -> {last:.3f} ({last / first:.2f}x)")
    assert last < 0.9 * first, losses


def test_continued_pretraining_starts_from_the_given_foundation(collection, foundation_dir, tmp_path):
    """--init: one step at a vanishing rate leaves the given foundation's weights; a different
    backbone is refused by name before anything is written."""
    sources = datasets_with_role(collection, "source")
    out = pretrain(sources, tmp_path / "continued", loop=LoopConfig(steps=1, lr=1e-12),
                   init=foundation_dir, augment="phase-shape")
    given, continued = load_foundation(foundation_dir).model, load_foundation(out).model
    for (name, a), b in zip(given.state_dict().items(), continued.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    with pytest.raises(ValueError, match="--init foundation's backbone"):
        pretrain(sources, tmp_path / "small", "swin-small", loop=LoopConfig(steps=1),
                 init=foundation_dir)
    assert not (tmp_path / "small").exists()
