"""Run a network's frozen parts without autograd while the rest of it trains.

A frozen Swin encoder (decoder tuning, `medpeft adapt`'s default decoder-skips, head-only) takes
no gradient, yet under training's grad mode MONAI runs its windows' attention eagerly: its fused
attention (``use_flash_attention``, models.backbones) only runs where no gradient is taken. Each
part listed here whose parameters are all frozen runs under ``torch.no_grad`` for its forward pass,
so its attention runs fused and autograd records nothing for it. Gradients are unchanged: nothing
flowed into a frozen part whose input needs no gradient (the CT volume).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.utils.hooks import RemovableHandle

FROZEN_CANDIDATES = ("swinViT",)  # MONAI SwinUNETR's Swin encoder


def _frozen(module: torch.nn.Module) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def _no_grad_hooks(module: torch.nn.Module) -> list[RemovableHandle]:
    modes: list[bool] = []

    def enter(_module, args):
        modes.append(torch.is_grad_enabled())
        if not any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            torch.set_grad_enabled(False)  # else a gradient must reach the input through it

    def leave(_module, _args, _output):
        torch.set_grad_enabled(modes.pop())

    return [module.register_forward_pre_hook(enter),
            module.register_forward_hook(leave, always_call=True)]


@contextmanager
def frozen_parts_without_autograd(model: torch.nn.Module) -> Iterator[list[str]]:
    """Within the block, each of the model's :data:`FROZEN_CANDIDATES` whose parameters are all
    frozen runs without autograd; yields their names. The model is given back as it came."""
    frozen = {name: part for name in FROZEN_CANDIDATES
              if isinstance(part := getattr(model, name, None), torch.nn.Module) and _frozen(part)}
    handles = [h for part in frozen.values() for h in _no_grad_hooks(part)]
    try:
        yield list(frozen)
    finally:
        for handle in handles:
            handle.remove()
