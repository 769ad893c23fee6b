"""Shared fixtures: one tiny phantom collection and one quickly pre-trained foundation per session."""
from __future__ import annotations

import importlib.util
import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch
from filelock import FileLock

# Under pytest-xdist (`make test` runs one worker per core) each worker trains on one thread:
# two one-thread processes do about twice the work of one two-thread process on these small 3D
# networks; run alone, the suite takes up to two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
    # and so does every process a test starts (Flower's ClientApp per message, SuperNodes,
    # torchrun ranks, the nnU-Net worker): at torch's default of one thread per core, each
    # oversubscribed the cores the two workers already fill, spin-waiting (the deployment
    # test's ClientApps used ~20 s of CPU per message)
    os.environ["OMP_NUM_THREADS"] = "1"
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# The tiny foundation is a real pre-training run's checkpoint for the tests that need one, not a
# segmenter: after 100 steps its best organ at the held-out source site varied from 0.13 to 0.36
# Dice between runs, and untrained networks reach up to 0.20 on one organ by chance, so no floor
# is asserted on it; the per-organ floors run on the shipped foundation (test_organ_floor). It
# trains under bf16 autocast where the CPU runs it natively, as the shipped one did: 45 s against
# 74 s in float32 on 2 threads (AVX512-bf16 Xeon); elsewhere bf16=True changes nothing. Its
# patches are half the shipped one's (64 x 32 x 32 voxels, the smallest whose Swin bottleneck keeps
# more than one token): on one thread its 100 steps took 34 s against 65 s, every test that adapts
# it (the scratch peer, SEA-PEFT, the transductive arms) trains at half the cost, and its loss fell
# as far (0.81x against 0.85x over the run).
TINY_PRETRAIN_STEPS = int(os.environ.get("MEDPEFT_TEST_PRETRAIN_STEPS", "100"))
TINY_PATCH = (64, 32, 32)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once for all test workers: the first to take the lock builds while the
    others wait for it, instead of each worker building its own copy. It builds on the worker's
    own threads (one under xdist): the other worker is usually running a test that needs no
    fixture, and two threads beside it made the build 2x slower (spin-waiting), not faster. The
    tests only read what is built here."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> Path:
    from medpeft.data.phantom.collection import write_collection
    return built_once(tmp_path_factory, "phantom", lambda folder: write_collection(folder, "tiny", seed=0))


@cache
def benchmark_script(name: str):
    """``benchmarks/NAME.py`` as a module: the benchmarks are scripts, not an installed package."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def datasets_with_role(root: Path, role: str) -> list[Path]:
    index = json.loads((root / "collection.json").read_text())
    return [root / d["name"] for d in index["datasets"] if d["role"] == role]


def _result_rows(name: str, keep) -> list[list[str]]:
    """The cells of the markdown table rows of benchmarks/results/NAME that ``keep`` accepts
    (bold marks removed)."""
    table = Path(__file__).resolve().parents[1] / "benchmarks/results" / name
    lines = table.read_text().replace("*", "").splitlines()
    return [[c.strip() for c in line.split("|")[1:-1]] for line in lines if keep(line)]


def measured_federated_schedules() -> dict[tuple[int, int, float], tuple[float, float]]:
    """The v8 steps table (benchmarks/results/federated-affine-steps-v8.md): (rounds, local
    steps, server step) -> (mean federated Dice, mean gain over training alone)."""
    rows = _result_rows("federated-affine-steps-v8.md", lambda line: line.startswith("| 3 x "))
    # columns: rounds x local steps (and a remark), server_lr, federated (mean +- sd), local-only, gain
    return {(int(r[0].split()[0]), int(r[0].split()[2]), float(r[1])):
            (float(r[2].split()[0]), float(r[4])) for r in rows}


def measured_federated_plans(name: str) -> dict[str, float]:
    """A federated seeds table (benchmarks/results/NAME, written by benchmarks/federated_seeds.py):
    plan -> mean federated Dice over its seeds."""
    rows = _result_rows(name, lambda line: line.startswith("| ") and "-fedavg" in line)
    # columns: arm (plan-aggregation-...), seeds, federated (mean +- sd), ...
    return {r[0].split("-fedavg")[0]: float(r[2].split()[0]) for r in rows}


@pytest.fixture(scope="session")
def foundation_dir(collection, tmp_path_factory) -> Path:
    from medpeft.data.transforms import Preprocessing
    from medpeft.train.loop import LoopConfig
    from medpeft.train.pretrain import pretrain
    return built_once(tmp_path_factory, "foundation", lambda folder: pretrain(
        datasets_with_role(collection, "source"), folder, pp=Preprocessing(patch=TINY_PATCH),
        loop=LoopConfig(steps=TINY_PRETRAIN_STEPS, lr=2e-3, log_every=10, bf16=True)))


# Longest first (the slowest tests as measured in `make test`, seconds): `make test` hands each
# worker its next test only when it finishes one (--dist load --maxschedchunk 1), so the long
# tests start early and the short ones fill in around them instead of one worker running a long
# test alone at the end. The order changes wall time only, never what a test checks.
SLOW_FIRST = (
    "test_federated_deployment.py::test_deployment_on_superlink",  # 150, mostly waiting on Flower's processes
    "test_peers.py::test_scratch_peer_learns",  # 60, after building the tiny foundation (90)
    "test_federated_sea.py::test_federated_sea_sends",  # 50-65 each
    "test_federated.py::test_simulation_sends_only_adapters",  # 55-65
    "test_organ_floor.py::test_default_adaptation",  # 55-65
    "test_blackbox.py::test_blackbox_never_touches",  # 45-50
    "test_federated_secure.py::test_secure_aggregation_hands",  # 40-50
    "test_novel_organs.py::test_novel_organ_decoder",  # 40
    "test_distributed.py::test_torchrun_pretraining",  # 40-45
    "test_transductive.py::test_transductive_training",  # 35-40
    "test_benchmark_grid.py::",  # 30-45 each
    "test_demo_resume.py::",  # 30-40
    "test_quiet_console.py::",  # 25
    "test_distributed.py::test_two_gloo_ranks",  # 25-30
    "test_sea_adapt.py::test_sea_peft_search",  # 20
)


def pytest_collection_modifyitems(items) -> None:
    def rank(item) -> int:
        return next((i for i, key in enumerate(SLOW_FIRST) if key in item.nodeid), len(SLOW_FIRST))
    items.sort(key=rank)  # stable: every other test keeps pytest's order
