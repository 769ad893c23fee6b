"""Allocation under a parameter budget: greedy knapsack on utility per parameter.

Items are adapter variants; a ``group`` is the layer they sit on, and at most one variant per
group is chosen. Items with no positive value are never chosen. Each greedy pass keeps scanning
after an item does not fit (smaller ones may).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    name: str
    group: str
    cost: int
    value: float


def _greedy(ranked: list[Item], budget: int, start: list[Item]) -> list[Item]:
    chosen, used, groups = list(start), total_cost(start), {i.group for i in start}
    for item in ranked:
        if item.group not in groups and used + item.cost <= budget:
            chosen.append(item)
            used += item.cost
            groups.add(item.group)
    return chosen


def _improve(chosen: list[Item], pool: list[Item], budget: int) -> list[Item]:
    """1-exchange local search: add an item, dropping at most one chosen, while value rises.
    The chosen set's cost and the item's rival on its layer are counted once per item, not once
    per (item, dropped item) pair."""
    improved = True
    while improved:
        improved = False
        for item in pool:
            if item in chosen:
                continue
            used, rival = total_cost(chosen), next((c for c in chosen if c.group == item.group), None)
            # at most one chosen item per layer: an item with a rival can only replace it
            for out in [rival] if rival is not None else [None] + chosen:
                if used - (out.cost if out else 0) + item.cost > budget:
                    continue
                if item.value > (out.value if out else 0.0) + 1e-12:
                    chosen, improved = [c for c in chosen if c is not out] + [item], True
                    break
    return chosen


def greedy_knapsack(items: list[Item], budget: int) -> list[Item]:
    """Chosen items, at most one per group, total cost <= ``budget``, by value per parameter.

    Greedy by value per parameter, started once from nothing and once from each single item
    (which mends greedy's blind spot for one large valuable item), then polished by a
    1-exchange local search. O(n^2 log n) for n items.
    """
    useful = [i for i in items if i.value > 0 and 0 < i.cost <= budget]
    ranked = sorted(useful, key=lambda i: (-i.value / i.cost, i.cost, i.name))
    starts = [[]] + [[i] for i in useful]
    best: list[Item] = []
    for start in starts:
        chosen = _improve(_greedy([i for i in ranked if i not in start], budget, start),
                          ranked, budget)
        if sum(i.value for i in chosen) > sum(i.value for i in best) + 1e-12:
            best = chosen
    return best


def total_cost(items: list[Item]) -> int:
    return sum(i.cost for i in items)
