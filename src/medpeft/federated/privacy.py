"""Hospital-level differential privacy: each hospital clips its update, the server adds Gaussian noise to
the aggregate, and Flower's RDP accountant says what the run spent.

The mechanism is DP-FedAvg with client-side fixed clipping (McMahan et al., 2018): a hospital's
update (its sent tensors minus the global tensors it received) is scaled to an L2 norm of at most
``clipping_norm`` with Flower's ``compute_clip_model_update``; the server adds noise of standard
deviation ``noise_multiplier x clipping_norm x max_i w_i`` (Flower's ``add_gaussian_noise_inplace``)
to the weighted mean, whose sensitivity to one hospital's update is ``clipping_norm x max_i w_i``
(the weights are normalised support-volume counts; uniform weights give Flower's C / n). Every
hospital takes part in every round, so no sampling amplification is claimed: (epsilon, delta) comes
from Flower's ``RdpAccountant`` (over Google's dp-accounting) composed over the training rounds,
add-or-remove-one-hospital neighbours. The evaluation rounds' Dice metrics are not accounted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

ACCOUNTANT = ("Flower RdpAccountant (Google dp-accounting), add-or-remove-one-hospital, "
              "no sampling amplification, training rounds only")


@dataclass(frozen=True)
class DPSettings:
    clipping_norm: float
    noise_multiplier: float
    delta: float = 1e-5

    @classmethod
    def from_dict(cls, raw: dict) -> DPSettings:
        """The ``dp:`` section of a federation; a missing or bad setting is named."""
        unknown = set(raw) - {"clipping_norm", "noise_multiplier", "delta"}
        if unknown:
            raise ValueError(f"dp: unknown settings {sorted(unknown)}; use clipping_norm, "
                             "noise_multiplier, delta")
        for key in ("clipping_norm", "noise_multiplier"):
            if key not in raw:
                raise ValueError(f"dp: {key} is required (clipping_norm bounds each hospital's "
                                 "update; noise_multiplier scales the server's Gaussian noise)")
        settings = cls(float(raw["clipping_norm"]), float(raw["noise_multiplier"]),
                       float(raw.get("delta", 1e-5)))
        if not settings.clipping_norm > 0:
            raise ValueError(f"dp: clipping_norm must be > 0, got {settings.clipping_norm}")
        if not settings.noise_multiplier > 0:
            raise ValueError(f"dp: noise_multiplier must be > 0, got {settings.noise_multiplier}")
        if not 0 < settings.delta < 1:
            raise ValueError(f"dp: delta must be in (0, 1), got {settings.delta}")
        return settings


def clip_update(sent: dict[str, torch.Tensor], received: dict[str, torch.Tensor],
                clipping_norm: float) -> dict[str, torch.Tensor]:
    """``sent`` with its update from ``received`` scaled to an L2 norm of at most the bound, as
    sent: Flower clips in float64, and rounding back to the tensors' dtype can push the norm a
    hair over, so the target shrinks by the overshoot until what is sent is within the bound."""
    from flwr.supercore.differential_privacy import compute_clip_model_update
    names = sorted(sent)
    old = [received[n].detach().double().numpy() for n in names]
    target = clipping_norm
    for _ in range(8):
        new = [sent[n].detach().double().numpy().copy() for n in names]
        compute_clip_model_update(new, old, target)
        out = {n: torch.from_numpy(a).to(sent[n].dtype) for n, a in zip(names, new)}
        norm = update_norm(out, received)
        if norm <= clipping_norm:
            return out
        target *= clipping_norm / norm * (1 - 1e-6)
    raise RuntimeError(f"the update's norm {norm} stays above the clipping norm {clipping_norm}")


def update_norm(sent: dict[str, torch.Tensor], received: dict[str, torch.Tensor]) -> float:
    """The L2 norm of ``sent - received`` over every tensor, in float64."""
    return math.sqrt(sum(float((sent[n].double() - received[n].double()).norm()) ** 2
                         for n in sent))


def noise_std(settings: DPSettings, weights: list[float]) -> float:
    """The Gaussian noise's standard deviation for a weighted mean with these weights."""
    return settings.noise_multiplier * settings.clipping_norm * max(weights) / sum(weights)


def add_noise(merged: dict[str, torch.Tensor], std: float, seed: int) -> dict[str, torch.Tensor]:
    """The aggregate with Gaussian noise of ``std`` on every element (reproducible by ``seed``)."""
    from flwr.supercore.differential_privacy import add_gaussian_noise_inplace
    names = sorted(merged)
    arrays = [merged[n].detach().double().numpy().copy() for n in names]
    state = np.random.get_state()
    np.random.seed(seed % 2 ** 32)
    try:
        add_gaussian_noise_inplace(arrays, std)
    finally:
        np.random.set_state(state)
    return {n: torch.from_numpy(a).to(merged[n].dtype) for n, a in zip(names, arrays)}


def epsilon(settings: DPSettings, rounds: int, hospitals: int) -> float:
    """The run's epsilon at ``settings.delta`` after ``rounds`` Gaussian releases."""
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant
    accountant = RdpAccountant(PrivacyConfig(
        target_delta=settings.delta, population_size=hospitals,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    accountant.compose(GaussianPrivacyEvent(settings.noise_multiplier, hospitals, hospitals), count=rounds)
    return float(accountant.get_privacy_spent().epsilon)


def noise_for_epsilon(target: float, rounds: int, hospitals: int, delta: float = 1e-5) -> float:
    """The smallest noise multiplier whose run spends at most ``target`` epsilon (bisection)."""
    low, high = 1e-2, 1e3
    for _ in range(60):
        mid = math.sqrt(low * high)
        if epsilon(DPSettings(1.0, mid, delta), rounds, hospitals) > target:
            low = mid
        else:
            high = mid
    return high
