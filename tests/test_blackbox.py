"""Black-box adapters: trained on features of a model that is only called, never read."""
from __future__ import annotations

import json

import pytest
import torch

from medpeft import device as device_module
from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.device import precision, supports_bf16
from medpeft.evaluate.metrics import evaluate_cases, mean_dice
from medpeft.methods.blackbox.heads import BlackBoxHead, prototype_init
from medpeft.methods.blackbox.predictor import load_blackbox
from medpeft.methods.blackbox.service import foundation_service
from medpeft.models.weights import load_foundation, shipped_foundation
from medpeft.pipelines.blackbox import blackbox_adapt


def _seal(model: torch.nn.Module) -> None:
    """Reading any parameter or state of ``model``, or a gradient reaching it, now raises."""
    def refuse(*args, **kwargs):
        raise AssertionError("the black-box path read the base model")
    for m in model.modules():
        m.parameters = m.named_parameters = m.state_dict = refuse
    for _, p in torch.nn.Module.named_parameters(model):
        p.requires_grad_(True)
        p.register_hook(refuse)


def test_blackbox_never_touches_the_base_model_and_beats_zero_shot(collection, tmp_path):
    f = load_foundation(shipped_foundation())
    target = load_msd(collection / "Task10_NewSite")
    split = make_split(target, 5, seed=0, n_test=3)
    mapping = class_mapping(target.labels, f.classes)
    zero = mean_dice(evaluate_cases(f.model, target, split["test"], mapping, pp=f.preprocessing,
                                    classes=f.classes))
    service = foundation_service(f.model)
    _seal(f.model)
    with pytest.raises(AssertionError, match="read the base model"):
        f.model.parameters()  # the seal holds
    manifest = write_manifest(tmp_path / "k5.json", split)
    summary = blackbox_adapt(shipped_foundation(), manifest, tmp_path / "bb", kind="spatial",
                             init="prototype", steps=75, service=service)
    assert summary["precision"] == precision(torch.device("cpu"), True)  # the head's own autocast
    predictor, config = load_blackbox(tmp_path / "bb", service)
    adapted = mean_dice(evaluate_cases(predictor, target, split["test"], mapping, pp=f.preprocessing,
                                       classes=f.classes))
    print(f"zero-shot {zero:.3f}, black-box spatial adapter K=5 {adapted:.3f}")
    assert adapted >= zero + 0.05
    assert config["trainable_parameters"] < 10_000


def test_the_feature_service_exposes_only_its_call():
    import copy
    import pickle
    f = load_foundation(shipped_foundation())
    service = foundation_service(f.model)
    x = torch.rand(1, 1, 64, 64, 32)
    assert service(x).shape[1] == service.channels and service.name == "SwinUNETR"
    for read in (lambda: service.model, lambda: service._call, lambda: service.parameters(),
                 lambda: service.buffers(), lambda: service.state_dict(),
                 lambda: service.out.conv.conv.weight, lambda: service.__dict__,
                 lambda: service._FeatureService__call):
        with pytest.raises(AttributeError, match="sealed"):
            read()
    with pytest.raises(AttributeError, match="sealed"):
        service.channels = 3
    for duplicate in (copy.deepcopy, copy.copy, pickle.dumps):
        with pytest.raises(TypeError, match="sealed"):
            duplicate(service)


def test_spatial_adapter_starts_as_identity_and_prototypes_classify_their_means():
    head = BlackBoxHead(4, 3, "spatial")
    x = torch.randn(2, 4, 6, 6, 6)
    assert torch.equal(head.adapter(x) * 0 + x, x + head.adapter(x))  # zero-initialised last conv
    feats = torch.zeros(2, 4, 2, 2, 2)
    labels = torch.zeros(2, 1, 2, 2, 2, dtype=torch.long)
    feats[:, 1, :, :, 1] = 3.0  # class 1 lives in feature 1
    labels[:, :, :, :, 1] = 1
    prototype_init(head, feats, labels, torch.tensor([0, 1, 0]))
    pred = head.head(feats).argmax(1)
    assert torch.equal(pred == 1, labels[:, 0] == 1)


def test_prototype_head_claims_each_organs_labelled_share_not_a_tissue_near_it():
    """A background of two tissues, one of them near the organ in feature space: the midpoint to
    the background's mean claims that tissue as the organ too; the calibrated head does not."""
    head = BlackBoxHead(2, 2, "linear")
    feats = torch.zeros(1, 2, 4, 4, 4)
    labels = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    feats[:, 0, 0, 0] = 1.0  # the organ: 4 voxels
    labels[:, :, 0, 0] = 1
    feats[:, 0, 1:, :2] = 0.8  # a tissue near it: 24 background voxels
    assert int((feats[0, 0] > (1.0 + 0.8 * 24 / 60) / 2).sum()) == 28  # what the midpoint claims
    prototype_init(head, feats, labels, torch.tensor([0, 1]))
    pred = head.head(feats).argmax(1)
    assert torch.equal(pred == 1, labels[:, 0] == 1)


def test_cli_adapts_and_evaluates_against_a_torchscript_features_model(collection, tmp_path):
    from typer.testing import CliRunner

    from medpeft.cli import app
    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Conv3d(1, 6, 3, padding=1), torch.nn.ReLU())
    torch.jit.trace(features, torch.zeros(1, 1, 16, 16, 16)).save(str(tmp_path / "service.pt"))
    target = load_msd(collection / "Task10_NewSite")
    manifest = write_manifest(tmp_path / "k1.json", make_split(target, 1, seed=0, n_test=2))
    runner = CliRunner()
    result = runner.invoke(app, ["adapt", "--foundation", str(shipped_foundation()), "--manifest",
                                 str(manifest), "--method", "blackbox-linear", "--blackbox",
                                 str(tmp_path / "service.pt"), "--organ", "gallbladder",
                                 "--steps", "3", "--out", str(tmp_path / "bb")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "--foundation", str(shipped_foundation()),
                                 "--manifest", str(manifest), "--adapter", str(tmp_path / "bb"),
                                 "--blackbox", str(tmp_path / "service.pt"), "--out",
                                 str(tmp_path / "eval")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "gallbladder" in result.output  # the novel organ has its own channel and score
    row = (tmp_path / "eval" / "results.csv").read_text().splitlines()[1]  # what the adapter trained
    trained = json.loads((tmp_path / "bb" / "blackbox_config.json").read_text())["trainable_parameters"]
    assert trained > 0 and f",{trained}," in row
    assert 'id="slider-0"' in (tmp_path / "eval" / "report.html").read_text()


@pytest.mark.parametrize("bf16", [False, pytest.param(True, marks=pytest.mark.skipif(
    not supports_bf16(torch.device("cpu")),
    reason="this CPU has no native bf16: the fast head would run float32, not what is tested"))])
def test_fast_head_agrees_with_the_float32_head(bf16, monkeypatch):
    """channels-last (and bf16 autocast, where native) must not change what the head predicts."""
    if not bf16:
        monkeypatch.setattr(device_module, "supports_bf16", lambda device: False)
    torch.manual_seed(0)
    fast = BlackBoxHead(6, 3, "spatial")
    torch.nn.init.normal_(fast.adapter[2].weight, std=0.05)
    exact = BlackBoxHead(6, 3, "spatial", fast=False)
    exact.load_state_dict(fast.state_dict())
    x = torch.randn(1, 6, 8, 8, 8).half()
    a, b = fast(x), exact(x)
    assert a.dtype == torch.float32 and a.shape == b.shape
    assert (a - b).abs().max() < 0.05 * b.abs().max()
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.95


def test_an_onnx_features_model_serves_the_same_features_as_its_network(tmp_path, monkeypatch):
    """``--blackbox model.onnx``: onnxruntime serves the network's features at any size and
    batch, its channels are read from one call, and a missing runtime says how to install it."""
    pytest.importorskip("onnxruntime")
    from medpeft.methods.blackbox.service import load_service
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 6, 1)).eval()
    path = tmp_path / "features.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 16, 16, 16),), str(path), input_names=["image"],
                      dynamic_axes={"image": {0: "batch", 2: "d", 3: "h", 4: "w"}}, dynamo=False)
    service = load_service(path)
    assert service.channels == 6
    for shape in [(1, 1, 32, 32, 32), (2, 1, 24, 40, 16)]:
        x = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(service(x), net(x), atol=1e-5)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        load_service(path)
