"""Per-channel scaling sites: SSF (scale and shift a layer's output) and IA3 (rescale activations).

SSF: y = gamma * f(x) + beta with gamma = 1, beta = 0 at the start. IA3 learns one vector l = 1
at the start: on an attention ``qkv`` layer it rescales the keys and values (the query part is
fixed at 1), on an MLP's second linear layer it rescales that layer's input, i.e. the MLP's
intermediate activations, as in the IA3 paper. Both fold into a linear/conv layer's weights.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from medpeft.adapters.base import AdapterSite, channel_layout, innermost, per_channel


class SSF(AdapterSite):
    kind = "ssf"

    def __init__(self, base: nn.Module, location: str):
        super().__init__(base, location)
        channels, self.dim = channel_layout(base)
        self.ssf_scale = nn.Parameter(torch.ones(channels))
        self.ssf_shift = nn.Parameter(torch.zeros(channels))

    def forward(self, *args, **kwargs) -> torch.Tensor:
        y = self.base(*args, **kwargs)
        if self.enabled:
            y = y * per_channel(self.ssf_scale, self.dim, y.ndim) \
                + per_channel(self.ssf_shift, self.dim, y.ndim)
        return y

    def merged(self) -> nn.Module:
        if not isinstance(self.base, (nn.Linear, nn.Conv3d)):
            return super().merged()
        layer = copy.deepcopy(self.base)
        if self.enabled:
            g = self.ssf_scale.detach()
            layer.weight.data *= g.view(-1, *[1] * (layer.weight.ndim - 1))
            bias = layer.bias.data if layer.bias is not None else torch.zeros_like(g)
            layer.bias = nn.Parameter(bias * g + self.ssf_shift.detach())
        return layer


class IA3(AdapterSite):
    kind = "ia3"

    def __init__(self, base: nn.Module, location: str, where: str = "kv"):
        super().__init__(base, location)
        layer = innermost(base)
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"{location}: IA3 rescales linear layers, not {type(layer).__name__}")
        if where == "kv":
            if layer.out_features % 3:
                raise ValueError(f"{location}: 'kv' needs a fused qkv layer (3 x dim outputs)")
            third = layer.out_features // 3
            self.register_buffer("fixed_q", torch.ones(third), persistent=False)
            self.ia3_l = nn.Parameter(torch.ones(2 * third))
        elif where == "input":
            self.ia3_l = nn.Parameter(torch.ones(layer.in_features))
        else:
            raise ValueError(f"{location}: IA3 'where' must be 'kv' or 'input', not {where!r}")
        self.where = where

    def _vector(self) -> torch.Tensor:
        return torch.cat([self.fixed_q, self.ia3_l]) if self.where == "kv" else self.ia3_l

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        if self.where == "input":
            return self.base(x * self.ia3_l)
        return self.base(x) * self._vector()

    def merged(self) -> nn.Module:
        if not isinstance(self.base, nn.Linear):
            return super().merged()
        layer = copy.deepcopy(self.base)
        if self.enabled:
            v = self._vector().detach()
            if self.where == "input":
                layer.weight.data *= v[None, :]
            else:
                layer.weight.data *= v[:, None]
                if layer.bias is not None:
                    layer.bias.data *= v
        return layer
