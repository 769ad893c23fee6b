"""The shipped foundation's recipe, LoRA adapter round trips and seeding (the domain shift and K=5
adaptation at the new site: test_organ_floor)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.msd import load_msd
from medpeft.methods.adapter_io import export_merged, load_adapter
from medpeft.models.weights import load_foundation, shipped_foundation
from medpeft.pipelines.tune import adapt


@pytest.fixture(scope="module")
def shipped():
    folder = shipped_foundation()
    assert folder is not None, "the phantom foundation model must ship with the package"
    return folder


def test_shipped_foundation_was_made_by_the_demo_recipe(shipped):
    """`make demo` uses the shipped weights only when its recipe made them; otherwise it
    pre-trains from scratch, far past its 10-minute budget."""
    from medpeft.data.phantom.collection import source_hash
    from medpeft.experiments.demo_config import DemoConfig, pretrain_recipe
    meta = json.loads((shipped / "foundation.json").read_text())
    assert meta["recipe"] == pretrain_recipe(source_hash("demo", 0), DemoConfig())


def test_lora_adapter_round_trip_and_base_check(collection, shipped, tmp_path):
    target = load_msd(collection / "Task10_NewSite")
    manifest = write_manifest(tmp_path / "k1.json", make_split(target, 1, seed=0, n_test=3))
    adapt(shipped, manifest, "lora", tmp_path / "lora", steps=3, seed=0)
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["method"] == "lora" and all("lora_" in t or t.startswith("out.")
                                               for t in config["tensors"])
    assert config["trainable_parameters"] / config["base_parameters"] < 0.01
    x = torch.rand(1, 1, 64, 64, 32)
    a = load_adapter(tmp_path / "lora", load_foundation(shipped))
    b = load_adapter(tmp_path / "lora", load_foundation(shipped))
    base = load_foundation(shipped).model.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x)) and not torch.allclose(a(x), base(x))
    # export --merge: a plain checkpoint with the base keys that computes the same outputs
    merged = load_foundation(export_merged(tmp_path / "lora", load_foundation(shipped),
                                           tmp_path / "merged"))
    with torch.no_grad():
        assert torch.allclose(merged.model.eval()(x), a(x), rtol=1e-4, atol=1e-4)
    other = dataclasses.replace(load_foundation(shipped), sha256="0" * 64)
    with pytest.raises(ValueError, match="base weights"):
        load_adapter(tmp_path / "lora", other)


def test_adapt_result_depends_on_the_seed_not_on_earlier_work(collection, shipped, tmp_path):
    from safetensors.torch import load_file
    target = load_msd(collection / "Task10_NewSite")
    manifest = write_manifest(tmp_path / "k1.json", make_split(target, 1, seed=0, n_test=3))
    weights = []
    for run, noise in enumerate((1, 2)):
        torch.manual_seed(noise)  # whatever ran before in this process
        torch.rand(noise * 10)
        adapt(shipped, manifest, "lora", tmp_path / f"run{run}", steps=2, seed=0)
        weights.append(load_file(str(tmp_path / f"run{run}" / "adapter.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_k1_default_adapter_carries_the_background_offset_in_its_head(collection, shipped,
                                                                        tmp_path, monkeypatch):
    """At K=1 the default method's saved head has the measured offset taken off the background
    bias and nothing else changed (the same run without the rule differs only there); the
    adapter's config records it, and K=5 keeps none."""
    from safetensors.torch import load_file

    from medpeft import methods
    from medpeft.methods import DEFAULT_METHOD, background_offset
    target = load_msd(collection / "Task10_NewSite")
    manifest = write_manifest(tmp_path / "k1.json", make_split(target, 1, seed=0, n_test=3))
    assert background_offset("decoder", 1) == 1.0 and background_offset(DEFAULT_METHOD, 1) == 2.0
    for method in ("decoder", DEFAULT_METHOD):
        assert background_offset(method, 5) == 0.0
    assert background_offset("lora", 1) == 0.0
    adapt(shipped, manifest, DEFAULT_METHOD, tmp_path / "offset", steps=2, seed=0)
    monkeypatch.setattr(methods, "BACKGROUND_OFFSET", {})
    adapt(shipped, manifest, DEFAULT_METHOD, tmp_path / "plain", steps=2, seed=0)
    with_offset, plain = (load_file(str(tmp_path / d / "adapter.safetensors")) for d in ("offset", "plain"))
    bias = "out.conv.conv.bias"
    assert torch.allclose(plain[bias][0] - with_offset[bias][0], torch.tensor(2.0), atol=1e-6)
    assert torch.equal(plain[bias][1:], with_offset[bias][1:])
    assert all(torch.equal(plain[k], with_offset[k]) for k in plain if k != bias)
    config = json.loads((tmp_path / "offset" / "adapter_config.json").read_text())
    assert config["background_offset"] == 2.0
    monkeypatch.undo()  # the rule back: the foundation's organs listed in full take the offset,
    # a binary task (not measured) does not
    adapt(shipped, manifest, DEFAULT_METHOD, tmp_path / "listed", steps=1, seed=0,
          organs=tuple(load_foundation(shipped).classes))
    adapt(shipped, manifest, DEFAULT_METHOD, tmp_path / "binary", steps=1, seed=0,
          organs=("spleen",))
    offsets = [json.loads((tmp_path / d / "adapter_config.json").read_text())["background_offset"]
               for d in ("listed", "binary")]
    assert offsets == [2.0, 0.0]


def test_a_foundation_may_name_a_smaller_adaptation_crop_while_inference_keeps_its_roi(
        collection, shipped, tmp_path):
    """`foundation.json`'s `"adaptation": {"crop": ...}` sets the training crops of adaptation
    (half the voxels per step); the preprocessing's ROI, which inference's windows use, stays.
    A crop Swin UNETR cannot halve five times is refused, naming the file."""
    import shutil

    from medpeft.data.ontology import class_mapping
    from medpeft.pipelines.tune import crop_dataset
    folder = tmp_path / "foundation"
    shutil.copytree(shipped, folder)
    meta = json.loads((folder / "foundation.json").read_text())
    target = load_msd(collection / "Task10_NewSite")
    names = [target.cases[0].name]

    def crop_shape(crop) -> tuple:
        meta["preprocessing"]["patch"] = [64, 64, 64]
        meta.pop("adaptation", None)
        if crop is not None:
            meta["adaptation"] = {"crop": crop}
        (folder / "foundation.json").write_text(json.dumps(meta))
        foundation = load_foundation(folder)
        assert foundation.preprocessing.patch == (64, 64, 64)
        item = crop_dataset(foundation, target, class_mapping(target.labels, foundation.classes),
                            names)[0]
        item = item[0] if isinstance(item, list) else item
        return tuple(item["image"].shape[-3:])
    assert crop_shape([64, 64, 32]) == (64, 64, 32)
    assert crop_shape(None) == (64, 64, 64)
    with pytest.raises(ValueError, match="foundation.json: adaptation.crop"):
        crop_shape([64, 64, 30])
