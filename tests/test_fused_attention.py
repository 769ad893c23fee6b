"""Inference runs the Swin windows' attention fused (torch's scaled_dot_product_attention, MONAI's
``use_flash_attention``): the same outputs as the eager attention; training keeps the eager path."""
from __future__ import annotations

import torch
from torch.profiler import profile

from medpeft.models.backbones import PRESETS, build_backbone

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
    for block in model.modules():
        if hasattr(block, "use_flash_attention"):
            block.use_flash_attention = False
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
