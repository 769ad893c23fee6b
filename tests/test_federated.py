"""Federated PEFT on Flower's simulation: only adapters travel, faulty sites, comparison arms, config."""
from __future__ import annotations

import importlib
import json
import os

import numpy as np
import pytest
import torch
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp
from safetensors.torch import load_file

from medpeft.federated.app import hospital_evaluate, hospital_train
from medpeft.federated.config import FedConfig, hospital_split, load_fed_config
from medpeft.federated.hospital import build_model
from medpeft.federated.run import federate
from medpeft.federated.strategy import to_state
from medpeft.methods import trainable_state
from medpeft.models.weights import shipped_foundation


def _faulty_app(cfg: FedConfig, bad: int) -> ClientApp:
    """Sites as usual, except partition ``bad``: crashes in round 1, sends a mis-shaped tensor
    in round 2."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if int(context.node_config["partition-id"]) != bad:
            return hospital_train(msg, context, cfg)
        if int(msg.content["config"]["server-round"]) == 1:
            raise RuntimeError("disk full at the site")
        reply = hospital_train(msg, context, cfg)
        name = sorted(reply.content["arrays"].keys())[0]
        reply.content["arrays"][name] = Array(np.zeros(7, np.float32))
        return reply

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return hospital_evaluate(msg, context, cfg)

    return app


def test_simulation_sends_only_adapters_survives_a_faulty_site_and_does_not_collapse(collection, tmp_path):
    target = collection / "Task10_NewSite"
    sites = [{"dataset": str(target), "k": 1, "n_test": 1, "part": [i, 3], "name": name}
             for i, name in enumerate(("north", "south", "faulty"))]
    cfg = FedConfig(foundation=str(shipped_foundation()), hospitals=sites, out=str(tmp_path / "fed"),
                    plan="affine", rounds=2, local_steps=6, baseline=False, pooled=False,
                    simulation_workers=1, evaluate_every=2)
    report = federate(cfg, client_app=_faulty_app(cfg, bad=2))
    assert sorted(report["dice"]) == ["0", "2"]  # evaluated before and after, not after round 1
    # the faulty site is named and left out; the others' work is kept in both rounds
    excluded = {(e["round"], e["site"]): e["reason"] for e in report["excluded"]}
    assert "disk full" in excluded[(1, "faulty")]
    assert "shape" in excluded[(2, "faulty")]
    assert set(report["train"]["1"]) == set(report["train"]["2"]) == {"north", "south"}
    text = (tmp_path / "fed" / "report.md").read_text()
    assert "| 1 | north, south | faulty |" in text and "| 2 | north, south | faulty |" in text
    # arms that did not run get no column (no "nan" for a new user to puzzle over)
    assert "nan" not in text and "Dice pooled" not in text and "Dice local-only" not in text
    # only trained adapter tensors travelled, never a frozen foundation weight
    foundation, _ = build_model(cfg)
    trainable = set(trainable_state(foundation.model))
    frozen = {n for n, p in foundation.model.named_parameters() if not p.requires_grad}
    assert set(report["wire_tensors"]) == trainable and not set(report["wire_tensors"]) & frozen
    assert any(n.startswith("out.") for n in report["wire_tensors"])
    assert report["bytes_total"]["ratio"] >= 40  # measured on the serialised messages
    # the global adapter moved and Dice did not collapse
    start = trainable_state(foundation.model)
    final = load_file(str(tmp_path / "fed" / "global" / "adapter.safetensors"))
    assert max((final[n] - start[n]).abs().max().item() for n in start) > 1e-4
    for site in ("north", "south"):
        assert report["dice"]["2"][site] >= report["dice"]["0"][site] - 0.05
    saved = json.loads((tmp_path / "fed" / "global" / "adapter_config.json").read_text())
    assert saved["federation"]["plan"] == "affine"  # the plan it ran, recorded with the adapter


def test_site_split_gives_disjoint_shares(collection):
    target = collection / "Task10_NewSite"
    a = hospital_split({"dataset": str(target), "k": 2, "n_test": 2, "part": [0, 2]}, 0, seed=0)
    b = hospital_split({"dataset": str(target), "k": 2, "n_test": 2, "part": [1, 2]}, 1, seed=0)
    assert not set(a["support"] + a["test"]) & set(b["support"] + b["test"])
    with pytest.raises(ValueError, match="needs K=9"):
        hospital_split({"dataset": str(target), "k": 9, "n_test": 2, "part": [0, 2]}, 0, seed=0)


def test_every_hospitals_data_problem_is_named_at_once(collection, tmp_path):
    from medpeft.data.msd import DataError
    from medpeft.federated.config import write_hospital_manifests
    target = str(collection / "Task10_NewSite")
    cfg = FedConfig(foundation="f", out=str(tmp_path / "fed"), hospitals=[
        {"dataset": str(tmp_path / "nope"), "name": "north"}, {"dataset": target, "name": "south"},
        {"dataset": target, "k": 40, "name": "east"}]).check()
    with pytest.raises(DataError) as err:
        write_hospital_manifests(cfg)
    assert len(err.value.problems) == 2, err.value.problems
    assert "nope" in err.value.problems[0] and "hospital east has" in err.value.problems[1]


def test_arrays_round_trip_keeps_values():
    from medpeft.federated.strategy import to_arrays
    state = {"a": torch.randn(2, 3), "b": torch.arange(4.0)}
    back = to_state(to_arrays(state))
    assert all(torch.equal(state[k], back[k]) for k in state)


def test_simulation_trains_as_many_hospitals_at_once_as_asked(tmp_path, monkeypatch):
    """As many Ray workers as asked, at the priority of the command; each actor first skips
    MONAI's unused optional imports."""
    import flwr.simulation
    import ray

    from medpeft.federated.run import OFFLINE_ENV, RAY_WORKER_PRIORITY, simulate
    from medpeft.startup import skip_unused_optional_packages
    # simulate() sets these: restored after the test
    for name in [*OFFLINE_ENV, *RAY_WORKER_PRIORITY, "FLWR_HOME"]:
        monkeypatch.setenv(name, "")
    asked, ran = [], []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: asked.append(
        {**kw, "worker_niceness": os.environ.get("RAY_worker_niceness")}))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(flwr.simulation, "run_simulation", lambda **kw: ran.append(kw["num_supernodes"]))
    three = [{"dataset": "a"}, {"dataset": "b"}, {"dataset": "c"}]
    for workers in (1, 3, 0):
        simulate(FedConfig(foundation="f", hospitals=three, out=str(tmp_path), simulation_workers=workers))
    assert [kw["num_cpus"] for kw in asked] == [1, 3, max(1, min(3, os.cpu_count() or 1))]
    assert ran == [3, 3, 3]
    # the hospitals' Ray workers train at the command's priority, not Ray's default of +15
    assert [kw["worker_niceness"] for kw in asked] == ["0", "0", "0"]
    hook = asked[0]["runtime_env"]["worker_process_setup_hook"]
    module, name = hook.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is skip_unused_optional_packages
    with pytest.raises(ValueError, match="simulation_workers -1: must be >= 0"):
        FedConfig(foundation="f", hospitals=three, simulation_workers=-1).check()


def test_evaluated_rounds_are_the_start_every_nth_and_the_last():
    two = [{"dataset": "a"}, {"dataset": "b"}]
    rounds = lambda n, every: FedConfig(foundation="f", hospitals=two, rounds=n,  # noqa: E731
                                        evaluate_every=every).check().evaluated_rounds()
    assert rounds(3, 1) == {0, 1, 2, 3} and rounds(5, 2) == {0, 2, 4, 5} and rounds(2, 9) == {0, 2}
    with pytest.raises(ValueError, match="evaluate_every must be >= 1"):
        rounds(2, 0)


@pytest.mark.parametrize(("text", "says"), [
    ("[unclosed\n", "not valid YAML (while parsing"),
    ("- a\n- b\n", "is a mapping (foundation: ..., hospitals: ...), not a list")])
def test_a_federation_file_that_is_not_a_yaml_mapping_is_named(tmp_path, text, says):
    """It ended in a traceback from the YAML parser."""
    from typer.testing import CliRunner

    from medpeft.cli import app
    (tmp_path / "fed.yaml").write_text(text)
    result = CliRunner().invoke(app, ["federate", str(tmp_path / "fed.yaml")])
    assert result.exit_code != 0 and says in result.output and "Traceback" not in result.output


def test_a_missing_federation_file_is_named():
    """It read as a bare '[Errno 2] No such file or directory'."""
    with pytest.raises(ValueError, match=r"nope.yaml: no such federation YAML \(foundation: "):
        load_fed_config("nope.yaml")


def test_config_checks_hospitals_and_resolves_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    twin = [{"dataset": "data", "name": "a"}, {"dataset": "data", "name": "a"}]
    with pytest.raises(ValueError, match="hospital names must differ"):
        FedConfig(foundation="f", hospitals=twin).check()
    with pytest.raises(ValueError, match="part 2 of 2 does not exist"):
        FedConfig(foundation="f", hospitals=[{"dataset": "d", "part": [2, 2]}, {"dataset": "d"}]).check()
    cfg = FedConfig(foundation="f", hospitals=[{"dataset": "d1"}, {"dataset": "d2"}], out="o").resolved()
    assert cfg.out == str(tmp_path / "o") and cfg.hospitals[1]["dataset"] == str(tmp_path / "d2")
    old = tmp_path / "old.yaml"  # the list's former name is still read, with a warning
    old.write_text("foundation: f\nsites: [{dataset: d1}, {dataset: d2}]\n")
    with pytest.warns(FutureWarning, match="'sites' is now called 'hospitals'"):
        assert [h["dataset"] for h in load_fed_config(old).hospitals] == ["d1", "d2"]


def test_local_only_and_pooled_arms_take_the_federations_rounds(collection, tmp_path, monkeypatch):
    """Both comparison arms run the same per-round Hospital.train the federation's sites run (a fresh
    optimizer and schedule per call, the round's seed): local-only with local_steps per round,
    the pooled bound with every site's steps per round on every site's volumes."""
    from medpeft.federated.config import write_hospital_manifests
    from medpeft.federated.flows import FixedFlow, flow_for
    from medpeft.federated.hospital import Hospital, PooledHospitals
    from medpeft.models.weights import load_foundation
    target = collection / "Task10_NewSite"
    sites = [{"dataset": str(target), "k": 1, "n_test": 1, "part": [i, 2], "name": name}
             for i, name in enumerate(("north", "south"))]
    cfg = FedConfig(foundation=str(shipped_foundation()), hospitals=sites, out=str(tmp_path / "fed"),
                    plan="affine", rounds=3, local_steps=4, local=["out.*"]).check().resolved()
    calls, scored = [], []

    def train(self, shared, kept, server_round, steps=None):
        calls.append((self.name, server_round, steps or cfg.local_steps))
        return shared, kept, {}

    def evaluate(self, shared, kept, *, save_personal=True):
        scored.append((self.name, save_personal))
        return 0.5

    monkeypatch.setattr(Hospital, "train", train)
    monkeypatch.setattr(Hospital, "evaluate", evaluate)
    manifests = write_hospital_manifests(cfg)
    flow = flow_for(cfg)
    assert type(flow) is FixedFlow
    assert flow.local_only(cfg, manifests) == {"north": 0.5, "south": 0.5}
    assert calls == [(s, r, 4) for s in ("north", "south") for r in (1, 2, 3)]
    calls.clear()
    assert flow.pooled_bound(cfg, manifests) == {"north": 0.5, "south": 0.5}
    assert calls == [("pooled", r, 8) for r in (1, 2, 3)]
    # neither arm overwrites a site's personalised adapter
    assert all(not save for _, save in scored)
    pool = PooledHospitals(cfg, [Hospital(cfg, m) for m in manifests])
    assert len(pool.training_data(load_foundation(cfg.foundation))) == pool.n_support == 2


def test_each_kind_of_plan_refuses_the_settings_it_cannot_honour():
    from medpeft.federated.flows import FixedFlow, SearchFlow, flow_for
    two = [{"dataset": "d1"}, {"dataset": "d2"}]
    dp = {"clipping_norm": 1.0, "noise_multiplier": 1.0}
    with pytest.raises(ValueError, match="'sea' settings apply to plan sea-peft, not decoder"):
        FedConfig(foundation="f", hospitals=two, plan="decoder", sea={"budget": 0.01}).check()
    with pytest.raises(ValueError, match="'local' tensors are not supported"):
        FedConfig(foundation="f", hospitals=two, plan="sea-peft", local=["out.*"]).check()
    with pytest.raises(ValueError, match="changes its set every round"):
        FedConfig(foundation="f", hospitals=two, plan="sea-peft", aggregation="fedavg", dp=dp).check()
    with pytest.raises(ValueError, match="unknown settings"):
        FedConfig(foundation="f", hospitals=two, plan="sea-peft", sea={"budgett": 0.01}).check()
    searched = FedConfig(foundation="f", hospitals=two, plan="sea-peft", sea={"budget": 0.02}).check()
    fixed = FedConfig(foundation="f", hospitals=two, plan="decoder", aggregation="fedavg", dp=dp).check()
    assert type(flow_for(searched)) is SearchFlow and type(flow_for(fixed)) is FixedFlow


def test_a_restarted_hospital_takes_its_kept_tensors_from_its_saved_adapter(collection, tmp_path):
    """A SuperNode that restarts has lost its node state; the hospital's kept (never sent) tensors
    come back from the personalised adapter it saved, not from the foundation's start."""
    from flwr.app import RecordDict

    from medpeft.federated.config import write_hospital_manifests
    from medpeft.federated.flows import _kept
    from medpeft.federated.hospital import Hospital
    sites = [{"dataset": str(collection / "Task10_NewSite"), "k": 1, "n_test": 1, "part": [i, 2]}
             for i in range(2)]
    cfg = FedConfig(foundation=str(shipped_foundation()), hospitals=sites, out=str(tmp_path / "fed"),
                    plan="affine", local=["out.*"]).check().resolved()
    hospital = Hospital(cfg, write_hospital_manifests(cfg)[0])
    assert _kept(RecordDict(), hospital) == {}  # nothing saved yet: the plan's start
    foundation, state = build_model(cfg)
    with torch.no_grad():
        foundation.model.out.conv.conv.weight.add_(1.0)
    from medpeft.methods.adapter_io import save_adapter
    save_adapter(hospital.personal_dir, foundation.model, state, foundation)
    restored = _kept(RecordDict(), hospital)
    assert set(restored) == {n for n in trainable_state(foundation.model) if n.startswith("out.")}
    assert torch.equal(restored["out.conv.conv.weight"], foundation.model.out.conv.conv.weight)


def test_report_dice_table_has_a_column_pair_per_arm_that_ran():
    from medpeft.federated.run import _dice_rows
    report = {"dice": {"0": {"a": 0.4}, "2": {"a": 0.7}}, "local_only": {"a": 0.6},
              "pooled": {"a": 0.75}}
    head, _, row = _dice_rows(report, "2")
    assert "Dice local-only" in head and "Dice pooled" in head
    assert row == "| a | 0.400 | 0.700 | 0.600 | +0.100 | 0.750 | -0.050 |"
    head, _, row = _dice_rows({**report, "pooled": {}}, "2")
    assert "pooled" not in head and row == "| a | 0.400 | 0.700 | 0.600 | +0.100 |"
