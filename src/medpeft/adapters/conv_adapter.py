"""Convolutional residual adapter for decoder blocks: y = block(x); y + up(lrelu(down(y))).

``down`` is a 1x1x1 or 3x3x3 convolution to ``bottleneck`` channels, ``up`` a zero-initialised
1x1x1 convolution back, so a fresh site is exact. Extra call arguments (skip features) pass through.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from medpeft.adapters.base import AdapterSite, channel_layout


class ConvAdapter(AdapterSite):
    kind = "conv-adapter"

    def __init__(self, base: nn.Module, location: str, bottleneck: int = 8, kernel: int = 3):
        super().__init__(base, location)
        channels, dim = channel_layout(base)
        if dim != 1:
            raise TypeError(f"{location}: a convolutional adapter needs a volume (conv) output")
        if kernel not in (1, 3):
            raise ValueError(f"{location}: conv adapter kernel must be 1 or 3, got {kernel}")
        self.down = nn.Conv3d(channels, bottleneck, kernel, padding=kernel // 2)
        self.up = nn.Conv3d(bottleneck, channels, 1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        y = self.base(*args, **kwargs)
        if self.enabled:
            y = y + self.up(F.leaky_relu(self.down(y), 0.01))
        return y
