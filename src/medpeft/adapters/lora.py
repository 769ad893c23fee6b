"""LoRA: y = f(x) + (alpha / r) * B(A(x)), with B zero-initialised (so a fresh site is exact).

``LoRALinear`` for linear layers (attention qkv / projection, MLP), ``LoRAConv3d`` for
convolutions (A is a conv with the base layer's kernel, stride and padding to r channels, B a
1x1x1 conv back), as in Hugging Face ``peft``. Both merge into the base weights for inference.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from medpeft.adapters.base import AdapterSite, innermost


class _LoRA(AdapterSite):
    """Shared by both layer types: rank check, alpha / r scaling, merging ``delta_weight``."""

    kind = "lora"
    layer_type: type = nn.Module

    def __init__(self, base: nn.Module, location: str, rank: int, alpha: float | None):
        super().__init__(base, location)
        if rank < 1:
            raise ValueError(f"{location}: LoRA rank must be >= 1, got {rank}")
        self.rank = rank
        self.scaling = (alpha if alpha is not None else 2.0 * rank) / rank

    def delta_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def merged(self) -> nn.Module:
        if not isinstance(self.base, self.layer_type):
            return super().merged()
        layer = copy.deepcopy(self.base)
        if self.enabled:
            layer.weight.data += self.delta_weight().detach()
        return layer


class LoRALinear(_LoRA):
    layer_type = nn.Linear

    def __init__(self, base: nn.Module, location: str, rank: int = 4, alpha: float | None = None):
        super().__init__(base, location, rank, alpha)
        layer = innermost(base)
        self.lora_A = nn.Parameter(torch.empty(rank, layer.in_features))
        self.lora_B = nn.Parameter(torch.zeros(layer.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.enabled:
            y = y + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
        return y


class LoRAConv3d(_LoRA):
    layer_type = nn.Conv3d

    def __init__(self, base: nn.Module, location: str, rank: int = 4, alpha: float | None = None):
        super().__init__(base, location, rank, alpha)
        conv = innermost(base)
        if conv.groups != 1:
            raise ValueError(f"{location}: LoRA on grouped convolutions is not supported")
        self.lora_A = nn.Conv3d(conv.in_channels, rank, conv.kernel_size, conv.stride,
                                conv.padding, conv.dilation, bias=False)
        self.lora_B = nn.Conv3d(rank, conv.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> torch.Tensor:
        b = self.lora_B.weight[:, :, 0, 0, 0]
        return torch.einsum("or,ri...->oi...", b, self.lora_A.weight) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.enabled:
            y = y + self.lora_B(self.lora_A(x)) * self.scaling
        return y
