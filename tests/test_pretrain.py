"""Pre-training with partial labels learns, and yields a loadable foundation checkpoint."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from conftest import TINY_PRETRAIN_STEPS, datasets_with_role
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.data.phantom.collection import PHANTOM_ORGANS
from medpeft.data.transforms import Preprocessing
from medpeft.models.weights import load_foundation
from medpeft.train.loop import LoopConfig
from medpeft.train.pretrain import finished, pretrain, start_from


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
    """--init: one step at a vanishing rate leaves the given foundation's weights, here moved to
    a finer working grid; a different backbone or intensity window is refused by name before
    anything is written."""
    sources = datasets_with_role(collection, "source")
    finer = replace(Preprocessing(), spacing=(4.0, 4.0, 4.0))
    out = pretrain(sources, tmp_path / "continued", pp=finer, loop=LoopConfig(steps=1, lr=1e-12),
                   init=foundation_dir, augment="phase-shape")
    given, continued = load_foundation(foundation_dir), load_foundation(out)
    assert continued.preprocessing.spacing == (4.0, 4.0, 4.0) != given.preprocessing.spacing
    # continuing again without a grid keeps the foundation's own, not the 5 mm default
    _, grid = start_from(out, backbone=given.backbone, classes=given.classes, pp=None)
    assert grid == continued.preprocessing
    for (name, a), b in zip(given.model.state_dict().items(), continued.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    with pytest.raises(ValueError, match="--init foundation's backbone"):
        pretrain(sources, tmp_path / "small", "swin-small", loop=LoopConfig(steps=1),
                 init=foundation_dir)
    with pytest.raises(ValueError, match="--init foundation's intensity window"):
        pretrain(sources, tmp_path / "window", pp=replace(finer, hu_window=(-1000.0, 1000.0)),
                 loop=LoopConfig(steps=1), init=foundation_dir)
    with pytest.raises(ValueError, match="steady organ.*heart.*not labelled"):
        pretrain(sources, tmp_path / "heart", loop=LoopConfig(steps=1), init=foundation_dir,
                 augment="contrast-shape", steady_organs=("heart",))
    with pytest.raises(ValueError, match="does not draw"):
        pretrain(sources, tmp_path / "shape", loop=LoopConfig(steps=1), init=foundation_dir,
                 augment="shape", steady_organs=("spleen",))
    assert not any((tmp_path / name).exists() for name in ("small", "window", "heart", "shape"))


def test_resume_of_a_finished_run_keeps_its_weights(collection, foundation_dir, tmp_path):
    """A finished run keeps no checkpoint, so `pretrain --resume` on it used to train again from
    random weights, over the finished ones. Now it says so and leaves the folder as it is; asked
    for other steps, it refuses and names --init, the way to train further."""
    done = tmp_path / "done"
    shutil.copytree(foundation_dir, done)
    before = (done / "foundation.safetensors").read_bytes()
    sources = [a for s in datasets_with_role(collection, "source") for a in ("--source", str(s))]
    result = CliRunner().invoke(app, ["pretrain", *sources, "--out", str(done), "--steps",
                                      str(TINY_PRETRAIN_STEPS), "--resume"])
    assert result.exit_code == 0, result.output
    assert "already holds the foundation" in " ".join(result.output.split())
    assert (done / "foundation.safetensors").read_bytes() == before
    result = CliRunner().invoke(app, ["pretrain", *sources, "--out", str(done), "--steps",
                                      str(TINY_PRETRAIN_STEPS + 5), "--resume"])
    assert result.exit_code != 0 and "--init" in " ".join(result.output.split()), result.output
    assert (done / "foundation.safetensors").read_bytes() == before
    # a longer run started over it and interrupted leaves a checkpoint: that one is resumed
    (done / "checkpoints").mkdir()
    (done / "checkpoints" / "latest.json").write_text('{"dir": "ckpt-0000005", "step": 5}')
    assert not finished(done, TINY_PRETRAIN_STEPS + 5)


def test_pretrain_command_defaults_to_the_shipped_foundations_first_stage():
    """`medpeft pretrain` with no --augment trains the way the shipped foundation's first stage
    did (the measured best), and the foundation's continued stages are recorded beside it."""
    import inspect

    from medpeft.cli_pretrain import pretrain_command
    from medpeft.models.weights import shipped_foundation
    recipe = json.loads((shipped_foundation() / "foundation.json").read_text())["recipe"]
    options = inspect.signature(pretrain_command).parameters
    assert options["augment"].default.default == recipe["augment"] == "contrast"
    assert options["sampling"].default.default == recipe["sampling"]
    assert [stage["augment"] for stage in recipe["continued"]] == \
        ["contrast-shape"] * 2 + ["contrast-strong-shape"] * 2
    assert [stage.get("steady_organs") for stage in recipe["continued"]] == [None] * 2 + [["spleen"]] * 2
