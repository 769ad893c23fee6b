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

ZERO_SHOT = "zero-shot"  # the foundation without adaptation: the grid's row of every K


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


def paired(rows: list[dict], reference: str, metric: str = "dice") -> list[dict]:
    """Each method against ``reference`` per task and K, one pair per test case (differences
    averaged over the case's organs and seeds first; ``medpeft.evaluate.paired``)."""
    def key(r):
        return (r["dataset"], r.get("task", "all"), r["case"], r["organ"], r["seed"])
    ref = {}
    for r in rows:
        if r["method"] == reference and not math.isnan(r[metric]):
            ref.setdefault(r["k"], {})[key(r)] = r[metric]
    zero = {key(r)[:4]: r[metric] for r in rows if r["method"] == ZERO_SHOT}
    out = []
    for (task, method, k) in sorted({(r.get("task", "all"), r["method"], r["k"]) for r in rows
                                     if r["method"] != reference}):
        diffs = []
        for r in rows:
            if (r.get("task", "all"), r["method"], r["k"]) != (task, method, k) \
                    or math.isnan(r[metric]):
                continue
            base = zero.get(key(r)[:4]) if reference == ZERO_SHOT else ref.get(k, {}).get(key(r))
            if base is not None and not math.isnan(base):
                diffs.append(((r["dataset"], r["case"]), r[metric] - base))
        if diffs:
            out.append({"task": task, "method": method, "k": k, "reference": reference,
                        **case_paired_test(diffs)})
    return out
