"""Published checkpoints: state dicts with the real key names and shapes load completely where they
should, and a wrong shape or an unexplained key is reported by name (never a silent strict=False)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from monai.networks.nets import SwinUNETR
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.models.backbones import part_of
from medpeft.models.checkpoint_file import UnsafeCheckpointError, read_checkpoint
from medpeft.models.published import CheckpointError, load_published


@pytest.fixture(scope="module")
def monai_keys() -> dict[str, torch.Tensor]:
    """MONAI SwinUNETR as the published models are configured (feature 48, 7x7x7 windows)."""
    torch.manual_seed(0)
    return SwinUNETR(in_channels=1, out_channels=14, feature_size=48).state_dict()


def _body(keys: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in keys.items() if not k.startswith("out.")}


def _parts_loaded(report, parts: tuple[str, ...], keys) -> bool:
    return set(report.loaded) >= {k for k in keys if part_of(k) in parts} and not report.missing


def test_btcv_swin_unetr_loads_whole(monai_keys):
    model, report = load_published({"epoch": 5000, "best_acc": 0.8, "state_dict": monai_keys}, "btcv")
    assert _parts_loaded(report, ("encoder", "decoder", "head"), monai_keys) and not report.new
    assert torch.equal(model.state_dict()["out.conv.conv.weight"], monai_keys["out.conv.conv.weight"])


def test_fseft_foundation_with_ddp_prefix_and_sigmoid_head(monai_keys):
    state = {f"module.{k}": v for k, v in _body(monai_keys).items()}
    state["module.classifier.weight"] = torch.randn(29, 48, 1, 1, 1)
    state["module.classifier.bias"] = torch.randn(29)
    model, report = load_published(state, "fseft")
    assert _parts_loaded(report, ("encoder", "decoder", "head"), monai_keys)
    assert report.preprocessing.spacing == (1.5, 1.5, 1.5) and report.preprocessing.patch == (96,) * 3
    head = model.state_dict()["out.conv.conv.weight"]
    assert head.shape[0] == 30 and not head[0].any()  # background row, then the 29 classes
    assert torch.equal(head[1:], state["module.classifier.weight"])
    x = torch.randn(1, 48, 2, 2, 2)  # softmax over [0, z_c] equals sigmoid(z_c) for one organ
    z = torch.nn.functional.conv3d(x, state["module.classifier.weight"], state["module.classifier.bias"])
    both = torch.stack([torch.zeros_like(z[:, 5]), z[:, 5]], 1)
    assert torch.allclose(torch.softmax(both, 1)[:, 1], torch.sigmoid(z[:, 5]), atol=1e-6)


def test_monai_self_supervised_swinvit_loads_the_encoder(monai_keys):
    state = {}
    for k, v in monai_keys.items():
        if k.startswith("swinViT."):
            k = k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
            state["module." + k[len("swinViT."):]] = v
    state["module.rotation_head.weight"] = torch.zeros(4, 768)  # self-supervised heads
    state["module.contrastive_head.weight"] = torch.zeros(512, 768)
    model, report = load_published({"state_dict": state}, "monai-ssl", out_channels=3)
    swin = [k for k in monai_keys if k.startswith("swinViT.")]
    assert set(report.loaded) == set(swin) and not report.missing
    assert sorted(report.ignored) == ["module.contrastive_head.weight", "module.rotation_head.weight"]
    assert any(k.startswith("decoder1.") for k in report.new)
    assert model.state_dict()["out.conv.conv.weight"].shape[0] == 3


@pytest.mark.parametrize("name", ["universal", "suprem"])
def test_universal_model_and_suprem_load_encoder_and_decoder(monai_keys, name):
    state = {f"module.backbone.{k}": v for k, v in _body(monai_keys).items()}
    state.update({"module.precls_conv.0.weight": torch.zeros(48),
                  "module.GAP.3.weight": torch.zeros(256, 768, 1, 1, 1),
                  "module.controller.weight": torch.zeros(153, 512, 1, 1, 1),
                  "module.organ_embedding.weight": torch.zeros(32, 256)})
    _, report = load_published({"net": state, "epoch": 1}, name, out_channels=5)
    assert _parts_loaded(report, ("encoder", "decoder"), monai_keys)
    assert report.new == ["out.conv.conv.weight", "out.conv.conv.bias"]
    assert len(report.ignored) == 4


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


def test_inspect_checkpoint_command(monai_keys, tmp_path):
    from typer.testing import CliRunner

    from medpeft.cli import app
    path = tmp_path / "swin_unetr.base_5000ep_f48_lr2e-4_pretrained.pt"
    torch.save({"state_dict": monai_keys}, path)
    result = CliRunner().invoke(app, ["inspect", "checkpoint", str(path), "--kind", "btcv"])
    assert result.exit_code == 0, result.output
    assert "head: 2 tensors loaded, 0 new" in result.output
    torch.save({"state_dict": {**monai_keys, "out.conv.conv.bias": torch.zeros(3)}}, path)
    result = CliRunner().invoke(app, ["inspect", "checkpoint", str(path), "--kind", "btcv"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "shape of out.conv.conv.bias" in result.output


def test_import_weights_writes_a_foundation_folder(monai_keys, tmp_path):
    from typer.testing import CliRunner

    from medpeft.cli import app
    from medpeft.infer.predict import save_prediction
    from medpeft.models.weights import load_foundation
    state = {f"module.{k}": v for k, v in _body(monai_keys).items()}
    state["module.classifier.weight"] = torch.randn(29, 48, 1, 1, 1)
    state["module.classifier.bias"] = torch.randn(29)
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


def _genesis_unet_keys() -> dict[str, torch.Tensor]:
    """The Models Genesis U-Net's state dict as its code names it (conv + batch norm pairs)."""
    state = {}

    def luconv(prefix, c_in, c_out):
        state[f"{prefix}.conv1.weight"] = torch.randn(c_out, c_in, 3, 3, 3) * 0.01
        state[f"{prefix}.conv1.bias"] = torch.zeros(c_out)
        for name, value in (("weight", torch.ones(c_out)), ("bias", torch.zeros(c_out)),
                            ("running_mean", torch.zeros(c_out)), ("running_var", torch.ones(c_out)),
                            ("num_batches_tracked", torch.tensor(7))):
            state[f"{prefix}.bn1.{name}"] = value
    for name, c_in, width in (("down_tr64", 1, 64), ("down_tr128", 64, 128),
                              ("down_tr256", 128, 256), ("down_tr512", 256, 512)):
        luconv(f"module.backbone.{name}.ops.0", c_in, width // 2)
        luconv(f"module.backbone.{name}.ops.1", width // 2, width)
    for name, c_in, width in (("up_tr256", 512, 256), ("up_tr128", 256, 128), ("up_tr64", 128, 64)):
        state[f"module.backbone.{name}.up_conv.weight"] = torch.randn(c_in, c_in, 2, 2, 2) * 0.01
        state[f"module.backbone.{name}.up_conv.bias"] = torch.zeros(c_in)
        luconv(f"module.backbone.{name}.ops.0", c_in + c_in // 2, width)
        luconv(f"module.backbone.{name}.ops.1", width, width)
    return state


@pytest.mark.parametrize("name", ["universal-unet", "suprem-unet"])
def test_universal_and_suprem_unet_load_encoder_and_decoder(name):
    state = _genesis_unet_keys()
    state["module.precls_conv.2.weight"] = torch.zeros(8, 64, 1, 1, 1)
    state["module.organ_embedding"] = torch.zeros(32, 512)
    model, report = load_published({"net": state}, name, out_channels=3)
    assert len(report.loaded) == len(state) - 2 and not report.missing
    assert report.new == ["out.conv.conv.weight", "out.conv.conv.bias"]
    assert torch.equal(model.state_dict()["up_tr64.ops.1.conv1.weight"],
                       state["module.backbone.up_tr64.ops.1.conv1.weight"])
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    state["module.backbone.down_tr128.ops.1.conv1.weight"] = torch.zeros(64, 64, 3, 3, 3)
    with pytest.raises(CheckpointError, match="shape of down_tr128.ops.1.conv1.weight"):
        load_published({"net": state}, name)


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


def test_a_file_that_is_no_checkpoint_is_named_in_one_line(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("# not a pickle\n")
    result = CliRunner().invoke(app, ["inspect", "checkpoint", str(path), "--kind", "btcv"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "notes.pth: not a readable PyTorch checkpoint" in result.output
