"""Paired tests without pseudo-replication: one difference per test case.

The same held-out cases are scored under every seed and for every organ, so (case, organ, seed)
triples are not independent: counting them as pairs overstates the evidence. Differences are
first averaged over organs and seeds within each case; the Wilcoxon signed-rank test then runs
over cases. With n cases the exact two-sided test cannot go below 2 / 2^n (0.031 for 6 cases),
which every report states beside the p-value.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict

from scipy.stats import wilcoxon


def smallest_p(n: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test over ``n`` pairs can give."""
    return 2.0 / 2 ** n if n > 0 else math.nan


def case_paired_test(diffs: list[tuple[str, float]]) -> dict:
    """``diffs``: (case, difference) for every organ and seed. Returns the test over cases:
    pairs (= cases), mean difference, wins, p_value and the smallest attainable p."""
    per_case: dict[str, list[float]] = defaultdict(list)
    for case, d in diffs:
        if not math.isnan(d):
            per_case[case].append(d)
    values = [statistics.mean(v) for v in per_case.values()]
    n = len(values)
    p = wilcoxon(values).pvalue if n > 1 and any(values) else math.nan
    return {"pairs": n, "mean_difference": statistics.mean(values) if values else math.nan,
            "wins": sum(v > 0 for v in values), "p_value": float(p), "smallest_p": smallest_p(n)}
