"""Federated SEA-PEFT, the server's side: pool the sites' utilities, allocate one global active set.

Each round the sites send their trained active tensors and the smoothed utility of every
candidate (see ``sea_site``). The server averages the tensors as usual (LoRA pairs exactly),
pools the utilities (weighted by support volumes, over the sites that measured each candidate),
runs the greedy knapsack under the budget, and lets the finite-state ranking controller turn the
proposals into rare changes. The first allocation (after round 1, where only the head trains and
every candidate is estimated) is taken as proposed, like the central search's start. A candidate
switched off is reset to its initial values. First-order estimates of inactive candidates are
scaled by a calibration factor: what admitted candidates then measured, over what was predicted.
The next round's message carries exactly the new active set, so bytes stay within the budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from medpeft.federated.config import fed_sea_config
from medpeft.federated.sea_hospital import candidate_model, own_parameters, wire_state
from medpeft.federated.strategy import WEIGHT, AdapterFedAvg, metrics_of, to_arrays, to_state
from medpeft.methods import SEA, apply_method
from medpeft.methods.adapter_io import save_adapter
from medpeft.methods.sea.fsr import RankingController
from medpeft.methods.sea.knapsack import Item, greedy_knapsack
from medpeft.methods.sea.loop import SeaConfig
from medpeft.methods.sea.space import describe

UTILITY = "utility"


@dataclass(frozen=True)
class Candidate:
    name: str
    location: str
    cost: int
    description: dict


class SeaAllocator:
    """The global state of a federated search: every candidate's tensors, the active set."""

    def __init__(self, cfg_seed: int, foundation: str, sea: SeaConfig):
        found, candidates, n_model = candidate_model(cfg_seed, foundation)
        self.candidates = [Candidate(s.name, s.location, s.n_params, describe(s)) for s in candidates]
        self.owner = {f"{s.name}.{n}": s.name for s in candidates for n in own_parameters(s)}
        self.fresh = wire_state(found.model, candidates, names={s.name for s in candidates})
        self.values = dict(self.fresh)
        head_cost = sum(p.numel() for p in found.model.out.parameters())
        self.budget = sea.budget_params(n_model)
        if head_cost > self.budget:
            raise ValueError(f"federated sea-peft: budget {self.budget:,} is below the head's "
                             f"{head_cost:,} parameters")
        self.head_cost = head_cost
        self.active: set[str] = set()
        self.ctrl = RankingController(sea.votes, sea.guard)
        for c in self.candidates:
            self.ctrl.add(c.name, False)
        self.last: dict[str, float] = {}  # latest pooled score of each candidate
        self.predicted: dict[str, float] = {}  # admitted, not yet measured: the estimate
        self.calibration = [0.0, 0.0]  # sums of (measured, predicted) over admitted candidates
        self.rounds: list[dict] = []

    def wire(self) -> dict[str, torch.Tensor]:
        """The head and the active candidates' tensors (what the next message carries)."""
        return {n: t for n, t in self.values.items()
                if n not in self.owner or self.owner[n] in self.active}

    def used(self) -> int:
        return self.head_cost + sum(c.cost for c in self.candidates if c.name in self.active)

    def factor(self) -> float:
        measured, predicted = self.calibration
        return 1.0 if predicted <= 0 else min(1.0, max(0.01, measured / predicted))

    def value(self, name: str) -> float:
        """Pooled score; an estimate (inactive, or admitted and not yet measured) is calibrated."""
        v = self.last.get(name, 0.0)
        return v if name in self.active and name not in self.predicted else v * self.factor()

    def update(self, merged: dict[str, torch.Tensor]) -> None:
        self.values.update(merged)

    def allocate(self, pooled: dict[str, float], server_round: int) -> None:
        """One allocation from the pooled utilities; the active set changes in place."""
        self.last.update({n: v for n, v in pooled.items() if math.isfinite(v)})
        for name in list(self.predicted):
            if name in self.active and math.isfinite(pooled.get(name, math.nan)):
                self.calibration[0] += max(pooled[name], 0.0)
                self.calibration[1] += self.predicted.pop(name)
        items = [Item(c.name, c.location, c.cost, self.value(c.name)) for c in self.candidates]
        proposal = {i.name for i in greedy_knapsack(items, self.budget - self.head_cost)}
        first = not self.rounds
        up, down = (sorted(proposal), []) if first else self.ctrl.vote(proposal)
        for name in down:
            self._switch(name, False, server_round, "out of the proposed set")
        by_name = {c.name: c for c in self.candidates}
        for name in sorted(up, key=lambda n: -self.value(n) / by_name[n].cost):
            c = by_name[name]
            taken = any(by_name[a].location == c.location for a in self.active)
            if not taken and self.used() + c.cost <= self.budget:
                self.predicted[name] = self.value(name)
                self._switch(name, True, server_round, "initial" if first else "in the proposed set")
                if first:
                    self.ctrl.states[name].guard_left = 0
        if self.used() > self.budget:  # not an assert: python -O must not strip the budget check
            raise RuntimeError(f"budget exceeded: {self.used():,} > {self.budget:,}")
        self.rounds.append({"round": server_round, "active": sorted(self.active), "used": self.used(),
                            "budget": self.budget, "proposed": len(proposal),
                            "calibration": self.factor()})

    def _switch(self, name: str, on: bool, server_round: int, reason: str) -> None:
        (self.active.add if on else self.active.discard)(name)
        if not on:  # switched off: back to its initial values (an inactive candidate is fresh)
            self.values.update({n: t for n, t in self.fresh.items() if self.owner.get(n) == name})
        self.ctrl.commit(name, on, server_round, f"round {server_round}: {reason}")

    def summary(self) -> dict:
        return {"budget": self.budget, "head_parameters": self.head_cost,
                "candidates": len(self.candidates), "rounds": self.rounds,
                "transitions": self.ctrl.transitions,
                "active": [c.description | {"n_params": c.cost} for c in self.candidates
                           if c.name in self.active]}


def pool(utilities: list[list[float]], weights: list[float], names: list[str]) -> dict[str, float]:
    """Per candidate, the weighted mean of the sites' finite utilities (NaN if none measured it)."""
    out = {}
    for i, name in enumerate(names):
        pairs = [(u[i], w) for u, w in zip(utilities, weights) if math.isfinite(u[i])]
        total = sum(w for _, w in pairs)
        out[name] = sum(u * w for u, w in pairs) / total if total > 0 else math.nan
    return out


class SeaFedAvg(AdapterFedAvg):
    """``AdapterFedAvg`` whose arrays are the current active set; allocates after each round."""

    def __init__(self, allocator: SeaAllocator, ledger, mode: str = "svd", **kwargs):
        super().__init__(allocator.wire(), ledger, mode, **kwargs)
        self.allocator = allocator

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid):
        self.shapes = {k: tuple(v.shape) for k, v in arrays.items()}  # this round's active set
        return super().configure_train(server_round, arrays, config, grid)

    def problem(self, msg: Message, with_arrays: bool) -> str | None:
        reason = super().problem(msg, with_arrays)
        if reason or not with_arrays:
            return reason
        utility = metrics_of(msg).get(UTILITY)
        n = len(self.allocator.candidates)
        if not isinstance(utility, list) or len(utility) != n:
            return f"'{UTILITY}' must list the {n} candidates' utilities"
        if any(math.isinf(u) for u in utility):
            return f"'{UTILITY}' holds infinite values"
        return None

    def aggregate_train(self, server_round: int, replies) -> tuple[ArrayRecord | None,
                                                                     MetricRecord | None]:
        good = self.usable(server_round, replies, "train")
        if not good:
            return None, None
        arrays, metrics = self.merge(server_round, good)
        self.allocator.update(to_state(arrays))
        weights = [float(metrics_of(m)[WEIGHT]) for m in good]
        pooled = pool([list(metrics_of(m)[UTILITY]) for m in good], weights,
                      [c.name for c in self.allocator.candidates])
        self.allocator.allocate(pooled, server_round)
        return to_arrays(self.allocator.wire()), metrics


def sea_strategy(cfg, ledger, **kwargs) -> SeaFedAvg:
    return SeaFedAvg(SeaAllocator(cfg.seed, cfg.foundation, fed_sea_config(cfg.sea)), ledger,
                     cfg.aggregation, **kwargs)


def save_sea_adapter(folder: Path, cfg, allocator: SeaAllocator, extra: dict) -> None:
    """The global active set as a plain ``sea-peft`` adapter (``head`` if nothing is active)."""
    from medpeft.models.weights import load_foundation
    foundation = load_foundation(cfg.foundation)
    chosen = [c.description for c in allocator.candidates if c.name in allocator.active]
    state = apply_method(foundation.model, SEA if chosen else "head",
                         {"sites": chosen} if chosen else {})
    params = {f"out.{n}": p for n, p in foundation.model.out.named_parameters()}
    for site in state.sites:
        params.update({f"{site.name}.{n}": p for n, p in own_parameters(site).items()})
    for name, p in params.items():
        p.data.copy_(allocator.values[name])
    save_adapter(folder, foundation.model, state, foundation,
                 extra={**extra, "sea": allocator.summary()})


def search_alone(site, rounds: int) -> float:
    """The local-only baseline of federated SEA-PEFT: the site runs the same rounds of train,
    audit and allocate with nobody else; returns its Dice on its own test volumes."""
    from medpeft.federated.sea_hospital import sea_evaluate, sea_train
    sea = fed_sea_config(site.cfg.sea)
    allocator, memory = SeaAllocator(site.cfg.seed, site.cfg.foundation, sea), {}
    names = [c.name for c in allocator.candidates]
    for server_round in range(1, rounds + 1):
        tensors, utilities, memory, _ = sea_train(site, allocator.wire(), memory, server_round, sea=sea)
        allocator.update(tensors)
        allocator.allocate(pool([utilities], [1.0], names), server_round)
    return sea_evaluate(site, allocator.wire())
