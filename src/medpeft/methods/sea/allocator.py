"""SEA-PEFT's allocate step, one implementation for the central search and the federated server.

Given a value for every candidate, the greedy knapsack proposes an active set under the budget
(the always-trained head counts against it); the finite-state ranking controller turns the
proposals into rare state changes; admissions go best value per parameter first, one variant per
layer, while the budget holds. A candidate admitted on an *estimate* (a first-order prediction,
not yet measured with trained weights) records that estimate, and its first measurement
calibrates later estimates: the factor is what admitted candidates measured over what was
predicted, clamped to [0.01, 1].

The callers differ only in where values come from (the central search's smoothed audits, or the
utilities pooled across hospitals) and in what a switch does to the model (``on_switch``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from medpeft.methods.sea.fsr import RankingController
from medpeft.methods.sea.knapsack import Item, greedy_knapsack


@dataclass(frozen=True)
class Candidate:
    name: str
    location: str  # the layer it sits on: at most one active candidate per location
    cost: int  # trainable parameters when active


class Allocator:
    """The active set under ``budget`` (which includes ``fixed_cost``, the head) and its history."""

    def __init__(self, candidates: Iterable[Candidate], *, budget: int, fixed_cost: int,
                 votes: int, guard: int, on_switch: Callable[[str, bool], None] | None = None):
        self.candidates = {c.name: c for c in candidates}
        self.budget, self.fixed_cost = budget, fixed_cost
        if fixed_cost > budget:
            raise ValueError(f"budget {budget:,} is below the {fixed_cost:,} parameters that "
                             "always train (the head)")
        self.on_switch = on_switch or (lambda name, on: None)
        self.ctrl = RankingController(votes, guard)
        for name in self.candidates:
            self.ctrl.add(name, False)
        self.active: set[str] = set()
        self.predicted: dict[str, float] = {}  # admitted on an estimate, not yet measured
        self.calibration = [0.0, 0.0]  # sums of (measured, predicted) over admitted candidates

    def used(self) -> int:
        return self.fixed_cost + sum(self.candidates[n].cost for n in self.active)

    def factor(self) -> float:
        """Measured over predicted utility of admitted candidates (1 until one is measured)."""
        measured, predicted = self.calibration
        return 1.0 if predicted <= 0 else min(1.0, max(0.01, measured / predicted))

    def calibrate(self, measured: dict[str, float]) -> None:
        """First measurements (in the given order) of candidates admitted on an estimate."""
        for name, utility in measured.items():
            if name in self.predicted and math.isfinite(utility):
                self.calibration[0] += max(utility, 0.0)
                self.calibration[1] += self.predicted.pop(name)

    def propose(self, values: dict[str, float]) -> list[Item]:
        items = [Item(c.name, c.location, c.cost, values.get(c.name, 0.0))
                 for c in self.candidates.values()]
        return greedy_knapsack(items, self.budget - self.fixed_cost)

    def start(self, values: dict[str, float], *, estimated: set[str], round_no: int = 0,
              initial: list[str] | None = None) -> int:
        """The first active set: ``initial``, or the knapsack's proposal, taken as it is (the
        controller's guard does not hold it). Returns the number of candidates proposed."""
        names = initial if initial is not None else [i.name for i in self.propose(values)]
        for name in names:
            self._switch(name, True, (round_no, "initial"), values.get(name, 0.0), estimated)
            self.ctrl.states[name].guard_left = 0
        self.check()
        return len(names)

    def allocate(self, values: dict[str, float], *, estimated: set[str], round_no: int,
                 when: str) -> int:
        """One round: propose, vote, switch off, then admit by value per parameter while the
        budget and the one-per-layer rule allow. ``estimated``: the candidates whose value is a
        prediction; ``when`` starts each transition's reason. Returns the proposal's size."""
        proposal = self.propose(values)
        up, down = self.ctrl.vote({i.name for i in proposal})
        for name in down:
            self._switch(name, False, (round_no, f"{when}: out of the proposed set"), 0.0, estimated)
        cost = {n: c.cost for n, c in self.candidates.items()}
        for name in sorted(up, key=lambda n: -values.get(n, 0.0) / cost[n]):
            c = self.candidates[name]
            taken = any(self.candidates[a].location == c.location for a in self.active)
            if not taken and self.used() + c.cost <= self.budget:
                self._switch(name, True, (round_no, f"{when}: in the proposed set"),
                             values.get(name, 0.0), estimated)
        self.check()
        return len(proposal)

    def check(self) -> None:
        """The budget and the one-variant-per-layer rule (raised, so ``python -O`` keeps it)."""
        if self.used() > self.budget:
            raise RuntimeError(f"budget exceeded: {self.used():,} > {self.budget:,}")
        locations = [self.candidates[n].location for n in self.active]
        if len(locations) != len(set(locations)):
            raise RuntimeError("two variants active on one layer")

    def _switch(self, name: str, on: bool, why: tuple[int, str], value: float,
                estimated: set[str]) -> None:
        (self.active.add if on else self.active.discard)(name)
        if on and name in estimated:
            self.predicted[name] = value
        self.on_switch(name, on)
        self.ctrl.commit(name, on, *why)
