"""Published checkpoints: state dicts with the real key names and shapes load completely where they
should, and a wrong shape or an unexplained key is reported by name (never a silent strict=False)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.models.backbones import part_of
from medpeft.models.checkpoint_file import UnsafeCheckpointError, read_checkpoint
from medpeft.models.published import FSEFT_CLASSES, CheckpointError, load_published, unwrap

FIXTURES = Path(__file__).parent / "fixtures" / "published"


def published_keys(kind: str) -> dict:
    """The committed key list of a published checkpoint (tests/fixtures/published, see derive.py)."""
    return json.loads((FIXTURES / f"{kind}.json").read_text())


def checkpoint_like(kind: str, *, seed: int = 0) -> dict:
    """An object laid out as the published file: its container entries around a state dict with
    the published names and shapes, filled with random values."""
    fixture = published_keys(kind)
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=gen) * 0.02 if s else torch.tensor(7)
             for k, s in fixture["keys"].items()}
    if fixture["entry"] is None:
        return state
    extra = {"epoch": np.int64(5000), "best_acc": np.float64(0.83)}
    return {**{k: extra[k] for k in fixture["container"]}, fixture["entry"]: state}


@pytest.fixture(scope="module")
def monai_keys() -> dict[str, torch.Tensor]:
    """The BTCV release's state dict (MONAI's Swin UNETR keys, 14-class head)."""
    return checkpoint_like("btcv")["state_dict"]


# what each published file carries beyond the backbone medpeft builds, by the repository's code
EXTRAS = {"btcv": 0, "fseft": 0, "monai-ssl": 0, "universal": 13, "suprem": 13,
          "universal-unet": 13, "suprem-unet": 13}


@pytest.mark.parametrize("kind", sorted(EXTRAS))
def test_each_published_key_list_loads_with_nothing_missing(kind):
    fixture = published_keys(kind)
    source = checkpoint_like(kind)
    model, report = load_published(source, kind, out_channels=3)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert len(report.ignored) == EXTRAS[kind]
    assert len(report.loaded) == len(fixture["keys"]) - EXTRAS[kind]
    state, loaded = unwrap(source), model.state_dict()
    some = [k for k in state if "conv" in k and state[k].dim() == 5][:3]
    for key in some:  # values land where their names say (prefixes stripped, heads re-laid)
        mine = next(k for k in report.loaded if key.endswith(k.removeprefix("out.conv.conv.")
                                                             .removeprefix("swinViT.")))
        assert torch.equal(loaded[mine][-state[key].shape[0]:], state[key])


def test_published_swin_parts_match_the_names_medpeft_reports():
    """Every Swin UNETR file covers encoder, decoder and head as its repository says."""
    _, report = load_published(checkpoint_like("btcv"), "btcv")
    assert {part_of(k) for k in report.loaded} == {"encoder", "decoder", "head"} and not report.new
    _, report = load_published(checkpoint_like("monai-ssl"), "monai-ssl", out_channels=3)
    assert {part_of(k) for k in report.loaded} == {"encoder"}
    assert all(k.startswith("swinViT.") for k in report.loaded)
    assert any(k.startswith("decoder1.") for k in report.new)
    _, report = load_published(checkpoint_like("universal"), "universal", out_channels=5)
    assert report.new == ["out.conv.conv.weight", "out.conv.conv.bias"]
    assert "module.organ_embedding" in report.ignored and "module.text_to_vision.weight" in report.ignored


def test_fseft_per_organ_output_is_the_sigmoid_of_its_own_head():
    """FSEFT's 29 sigmoid outputs become a softmax head with a zero background row: for every
    organ, softmax over [background, organ] of medpeft's output equals the sigmoid of the original
    classifier on the same decoder features."""
    state = checkpoint_like("fseft", seed=3)
    w, b = state["module.classifier.weight"] * 50, state["module.classifier.bias"] * 50
    state["module.classifier.weight"], state["module.classifier.bias"] = w, b  # spread the logits
    model, _ = load_published(state, "fseft")
    features = {}
    model.out.register_forward_pre_hook(lambda _m, args: features.update(x=args[0]))
    with torch.no_grad():
        logits = model.eval()(torch.randn(1, 1, 64, 32, 32, generator=torch.Generator().manual_seed(1)))
        original = torch.sigmoid(torch.nn.functional.conv3d(features["x"], w, b))
    assert logits.shape[1] == 30
    for organ in range(29):
        pair = torch.softmax(logits[:, [0, organ + 1]], dim=1)[:, 1]
        assert torch.allclose(pair, original[:, organ], atol=1e-5), FSEFT_CLASSES[organ]
    assert original.std() > 0.1  # the check is not between constants


def test_wrong_shape_and_unexplained_keys_are_named(monai_keys):
    state = dict(monai_keys)
    state["decoder2.transp_conv.conv.weight"] = torch.zeros(3, 3, 2, 2, 2)
    state["swinViT.extra_block.weight"] = torch.zeros(1)
    del state["encoder1.layer.conv1.conv.weight"]
    with pytest.raises(CheckpointError) as err:
        load_published({"state_dict": state}, "btcv")
    text = str(err.value)
    assert "shape of decoder2.transp_conv.conv.weight: checkpoint [3, 3, 2, 2, 2]" in text
    assert "unexpected: swinViT.extra_block.weight" in text
    assert "missing: encoder1.layer.conv1.conv.weight" in text


def test_a_file_that_fits_nothing_says_so_in_a_screenful(monai_keys):
    """The wrong file: a summary line with the counts and a hint, at most SHOWN_KEYS keys of a
    kind, the rest counted (it printed all 126 missing keys)."""
    from medpeft.models.published import SHOWN_KEYS
    with pytest.raises(CheckpointError) as err:
        load_published({"state_dict": {f"other.{k}": v for k, v in monai_keys.items()}}, "btcv")
    text = str(err.value)
    n = len(monai_keys)
    assert f"0 tensors fit, {n} missing" in text and "none fits: is this a btcv checkpoint?" in text
    assert text.count("missing: ") == SHOWN_KEYS and f"... and {n - SHOWN_KEYS} more missing keys" in text
    assert len(text.splitlines()) <= 3 * (SHOWN_KEYS + 1) + 1


def test_inspect_checkpoint_command(monai_keys, tmp_path):
    path = tmp_path / "swin_unetr.base_5000ep_f48_lr2e-4_pretrained.pt"
    torch.save({"state_dict": monai_keys}, path)
    result = CliRunner().invoke(app, ["inspect", "checkpoint", str(path), "--kind", "btcv"])
    assert result.exit_code == 0, result.output
    assert "head: 2 tensors loaded, 0 new" in result.output
    torch.save({"state_dict": {**monai_keys, "out.conv.conv.bias": torch.zeros(3)}}, path)
    result = CliRunner().invoke(app, ["inspect", "checkpoint", str(path), "--kind", "btcv"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "shape of out.conv.conv.bias" in result.output


def test_import_weights_writes_a_foundation_folder(tmp_path):
    from medpeft.infer.predict import save_prediction
    from medpeft.models.weights import load_foundation
    state = checkpoint_like("fseft")
    torch.save({"net": state}, tmp_path / "fseft.pth")
    result = CliRunner().invoke(app, ["import-weights", str(tmp_path / "fseft.pth"), "--kind",
                                      "fseft", "--out", str(tmp_path / "fseft")])
    assert result.exit_code == 0, result.output
    f = load_foundation(tmp_path / "fseft")
    assert f.classes[:4] == ("spleen", "kidney_right", "kidney_left", "gallbladder")
    assert "liver_tumor" in f.classes and f.preprocessing.spacing == (1.5, 1.5, 1.5)
    assert torch.equal(f.model.state_dict()["out.conv.conv.weight"][1:], state["module.classifier.weight"])
    import nibabel as nib
    import numpy as np
    image = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(image))
    channels = np.arange(64).reshape(4, 4, 4) % 30  # every class, ontology or not, gets an id
    save_prediction(tmp_path / "pred.nii.gz", channels.astype(np.uint8), image, f.classes)
    ids = set(np.unique(np.asarray(nib.load(str(tmp_path / "pred.nii.gz")).dataobj)).tolist())
    assert len(ids) == 30
    no_head = CliRunner().invoke(app, ["import-weights", str(tmp_path / "fseft.pth"), "--kind",
                                       "monai-ssl", "--out", str(tmp_path / "x")])
    assert no_head.exit_code == 2 and "--classes" in no_head.output


@pytest.mark.parametrize("name", ["universal-unet", "suprem-unet"])
def test_universal_and_suprem_unet_run_and_name_a_wrong_shape(name):
    source = checkpoint_like(name)
    model, _ = load_published(source, name, out_channels=3)
    state = source["net"]
    assert torch.equal(model.state_dict()["up_tr64.ops.1.conv1.weight"],
                       state["module.backbone.up_tr64.ops.1.conv1.weight"])
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    state["module.backbone.down_tr128.ops.1.conv1.weight"] = torch.zeros(64, 64, 3, 3, 3)
    with pytest.raises(CheckpointError, match="shape of down_tr128.ops.1.conv1.weight"):
        load_published(source, name)


class _Planted:
    """Unpickling this creates the file ``marker``: the kind of code a hostile checkpoint runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_btcv_release_layout_with_numpy_scalars_loads_as_weights_only(monai_keys, tmp_path):
    """The MONAI BTCV release stores its best Dice as a numpy float64 beside the state dict."""
    path = tmp_path / "model_btcv.pt"
    torch.save({"epoch": np.int64(5000), "best_acc": np.float64(0.83),
                "state_dict": monai_keys}, path)
    with pytest.raises(pickle.UnpicklingError):  # torch alone refuses it
        torch.load(str(path), weights_only=True)
    assert float(read_checkpoint(path)["best_acc"]) == pytest.approx(0.83)
    model, report = load_published(path, "btcv")
    assert torch.equal(model.state_dict()["out.conv.conv.weight"], monai_keys["out.conv.conv.weight"])
    result = CliRunner().invoke(app, ["inspect", "checkpoint", str(path), "--kind", "btcv"])
    assert result.exit_code == 0, result.output
    assert "encoder:" in result.output


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(monai_keys, tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "hostile.pth"
    torch.save({"state_dict": monai_keys, "extra": _Planted(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="hostile.pth"):
        read_checkpoint(path)
    result = CliRunner().invoke(app, ["import-weights", str(path), "--kind", "btcv",
                                      "--out", str(tmp_path / "f")])
    assert result.exit_code != 0 and "hostile.pth" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2
    assert not marker.exists() and not (tmp_path / "f").exists()
    # the marker mechanism is real: trusting the file runs its code
    with pytest.warns(UserWarning, match="weights_only=False"):
        read_checkpoint(path, trust=True)
    assert marker.exists()


@pytest.mark.parametrize("text", ["# not a pickle\n", "junk\n", "PK\x03\x04 not a zip"])
def test_a_file_that_is_no_checkpoint_is_named_in_one_line(tmp_path, text):
    """Whatever torch's readers raise on it ("junk": KeyError in its legacy reader)."""
    path = tmp_path / "notes.pth"
    path.write_text(text)
    for args in (["inspect", "checkpoint", str(path), "--kind", "btcv"],
                 ["import-weights", str(path), "--kind", "btcv", "--out", str(tmp_path / "f")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        assert "notes.pth: not a readable PyTorch checkpoint" in result.output
