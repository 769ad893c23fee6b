"""The grid's report: per-organ tables, Dice vs K, Dice vs trainable parameters, best and worst
cases as slice overlays, and the paired comparison; ``report.md`` next to its PNGs."""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medpeft.evaluate.html_report import scroller, write_html_report  # noqa: E402
from medpeft.evaluate.report import machine, overlay_png  # noqa: E402
from medpeft.io import atomic_path, write_text  # noqa: E402


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.mean(values) if values else math.nan


def summary(rows: list[dict]) -> list[dict]:
    """Per (dataset, task, organ, method, K): means over cases and seeds; sd over the seeds'
    means."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r.get("task", "all"), r["organ"], r["method"], r["k"])].append(r)
    out = []
    for (dataset, task, organ, method, k), rs in sorted(groups.items()):
        per_seed = defaultdict(list)
        for r in rs:
            per_seed[r["seed"]].append(r["dice"])
        seed_means = [_mean(v) for v in per_seed.values()]
        seed_means = [m for m in seed_means if not math.isnan(m)]
        out.append({"dataset": dataset, "task": task, "organ": organ, "method": method, "k": k,
                    "dice": _mean(r["dice"] for r in rs),
                    "dice_sd": statistics.stdev(seed_means) if len(seed_means) > 1 else math.nan,
                    "hd95": _mean(r.get("hd95") for r in rs), "nsd": _mean(r.get("nsd") for r in rs),
                    "trainable": rs[0]["trainable"], "seeds": len(per_seed)})
    return out


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _series(r: dict) -> str:
    task = r.get("task", "all")
    return r["method"] if task == "all" else f"{r['method']} [{task}]"


def _plot(path: Path, table: list[dict], x_of, xlabel: str, *, log: bool = False) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for series in dict.fromkeys(_series(r) for r in table):
        pts = defaultdict(list)
        for r in table:
            if _series(r) == series:
                pts[x_of(r)].append(r["dice"])
        xs = sorted(pts)
        ax.plot(xs, [_mean(pts[x]) for x in xs], marker="o", label=series)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean Dice")
    if log:
        ax.set_xscale("symlog", linthresh=100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _extreme_cases(out: Path, rows: list[dict], datasets: dict) -> list[tuple]:
    """(tag, dataset, case, {label: prediction}) for the worst and best test case of the best
    method at the largest K (its first seed)."""
    adapted = [r for r in rows if r["k"] > 0 and not math.isnan(r["dice"])]
    if not adapted:
        return []
    k = max(r["k"] for r in adapted)
    at_k = [r for r in adapted if r["k"] == k]
    task, best = max({(r.get("task", "all"), r["method"]) for r in at_k},
                     key=lambda tm: _mean(r["dice"] for r in at_k
                                          if (r.get("task", "all"), r["method"]) == tm))
    first_seed = min(r["seed"] for r in at_k)
    per_case = defaultdict(list)
    for r in at_k:
        if (r.get("task", "all"), r["method"]) == (task, best) and r["seed"] == first_seed:
            per_case[(r["dataset"], r["case"], r["seed"])].append(r["dice"])
    ranked = sorted(per_case, key=lambda c: _mean(per_case[c]))
    cases = []
    for tag, (dataset, case, seed) in (("worst", ranked[0]), ("best", ranked[-1])):
        cell = out / dataset if task == "all" else out / dataset / task
        pred = cell / f"k{k}-s{seed}" / best / "predictions" / f"{case}.nii.gz"
        label = f"{best} K={k} ({_mean(per_case[(dataset, case, seed)]):.2f})"
        cases.append((tag, datasets[dataset], case, {label: pred}))
    return cases


def _overlays(out: Path, cases: list[tuple]) -> list[str]:
    """Best and worst test case as slice overlays."""
    names = []
    for tag, ds, case, predictions in cases:
        name = f"overlay_{tag}.png"
        overlay_png(out / name, ds.case(case).image, ds.case(case).label, ds.labels, predictions=predictions)
        names.append(name)
    return names


def _html(out: Path, table: list[dict], cases: list[tuple], command: str) -> Path:
    """``report.html``: one record per (dataset, task, method, K) and the two cases' slices."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in table:
        groups[(r["dataset"], r["task"], r["method"], r["k"])].append(r)
    records = [{"setting": f"{d} [{t}]" if t != "all" else d, "method": m, "k": k,
                "mean_dice": _mean(r["dice"] for r in rs),
                "organs": {r["organ"]: r["dice"] for r in rs}, "trainable": rs[0]["trainable"],
                "trainable_pct": math.nan, "seconds": math.nan}
               for (d, t, m, k), rs in groups.items()]
    return write_html_report(
        out / "report.html", title="medpeft benchmark grid",
        facts={"command": command, "machine": machine()}, records=records,
        cases=[scroller(ds.case(case).image, ds.case(case).label, ds.labels, predictions)
               for _, ds, case, predictions in cases])


def write_grid_report(out: Path, rows: list[dict], pairs: list[dict], datasets: dict,
                      *, command: str) -> Path:
    """``report.md`` with the tables and plots of a finished (or partial) grid."""
    out = Path(out)
    table = summary(rows)
    _plot(out / "dice_vs_k.png", table, lambda r: r["k"], "K (labelled support volumes)")
    at_max = [r for r in table if r["k"] == max(t["k"] for t in table)] or table
    _plot(out / "dice_vs_parameters.png", at_max, lambda r: r["trainable"],
          "trainable parameters", log=True)
    lines = ["# medpeft benchmark grid", "", f"- command: `{command}`", f"- machine: {machine()}",
             f"- rows: {len(rows)} (case x organ x method x K x seed)", "",
             "## Per organ (mean over test cases and seeds; sd over the seeds' means)", "",
             "| dataset | task | organ | method | K | Dice | sd | HD95 (mm) | NSD | trainable | "
             "seeds |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['dataset']} | {r['task']} | {r['organ']} | {r['method']} | {r['k']} | "
                     f"{_fmt(r['dice'])} | {_fmt(r['dice_sd'])} | {_fmt(r['hd95'], 1)} | "
                     f"{_fmt(r['nsd'])} | {r['trainable']:,} | {r['seeds']} |")
    lines += ["", "## Paired comparison (one pair per test case)", "",
              "Each case's Dice difference is averaged over its organs and seeds first (the seeds "
              "re-score the same cases); an exact test over n cases cannot go below 2 / 2^n.", "",
              "| task | method | K | reference | test cases | mean Dice difference | wins | "
              "Wilcoxon p | smallest p possible |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {p['task']} | {p['method']} | {p['k']} | {p['reference']} | {p['pairs']} | "
              f"{p['mean_difference']:+.3f} | {p['wins']} | {_fmt(p['p_value'], 4)} | "
              f"{_fmt(p['smallest_p'], 4)} |" for p in pairs]
    lines += ["", "![Dice vs K](dice_vs_k.png) ![Dice vs parameters](dice_vs_parameters.png)", ""]
    cases = _extreme_cases(out, rows, datasets)
    for name in _overlays(out, cases):
        lines += [f"![{name}]({name})", ""]
    write_text(out / "report.md", "\n".join(lines))
    _html(out, table, cases, command)
    return out / "report.md"
