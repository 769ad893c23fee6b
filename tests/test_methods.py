"""Adaptation methods train exactly what they claim and nothing else."""
from __future__ import annotations

import pytest
import torch

from medpeft.adapters.base import sites_of
from medpeft.methods import apply_method, base_parameter_count, param_groups, trainable_state
from medpeft.methods.finetune import trained_part
from medpeft.models.backbones import PRESETS, build_backbone, part_of


def _model():
    torch.manual_seed(0)
    return build_backbone(PRESETS["swin-fast"], out_channels=4)


def _step(model):
    x = torch.randn(1, 1, 64, 64, 32)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(x).square().mean().backward()
    opt.step()


def _base_view(model) -> dict[str, torch.Tensor]:
    """Base weights by their original names (LoRA wraps a layer as ``<name>.base``)."""
    adapter = {id(p) for s in sites_of(model) for p in s.adapter_parameters()}
    return {n.replace(".base.", "."): p.detach().clone() for n, p in model.named_parameters()
            if id(p) not in adapter}


@pytest.mark.parametrize("method,trained_parts", [
    ("head", {"head"}), ("decoder", {"decoder", "head"}), ("lora", {"head"}),
    ("decoder-skips", {"skip blocks", "decoder", "head"}),
    ("full", {"encoder", "skip blocks", "decoder", "head"}), *[(m, {"head"}) for m in (
        "bitfit", "affine", "adaptformer", "adapter", "conv-adapter", "ssf", "ia3", "lora+affine")]])
def test_frozen_weights_stay_bit_identical(method, trained_parts):
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = apply_method(model, method, {"rank": 4})
    _step(model)
    after = _base_view(model)
    assert set(after) == set(before)
    changed = {trained_part(n) for n in before if not torch.equal(before[n], after[n])}
    assert changed == trained_parts
    for n in before:
        if trained_part(n) not in trained_parts:
            assert torch.equal(before[n], after[n]), n
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == sum(t.numel() for t in trainable_state(model).values())
    if state.sites:  # adapter presets: sites + head, under 1.2% of the model
        assert n_trainable == sum(s.n_params for s in state.sites) + sum(
            p.numel() for p in model.out.parameters())
        assert base_parameter_count(model) == sum(t.numel() for t in before.values())
        assert n_trainable / base_parameter_count(model) < 0.012
    if method == "lora":
        assert len(state.sites) == 16  # qkv + proj in 8 Swin blocks
        assert all(not torch.equal(s.lora_B, torch.zeros_like(s.lora_B)) for s in state.sites)
        assert n_trainable == sum(s.n_params for s in state.sites) + sum(
            p.numel() for p in model.out.parameters())
        assert base_parameter_count(model) == sum(t.numel() for t in before.values())
        assert n_trainable / base_parameter_count(model) < 0.01


def test_decoder_skips_refuses_a_backbone_without_skip_blocks():
    """The U-Net backbone has no SwinUNETR encoder1-4: the method says so instead of quietly
    training the decoder alone."""
    model = build_backbone(PRESETS["unet3d"], out_channels=2)
    with pytest.raises(ValueError, match="no SwinUNETR skip blocks"):
        apply_method(model, "decoder-skips", {})


def test_fresh_lora_is_identity_and_disabled_lora_restores_base():
    model = _model().eval()
    x = torch.randn(1, 1, 64, 64, 32)
    with torch.no_grad():
        ref = model(x)
    state = apply_method(model, "lora", {"rank": 4})
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref)
        for site in state.sites:
            site.lora_B.normal_()
        assert not torch.allclose(model(x), ref, atol=1e-4)
        for site in state.sites:
            site.enabled = False
        assert torch.equal(model(x), ref)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        apply_method(_model(), "magic")
    with pytest.raises(ValueError, match="unknown method"):
        apply_method(_model(), "lora+lora")


def test_combination_targets_are_per_kind():
    state = apply_method(_model(), "lora+bitfit", {"targets": [
        "lora:swinViT.layers1.0.blocks.0.attn.qkv", "bitfit:swinViT.patch_embed.*"]})
    assert {(s.kind, s.location) for s in state.sites} == {
        ("lora", "swinViT.layers1.0.blocks.0.attn.qkv"), ("bitfit", "swinViT.patch_embed.proj")}
    with pytest.raises(ValueError, match="kind:pattern"):
        apply_method(_model(), "lora+bitfit", {"targets": ["swinViT.*"]})


def test_each_adapter_kind_and_the_head_train_at_their_own_rate():
    from medpeft.methods import DEFAULT_LR, apply_method, group_rates, param_groups
    from medpeft.train.loop import check_groups
    model = build_backbone(PRESETS["swin-fast"], 3)
    state = apply_method(model, "lora+affine", {})
    groups = param_groups(model, state)
    assert {g["name"]: g["lr"] for g in groups} == {
        "lora": DEFAULT_LR["lora"], "affine": DEFAULT_LR["affine"], "head": DEFAULT_LR["head"]}
    check_groups(model, groups)  # every trainable tensor exactly once
    assert {g["name"]: g["lr"] for g in param_groups(model, state, {"lora": 0.03})}["lora"] == 0.03
    assert all(g["lr"] == 0.5 for g in param_groups(model, state, 0.5))
    with pytest.raises(ValueError, match="no group"):
        group_rates("lora", {"adaptformer": 0.1})
    with pytest.raises(ValueError, match="optimizer groups cover"):
        check_groups(model, groups[:-1])  # the head left out


def test_the_decoder_rate_grows_with_the_support_set_up_to_its_cap():
    """Decoder tuning's and full fine-tuning's measured best rates grow with K (docs/quality.md "Adaptation
    recipe"); other parts keep theirs, and a rate the user gives wins at every K."""
    from medpeft.methods import DEFAULT_LR, SHOT_SCALING, group_rates
    cap = SHOT_SCALING["decoder"].rate_cap
    assert group_rates("decoder", shots=1) == {"decoder": DEFAULT_LR["decoder"]}
    assert group_rates("decoder", shots=2)["decoder"] == pytest.approx(2 * DEFAULT_LR["decoder"])
    for k in (cap, 10, 100):
        assert group_rates("decoder", shots=k)["decoder"] == pytest.approx(cap * DEFAULT_LR["decoder"])
    assert group_rates("full", shots=10) == {"full": SHOT_SCALING["full"].rate_cap * DEFAULT_LR["full"]}
    assert group_rates("scratch", shots=10) == {"scratch": DEFAULT_LR["scratch"]}
    assert group_rates("lora", shots=10)["lora"] == DEFAULT_LR["lora"]
    sea = group_rates("sea-peft", shots=10)  # every kind grows, the head keeps its rate
    assert sea["lora"] == pytest.approx(SHOT_SCALING["sea-peft"].rate_cap * DEFAULT_LR["lora"])
    assert sea["head"] == DEFAULT_LR["head"]
    assert group_rates("sea-peft", shots=1)["lora"] == DEFAULT_LR["lora"]
    assert group_rates("decoder", 5e-4, shots=10) == {"decoder": 5e-4}
    skips = DEFAULT_LR["decoder-skips"]  # measured on v6: 8x from K=5 on, 2x more per volume before
    assert [group_rates("decoder-skips", shots=k)["decoder-skips"] / skips for k in (1, 2, 4, 5, 10)] \
        == pytest.approx([1, 3, 7, 8, 8])


def test_the_grown_rate_needs_the_schedule_it_was_measured_on():
    """4x the decoder's rate collapsed in 80 steps (docs/fseft.md): a schedule shorter
    than ADAPT_STEPS keeps its base rate at any K; the default steps and longer ones grow it.
    decoder-skips' grown rate was measured to hold on short schedules too."""
    from medpeft.methods import ADAPT_STEPS, DEFAULT_LR, SHOT_SCALING, adapt_steps, group_rates
    base, cap = DEFAULT_LR["decoder"], SHOT_SCALING["decoder"].rate_cap
    assert group_rates("decoder", shots=5, steps=80) == {"decoder": base}
    assert group_rates("decoder", shots=5, steps=ADAPT_STEPS - 1) == {"decoder": base}
    assert group_rates("decoder", shots=5, steps=ADAPT_STEPS)["decoder"] == pytest.approx(cap * base)
    assert group_rates("decoder", shots=5, steps=adapt_steps("decoder", 5)) == group_rates("decoder", shots=5)
    assert group_rates("sea-peft", shots=10, steps=80)["lora"] == DEFAULT_LR["lora"]
    assert group_rates("decoder", 1e-2, shots=5, steps=80) == {"decoder": 1e-2}  # the user's rate stands
    skips = DEFAULT_LR["decoder-skips"]
    assert group_rates("decoder-skips", shots=5, steps=60)["decoder-skips"] == pytest.approx(4 * skips)


@pytest.mark.parametrize("method", ["decoder", "decoder-skips", "full"])
def test_the_decoder_and_full_steps_grow_with_the_support_set_from_the_common_default(method):
    from medpeft.methods import ADAPT_STEPS, SHOT_SCALING, adapt_steps
    scaling = SHOT_SCALING[method]
    assert adapt_steps(method, 1) == ADAPT_STEPS
    assert adapt_steps(method, 4) == min(4 * scaling.steps_per_volume, scaling.steps_cap)
    assert adapt_steps(method, 5) == 5 * scaling.steps_per_volume > ADAPT_STEPS
    assert adapt_steps(method, 100) == scaling.steps_cap


def test_other_methods_keep_the_common_steps_and_sea_peft_refine_grows():
    from medpeft.methods import ADAPT_STEPS, adapt_steps
    assert adapt_steps("lora", 20) == adapt_steps("head", 10) == ADAPT_STEPS
    assert adapt_steps("sea-peft", 1) == ADAPT_STEPS < adapt_steps("sea-peft", 10)


@pytest.mark.parametrize("method,max_fraction", [("bitfit", 0.001), ("lora", 0.02)])
def test_the_unet_backbone_tunes_with_default_targets(method, max_fraction):
    """The Models Genesis U-Net (Universal Model, SuPreM) tunes like SwinUNETR: the method's
    default targets find its layers, only they train, and the loss on a fixed crop falls."""
    torch.manual_seed(0)
    model = build_backbone(PRESETS["unet3d"], out_channels=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = apply_method(model, method, {})
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < n_trainable <= max_fraction * sum(t.numel() for t in before.values())
    assert {s.location.split(".")[0].rstrip("0123456789") for s in state.sites} == \
        {"down_tr", "up_tr"}  # sites on both paths of the U-Net
    x = torch.randn(1, 1, 16, 16, 16)
    label = torch.zeros(1, 16, 16, 16, dtype=torch.long)
    label[:, 4:10, 5:12, 3:9] = 1
    opt = torch.optim.AdamW(param_groups(model, state), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), label)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    after = _base_view(model)
    assert {part_of(n) for n in before if not torch.equal(before[n], after[n])} == {"head"}


def test_swin_wide_has_swin_smalls_width_and_tiles_the_patch_with_swin_fasts_windows():
    """swin-wide exists to test capacity at half swin-small's time a step: its parameters must be
    swin-small's (within 2%: only the relative-position tables differ) and its windows swin-fast's,
    which tile the token grids of a 64x64x32 patch without padding."""
    wide, small = build_backbone(PRESETS["swin-wide"], 3), build_backbone(PRESETS["swin-small"], 3)
    n_wide = sum(p.numel() for p in wide.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert abs(n_wide - n_small) / n_small < 0.02
    assert PRESETS["swin-wide"].window_size == PRESETS["swin-fast"].window_size
