"""Our LoRA sites compute exactly what Hugging Face ``peft`` computes with the same A, B, scaling."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medpeft.adapters.lora import LoRAConv3d, LoRALinear

peft = pytest.importorskip("peft")


def _peft_wrapped(layer: nn.Module, rank: int, alpha: float) -> nn.Module:
    holder = nn.Sequential()
    holder.add_module("target", copy.deepcopy(layer))
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=["target"], lora_dropout=0.0)
    return peft.inject_adapter_in_model(config, holder)


@pytest.mark.parametrize("rank,alpha", [(4, 8.0), (2, 16.0)])
def test_linear_lora_matches_peft(rank, alpha):
    torch.manual_seed(0)
    layer = nn.Linear(24, 72)
    ours = LoRALinear(copy.deepcopy(layer), "target", rank=rank, alpha=alpha)
    nn.init.normal_(ours.lora_B)
    ref = _peft_wrapped(layer, rank, alpha)
    with torch.no_grad():
        ref.target.lora_A["default"].weight.copy_(ours.lora_A)
        ref.target.lora_B["default"].weight.copy_(ours.lora_B)
        x = torch.randn(5, 64, 24)
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
        assert ours.scaling == ref.target.scaling["default"]


def test_conv3d_lora_matches_peft():
    torch.manual_seed(0)
    layer = nn.Conv3d(6, 10, 3, padding=1, bias=False)
    ours = LoRAConv3d(copy.deepcopy(layer), "target", rank=3, alpha=6.0)
    nn.init.normal_(ours.lora_B.weight)
    ref = _peft_wrapped(layer, 3, 6.0)
    with torch.no_grad():
        ref.target.lora_A["default"].weight.copy_(ours.lora_A.weight)
        ref.target.lora_B["default"].weight.copy_(ours.lora_B.weight)
        x = torch.randn(2, 6, 8, 8, 4)
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
        merged = ours.merged()
        assert isinstance(merged, nn.Conv3d) and torch.allclose(merged(x), ours(x), atol=1e-5)
