"""The ``AdapterSite`` contract: the unit that methods insert and SEA-PEFT allocates.

A site knows its kind, its location (the module path it wraps), its exact trainable parameter
count, and has an ``enabled`` switch. Sites are zero-initialised, so a fresh site leaves the
model's output unchanged, and switching a site off restores the base output exactly while its
weights are kept.
"""
from __future__ import annotations

from torch import nn


class AdapterSite(nn.Module):
    """Base class of every adapter site. Subclasses hold only adapter parameters as their own."""

    kind: str = "adapter"

    def __init__(self, location: str):
        super().__init__()
        self.location = location
        self.enabled = True

    @property
    def name(self) -> str:
        return f"{self.location}:{self.kind}"

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The parameters this site adds or unfreezes (what it costs)."""
        raise NotImplementedError

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.adapter_parameters())


def sites_of(model: nn.Module) -> list[AdapterSite]:
    return [m for m in model.modules() if isinstance(m, AdapterSite)]
