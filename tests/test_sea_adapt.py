"""SEA-PEFT end to end on the tiny phantom through the command line: search, refine, logs, report."""
from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from medpeft.adapters.io import load_adapter
from medpeft.cli import app
from medpeft.models.weights import load_foundation

runner = CliRunner()
SCHEDULE = ["--search-steps", "6", "--search-warmup", "2", "--audit-every", "2",
            "--allocate-every", "2", "--votes", "1", "--guard", "1", "--steps", "3"]


def _split(collection, tmp_path) -> tuple:
    manifest = tmp_path / "m.json"
    result = runner.invoke(app, ["split", str(collection / "Task10_NewSite"), "--k", "2",
                                 "--n-test", "3", "--out", str(manifest)])
    assert result.exit_code == 0, result.output
    return manifest, json.loads(manifest.read_text())


def test_sea_peft_search_refine_and_report(collection, foundation_dir, tmp_path):
    manifest, split = _split(collection, tmp_path)
    out = tmp_path / "sea"
    result = runner.invoke(app, ["adapt", "--foundation", str(foundation_dir), "--manifest",
                                 str(manifest), "--method", "sea-peft", "--budget", "0.005",
                                 "--out", str(out), *SCHEDULE], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    config = json.loads((out / "adapter_config.json").read_text())
    budget = int(0.005 * config["base_parameters"])
    assert config["method"] == "sea-peft" and config["sites"]
    assert config["trainable_parameters"] <= budget
    with open(out / "search" / "allocations.csv") as fh:
        rounds = list(csv.DictReader(fh))
    assert len(rounds) == 2 and all(int(r["used"]) <= budget for r in rounds)
    with open(out / "search" / "audits.csv") as fh:
        sources = {r["source"] for r in csv.DictReader(fh)}
    assert {"first-order", "toggle-off"} <= sources
    report = (out / "report.md").read_text()
    assert "no extra labels" in report and "audit share" in report
    for site in config["sites"]:
        assert site["location"] in report
    assert (out / "active_set.png").stat().st_size > 1000
    model = load_adapter(out, load_foundation(foundation_dir))  # the chosen sites are rebuilt
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == \
        config["trainable_parameters"]


def test_sea_peft_audit_volume_must_be_extra(collection, foundation_dir, tmp_path):
    manifest, split = _split(collection, tmp_path)
    result = runner.invoke(app, ["adapt", "--foundation", str(foundation_dir), "--manifest",
                                 str(manifest), "--method", "sea-peft", "--out",
                                 str(tmp_path / "x"), "--audit-volume", split["support"][0],
                                 *SCHEDULE])
    assert result.exit_code == 2 and "support or test volume" in result.output
