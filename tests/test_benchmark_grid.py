"""medpeft benchmark: the grid runs, resumes without redoing finished cells, and reports."""
from __future__ import annotations

import csv
import json

import pytest
import yaml
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.experiments import grid
from medpeft.experiments.grid import load_grid, paired
from medpeft.models.weights import shipped_foundation


def _grid(tmp_path, collection, **extra) -> str:
    cfg = {"foundation": str(shipped_foundation()),
           "datasets": [{"path": str(collection / "Task10_NewSite"), "n_test": 2}],
           "methods": ["zero-shot", "head", "bitfit"], "shots": [1], "seeds": [0, 1], "steps": 2,
           "reference": "zero-shot", "out": str(tmp_path / "grid"), **extra}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_grid_runs_resumes_and_reports(collection, tmp_path, monkeypatch):
    config = _grid(tmp_path, collection)
    # two cells at once, each in its own process; the re-run below (one after the other) reads
    # every cell back and writes the same table, in the same order
    result = CliRunner().invoke(app, ["benchmark", config, "--workers", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = tmp_path / "grid"
    assert (out / "log.txt").is_file()  # library chatter goes to the run's log, not the screen
    rows = list(csv.DictReader(open(out / "results.csv")))
    organs = {r["organ"] for r in rows}
    # zero-shot once (fixed test set) + 2 methods x 2 seeds, each on 2 cases x every organ
    assert len(rows) == (1 + 2 * 2) * 2 * len(organs) and len(organs) > 3
    assert {r["method"] for r in rows} == {"zero-shot", "head", "bitfit"}
    assert all(r["hd95"] != "" and r["nsd"] != "" for r in rows)
    pairs = list(csv.DictReader(open(out / "paired.csv")))
    assert {p["method"] for p in pairs} == {"head", "bitfit"}
    assert all(int(p["pairs"]) > 0 for p in pairs)
    report = (out / "report.md").read_text()
    assert "| bitfit | 1 | zero-shot |" in report
    for png in ("dice_vs_k.png", "dice_vs_parameters.png", "overlay_best.png", "overlay_worst.png"):
        assert (out / png).stat().st_size > 1000, png
    page = (out / "report.html").read_text()  # rendered in tests/test_html_report.py
    assert "bitfit" in page and page.count('id="slider-') == 2  # the best and the worst case

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")
    monkeypatch.setattr(grid, "adapt_and_open", no_training)
    again = CliRunner().invoke(app, ["benchmark", config], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert list(csv.DictReader(open(out / "results.csv"))) == rows


def test_grid_config_errors_name_the_file_and_entry(tmp_path, collection):
    with pytest.raises(ValueError, match="unknown entries \\['sheds'\\]"):
        load_grid(_grid(tmp_path, collection, sheds=[1]))
    with pytest.raises(ValueError, match="unknown method"):
        load_grid(_grid(tmp_path, collection, methods=["zero-shot", "lora2"]))


def test_grid_config_lists_every_problem_at_once(tmp_path):
    """A grid with several mistakes names each, in the grid's own words (not a Python signature)."""
    (tmp_path / "g.yaml").write_text("datasets: [/data/path/x]\nmethods: [decoder]\n")
    with pytest.raises(ValueError, match=r"g.yaml: missing entry 'foundation'$"):
        load_grid(tmp_path / "g.yaml")
    (tmp_path / "g.yaml").write_text("foundation: f\ndatasets: [/data/path/x]\n"
                                     "methods: [decoder, bogus]\ntasks: [brain]\nreference: lora\n")
    with pytest.raises(ValueError) as err:
        load_grid(tmp_path / "g.yaml")
    lines = str(err.value).splitlines()
    assert lines[0] == f"{tmp_path / 'g.yaml'}: 4 problems:"
    starts = ("  - unknown method 'bogus'", "  - task 'brain'", "  - datasets[0] must be a mapping",
              "  - reference 'lora' is not one of the methods")
    assert len(lines) == 5 and all(line.startswith(s) for line, s in zip(lines[1:], starts)), lines
    (tmp_path / "g.yaml").write_text("foundation: f\ndatasets: [{path: x}]\nmethods: [decoder]\n"
                                     "shots: [0, 1]\nseeds: []\nsteps: 0\n")
    with pytest.raises(ValueError) as err:  # each failed in its cells, after the grid had started
        load_grid(tmp_path / "g.yaml")
    assert "3 problems" in str(err.value) and "shots [0, 1]: each K must be" in str(err.value)
    assert "seeds: list at least one" in str(err.value) and "steps must be a whole number" in str(err.value)
    (tmp_path / "g.yaml").write_text("- a\n")
    with pytest.raises(ValueError, match="a grid is a mapping of entries"):
        load_grid(tmp_path / "g.yaml")


def test_paired_comparison_pairs_cases_not_seeds():
    """Two seeds re-scoring case a are one pair, not two: differences are averaged per case."""
    rows = [{"dataset": "d", "method": m, "k": k, "seed": s, "case": c, "organ": "liver", "dice": d}
            for m, k, s, c, d in [("zero-shot", 0, 0, "a", 0.5), ("zero-shot", 0, 0, "b", 0.4),
                                  ("lora", 1, 0, "a", 0.7), ("lora", 1, 0, "b", 0.3),
                                  ("lora", 1, 1, "a", 0.9)]]
    [p] = paired(rows, "zero-shot")
    assert p["pairs"] == 2 and p["wins"] == 1  # case a: +0.3 (mean of +0.2, +0.4); b: -0.1
    assert p["mean_difference"] == pytest.approx((0.3 - 0.1) / 2)
    assert p["smallest_p"] == pytest.approx(0.5)
    json.dumps(p)


def test_six_cases_cannot_reach_below_their_smallest_p():
    from medpeft.evaluate.paired import case_paired_test
    diffs = [(case, 0.1 + 0.01 * i) for i, case in enumerate("abcdef") for _ in range(3)]
    test = case_paired_test(diffs)
    assert test["pairs"] == 6 and test["wins"] == 6
    assert test["p_value"] == pytest.approx(test["smallest_p"]) == pytest.approx(2 / 64)


def test_grid_tasks_binary_novel_and_blackbox_cells(collection, tmp_path):
    """A binary task of a known organ and a novel organ's task; zero-shot only where the
    foundation knows the organ; black-box and '@random' methods run in the grid."""
    config = _grid(tmp_path, collection, methods=["zero-shot", "head@random", "blackbox-linear"],
                   tasks=["spleen", "gallbladder"], seeds=[0], surface=False, patience=1)
    result = CliRunner().invoke(app, ["benchmark", config], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "grid" / "results.csv")))
    cells = {(r["task"], r["method"]) for r in rows}
    assert cells == {("spleen", "zero-shot"), ("spleen", "head@random"),
                     ("spleen", "blackbox-linear"), ("gallbladder", "head@random"),
                     ("gallbladder", "blackbox-linear")}
    assert {r["organ"] for r in rows if r["task"] == "gallbladder"} == {"gallbladder"}
    assert {r["organ"] for r in rows if r["task"] == "spleen"} == {"spleen"}
    assert "| gallbladder | head@random | 1 | zero-shot |" not in \
        (tmp_path / "grid" / "report.md").read_text()  # no zero-shot to pair a novel organ with
    with pytest.raises(ValueError, match="unknown black-box method"):
        load_grid(_grid(tmp_path, collection, methods=["blackbox-huge"]))
    with pytest.raises(ValueError, match="task 'brain'"):
        load_grid(_grid(tmp_path, collection, tasks=["brain"]))


def test_the_report_draws_a_grid_whose_best_row_is_the_nnunet_peer(collection, tmp_path):
    """A grid whose best row is nnU-Net draws its best and worst case from that cell's label
    maps (``<cell>/predictions``, where the peer writes them like every cell)."""
    import shutil

    from medpeft.data.msd import load_msd
    from medpeft.evaluate.grid_report import write_grid_report
    ds = load_msd(collection / "Task10_NewSite")
    cases = [c.name for c in ds.cases[:2]]
    predictions = tmp_path / "grid" / "Task10_NewSite" / "k5-s0" / "nnunet" / "predictions"
    predictions.mkdir(parents=True)
    for case in cases:
        shutil.copy(ds.case(case).label, predictions / f"{case}.nii.gz")
    rows = [{"dataset": "Task10_NewSite", "task": "all", "method": "nnunet", "k": 5, "seed": 0,
             "case": case, "organ": "liver", "dice": dice, "hd95": float("nan"),
             "nsd": float("nan"), "trainable": 16_551_948, "seconds": 2383.6}
            for case, dice in zip(cases, (0.2, 0.8))]
    write_grid_report(tmp_path / "grid", rows, [], {"Task10_NewSite": ds}, command="test")
    for png in ("overlay_best.png", "overlay_worst.png"):
        assert (tmp_path / "grid" / png).stat().st_size > 1000, png
