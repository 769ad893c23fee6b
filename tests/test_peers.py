"""The peers: the same network from scratch learns; nnU-Net's dataset passes nnU-Net's own check;
peer label maps are scored by medpeft's metrics; a missing or failing peer is named and the other
rows are written; finished rows are never retrained."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from medpeft.cli import app
from medpeft.data.fewshot import make_split, write_manifest
from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.evaluate.metrics import evaluate_cases, mean_dice, score_label_files
from medpeft.experiments import grid
from medpeft.io import save_nifti
from medpeft.methods.adapter_io import open_adapter
from medpeft.models.backbones import build_backbone
from medpeft.models.weights import load_foundation
from medpeft.peers import PeerError, nnunet
from medpeft.pipelines.tune import adapt


@pytest.fixture(scope="module")
def target(collection):
    return read_dataset(collection / "Task10_NewSite", label_files=True)


def test_scratch_peer_learns_from_random_weights(foundation_dir, target, tmp_path):
    split = make_split(target, 3, 0, 2)
    manifest = write_manifest(tmp_path / "k3.json", split)
    f = load_foundation(foundation_dir)
    mapping = class_mapping(target.labels, f.classes)
    torch.manual_seed(0)
    untrained = build_backbone(f.backbone, len(f.classes) + 1).eval()
    before = mean_dice(evaluate_cases(untrained, target, split["test"], mapping, pp=f.preprocessing,
                                      classes=f.classes))
    # light augmentation: 80 steps is the test's budget, and shape augmentation (the default)
    # slows learning from random weights (benchmarks/peers.py runs the defaults). On the tiny
    # foundation's 64 x 32 x 32 patches, liver reached 0.77 Dice after 80 steps (0.50 after 60)
    adapt(foundation_dir, manifest, "scratch", tmp_path / "scratch", steps=80, seed=0,
          augment="light")
    model, classes = open_adapter(tmp_path / "scratch", load_foundation(foundation_dir))
    config = json.loads((tmp_path / "scratch" / "adapter_config.json").read_text())
    assert config["trainable_parameters"] == sum(p.numel() for p in untrained.parameters())
    after = evaluate_cases(model, target, split["test"], mapping, pp=f.preprocessing, classes=classes)
    liver = np.nanmean([r["dice"] for r in after if r["organ"] == "liver"])
    assert mean_dice(after) > before + 0.05 and liver > 0.5, (before, mean_dice(after), liver)


def test_scratch_starts_from_no_foundation_weight(foundation_dir, target, tmp_path):
    """Zero steps are refused, so one step at a tiny rate: the weights stay ~ the random init."""
    split = make_split(target, 1, 0, 2)
    manifest = write_manifest(tmp_path / "k1.json", split)
    adapt(foundation_dir, manifest, "scratch", tmp_path / "s", steps=1, seed=3, lr=1e-12)
    f = load_foundation(foundation_dir)
    base = {n: p.clone() for n, p in f.model.named_parameters()}
    model, _ = open_adapter(tmp_path / "s", f)
    torch.manual_seed(3)
    fresh = dict(build_backbone(f.backbone, len(f.classes) + 1).named_parameters())
    name = "swinViT.layers1.0.blocks.0.attn.qkv.weight"
    weight = dict(model.named_parameters())[name]
    assert torch.allclose(weight, fresh[name], atol=1e-6)
    assert not torch.allclose(weight, base[name], atol=1e-3)


def test_nnunet_dataset_passes_nnunets_integrity_check(target, tmp_path):
    pytest.importorskip("nnunetv2")
    f = load_foundation_meta()
    mapping = class_mapping(target.labels, f.classes)
    support = make_split(target, 2, 0, 2)["support"]
    folder = nnunet.write_raw_dataset(target, mapping, support, tmp_path / "raw", name="tiny")
    # nnU-Net lists a dataset's files through a fork Pool of 12 whatever num_processes says; forked
    # from a pytest worker that has run a Flower simulation (Ray's gRPC threads outlive
    # ray.shutdown()), its children hung for ever in a futex. A fresh interpreter, as the peer
    # itself runs nnU-Net through its own commands. It raises (exit 1) on any problem.
    verify = ("import sys\nfrom nnunetv2.experiment_planning.verify_dataset_integrity import "
              "verify_dataset_integrity\nverify_dataset_integrity(sys.argv[1], num_processes=1)")
    done = subprocess.run([sys.executable, "-c", verify, str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["labels"]["background"] == 0
    assert sorted(meta["labels"], key=meta["labels"].get)[1:] == list(mapping.local_names[1:])
    for name in support:
        image = folder / "imagesTr" / f"{name}_0000.nii.gz"
        assert image.resolve() == target.case(name).image.resolve()
        written = nib.load(str(folder / "labelsTr" / f"{name}.nii.gz"))
        source = nib.load(str(target.case(name).label))
        expected = np.vectorize(mapping.value_to_local.get)(np.asarray(source.dataobj))
        assert np.array_equal(np.asarray(written.dataobj), expected)
        assert np.allclose(written.affine, source.affine)


def load_foundation_meta():
    from medpeft.models.weights import describe_foundation, shipped_foundation
    return describe_foundation(shipped_foundation())


def test_peer_label_maps_are_scored_in_their_geometry(target, tmp_path):
    f = load_foundation_meta()
    mapping = class_mapping(target.labels, f.classes)
    names = make_split(target, 1, 0, 2)["test"]
    lut = np.vectorize(lambda v: mapping.value_to_local.get(int(v), 0))
    files = {}
    for name in names:
        label = nib.load(str(target.case(name).label))
        files[name] = tmp_path / f"{name}.nii.gz"
        save_nifti(files[name], lut(np.asarray(label.dataobj)).astype(np.uint8), label.affine)
    rows = score_label_files(target, files, mapping)
    assert rows and all(r["dice"] == 1.0 or np.isnan(r["dice"]) for r in rows)
    label = nib.load(str(target.case(names[0]).label))
    save_nifti(files[names[0]], np.zeros(label.shape, np.uint8), label.affine * 2)
    with pytest.raises(ValueError, match="not in the geometry"):
        score_label_files(target, files, mapping)


def _grid(tmp_path, collection, foundation_dir, methods) -> str:
    cfg = {"foundation": str(foundation_dir),
           "datasets": [{"path": str(collection / "Task10_NewSite"), "n_test": 2}],
           "methods": methods, "shots": [1], "seeds": [0], "steps": 2, "surface": False,
           "schedules": {"scratch": {"steps": 10, "patience": 5}}, "out": str(tmp_path / "g")}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_missing_nnunet_is_named_and_other_rows_written(collection, foundation_dir, tmp_path,
                                                        monkeypatch):
    real = nnunet.importlib.util.find_spec
    monkeypatch.setattr(nnunet.importlib.util, "find_spec",
                        lambda name, *a: None if name == "nnunetv2" else real(name, *a))
    config = _grid(tmp_path, collection, foundation_dir, ["scratch", "nnunet"])
    result = CliRunner().invoke(app, ["benchmark", config], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "nnunet K=1 seed 0" in result.output and "pip install -e '.[peers]'" in result.output
    rows = list(csv.DictReader(open(tmp_path / "g" / "results.csv")))
    assert rows and {r["method"] for r in rows} == {"scratch"}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")
    monkeypatch.setattr(grid, "adapt_and_open", no_training)
    again = CliRunner().invoke(app, ["benchmark", config], env={"COLUMNS": "250"})
    assert again.exit_code == 1 and "a finished cell" not in again.output
    assert list(csv.DictReader(open(tmp_path / "g" / "results.csv"))) == rows


def test_a_failing_nnunet_names_itself_and_its_log(target, tmp_path):
    pytest.importorskip("nnunetv2")
    f = load_foundation_meta()
    mapping = class_mapping(target.labels, f.classes)
    split = make_split(target, 1, 0, 2)
    budget = nnunet.NnUNetBudget(timeout_s=1)
    with pytest.raises(PeerError, match=r"nnU-Net .* ran past 1 s; its log: .*nnunet\.log"):
        nnunet.run_nnunet(target, mapping, split["support"], split["test"], cell=tmp_path, budget=budget)
    assert (tmp_path / "nnunet" / "nnunet.log").read_text().count("$ ") == 1
    assert os.path.isdir(tmp_path / "nnunet" / "raw")


def test_nnunet_writes_its_label_maps_where_every_cell_keeps_them(target, tmp_path, monkeypatch):
    """The grid report and scoring read any cell's label maps from ``<cell>/predictions``; the
    nnU-Net peer writes there too (its run's own folders stay in ``<cell>/nnunet``)."""
    import json
    import shutil

    def worker(cmd, env, log, timeout, *, what):  # nnU-Net's training and prediction, faked
        job = json.loads(open(cmd[-1]).read())
        os.makedirs(job["predictions"], exist_ok=True)
        for name in job["images"]:
            shutil.copy(target.case(name).label, os.path.join(job["predictions"], f"{name}.nii.gz"))
        summary = {"train_seconds": 1.0, "predict_seconds": 1.0, "trainable_parameters": 1}
        open(os.path.join(os.path.dirname(cmd[-1]), "summary.json"), "w").write(json.dumps(summary))
    monkeypatch.setattr(nnunet, "require_nnunet", lambda: None)
    monkeypatch.setattr(nnunet, "plan_and_preprocess", lambda *a: None)
    monkeypatch.setattr(nnunet, "_run", worker)
    mapping = class_mapping(target.labels, load_foundation_meta().classes)
    split = make_split(target, 1, 0, 2)
    summary = nnunet.run_nnunet(target, mapping, split["support"], split["test"], cell=tmp_path)
    assert set(summary["predictions"]) == set(split["test"])
    for name, path in summary["predictions"].items():
        assert path == str(tmp_path / "predictions" / f"{name}.nii.gz") and os.path.isfile(path)


def _rows(method, k, seed, dice_by_case, organs=("liver", "spleen")):
    return [{"method": method, "k": k, "seed": seed, "case": case, "organ": organ, "dice": d,
             "trainable": 10, "seconds": 1.0} for case, d in dice_by_case.items() for organ in organs]


def test_peers_table_pairs_cases_against_the_best_peer(tmp_path):
    from medpeft.evaluate.peers_report import write_peers_report
    cases = [f"c{i}" for i in range(6)]
    rows = _rows("zero-shot", 0, 0, {c: 0.1 for c in cases})
    for seed in (0, 1):
        rows += _rows("decoder", 5, seed, {c: 0.6 + 0.1 * seed for c in cases})
        rows += _rows("scratch", 5, seed, {c: 0.4 for c in cases})
        rows += _rows("nnunet", 5, seed, {c: 0.5 - 0.01 * i for i, c in enumerate(cases)})
    report, table, tests = write_peers_report(tmp_path, rows, ["zero-shot", "decoder", "scratch",
                                                               "nnunet"], {"command": "x"}, failures=["f"])
    decoder = next(t for t in table if t["method"] == "decoder")
    assert decoder["dice"] == pytest.approx(0.65) and decoder["sd"] == pytest.approx(0.0707, 1e-3)
    assert decoder["seeds"] == 2 and decoder["organs"] == {"liver": pytest.approx(0.65),
                                                           "spleen": pytest.approx(0.65)}
    by_method = {t["method"]: t for t in tests}
    assert set(by_method) == {"zero-shot", "decoder", "scratch"}  # nnunet is the best peer
    assert by_method["decoder"]["best_peer"] == "nnunet"
    # two seeds re-score the same 6 cases: 6 pairs, and p no lower than 6 pairs allow
    assert by_method["decoder"]["pairs"] == 6 and by_method["decoder"]["wins"] == 6
    assert by_method["decoder"]["p_value"] == pytest.approx(2 / 2 ** 6)
    assert by_method["zero-shot"]["pairs"] == 6 and by_method["zero-shot"]["wins"] == 0
    text = report.read_text()
    assert "| nnU-Net v2 from scratch | 10 |" in text and "## Rows that could not run" in text
    assert (tmp_path / "peers.png").stat().st_size > 1000
    # a peer in an earlier recipe (scratch@light) is a peer too: here the best one
    rows += _rows("scratch@light", 5, 0, {c: 0.55 for c in cases})
    _, _, tests = write_peers_report(tmp_path, rows, ["zero-shot", "decoder", "scratch", "nnunet",
                                                      "scratch@light"], {"command": "x"}, failures=[])
    assert {t["best_peer"] for t in tests} == {"scratch@light"}


def test_nnunet_training_time_survives_an_interrupted_run(tmp_path):
    """A cell whose nnU-Net training ran across two processes reports the time nnU-Net logged for
    every finished epoch, not the seconds of the process that only finished it."""
    from medpeft.peers.nnunet_worker import logged_epoch_seconds
    (tmp_path / "training_log_2026_11_30_21_26_35.txt").write_text(
        "2026-11-30 21:26:36.849498: Epoch 0 \n2026-11-30 21:30:44.002395: Epoch time: 247.15 s \n"
        "2026-11-30 21:30:45.383002: Epoch 1 \n")  # killed during epoch 1
    (tmp_path / "training_log_2026_11_30_22_33_39.txt").write_text(
        "2026-11-30 22:33:40.1: Epoch 1 \n2026-11-30 22:37:00.1: Epoch time: 200.5 s \n"
        "2026-11-30 22:37:00.2: Training done. \n")
    (tmp_path / "debug.json").write_text('{"Epoch time: 99 s": 1}')  # not a training log
    assert logged_epoch_seconds(tmp_path) == pytest.approx(447.65)


def test_every_row_names_the_arithmetic_its_cell_trained_in(tmp_path):
    """Cells saved before the precision column read it from their records; a row whose cells
    trained in different arithmetic says so, with counts."""
    from medpeft.evaluate.peers_report import write_peers_report

    def saved(method, k, seed, precision=None):
        cell = grid.GridCell("d", "all", method, k, seed, tmp_path)
        cell.folder.mkdir(parents=True)
        (cell.folder / "scores.json").write_text(json.dumps(_rows(method, k, seed, {"c0": 0.5})))
        if precision:
            (cell.folder / "adapt_summary.json").write_text(
                json.dumps({"request": {}, "summary": {"precision": precision}}))
        return grid.run_cell(None, None, cell, n_test=6)  # finished: read back, never trained

    rows = saved("decoder", 5, 0, "bf16") + saved("decoder", 5, 1, "bf16")
    rows += saved("decoder", 10, 0, "float32") + saved("nnunet", 5, 0) + saved("scratch", 5, 0)
    rows += saved("zero-shot", 0, 0)
    assert [r["precision"] for r in rows] == ["bf16"] * 4 + ["float32"] * 4 + ["", ""] + ["none"] * 2
    grid.write_rows(tmp_path / "results.csv", rows)
    assert [r["precision"] for r in csv.DictReader(open(tmp_path / "results.csv"))][:2] == ["bf16"] * 2
    report, _, _ = write_peers_report(tmp_path, rows, ["zero-shot", "decoder", "nnunet", "scratch"],
                                      {"command": "x"}, failures=[])
    lines = {}  # each row's first line: the main table's
    for line in report.read_text().splitlines():
        lines.setdefault(line.split(" | ")[0], line)
    assert lines["| decoder"].endswith("| bf16 x 2, float32 x 1 |")  # counted over (K, seed) cells
    assert lines["| nnU-Net v2 from scratch"].endswith("| float32 |")
    assert lines["| same network from scratch"].endswith("| not recorded |")
