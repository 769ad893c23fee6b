"""The ``AdapterSite`` contract: the unit that methods insert and SEA-PEFT allocates.

A site wraps one module of the backbone (its ``location``), knows its kind and its exact
trainable parameter count, and has an ``enabled`` switch. Sites are initialised so that a fresh
site leaves the model's output unchanged, and switching a site off restores the base output
exactly while its weights are kept. Sites never change the frozen weights they wrap: kinds that
"unfreeze" pre-trained values (BitFit, norm affine) train a zero-initialised delta instead, so
their cost is the number of values they unfreeze and "off" is the pre-trained value, bit for bit.
"""
from __future__ import annotations

import torch
from torch import nn


class AdapterSite(nn.Module):
    """Base class of every adapter site. Subclasses hold only adapter parameters as their own."""

    kind: str = "adapter"

    def __init__(self, base: nn.Module, location: str):
        super().__init__()
        self.base = base
        self.location = location
        self.enabled = True
        self.tag = ""  # names a variant when several of one kind share a layer (``lora[r16]``)

    @property
    def name(self) -> str:
        return f"{self.location}:{self.kind}" + (f"[{self.tag}]" if self.tag else "")

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The parameters this site adds or unfreezes (what it costs)."""
        return [p for n, p in self.named_parameters() if not n.startswith("base.")]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.adapter_parameters())

    def merged(self) -> nn.Module:
        """A plain module computing what this site computes (for export), if the kind allows it."""
        raise NotImplementedError(f"{self.name}: a {self.kind} site cannot be merged into the "
                                  "base weights; keep it as an adapter")


def sites_of(model: nn.Module) -> list[AdapterSite]:
    return [m for m in model.modules() if isinstance(m, AdapterSite)]


def innermost(module: nn.Module) -> nn.Module:
    """The backbone module under any stack of sites wrapped around it."""
    while isinstance(module, AdapterSite):
        module = module.base
    return module


def channel_layout(module: nn.Module) -> tuple[int, int]:
    """(channels, dim) of a module's output: dim -1 for token (Linear-like) outputs, 1 for volumes.

    Works for layers (Linear, LayerNorm, Conv3d, InstanceNorm3d) and for blocks, whose output is
    that of their last linear or convolution layer.
    """
    m = innermost(module)
    if isinstance(m, nn.Linear):
        return m.out_features, -1
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[-1], -1
    if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
        return m.out_channels, 1
    if isinstance(m, nn.InstanceNorm3d):
        return m.num_features, 1
    layers = [x for x in m.modules() if isinstance(x, (nn.Linear, nn.Conv3d, nn.ConvTranspose3d))]
    if not layers:
        raise TypeError(f"cannot tell the output channels of a {type(m).__name__}")
    return channel_layout(layers[-1])


def per_channel(vector: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """Reshape a (C,) vector to broadcast over channel ``dim`` of an ``ndim``-d tensor."""
    if dim == -1:
        return vector
    shape = [1] * ndim
    shape[dim] = -1
    return vector.view(shape)
