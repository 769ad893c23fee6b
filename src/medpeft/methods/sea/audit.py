"""The audit: what each adapter site is worth right now, in Dice on fixed audit crops.

- active sites: toggle-off utility, Dice(active set) - Dice(active set without the site);
- inactive sites trained before: toggle-on utility, Dice(with the site) - Dice(active set);
- inactive sites never trained: they are zero-initialised, so switching them on changes nothing
  and a toggle would always measure 0 (the defect that keeps the public code from ever admitting
  them). They get a first-order estimate instead: an Adam-like step moves each parameter by about
  its rate against the gradient sign, so ``horizon`` steps gain about rate x horizon x sum|dDice/dp|.
  All never-trained sites are scored from one backward pass (at zero they do not interact).

Toggling flips only the one site's own ``enabled`` switch; no other site's state is touched.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from medpeft.adapters.base import AdapterSite
from medpeft.device import mixed_precision
from medpeft.train.losses import merge_to_local

Score = Callable[[nn.Module], torch.Tensor]


class SoftDiceScore:
    """Mean soft Dice of the labelled foreground classes over fixed audit crops (differentiable).
    ``bf16``: the model's forward pass under bf16 autocast where it runs natively, as training's."""

    def __init__(self, crops: list[dict], *, bf16: bool = False):
        if not crops:
            raise ValueError("the audit needs at least one crop")
        self.crops, self.bf16 = crops, bf16

    def __call__(self, model: nn.Module) -> torch.Tensor:
        scores = []
        for crop in self.crops:
            c2l = crop["channel_to_local"]
            with mixed_precision(crop["image"].device, self.bf16):
                logits = model(crop["image"])
            probs = merge_to_local(torch.softmax(logits.float(), dim=1), c2l)
            n_local = int(c2l.max()) + 1
            target = F.one_hot(crop["label"][:, 0].long(), n_local).movedim(-1, 1).float()
            probs = probs[:, :n_local]
            dims = tuple(range(2, probs.dim()))
            inter, total = (probs * target).sum(dims), (probs + target).sum(dims)
            present = target.sum(dims)[:, 1:] > 0
            dice = (2 * inter[:, 1:] + 1e-5) / (total[:, 1:] + 1e-5)
            scores.append(dice[present].mean() if present.any() else dice.new_zeros(()))
        return torch.stack(scores).mean()


def measure(model: nn.Module, score: Score) -> float:
    with torch.no_grad():
        return float(score(model))


def _toggled(model: nn.Module, score: Score, sites: list[AdapterSite], base: float,
             *, state: bool) -> dict[str, float]:
    """Dice change when each site alone is set to ``state`` (and set back), signed as a utility."""
    out = {}
    for site in sites:
        site.enabled = state
        try:
            change = measure(model, score) - base
            out[site.name] = change if state else -change
        finally:
            site.enabled = not state
    return out


def toggle_off(model: nn.Module, score: Score, sites: list[AdapterSite], base: float
               ) -> dict[str, float]:
    """Utility of each active site: how much Dice drops when it alone is switched off."""
    return _toggled(model, score, sites, base, state=False)


def toggle_on(model: nn.Module, score: Score, sites: list[AdapterSite], base: float
              ) -> dict[str, float]:
    """Utility of each inactive, already trained site: how much Dice rises when it is switched on."""
    return _toggled(model, score, sites, base, state=True)


def first_order(model: nn.Module, score: Score, sites: list[AdapterSite],
                step_size: dict[str, float]) -> dict[str, float]:
    """Estimated Dice gain of each never-trained site after training it: rate x horizon x |grad|_1.

    ``step_size`` is rate x horizon by site kind.
    """
    if not sites:
        return {}
    params = [p for s in sites for p in s.adapter_parameters()]
    for site in sites:
        site.enabled = True
    try:
        grads = torch.autograd.grad(score(model), params, allow_unused=True)
    finally:
        for site in sites:
            site.enabled = False
    out, i = {}, 0
    for site in sites:
        n = len(site.adapter_parameters())
        total = sum(float(g.abs().sum()) for g in grads[i:i + n] if g is not None)
        out[site.name] = step_size[site.kind] * total
        i += n
    return out
