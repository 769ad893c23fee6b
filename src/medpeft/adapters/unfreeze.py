"""Sites that *unfreeze* pre-trained values: BitFit (biases) and norm-affine tuning (gamma, beta).

They train a zero-initialised delta next to the frozen value instead of the value itself: the
gradient is the same as unfreezing, the cost is the number of unfrozen values, and switching
the site off gives back the pre-trained value bit for bit. A norm without affine parameters
(MONAI's InstanceNorm3d) gets them, starting at identity (cost 2 x channels).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from medpeft.adapters.base import AdapterSite, channel_layout, innermost, per_channel

NORMS = (nn.LayerNorm, nn.InstanceNorm3d)


class BitFit(AdapterSite):
    kind = "bitfit"

    def __init__(self, base: nn.Module, location: str):
        super().__init__(base, location)
        layer = innermost(base)
        if getattr(layer, "bias", None) is None:
            raise TypeError(f"{location}: {type(layer).__name__} has no bias to tune")
        _, self.dim = channel_layout(layer)
        self.bias_delta = nn.Parameter(torch.zeros_like(layer.bias))

    def forward(self, *args, **kwargs) -> torch.Tensor:
        y = self.base(*args, **kwargs)
        if self.enabled:
            y = y + per_channel(self.bias_delta, self.dim, y.ndim)
        return y

    def merged(self) -> nn.Module:
        if isinstance(self.base, AdapterSite):
            return super().merged()
        layer = copy.deepcopy(self.base)
        if self.enabled:
            layer.bias.data += self.bias_delta.detach()
        return layer


class NormAffine(AdapterSite):
    kind = "affine"

    def __init__(self, base: nn.Module, location: str):
        super().__init__(base, location)
        if not isinstance(base, NORMS):
            raise TypeError(f"{location}: norm-affine tuning needs a LayerNorm or InstanceNorm3d, "
                            f"not {type(base).__name__}")
        if isinstance(base, nn.InstanceNorm3d) and base.track_running_stats:
            raise TypeError(f"{location}: instance norms with running statistics are not supported")
        channels, self.dim = channel_layout(base)
        self.has_affine = isinstance(base, nn.LayerNorm) and base.elementwise_affine \
            or isinstance(base, nn.InstanceNorm3d) and base.affine
        self.weight_delta = nn.Parameter(torch.zeros(channels))
        self.bias_delta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.base
        if not self.enabled:
            return norm(x)
        if not self.has_affine:  # identity affine added: y * (1 + dw) + db
            y = norm(x)
            return y * (1 + per_channel(self.weight_delta, self.dim, y.ndim)) \
                + per_channel(self.bias_delta, self.dim, y.ndim)
        w, b = norm.weight + self.weight_delta, norm.bias + self.bias_delta
        if isinstance(norm, nn.LayerNorm):
            return F.layer_norm(x, norm.normalized_shape, w, b, norm.eps)
        return F.instance_norm(x, None, None, w, b, True, norm.momentum or 0.0, norm.eps)

    def merged(self) -> nn.Module:
        if not self.has_affine:
            return super().merged()
        norm = copy.deepcopy(self.base)
        if self.enabled:
            norm.weight.data += self.weight_delta.detach()
            norm.bias.data += self.bias_delta.detach()
        return norm
