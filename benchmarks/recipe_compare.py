"""Compare foundations by the spleen-trial protocol: one table from `adapt_recipe.py` records.

Every foundation trial here was judged by `adapt_recipe.py --method decoder --steps 240 --augment
shape --shots 1 --shots 5` on phantoms 0, 1 and 2, one `adapt-recipe.md` per phantom. This reads
those files and prints the trial table: each arm's source site, spleen there, zero-shot, K=1 and
K=5 per phantom with their mean, then each arm's difference from the first arm (the control) and
on how many phantoms it is ahead. A missing or foreign file is named, not skipped.

Usage: python benchmarks/recipe_compare.py v6=runs/pt-v7/v6-recipe-s{0,1,2}/adapt-recipe.md \
           v7b=runs/pt-v7b/v7-recipe-s{0,1,2}/adapt-recipe.md
  (an arm is NAME=FILE[,FILE...]; tokens of one NAME join, phantoms in the order given)
"""
from __future__ import annotations

import argparse
from pathlib import Path

COLUMNS = ("source site", "spleen", "zero-shot", "K=1", "K=5")


def recipe_figures(path: Path) -> dict[str, float]:
    """The five trial figures of one `adapt-recipe.md` (one phantom)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such adapt-recipe file")
    rows = [[c.strip() for c in line.split("|")[1:-1]]
            for line in path.read_text().splitlines() if line.startswith("| ")]
    if not rows or rows[0][:3] != ["row", "K", "mean Dice"] or "spleen" not in rows[0]:
        raise SystemExit(f"{path}: not an adapt_recipe.py table (no row / K / mean Dice / spleen header)")
    spleen = rows[0].index("spleen")
    figures: dict[str, float] = {}
    for row in rows[1:]:
        if row[0].startswith("foundation"):
            figures["source site"] = float(row[2])
            figures["spleen"] = float(row[spleen])
        elif row[0].startswith("zero-shot"):
            figures["zero-shot"] = float(row[2])
        elif row[1] in ("1", "5"):
            figures[f"K={row[1]}"] = float(row[2])
    missing = [c for c in COLUMNS if c not in figures]
    if missing:
        raise SystemExit(f"{path}: no {', '.join(missing)} row")
    return figures


def parse_arms(specs: list[str]) -> list[tuple[str, list[Path]]]:
    """NAME=FILE[,FILE...] tokens in order; tokens of one NAME (as the shell's NAME=a{0,1,2}
    expands) make one arm, its phantoms in the order given."""
    arms: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, files = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"{spec}: an arm is NAME=FILE[,FILE...]")
        arms.setdefault(name, []).extend(Path(f) for f in files.split(",") if f)
    return list(arms.items())


def cell(values: list[float], digits: int) -> str:
    mean = sum(values) / len(values)
    return " / ".join(f"{v:.{digits}f}" for v in values) + f" ({mean:.{digits}f})"


def table(arms: list[tuple[str, list[dict[str, float]]]]) -> str:
    """Per-phantom figures with means; then each arm against the first, with its phantoms ahead."""
    digits = {c: 2 if c == "spleen" else 3 for c in COLUMNS}
    lines = ["| arm | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, runs in arms:
        lines.append(f"| {name} | " + " | ".join(
            cell([r[c] for r in runs], digits[c]) for c in COLUMNS) + " |")
    control_name, control = arms[0]
    for name, runs in arms[1:]:
        if len(runs) != len(control):
            raise SystemExit(f"{name} has {len(runs)} phantoms, {control_name} {len(control)}")
        diffs = []
        for c in COLUMNS:
            d = [r[c] - k[c] for r, k in zip(runs, control)]
            diffs.append(f"{sum(d) / len(d):+.{digits[c]}f} (ahead {sum(x > 0 for x in d)}/{len(d)})")
        lines.append(f"| {name} - {control_name} | " + " | ".join(diffs) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arms", nargs="+", help="NAME=FILE[,FILE...]; the first arm is the control")
    arms = [(name, [recipe_figures(f) for f in files]) for name, files in parse_arms(ap.parse_args().arms)]
    print(table(arms), end="")


if __name__ == "__main__":
    main()
