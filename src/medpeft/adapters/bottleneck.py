"""Sequential bottleneck adapter (Houlsby / Pfeiffer): y = f(x); y + up(gelu(down(y))).

Placed after a token block (attention or MLP of a Swin block). The up-projection is
zero-initialised, so a fresh site is exact. Extra call arguments (the attention mask) pass through.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medpeft.adapters.base import AdapterSite, channel_layout


class BottleneckAdapter(AdapterSite):
    kind = "adapter"

    def __init__(self, base: nn.Module, location: str, bottleneck: int = 8):
        super().__init__(base, location)
        channels, dim = channel_layout(base)
        if dim != -1:
            raise TypeError(f"{location}: use a convolutional adapter on conv blocks")
        self.down = nn.Linear(channels, bottleneck)
        self.up = nn.Linear(bottleneck, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        y = self.base(*args, **kwargs)
        if self.enabled:
            y = y + self.up(F.gelu(self.down(y)))
        return y
