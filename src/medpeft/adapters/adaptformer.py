"""AdaptFormer: a bottleneck in parallel with a transformer MLP, y = MLP(x) + s * up(relu(down(x))).

The up-projection is zero-initialised, so a fresh site is exact; ``scale`` is AdaptFormer's
fixed scaling factor s.
"""
from __future__ import annotations

import torch
from torch import nn

from medpeft.adapters.base import AdapterSite, channel_layout


class AdaptFormer(AdapterSite):
    kind = "adaptformer"

    def __init__(self, base: nn.Module, location: str, bottleneck: int = 8, scale: float = 0.1):
        super().__init__(base, location)
        channels, dim = channel_layout(base)
        if dim != -1:
            raise TypeError(f"{location}: AdaptFormer goes beside a token MLP, not a conv block")
        self.scale = scale
        self.down = nn.Linear(channels, bottleneck)
        self.up = nn.Linear(bottleneck, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.enabled:
            y = y + self.scale * self.up(torch.relu(self.down(x)))
        return y
