"""LoRA on a linear layer: y = W x + b + (alpha / r) * B A x, with B zero-initialised."""
from __future__ import annotations

import math

import torch
from torch import nn

from medpeft.adapters.base import AdapterSite


class LoRALinear(AdapterSite):
    kind = "lora"

    def __init__(self, base: nn.Linear, location: str, rank: int = 4, alpha: float | None = None):
        super().__init__(location)
        if rank < 1:
            raise ValueError(f"{location}: LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.scaling = (alpha if alpha is not None else 2.0 * rank) / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.enabled:
            y = y + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scaling
        return y
