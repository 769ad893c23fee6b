"""Finite-state ranking controller: a site changes state only after consistent votes.

Each allocation round the knapsack proposes an active set; that is one vote per site (in or
out). A site whose state disagrees with ``votes`` consecutive proposals becomes *ready*; the loop
commits the change if the budget allows, and the site then sits out a ``guard`` of rounds in
which it cannot change again and its votes are not counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SiteState:
    active: bool = False
    streak: int = 0
    guard_left: int = 0


@dataclass
class RankingController:
    votes: int = 3
    guard: int = 3
    states: dict[str, SiteState] = field(default_factory=dict)
    transitions: list[dict] = field(default_factory=list)

    def add(self, name: str, active: bool) -> None:
        self.states[name] = SiteState(active=active)

    def active(self) -> set[str]:
        return {n for n, s in self.states.items() if s.active}

    def vote(self, proposed: set[str]) -> tuple[list[str], list[str]]:
        """Count one round of votes; returns the sites ready to (activate, deactivate)."""
        up, down = [], []
        for name, s in self.states.items():
            if s.guard_left > 0:
                s.guard_left -= 1
                s.streak = 0
                continue
            if (name in proposed) == s.active:
                s.streak = 0
                continue
            s.streak += 1
            if s.streak >= self.votes:
                (down if s.active else up).append(name)
        return up, down

    def commit(self, name: str, active: bool, round_: int, reason: str = "") -> None:
        """Apply a change the loop carried out: new state, fresh guard, votes reset."""
        s = self.states[name]
        self.transitions.append({"round": round_, "site": name, "from": _label(s.active),
                                 "to": _label(active), "reason": reason})
        s.active, s.streak, s.guard_left = active, 0, self.guard


def _label(active: bool) -> str:
    return "active" if active else "inactive"
