"""The peers table: every row (zero-shot, adaptation methods, from-scratch peers) by K, with mean
Dice +- sd over seeds, per-organ Dice, wall time, trainable parameters, and a paired Wilcoxon test
against the best peer of each K. Pairs are (test case, seed): a case's Dice averaged over its
organs, so organs of one scan are not counted as independent observations."""
from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medpeft.evaluate.paired import case_paired_test  # noqa: E402
from medpeft.io import atomic_path, write_text  # noqa: E402
from medpeft.methods import DEFAULT_METHOD  # noqa: E402

PEERS = ("scratch", "nnunet")  # trained on the K support volumes alone


def is_peer(method: str) -> bool:
    """A peer row, also in a recipe variant (``scratch@light-fp32``: the registry's spelling)."""
    return method.split("@")[0] in PEERS
LABELS = {"zero-shot": "zero-shot (foundation as is)", "scratch": "same network from scratch",
          "nnunet": "nnU-Net v2 from scratch", "full": "full fine-tuning",
          DEFAULT_METHOD: f"{DEFAULT_METHOD} (medpeft adapt's default)"}


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.mean(values) if values else math.nan


def case_scores(rows: list[dict]) -> dict[tuple, dict[tuple, float]]:
    """(method, K) -> {(case, seed): Dice averaged over the case's organs}."""
    organs: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        organs[(r["method"], r["k"], r["case"], r["seed"])].append(r["dice"])
    out: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    for (method, k, case, seed), values in organs.items():
        out[(method, k)][(case, seed)] = _mean(values)
    return out


def summarise(rows: list[dict], methods: list[str]) -> list[dict]:
    """One record per (method, K) present: Dice mean and sd over seeds, organs, time, size."""
    by_cell: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_cell[(r["method"], r["k"])].append(r)
    order = {m: i for i, m in enumerate(methods)}
    out = []
    for (method, k), rs in sorted(by_cell.items(), key=lambda x: (x[0][1], order.get(x[0][0], 99))):
        per_seed: dict[int, list[dict]] = defaultdict(list)
        for r in rs:
            per_seed[r["seed"]].append(r)
        seed_dice = [_mean(_organ_means(v).values()) for v in per_seed.values()]
        seconds = {(r["seed"]): r["seconds"] for r in rs}
        out.append({"method": method, "k": k, "seeds": len(per_seed),
                    "dice": _mean(seed_dice),
                    "sd": statistics.stdev(seed_dice) if len(seed_dice) > 1 else math.nan,
                    "organs": _organ_means(rs), "seconds": _mean(seconds.values()),
                    "trainable": rs[0]["trainable"],
                    "precisions": {r["seed"]: r.get("precision", "") for r in rs}})
    return out


def _organ_means(rows: list[dict]) -> dict[str, float]:
    values: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        values[r["organ"]].append(r["dice"])
    return {organ: _mean(v) for organ, v in values.items()}


def against_best_peer(rows: list[dict], table: list[dict]) -> list[dict]:
    """Each row against the best peer (highest mean Dice) of its K, one pair per test case
    (the case's difference averaged over seeds; ``medpeft.evaluate.paired``)."""
    cases = case_scores(rows)
    out = []
    for k in sorted({t["k"] for t in table if t["k"]}):
        peers = [t for t in table if t["k"] == k and is_peer(t["method"])]
        if not peers:
            continue
        best = max(peers, key=lambda t: t["dice"])["method"]
        ref = cases[(best, k)]
        for t in table:
            if t["method"] == best or t["k"] not in (0, k):
                continue
            mine = cases[(t["method"], t["k"])]
            keys = [key for key in ref if (key if t["k"] else (key[0], 0)) in mine]
            diffs = [(key[0], mine[key if t["k"] else (key[0], 0)] - ref[key]) for key in keys]
            out.append({"k": k, "method": t["method"], "best_peer": best,
                        **case_paired_test(diffs)})
    return out


def plot_dice_vs_k(path: Path, table: list[dict]) -> None:
    """Mean Dice (+- sd over seeds) against K, one line per row; zero-shot as a flat line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = sorted({t["k"] for t in table if t["k"]})
    for method in dict.fromkeys(t["method"] for t in table):
        pts = [t for t in table if t["method"] == method]
        if method == "zero-shot":
            ax.axhline(pts[0]["dice"], color="grey", ls=":", label=LABELS[method])
            continue
        style = "--" if is_peer(method) else "-"
        ax.errorbar([t["k"] for t in pts], [t["dice"] for t in pts],
                    yerr=[0 if math.isnan(t["sd"]) else t["sd"] for t in pts], ls=style,
                    marker="o", capsize=3, label=LABELS.get(method, method))
    ax.set(xlabel="labelled volumes K", ylabel="mean Dice", xticks=ks, ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _f(v: float, digits: int = 3) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def markdown(table: list[dict], tests: list[dict], header: dict, failures: list[str]) -> str:
    """peers.md: the whole table (Dice by K), per-organ Dice, the paired tests, the set-up."""
    ks = sorted({t["k"] for t in table if t["k"]})
    methods = list(dict.fromkeys(t["method"] for t in table))
    cell = {(t["method"], t["k"]): t for t in table}
    lines = ["# Peers: adaptation vs training on the K scans alone", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()] + [""]
    lines += ["| row | trainable | " + " | ".join(f"K={k}" for k in ks) + " | s (K=" +
              str(ks[-1] if ks else "") + ") | trained in |", "|---|---:|" + "---:|" * (len(ks) + 1) + "---|"]
    for m in methods:
        first = cell.get((m, 0)) or next(t for t in table if t["method"] == m)
        dice = [_cell_text(cell.get((m, 0)) or cell.get((m, k))) for k in ks]
        last = cell.get((m, ks[-1])) if ks else None
        trained = precision_text(p for t in table if t["method"] == m for p in t["precisions"].values())
        lines.append(f"| {LABELS.get(m, m)} | {first['trainable']:,} | " + " | ".join(dice) +
                     f" | {_f(last['seconds'], 0) if last else '–'} | "
                     f"{trained} |")
    lines += ["", "Mean Dice over organs and test volumes, +- sd over seeds (n = seeds run). "
              "Trained in: each cell's training arithmetic (its `adapt_summary.json`), counted over "
              "the row's cells; bf16 is autocast where the CPU has it natively.", ""]
    lines += _organ_lines(table) + [""] + _test_lines(tests)
    if failures:
        lines += ["", "## Rows that could not run", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def precision_text(precisions: Iterable[str]) -> str:
    """The arithmetic a row's cells trained in, one per cell ("" where no record says): one word
    when they agree, else each with its count ("bf16 x 7, float32 x 2"); a table that mixes them
    compares rounding as well as recipes."""
    counts = Counter(p or "not recorded" for p in precisions)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{p} x {n}" for p, n in counts.most_common())


def _cell_text(t: dict | None) -> str:
    if t is None:
        return "–"
    sd = "" if math.isnan(t["sd"]) else f" ± {t['sd']:.3f}"
    return f"{t['dice']:.3f}{sd} (n={t['seeds']})"


def _organ_lines(table: list[dict]) -> list[str]:
    organs = list(dict.fromkeys(o for t in table for o in t["organs"]))
    lines = ["## Per-organ Dice", "", "| row | K | " + " | ".join(organs) + " |",
             "|---|---:|" + "---:|" * len(organs)]
    for t in table:
        lines.append(f"| {t['method']} | {t['k'] or '-'} | " +
                     " | ".join(_f(t["organs"].get(o, math.nan), 2) for o in organs) + " |")
    return lines


def _test_lines(tests: list[dict]) -> list[str]:
    lines = ["## Paired against the best peer of each K (Wilcoxon signed-rank over test cases)",
             "", "One pair per test case: its Dice difference averaged over organs and seeds "
             "(the seeds re-score the same cases, so they are not extra pairs). An exact test "
             "over n cases cannot go below 2 / 2^n.", "",
             "| K | row | best peer | cases | mean difference | wins | p | smallest p possible |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for t in tests:
        lines.append(f"| {t['k']} | {t['method']} | {t['best_peer']} | {t['pairs']} | "
                     f"{t['mean_difference']:+.3f} | {t['wins']}/{t['pairs']} | "
                     f"{_f(t['p_value'], 4)} | {_f(t['smallest_p'], 4)} |")
    return lines


def write_peers_report(out: Path, rows: list[dict], methods: list[str], header: dict,
                       *, failures: list[str]) -> tuple[Path, list[dict], list[dict]]:
    """peers.md and peers.png in ``out``; returns the report path, the table and the tests."""
    table = summarise(rows, methods)
    tests = against_best_peer(rows, table)
    plot_dice_vs_k(Path(out) / "peers.png", table)
    text = markdown(table, tests, header, failures) + "\n![Dice vs K](peers.png)\n"
    write_text(Path(out) / "peers.md", text)
    return Path(out) / "peers.md", table, tests
