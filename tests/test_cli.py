"""The command line: a user's path through it, and clear errors naming the bad file."""
from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from medpeft.cli import app

runner = CliRunner()


def test_split_and_error_messages(collection, tmp_path):
    manifest = tmp_path / "m.json"
    result = runner.invoke(app, ["split", str(collection / "Task10_NewSite"), "--k", "2",
                                 "--n-test", "3", "--out", str(manifest)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(manifest.read_text())["support"]) == 2

    broken = tmp_path / "Task02_Liver"
    shutil.copytree(collection / "Task02_Liver", broken)
    label = broken / json.loads((broken / "dataset.json").read_text())["training"][0]["label"]
    label.unlink()
    result = runner.invoke(app, ["pretrain", "--source", str(broken), "--out", str(tmp_path / "f"),
                                 "--steps", "1"])
    assert result.exit_code == 2
    assert label.name in result.output and "missing" in result.output


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("phantom", "pretrain", "split", "adapt", "evaluate", "demo"):
        assert command in result.output
