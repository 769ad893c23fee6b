"""Federated SEA-PEFT, the server's side: pool the hospitals' utilities, allocate one global active set.

The allocation is the central search's own (``methods.sea.allocator.Allocator``). Each round the
hospitals send their trained active tensors and the smoothed utility of every
candidate (see ``sea_hospital``). The server averages the tensors as usual (LoRA pairs exactly),
pools the utilities (weighted by support volumes, over the hospitals that measured each candidate),
runs the greedy knapsack under the budget, and lets the finite-state ranking controller turn the
proposals into rare changes. The first allocation (after round 1, where only the head trains and
every candidate is estimated) is taken as proposed, like the central search's start. A candidate
switched off is reset to its initial values. First-order estimates of inactive candidates are
scaled by a calibration factor: what admitted candidates then measured, over what was predicted.
The next round's message carries exactly the new active set, so bytes stay within the budget.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from medpeft.federated.config import FedConfig
from medpeft.federated.hospital import Hospital
from medpeft.federated.plans import fed_sea_config
from medpeft.federated.sea_hospital import (
    candidate_model,
    own_parameters,
    sea_evaluate,
    sea_train,
    wire_state,
)
from medpeft.federated.secure import utilities_from_aggregate, utilities_to_tensors
from medpeft.federated.strategy import WEIGHT, AdapterFedAvg, metrics_of, to_arrays, to_state
from medpeft.methods import SEA, apply_method
from medpeft.methods.adapter_io import save_adapter
from medpeft.methods.sea.allocator import Allocator, Candidate
from medpeft.methods.sea.loop import SeaConfig
from medpeft.methods.sea.space import describe
from medpeft.models.weights import load_foundation

UTILITY = "utility"


class FederatedSearch:
    """The global state of a federated search: every candidate's tensors and the allocator."""

    def __init__(self, cfg_seed: int, foundation: str, sea: SeaConfig):
        found, candidates, n_model = candidate_model(cfg_seed, foundation)
        self.descriptions = {s.name: describe(s) for s in candidates}
        self.owner = {f"{s.name}.{n}": s.name for s in candidates for n in own_parameters(s)}
        self.fresh = wire_state(found.model, candidates, names={s.name for s in candidates})
        self.values = dict(self.fresh)
        self.allocator = Allocator([Candidate(s.name, s.location, s.n_params) for s in candidates],
                                   budget=sea.budget_params(n_model),
                                   fixed_cost=sum(p.numel() for p in found.model.out.parameters()),
                                   votes=sea.votes, guard=sea.guard, on_switch=self._reset_if_off)
        self.last: dict[str, float] = {}  # latest pooled score of each candidate
        self.rounds: list[dict] = []

    @property
    def candidates(self) -> list[Candidate]:
        return list(self.allocator.candidates.values())

    def wire(self) -> dict[str, torch.Tensor]:
        """The head and the active candidates' tensors (what the next message carries)."""
        return {n: t for n, t in self.values.items()
                if n not in self.owner or self.owner[n] in self.allocator.active}

    def value(self, name: str) -> float:
        """Pooled score; an estimate (inactive, or admitted and not yet measured) is calibrated."""
        a = self.allocator
        v = self.last.get(name, 0.0)
        return v if name in a.active and name not in a.predicted else v * a.factor()

    def update(self, merged: dict[str, torch.Tensor]) -> None:
        self.values.update(merged)

    def allocate(self, pooled: dict[str, float], server_round: int) -> None:
        """One allocation from the pooled utilities; the first is taken as proposed."""
        a = self.allocator
        self.last.update({n: v for n, v in pooled.items() if math.isfinite(v)})
        a.calibrate({n: pooled.get(n, math.nan) for n in list(a.predicted) if n in a.active})
        values = {c.name: self.value(c.name) for c in self.candidates}
        inactive = {c.name for c in self.candidates} - a.active  # every admission is an estimate
        if self.rounds:
            proposed = a.allocate(values, estimated=inactive, round_no=server_round,
                                  when=f"round {server_round}")
        else:
            proposed = a.start(values, estimated=inactive, round_no=server_round)
        self.rounds.append({"round": server_round, "active": sorted(a.active), "used": a.used(),
                            "budget": a.budget, "proposed": proposed, "calibration": a.factor()})

    def _reset_if_off(self, name: str, on: bool) -> None:
        """A candidate switched off goes back to its initial values (an inactive one is fresh)."""
        if not on:
            self.values.update({n: t for n, t in self.fresh.items() if self.owner.get(n) == name})

    def active_descriptions(self) -> list[dict]:
        return [self.descriptions[c.name] for c in self.candidates if c.name in self.allocator.active]

    def summary(self) -> dict:
        a = self.allocator
        return {"budget": a.budget, "head_parameters": a.fixed_cost,
                "candidates": len(self.candidates), "rounds": self.rounds,
                "transitions": a.ctrl.transitions,
                "active": [self.descriptions[c.name] | {"n_params": c.cost} for c in self.candidates
                           if c.name in a.active]}


def pool(utilities: list[list[float]], weights: list[float], names: list[str]) -> dict[str, float]:
    """Per candidate, the weighted mean of the hospitals' finite utilities (NaN if none measured it)."""
    out = {}
    for i, name in enumerate(names):
        pairs = [(u[i], w) for u, w in zip(utilities, weights) if math.isfinite(u[i])]
        total = sum(w for _, w in pairs)
        out[name] = sum(u * w for u, w in pairs) / total if total > 0 else math.nan
    return out


class SeaFedAvg(AdapterFedAvg):
    """``AdapterFedAvg`` whose arrays are the current active set; allocates after each round."""

    def __init__(self, search: FederatedSearch, ledger, mode: str = "svd", **kwargs):
        super().__init__(search.wire(), ledger, mode, **kwargs)
        self.search = search

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid):
        self.shapes = {k: tuple(v.shape) for k, v in arrays.items()}  # this round's active set
        return super().configure_train(server_round, arrays, config, grid)

    def problem(self, msg: Message, with_arrays: bool) -> str | None:
        reason = super().problem(msg, with_arrays)
        if reason or not with_arrays:
            return reason
        utility = metrics_of(msg).get(UTILITY)
        n = len(self.search.candidates)
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
        self.search.update(to_state(arrays))
        weights = [float(metrics_of(m)[WEIGHT]) for m in good]
        pooled = pool([list(metrics_of(m)[UTILITY]) for m in good], weights,
                      [c.name for c in self.search.candidates])
        self.search.allocate(pooled, server_round)
        return to_arrays(self.search.wire()), metrics

    def secure_wire(self, shared: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The active set, and room for the hospitals' masked utilities."""
        return {**shared, **utilities_to_tensors([0.0] * len(self.search.candidates))}

    def secure_aggregate(self, aggregate: dict[str, torch.Tensor], weights: list[float],
                         server_round: int, *, start: dict[str, torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        """Update the round's active set from the summed tensors (with the server step), then
        allocate from the summed utilities, as ``aggregate_train`` does from the clear ones."""
        tensors, utilities = utilities_from_aggregate(aggregate)
        self.search.update(self.server_step(start, tensors))
        self.search.allocate(dict(zip([c.name for c in self.search.candidates], utilities)),
                             server_round)
        return self.search.wire()


def save_sea_adapter(folder: Path, cfg: FedConfig, search: FederatedSearch, extra: dict) -> None:
    """The global active set as a plain ``sea-peft`` adapter (``head`` if nothing is active)."""
    foundation = load_foundation(cfg.foundation)
    chosen = search.active_descriptions()
    state = apply_method(foundation.model, SEA if chosen else "head",
                         {"sites": chosen} if chosen else {})
    params = {f"out.{n}": p for n, p in foundation.model.out.named_parameters()}
    for candidate in state.sites:
        params.update({f"{candidate.name}.{n}": p for n, p in own_parameters(candidate).items()})
    for name, p in params.items():
        p.data.copy_(search.values[name])
    save_adapter(folder, foundation.model, state, foundation,
                 extra={**extra, "sea": search.summary()})


def search_alone(hospital: Hospital, rounds: int) -> float:
    """The local-only baseline of federated SEA-PEFT: the hospital runs the same rounds of train,
    audit and allocate with nobody else; returns its Dice on its own test volumes."""
    sea = fed_sea_config(hospital.cfg.sea)
    search, memory = FederatedSearch(hospital.cfg.seed, hospital.cfg.foundation, sea), {}
    names = [c.name for c in search.candidates]
    for server_round in range(1, rounds + 1):
        tensors, utilities, memory, _ = sea_train(hospital, search.wire(), memory, server_round, sea=sea)
        search.update(tensors)
        search.allocate(pool([utilities], [1.0], names), server_round)
    return sea_evaluate(hospital, search.wire())
