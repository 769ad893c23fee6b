"""A quiet console: a real `medpeft adapt` process at 80 columns prints its own lines only;
MONAI's warnings land in the run folder's log.txt, and --verbose shows them again."""
from __future__ import annotations

import os
import subprocess
import sys

from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.msd import load_msd

CLI = "from medpeft.cli import app; app()"


def _adapt(foundation_dir, manifest, out, *extra) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}, "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-c", CLI, "adapt", "--foundation", str(foundation_dir),
                           "--manifest", str(manifest), "--method", "head", "--out", str(out),
                           "--steps", "2", *extra], capture_output=True, text=True, env=env,
                          timeout=300)


def test_adapt_prints_no_library_noise_and_logs_it(collection, foundation_dir, tmp_path):
    split = make_split(load_msd(collection / "Task10_NewSite"), 1, seed=0, n_test=1)
    manifest = write_manifest(tmp_path / "k1.json", split)
    quiet = _adapt(foundation_dir, manifest, tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    shown = quiet.stdout + quiet.stderr
    assert "adapter:" in shown
    assert "Warning" not in shown and "warn(" not in shown, shown
    log = (tmp_path / "quiet" / "log.txt").read_text()
    assert "Warning" in log  # MONAI's, which the terminal did not show
    assert all(len(line) <= 80 for line in quiet.stdout.splitlines())

    loud = _adapt(foundation_dir, manifest, tmp_path / "loud", "--verbose")
    assert loud.returncode == 0 and "Warning" in loud.stdout + loud.stderr


def test_results_table_keeps_method_names_whole_at_80_columns():
    from rich.console import Console

    from medpeft.evaluate.report import results_table
    methods = ("blackbox-spatial", "blackbox-spatial1", "blackbox-linear", "lora+affine", "scratch")
    records = [{"setting": "new site (phantom scanner B, arterial phase)", "method": m, "k": 5,
                "mean_dice": 0.5, "trainable": 3_911_321, "trainable_pct": 100.0, "seconds": 347.2}
               for m in methods]
    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    console.print(results_table(records))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert all(m in text for m in methods), text
