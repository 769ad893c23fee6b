"""Inference runs the Swin windows' attention fused (torch's scaled_dot_product_attention, MONAI's
``use_flash_attention``): the same outputs as the eager attention; training keeps the eager path."""
from __future__ import annotations

import torch
from torch.profiler import profile

from medpeft.models.backbones import PRESETS, build_backbone, set_fused_attention

FUSED = "aten::scaled_dot_product_attention"


def _ops(model: torch.nn.Module, x: torch.Tensor, *, grad: bool) -> tuple[torch.Tensor, set[str]]:
    with profile() as prof, torch.set_grad_enabled(grad):
        out = model(x)
    return out, {e.key for e in prof.key_averages()}


def test_inference_attention_is_fused_and_gives_the_eager_outputs():
    torch.manual_seed(0)
    model = build_backbone(PRESETS["swin-fast"], 4).eval()
    x = torch.randn(1, 1, 64, 64, 32)
    fused, ops = _ops(model, x, grad=False)
    assert FUSED in ops
    set_fused_attention(model, False)
    eager, eager_ops = _ops(model, x, grad=False)
    assert FUSED not in eager_ops
    assert torch.allclose(fused, eager, atol=1e-4) and (fused.argmax(1) == eager.argmax(1)).all()


def test_training_keeps_the_eager_attention_and_its_gradients():
    model = build_backbone(PRESETS["swin-fast"], 4).train()
    out, ops = _ops(model, torch.randn(1, 1, 64, 64, 32), grad=True)
    assert FUSED not in ops
    out.square().mean().backward()
    table = model.swinViT.layers1[0].blocks[0].attn.relative_position_bias_table
    assert table.grad is not None and table.grad.abs().sum() > 0


def _frozen_encoder_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_backbone(PRESETS["swin-fast"], 4).train()
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith("swinViT."))
    return model


def _step(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict, set[str]]:
    out, ops = _ops(model, x, grad=True)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads, ops


def test_a_frozen_encoder_trains_with_fused_attention_and_the_same_gradients():
    """Decoder tuning (`medpeft adapt`'s default) leaves the Swin encoder frozen: the training
    loop runs it without autograd, so its attention runs fused; the gradients stay the same."""
    from medpeft.train.frozen_parts import frozen_parts_without_autograd
    model, x = _frozen_encoder_model(), torch.randn(1, 1, 64, 64, 32)
    eager_grads, eager_ops = _step(model, x)
    with frozen_parts_without_autograd(model) as frozen:
        grads, ops = _step(model, x)
        assert frozen == ["swinViT"] and FUSED in ops and FUSED not in eager_ops
        assert torch.is_grad_enabled()  # given back after each forward pass
    assert set(grads) == set(eager_grads) and not any(n.startswith("swinViT.") for n in grads)
    # float32 rounding: on this random network the eager gradients themselves are 2.5e-3 (norm)
    # from float64's and the fused ones 1.4e-3; a wrong gradient is off by its whole size
    for name, grad in grads.items():
        assert (grad - eager_grads[name]).norm() <= 1e-2 * eager_grads[name].norm(), name
    model.swinViT.layers1[0].blocks[0].attn.proj.weight.requires_grad_(True)  # e.g. a LoRA there
    with frozen_parts_without_autograd(model) as frozen:
        assert frozen == [] and FUSED not in _step(model, x)[1]


def test_grad_mode_comes_back_when_the_frozen_part_raises():
    from medpeft.train.frozen_parts import frozen_parts_without_autograd
    model = _frozen_encoder_model()
    with frozen_parts_without_autograd(model):
        try:
            model(torch.randn(1, 1, 7, 7, 7))  # not a multiple of the Swin patches: MONAI raises
        except Exception:
            pass
        assert torch.is_grad_enabled()
    assert not model.swinViT._forward_hooks and not model.swinViT._forward_pre_hooks
