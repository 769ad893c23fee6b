"""Every adapter kind honours the AdapterSite contract on a real SwinUNETR."""
from __future__ import annotations

import pytest
import torch

from medpeft.adapters.base import AdapterSite, sites_of
from medpeft.adapters.inject import unwrap
from medpeft.adapters.kinds import KINDS, add_sites, candidate_sites
from medpeft.models.backbones import PRESETS, build_backbone

X = torch.rand(1, 1, 64, 64, 32, generator=torch.Generator().manual_seed(0))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(PRESETS["swin-fast"], 4).eval()


def _train_step(model: torch.nn.Module) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(2):  # two steps: zero-initialised up-projections first, then the rest moves
        opt.zero_grad()
        model(X).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("kind", list(KINDS))
def test_site_contract(kind):
    model = _model()
    with torch.no_grad():
        base_out = model(X)
    frozen_before = {n: t.clone() for n, t in model.state_dict().items()}
    for p in model.parameters():
        p.requires_grad_(False)
    sites = add_sites(model, kind)
    assert sites and all(isinstance(s, AdapterSite) and s.kind == kind for s in sites)
    with torch.no_grad():  # a fresh site leaves the output unchanged
        assert torch.allclose(model(X), base_out, atol=1e-6)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(s.n_params for s in sites) == sum(p.numel() for p in trainable) > 0

    _train_step(model)
    with torch.no_grad():
        trained = model(X)
    assert not torch.allclose(trained, base_out, atol=1e-5), "training the sites changed nothing"
    # frozen weights are bit-identical (names inside a site carry a '.base' segment)
    after = {n.replace(".base.", "."): t for n, t in model.state_dict().items()
             if not any(x in n for x in (".lora_", ".down.", ".up.", "_delta", "ssf_", "ia3_"))}
    assert after.keys() == frozen_before.keys()
    assert all(torch.equal(after[n], frozen_before[n]) for n in frozen_before)
    for s in sites_of(model):
        s.enabled = False
    with torch.no_grad():
        assert torch.equal(model(X), base_out), "switched-off sites must give the base output"


def test_switching_one_site_off_leaves_others_on():
    model = _model()
    for p in model.parameters():
        p.requires_grad_(False)
    qkv = "swinViT.layers1.0.blocks.0.attn.qkv"
    lora = add_sites(model, "lora", [qkv])[0]
    bitfit = add_sites(model, "bitfit", [qkv])[0]  # stacked on the same layer
    assert bitfit.base is lora and {lora.name, bitfit.name} == {f"{qkv}:lora", f"{qkv}:bitfit"}
    _train_step(model)
    with torch.no_grad():
        both = model(X)
        lora.enabled = False
        only_bitfit = model(X)
        bitfit.enabled = False
        none = model(X)
    assert bitfit.enabled is False and not torch.equal(both, only_bitfit)
    assert not torch.equal(only_bitfit, none)
    with pytest.raises(ValueError, match="already has a lora site"):
        add_sites(model, "lora", [qkv])


def test_candidate_sites_cost_equals_inserted_cost():
    model = _model()
    rows = candidate_sites(model, ["lora", "affine", "conv-adapter"], options={"lora": {"rank": 2}})
    assert not sites_of(model), "listing candidates must not change the model"
    for kind in ("lora", "affine", "conv-adapter"):
        listed = sum(r["n_params"] for r in rows if r["kind"] == kind)
        inserted = add_sites(_model(), kind, **({"rank": 2} if kind == "lora" else {}))
        assert listed == sum(s.n_params for s in inserted)
    assert any(r["layer"] == "InstanceNorm3d" for r in rows)


def test_lora_conv3d_and_merge():
    model = _model()
    for p in model.parameters():
        p.requires_grad_(False)
    add_sites(model, "lora", ["decoder*.conv_block.conv1.conv"], rank=2)
    add_sites(model, "lora", rank=4)
    add_sites(model, "ssf", ["swinViT.layers2.0.blocks.*.mlp.linear1"])
    add_sites(model, "ia3")
    _train_step(model)
    with torch.no_grad():
        unmerged = model(X)
        plain = unwrap(model)
        assert not sites_of(plain)
        assert set(plain.state_dict()) == set(_model().state_dict())
        assert torch.allclose(plain(X), unmerged, atol=1e-5)


def test_unmergeable_kind_is_refused_by_name():
    model = _model()
    add_sites(model, "adaptformer", ["swinViT.layers1.0.blocks.0.mlp"])
    with pytest.raises(NotImplementedError, match=r"blocks\.0\.mlp:adaptformer"):
        unwrap(model)


def test_bad_kind_options_and_targets():
    with pytest.raises(ValueError, match="unknown adapter kind"):
        add_sites(_model(), "lorra")
    with pytest.raises(ValueError, match="unknown options"):
        add_sites(_model(), "bitfit", rank=3)
    with pytest.raises(ValueError, match="no module matches"):
        add_sites(_model(), "lora", ["no.such.layer"])
