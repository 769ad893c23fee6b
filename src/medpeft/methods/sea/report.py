"""What a SEA-PEFT run leaves behind for a human: a plot of the active set and ``report.md``."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medpeft.io import atomic_path, write_text  # noqa: E402

PLOT = "active_set.png"


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def plot_active_set(search_dir: Path, out: Path, final: list[str]) -> None:
    """Which sites were active after each allocation round, and the budget in use."""
    rounds = _rows(search_dir / "allocations.csv")
    steps = [int(r["step"]) for r in rounds]
    sets = [set(r["sites"].split()) for r in rounds]
    shown = sorted(set().union(*sets, final)) if sets else sorted(final)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 2.5 + 0.16 * len(shown)), sharex=True,
                                      gridspec_kw={"height_ratios": [max(3, len(shown) / 6), 1]})
    for y, name in enumerate(shown):
        xs = [s for s, active in zip(steps, sets) if name in active]
        top.scatter(xs, [y] * len(xs), s=12, marker="s", color="tab:blue")
    top.set_yticks(range(len(shown)), [n.replace("swinViT.", "") for n in shown], fontsize=6)
    top.set_title("SEA-PEFT: active adapter sites after each allocation")
    if rounds:
        bottom.plot(steps, [int(r["used"]) / int(r["budget"]) for r in rounds], marker="o")
    bottom.axhline(1.0, color="red", lw=0.8)
    bottom.set_ylim(0, 1.1)
    bottom.set_ylabel("budget used")
    bottom.set_xlabel("search step")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_search_report(out_dir: Path, outcome: dict, summary: dict) -> None:
    """``report.md``: final configuration with costs, budget, audit source and time shares."""
    out_dir = Path(out_dir)
    sites = outcome["sites"]
    plot_active_set(out_dir / "search", out_dir / PLOT,
                    [f"{s['location']}:{s['kind']}" + (f"[{s['tag']}]" if s["tag"] else "")
                     for s in sites])
    total = summary["seconds"]
    lines = [
        "# SEA-PEFT run", "",
        f"- budget: {outcome['budget']:,} parameters "
        f"({100 * outcome['budget'] / outcome['model_parameters']:.2f}% of "
        f"{outcome['model_parameters']:,}); used {outcome['used']:,} "
        f"(head {outcome['head_parameters']:,} + {len(sites)} adapter sites)",
        f"- search space: {outcome['candidates']} candidate sites, "
        f"{outcome['candidate_parameters']:,} parameters in all",
        f"- audit data: {outcome['audit_source']}",
        f"- time: search {outcome['seconds']:.0f} s (audit {outcome['audit_seconds']:.0f} s), "
        f"refinement {summary['refine_seconds']:.0f} s; audit share "
        f"{100 * outcome['audit_seconds'] / total:.1f}% of {total:.0f} s",
        f"- schedule: {outcome['config']}", "",
        "## Final configuration", "",
        "| location | kind | variant | parameters |", "|---|---|---|---:|",
        *[f"| {s['location']} | {s['kind']} | {s['tag'] or '-'} | {s['n_params']:,} |"
          for s in sites],
        "", f"![active set]({PLOT})", "",
        "Logs: `search/audits.csv` (every utility), `search/allocations.csv` (active set and "
        "budget per round), `search/transitions.csv` (controller state changes).", ""]
    write_text(out_dir / "report.md", "\n".join(lines))
