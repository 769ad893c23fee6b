"""SEA-PEFT end to end on the tiny phantom through the command line: search, refine, logs, report."""
from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.methods.adapter_io import load_adapter
from medpeft.models.weights import load_foundation

runner = CliRunner()
# a short search, in the YAML that --sea-config reads; --budget on the command line overrides its
# budget (0.5 here, 0.005 given)
SETTINGS = "budget: 0.5\nsteps: 6\nwarmup: 2\naudit_every: 2\nallocate_every: 2\nvotes: 1\nguard: 1\n"


def _schedule(tmp_path) -> list[str]:
    path = tmp_path / "sea.yaml"
    path.write_text(SETTINGS)
    return ["--sea-config", str(path), "--steps", "3"]


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
                                 "--out", str(out), *_schedule(tmp_path)], env={"COLUMNS": "200"})
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
    assert json.loads((out / "search" / "outcome.json").read_text())["bf16"]  # adapt's default
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
                                 *_schedule(tmp_path)])
    assert result.exit_code == 2 and "support or test volume" in result.output


def test_sea_settings_file_errors_name_the_file(tmp_path):
    from medpeft.methods.sea.loop import read_sea_settings
    path = tmp_path / "sea.yaml"
    path.write_text("budget: 0.01\nvote: 2\n")
    try:
        read_sea_settings(path)
    except ValueError as err:
        assert str(path) in str(err) and "['vote']" in str(err) and "votes" in str(err)
    else:
        raise AssertionError("a misspelt setting was accepted")
    path.write_text("steps: many\n")
    try:
        read_sea_settings(path)
    except ValueError as err:
        assert "steps must be a number" in str(err)
    else:
        raise AssertionError("a non-number was accepted")
