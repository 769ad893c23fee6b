"""benchmarks/federated_seeds.py: the federated arms' figures over seeds, from their reports."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import benchmark_script


def _report(folder: Path, fed: dict, alone: dict, pooled: dict | None, plan: str = "affine") -> None:
    folder.mkdir(parents=True)
    report = {"plan": plan, "rounds": 3, "dice": {"0": {}, "3": fed}, "local_only": alone,
              "bytes_per_round": [{"round": 0, "down": 5, "up": 5}, {"round": 1, "down": 100, "up": 50}],
              "bytes_total": {"ratio": 300.0}}
    if pooled:
        report["pooled"] = pooled
    (folder / "report.json").write_text(json.dumps(report))


def test_seeds_table_shares_each_runs_pooled_bound_and_counts_every_hospital(tmp_path):
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    _report(s0 / "affine-svd", {"a": 0.6, "b": 0.5}, {"a": 0.5, "b": 0.55}, {"a": 0.7, "b": 0.6})
    _report(s0 / "affine-fedavg", {"a": 0.62, "b": 0.52}, {"a": 0.5, "b": 0.55}, None)
    _report(s1 / "affine-svd", {"a": 0.7, "b": 0.6}, {"a": 0.6, "b": 0.5}, {"a": 0.8, "b": 0.7})
    seeds = benchmark_script("federated_seeds")
    rows = {row[0]: row for row in seeds.table_rows(seeds.arms_by_seed([s0, s1]))}
    svd, fedavg = rows["affine-svd"], rows["affine-fedavg"]
    assert svd[1] == "2" and fedavg[1] == "1"  # an arm counts only the seeds where it finished
    assert svd[2] == "0.600 +- 0.071"  # federated means 0.55 and 0.65
    assert svd[5] == "3/4"  # per hospital: +0.1, -0.05, +0.1, +0.1
    assert svd[7] == "-0.100" and fedavg[7] == "-0.080"  # fedavg shares seed 0's pooled bound
    assert svd[8] == "150 B" and svd[9] == "300x"


def test_gain_lines_name_each_hospitals_gain_at_each_seed(tmp_path):
    s0, s1 = tmp_path / "s0", tmp_path / "s1"
    _report(s0 / "affine-svd", {"a": 0.6, "b": 0.5}, {"a": 0.5, "b": 0.55}, None)
    _report(s1 / "affine-svd", {"a": 0.7, "b": 0.6}, {"a": 0.6, "b": 0.5}, None)
    seeds = benchmark_script("federated_seeds")
    assert seeds.gain_lines(seeds.arms_by_seed([s0, s1])) == [
        "affine-svd: a +0.100 / +0.100, b -0.050 / +0.100; federated by seed 0.550 / 0.650"]
