"""benchmarks/recipe_compare.py reads what benchmarks/adapt_recipe.py writes, phantom by phantom."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import benchmark_script

ORGANS = ["liver", "spleen"]


def _recipe_file(path: Path, source: float, spleen: float, k1: float, k5: float | None) -> Path:
    """An adapt-recipe.md written by adapt_recipe.py's own writer."""
    row = lambda name, k, dice, organs: {"row": name, "k": k, "dice": dice, "seconds": 1.0,  # noqa: E731
                                         "organs": dict(zip(ORGANS, organs))}
    rows = [row("foundation @ source holdout", "-", source, (0.9, spleen)),
            row("zero-shot @ new site", "-", 0.4, (0.8, 0.1)),
            row("decoder-240st-p0-shape", 1, k1, (0.9, 0.5))]
    if k5 is not None:
        rows.append(row("decoder-240st-p0-shape", 5, k5, (0.9, 0.6)))
    args = SimpleNamespace(argv=["--method", "decoder"], foundation=None, seed=0)
    path.write_text(benchmark_script("adapt_recipe").markdown(rows, args, ORGANS))
    return path


def test_compare_averages_each_arms_phantoms_and_counts_where_it_leads(tmp_path):
    compare = benchmark_script("recipe_compare")
    figures = {("a", 0): (0.80, 0.50, 0.60, 0.70), ("a", 1): (0.84, 0.60, 0.70, 0.80),
               ("b", 0): (0.83, 0.70, 0.55, 0.75), ("b", 1): (0.84, 0.62, 0.72, 0.79)}
    files = {(arm, s): _recipe_file(tmp_path / f"{arm}{s}.md", *figs) for (arm, s), figs in figures.items()}
    # tokens of one name join, as the shell expands a=a{0,1}.md
    arms = compare.parse_arms([f"a={files['a', 0]}", f"a={files['a', 1]}",
                               f"b={files['b', 0]},{files['b', 1]}"])
    text = compare.table([(name, [compare.recipe_figures(f) for f in paths]) for name, paths in arms])
    lines = text.splitlines()
    assert lines[2].startswith("| a | 0.800 / 0.840 (0.820) | 0.50 / 0.60 (0.55) | 0.400 / 0.400 (0.400)")
    assert lines[3].startswith("| b | 0.830 / 0.840 (0.835) | 0.70 / 0.62 (0.66)")
    diff = [c.strip() for c in lines[4].split("|")[1:-1]]
    assert diff[0] == "b - a"
    assert diff[1] == "+0.015 (ahead 1/2)"  # level at phantom 1: not ahead
    assert diff[2] == "+0.11 (ahead 2/2)"
    assert diff[4] == "-0.015 (ahead 1/2)" and diff[5] == "+0.020 (ahead 1/2)"


def test_a_table_without_its_k5_row_is_named(tmp_path):
    compare = benchmark_script("recipe_compare")
    bad = _recipe_file(tmp_path / "short.md", 0.8, 0.5, 0.6, None)
    with pytest.raises(SystemExit, match=f"{bad}: no K=5 row"):
        compare.recipe_figures(bad)
    with pytest.raises(SystemExit, match="an arm is NAME=FILE"):
        compare.parse_arms([str(bad)])
