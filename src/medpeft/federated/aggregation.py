"""Server-side aggregation of the adapter tensors the hospitals send back.

- Every tensor: FedAvg, the average weighted by each hospital's number of support volumes.
- LoRA pairs (``*.lora_A`` / ``*.lora_B``, linear or Conv3d): the average of the *updates*,
  dW = sum_i w_i B_i A_i, re-factorised to the site rank r by truncated SVD. Averaging A and B
  separately gives (sum w_i B_i)(sum w_i A_i), which has cross terms and is not that average.
  The re-factorisation is exact whenever rank(dW) <= r. The new A is orthonormal rows times the
  hospitals' mean row norm of A (B absorbs the singular values), so that a pair whose dW is still zero
  keeps a trainable A of its usual scale instead of collapsing to A = B = 0. A rank above the
  layer's size (r16 on a 12-wide layer) keeps its surplus ranks as the hospitals' mean A rows with
  zero B columns: the product is still exact and the ranks stay trainable. When rank(dW) > r
  (three hospitals at rank 4 can reach 12), the result is the best rank-r approximation of dW
  (Eckart-Young), not dW itself.
- ``ffa`` (FFA-LoRA): every hospital keeps A frozen at the federation's shared seed and trains and
  sends B only, so sum_i w_i B_i A = (sum_i w_i B_i) A: plain FedAvg of B is exact at any rank,
  and half of the LoRA bytes travel.
"""
from __future__ import annotations

import torch

MODES = ("svd", "fedavg", "ffa")


def lora_pairs(names: list[str]) -> dict[str, tuple[str, str]]:
    """``{site: (A name, B name)}`` for every LoRA pair among ``names``."""
    pairs = {}
    for name in names:
        for suffix in (".lora_A", ".lora_A.weight"):
            if name.endswith(suffix):
                site = name[: -len(suffix)]
                partner = site + suffix.replace("lora_A", "lora_B")
                if partner in names:
                    pairs[site] = (name, partner)
    return pairs


def _flat(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A as (r, fan_in) and B as (out, r), for linear (r, in)/(out, r) or conv (r, in, k..)/(out, r, 1..)."""
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], b.shape[1])


def lora_update(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The pair's weight update B A (without the alpha / r scaling, which every hospital shares)."""
    fa, fb = _flat(a.double(), b.double())
    return fb @ fa


def aggregate_lora(pairs: list[tuple[torch.Tensor, torch.Tensor]], weights: list[float]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of rank r whose product is the best rank-r fit of sum_i w_i B_i A_i."""
    a0, b0 = pairs[0]
    rank = a0.shape[0]
    delta = sum(w * lora_update(a, b) for (a, b), w in zip(pairs, weights))
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    k = min(rank, s.numel())  # a rank above the layer's size: the extra ranks carry no update
    scale = sum(w * _flat(a.double(), b)[0].norm(dim=1).mean() for (a, b), w in zip(pairs, weights))
    scale = float(scale) if scale > 0 else 1.0
    a = torch.cat([scale * vh[:k],  # extra A rows: the hospitals' mean, with zero B columns
                   sum(w * _flat(p.double(), q)[0][k:] for (p, q), w in zip(pairs, weights))])
    b = torch.cat([u[:, :k] * (s[:k] / scale), delta.new_zeros(delta.shape[0], rank - k)], dim=1)
    return a.reshape(a0.shape).to(a0.dtype), b.reshape(b0.shape).to(b0.dtype)


def aggregate_states(states: list[dict[str, torch.Tensor]], weights: list[float],
                     mode: str = "svd") -> dict[str, torch.Tensor]:
    """One state from the hospitals' ``states`` (same names and shapes), weights normalised here."""
    if mode not in MODES:
        raise ValueError(f"unknown aggregation {mode!r}; choose from {', '.join(MODES)}")
    if not states:
        raise ValueError("nothing to aggregate: no hospital sent a usable update")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"aggregation weights must be positive, got {weights}")
    weights = [w / total for w in weights]
    names = list(states[0])
    if mode == "ffa" and lora_pairs(names):
        raise ValueError("aggregation ffa: the hospitals sent LoRA A factors, which FFA-LoRA keeps "
                         "frozen at the shared seed (only B travels)")
    out = {}
    if mode == "svd":
        for a_name, b_name in lora_pairs(names).values():
            out[a_name], out[b_name] = aggregate_lora([(s[a_name], s[b_name]) for s in states],
                                                      weights)
    for name in names:
        if name not in out:
            out[name] = sum(w * s[name].double() for s, w in zip(states, weights)).to(
                states[0][name].dtype)
    return out
