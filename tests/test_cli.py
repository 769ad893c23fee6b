"""The command line: a user's path through it, and clear errors naming the bad file."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medpeft.cli import app

runner = CliRunner()
CONFIGS = Path(__file__).parents[1] / "configs"


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


def test_pretrain_working_grid_options(collection, tmp_path):
    """--preprocessing picks a preset, --spacing and --patch override its grid; bad values are named."""
    from medpeft.cli_pretrain import working_grid
    from medpeft.data.transforms import PRESETS
    from medpeft.models.weights import describe_foundation
    assert working_grid("btcv", None) == PRESETS["btcv"]
    assert working_grid(None, None) is None  # pretrain's own choice: --init's grid, or cpu-fast
    assert working_grid(None, (4.0, 4.0, 4.0)) == replace(PRESETS["cpu-fast"], spacing=(4.0, 4.0, 4.0))
    assert working_grid("cpu-fast", (4.0, 4.0, 3.0)).spacing == (4.0, 4.0, 3.0)
    assert working_grid("cpu-fast", (4.0, 4.0, 3.0)).patch == PRESETS["cpu-fast"].patch
    assert working_grid(None, None, patch=(64, 64, 64)) == replace(PRESETS["cpu-fast"],
                                                                   patch=(64, 64, 64))
    source = str(collection / "Task02_Liver")
    for option, named in ((["--preprocessing", "fine"], "--preprocessing 'fine'"),
                          (["--spacing", "4", "0", "4"], "--spacing must be positive"),
                          (["--patch", "64", "64", "48"], "multiples of 32"),
                          (["--backbone", "swin-huge"], "unknown backbone 'swin-huge'")):
        result = runner.invoke(app, ["pretrain", "--source", source, "--out", str(tmp_path / "f"),
                                     "--steps", "1", *option])
        assert result.exit_code == 2 and named in result.output, result.output
        assert not (tmp_path / "f").exists()
    result = runner.invoke(app, ["pretrain", "--source", source, "--out", str(tmp_path / "tall"),
                                 "--steps", "2", "--patch", "64", "64", "64"])
    assert result.exit_code == 0, result.output  # the foundation keeps its ROI for adapt/predict
    assert describe_foundation(tmp_path / "tall").preprocessing.patch == (64, 64, 64)


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("phantom", "pretrain", "split", "adapt", "evaluate", "demo"):
        assert command in result.output


def test_help_paragraphs_wrap_at_the_terminal_not_mid_sentence():
    """A command's help reads as sentences at any width: the docstring's own line breaks (at 100
    columns in the source) are not kept."""
    for command in (["adapt"], ["pretrain"], ["inspect", "data"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        prose = [line.strip() for line in result.output.splitlines()[:12]]
        assert result.exit_code == 0 and max(map(len, prose)) > 100, (command, prose)
    adapt_help = runner.invoke(app, ["adapt", "--help"], env={"COLUMNS": "200"}).output
    assert "With one support volume, decoder-skips" in adapt_help


def test_federate_help_lists_every_plan():
    from medpeft.federated.plans import PLANS
    result = runner.invoke(app, ["federate", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert all(f" {name} " in result.output.replace("|", " ") for name in PLANS), result.output


def test_inspect_sites_and_model(monkeypatch):
    from medpeft.cli_common import console  # sized when first imported: widen it for the names
    monkeypatch.setattr(console, "width", 200)
    result = runner.invoke(app, ["inspect", "sites", "--kind", "lora", "--rank", "2"])
    assert result.exit_code == 0, result.output
    assert "attn.qkv" in result.output and "affine" not in result.output
    # 8 Swin blocks x (qkv 12..96 -> 3x, proj) at rank 2, as the library counts it
    from medpeft.adapters.kinds import candidate_sites
    from medpeft.models.backbones import PRESETS, build_backbone
    rows = candidate_sites(build_backbone(PRESETS["swin-fast"], 2), ["lora"],
                           options={"lora": {"rank": 2}})
    lines = {line.split("│")[2].strip(): line for line in result.output.splitlines()
             if line.count("│") >= 5}
    assert set(lines) == {r["location"] for r in rows}  # every site listed, nothing else
    for r in rows:  # each on its own line with its own count
        assert lines[r["location"]].split("│")[4].strip() == f"{r['n_params']:,}"

    result = runner.invoke(app, ["inspect", "model", "--method", "head"])
    assert result.exit_code == 0, result.output
    assert "trainable: 26 = " in result.output  # a 2-class head: 12 x 2 weights + 2 biases

    result = runner.invoke(app, ["inspect", "model", "--method", "lora+nonsense"])
    assert result.exit_code == 2 and "unknown method" in result.output


def test_export_requires_merge(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--foundation", str(tmp_path),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--merge" in result.output


def test_device_option_is_checked_before_any_work():
    from medpeft.device import resolve_device, set_device
    try:
        result = runner.invoke(app, ["--device", "gpu0", "inspect", "sites"])
        assert result.exit_code == 2 and "unknown device 'gpu0'" in result.output
        if not torch.cuda.is_available():
            result = runner.invoke(app, ["--device", "cuda", "inspect", "sites"])
            assert result.exit_code == 2 and "no CUDA GPU" in result.output
        assert resolve_device("cpu").type == "cpu"
    finally:
        set_device(None)


def test_adapt_refuses_an_unknown_augmentation_before_writing(tmp_path):
    result = runner.invoke(app, ["adapt", "--foundation", str(tmp_path), "--manifest",
                                 str(tmp_path / "k1.json"), "--out", str(tmp_path / "o"),
                                 "--augment", "heavy"])
    assert result.exit_code != 0 and "unknown augmentation --augment 'heavy'" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [["adapt", "--foundation", "f", "--manifest", "m.json", "--out", "o"],
                                  ["pretrain", "--source", "s", "--out", "o"],
                                  ["demo", "--out", "o", "--adapt-steps"],
                                  ["federate", "fed.yaml", "--local-steps"]])
def test_zero_steps_are_refused_not_read_as_the_default(argv, tmp_path):
    """`--steps 0` used to train the default 240 steps; now the option names its range, before any
    work, and the API refuses 0 steps too."""
    from medpeft.train.loop import LoopConfig
    argv = argv + ["0"] if argv[-1].endswith("steps") else argv + ["--steps", "0"]
    result = runner.invoke(app, [str(tmp_path / a) if a in ("o", "fed.yaml") else a for a in argv])
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output, result.output
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=r"steps \(0\) and checkpoint_every \(50\) must be at least 1"):
        LoopConfig(steps=0)


def test_demo_refuses_zero_shots_before_writing_the_phantom(tmp_path):
    result = runner.invoke(app, ["demo", "--shots", "0", "--out", str(tmp_path / "o"),
                                 "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 2 and "shots [0]: each K must be at least 1" in result.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "o").exists()


def test_a_manifest_naming_cases_the_folder_lacks_names_each(collection, tmp_path):
    """evaluate ended in a KeyError traceback; adapt too, on a support name."""
    from medpeft.data.fewshot import make_split, write_manifest
    from medpeft.data.msd import load_msd
    from medpeft.models.weights import shipped_foundation
    split = make_split(load_msd(collection / "Task10_NewSite"), 1, seed=0, n_test=2)
    manifest = write_manifest(tmp_path / "m.json", {**split, "test": ["nope_1", split["test"][0], "nope_2"]})
    result = runner.invoke(app, ["evaluate", "--foundation", str(shipped_foundation()),
                                 "--manifest", str(manifest), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "no case named 'nope_1'" in result.output and "no case named 'nope_2'" in result.output


def test_predict_refuses_an_unknown_format_before_writing(tmp_path):
    result = runner.invoke(app, ["predict", "--base", str(tmp_path), "--in", str(tmp_path),
                                 "--out", str(tmp_path / "o"), "--format", "png"])
    assert result.exit_code != 0 and "unknown --format 'png': nifti | dicom-seg" in result.output
    assert not (tmp_path / "o").exists()


def test_medpeft_processes_skip_the_optional_packages_monai_would_import_for_nothing(tmp_path):
    """The `medpeft` command and the deployment's Flower components mark transformers and ignite
    absent before MONAI is imported (MONAI then treats them as not installed); a package this
    process already imported stays. sys.modules is restored afterwards."""
    import importlib
    import sys
    import types

    from monai.utils import optional_import

    from medpeft.startup import UNUSED_OPTIONAL, skip_unused_optional_packages
    saved = {name: sys.modules[name] for name in UNUSED_OPTIONAL if name in sys.modules}
    try:
        for name in UNUSED_OPTIONAL:
            sys.modules.pop(name, None)
        sys.modules["ignite"] = imported = types.ModuleType("ignite")  # imported before: kept
        skip_unused_optional_packages()
        assert sys.modules["ignite"] is imported
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("transformers")
        assert optional_import("transformers")[1] is False
    finally:
        for name in UNUSED_OPTIONAL:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    # where it is called: the console script, and the components each Flower app process loads
    from importlib.metadata import entry_points

    from medpeft.federated.deployment import write_app
    assert [e.value for e in entry_points(group="console_scripts", name="medpeft")] == ["medpeft.entry:main"]
    app_toml = (write_app(tmp_path / "app", tmp_path / "fed.yaml") / "pyproject.toml").read_text()
    assert 'clientapp = "medpeft.federated.components:client_app"' in app_toml


@pytest.mark.parametrize("argv", [["--help"], ["adapt", "--help"], ["inspect", "data", "--help"]])
def test_help_loads_neither_pytorch_nor_monai(argv):
    """`medpeft ... --help` answers at once: the commands' modules and `adapt`'s defaults import
    no PyTorch or MONAI (7 s on a 2-core CPU), and the default --device needs no check."""
    import subprocess
    import sys
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('heavy:', sorted({'torch', 'monai'} & set(sys.modules))))\n"
            f"sys.argv = ['medpeft', *{argv!r}]\n"
            "from medpeft.entry import main\n"
            "main()\n")
    env = {k: v for k, v in os.environ.items() if k != "MEDPEFT_DEVICE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and "Usage: medpeft" in done.stdout, done.stderr
    assert "heavy: []" in done.stdout, done.stdout[-300:]


def _interrupted_training(request_or_sources, out=None, *args, step: int | None = None, **kwargs):
    """A training run pressed Ctrl-C at: its last checkpoint record written (``step``), if any."""
    out = getattr(request_or_sources, "out", out)
    if step is not None:
        (out / "checkpoints").mkdir(parents=True)
        (out / "checkpoints" / "latest.json").write_text(json.dumps({"step": step}))
    raise KeyboardInterrupt


@pytest.mark.parametrize("command, patched, step, said", [
    ("adapt", "medpeft.pipelines.adapt", 60,
     "interrupted: step 60 is kept in {out}/checkpoints; the same command with --resume"),
    ("pretrain", "medpeft.train.pretrain.pretrain", None,
     "interrupted: no checkpoint had been written in {out} yet"),
    ("demo", "medpeft.experiments.demo.run_demo", None,
     "interrupted: the finished cells (and a finished federation) are kept in {out}; the same "
     "command resumes them"),
    ("federate", "medpeft.federated.run.federate", None,
     "interrupted: the federation in {out} did not finish; the same command starts it anew"),
    ("benchmark", "medpeft.experiments.grid.run_grid", None,
     "interrupted: the finished cells are kept in {out}; the same command resumes the grid"),
])
def test_ctrl_c_says_what_was_kept_and_how_to_go_on(command, patched, step, said, tmp_path,
                                                   monkeypatch):
    """Ctrl-C in a long command: one line naming what is kept and the command that continues,
    and the exit code a shell gives an interrupted command (130); before, the bar just stopped."""
    from functools import partial

    from medpeft.cli_common import console
    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr(patched, partial(_interrupted_training, step=step))
    monkeypatch.setattr("medpeft.pipelines.check", lambda request: None)
    monkeypatch.setattr("medpeft.pipelines.unlearnt_labels", lambda request: [])
    out = tmp_path / "o"
    argv = {"adapt": ["adapt", "--foundation", str(tmp_path), "--manifest", str(tmp_path / "k.json"),
                      "--out", str(out)],
            "pretrain": ["pretrain", "--source", str(tmp_path), "--out", str(out)],
            "demo": ["demo", "--out", str(out), "--cache", str(tmp_path / "cache")],
            "federate": ["federate", str(CONFIGS / "federated-phantom.yaml"), "--out", str(out)],
            "benchmark": ["benchmark", str(_grid_writing_to(out, tmp_path))]}[command]
    result = runner.invoke(app, argv)
    assert result.exit_code == 130, result.output
    assert said.format(out=out) in " ".join(result.output.split()), result.output


def _grid_writing_to(out, tmp_path):
    """The phantom grid's configuration with its run folder at ``out``."""
    import yaml
    config = yaml.safe_load((CONFIGS / "phantom-grid.yaml").read_text())
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({**config, "out": str(out)}))
    return tmp_path / "grid.yaml"


@pytest.mark.parametrize("again", [False, True])
def test_ctrl_c_ends_the_command_even_with_a_thread_left_waiting(again):
    """After Ctrl-C the `medpeft` process exits (130) although a library's thread still waits:
    `medpeft federate` used to wait for ever on the threads of Flower's stopped simulation. It
    gives such threads 5 s; a second Ctrl-C ends it at once."""
    import signal
    import subprocess
    import sys
    import time
    script = Path(__file__).parent / "fixtures" / "stuck_thread_command.py"
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "interrupted"
        t0 = time.monotonic()
        if again:
            time.sleep(0.5)
            child.send_signal(signal.SIGINT)
        assert child.wait(timeout=60) == 130
        assert time.monotonic() - t0 < (2.5 if again else 30)
    finally:
        child.kill()


def test_ctrl_c_in_predict_counts_the_outputs_kept(tmp_path, monkeypatch):
    """An interrupted prediction names the finished label maps it keeps (a re-run skips them)."""
    from medpeft.cli_common import console
    from medpeft.models.weights import shipped_foundation

    def one_written_then_interrupted(model, inputs, out, *args, **kwargs):
        (out / "case_0.nii.gz").write_bytes(b"")
        raise KeyboardInterrupt
    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr("medpeft.infer.predict.predict_files", one_written_then_interrupted)
    scans, out = tmp_path / "scans", tmp_path / "labels"
    scans.mkdir()
    for name in ("case_0.nii.gz", "case_1.nii.gz"):
        (scans / name).write_bytes(b"")
    out.mkdir()
    result = runner.invoke(app, ["predict", "--base", str(shipped_foundation()), "--in", str(scans),
                                 "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert (f"interrupted: 1 finished output(s) are kept in {out}; the same command predicts "
            "the rest") in " ".join(result.output.split()), result.output
