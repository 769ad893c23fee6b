"""Federated PEFT on Flower: exact LoRA aggregation, only adapters on the wire, faulty sites."""
from __future__ import annotations

import importlib
import json
import os
import time
from functools import partial

import numpy as np
import pytest
import torch
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp
from safetensors.torch import load_file

from medpeft.federated.aggregation import aggregate_states, lora_pairs, lora_update
from medpeft.federated.app import hospital_evaluate, hospital_train
from medpeft.federated.config import FedConfig, hospital_split, load_fed_config
from medpeft.federated.deployment import marked_processes, stop_marked
from medpeft.federated.hospital import build_model
from medpeft.federated.run import federate
from medpeft.federated.strategy import to_state
from medpeft.methods import trainable_state
from medpeft.models.weights import shipped_foundation


def _pair(rank: int, used: slice, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A LoRA pair (A (r, 6), B (5, r)) whose update uses only the ranks in ``used``."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(rank, 6, generator=g), torch.zeros(5, rank)
    b[:, used] = torch.randn(5, used.stop - used.start, generator=g)
    return a, b


def test_svd_aggregation_is_the_average_update_where_fedavg_of_factors_is_not():
    a1, b1 = _pair(4, slice(0, 2), 1)
    a2, b2 = _pair(4, slice(2, 4), 2)  # summed rank 2 + 2 fits rank 4
    states = [{"x.lora_A": a1, "x.lora_B": b1, "bias": torch.ones(3)},
              {"x.lora_A": a2, "x.lora_B": b2, "bias": torch.zeros(3)}]
    weights = [3.0, 1.0]  # support volumes per site
    target = 0.75 * lora_update(a1, b1) + 0.25 * lora_update(a2, b2)
    svd = aggregate_states(states, weights, "svd")
    avg = aggregate_states(states, weights, "fedavg")
    assert torch.allclose(lora_update(svd["x.lora_A"], svd["x.lora_B"]), target, atol=1e-5)
    assert (lora_update(avg["x.lora_A"], avg["x.lora_B"]) - target).abs().max() > 0.1
    assert torch.allclose(svd["bias"], torch.full((3,), 0.75))  # other tensors: weighted mean
    assert svd["x.lora_A"].shape == a1.shape and svd["x.lora_B"].shape == b1.shape


def test_svd_gives_the_best_rank_r_fit_when_the_summed_rank_exceeds_r():
    """Three sites at rank 2 on independent directions: the average update has rank 6 > 2, so
    no rank-2 pair equals it; svd returns the Eckart-Young optimum (the top-2 SVD truncation)."""
    g = torch.Generator().manual_seed(3)
    pairs = [(torch.randn(2, 8, generator=g), torch.randn(7, 2, generator=g)) for _ in range(3)]
    weights = [0.5, 0.3, 0.2]
    target = sum(w * lora_update(a, b) for (a, b), w in zip(pairs, weights))
    assert torch.linalg.matrix_rank(target) == 6
    states = [{"x.lora_A": a, "x.lora_B": b} for a, b in pairs]
    out = aggregate_states(states, weights, "svd")
    got = lora_update(out["x.lora_A"], out["x.lora_B"])
    u, s, vh = torch.linalg.svd(target)
    optimum = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
    assert torch.allclose(got, optimum, atol=1e-4)
    # the residual is exactly the discarded singular values, and not zero
    assert float((target - got).norm()) == pytest.approx(float(s[2:].norm()), rel=1e-4)
    assert float(s[2:].norm()) > 0.1


def test_ffa_averages_b_exactly_and_sends_no_a(tmp_path):
    """FFA-LoRA: A frozen at the shared seed, so FedAvg of B is the exact average update."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(4, 6, generator=g)
    bs = [torch.randn(5, 4, generator=g) for _ in range(3)]
    weights = [2.0, 1.0, 1.0]
    out = aggregate_states([{"x.lora_B": b} for b in bs], weights, "ffa")
    target = sum(w / 4 * lora_update(a, b) for b, w in zip(bs, weights))
    assert torch.allclose(lora_update(a, out["x.lora_B"]), target, atol=1e-5)
    with pytest.raises(ValueError, match="frozen"):
        aggregate_states([{"x.lora_A": a, "x.lora_B": b} for b in bs], weights, "ffa")
    sites = [{"dataset": "unused", "name": n} for n in ("a", "b")]
    cfg = FedConfig(foundation=str(shipped_foundation()), hospitals=sites, plan="lora-everywhere",
                    aggregation="ffa", out=str(tmp_path))
    sent = trainable_state(build_model(cfg)[0].model)
    saved = trainable_state(build_model(cfg, for_saving=True)[0].model)
    plain = trainable_state(build_model(FedConfig(**{**cfg.__dict__, "aggregation": "svd"}))[0].model)
    assert not any(".lora_A" in n for n in sent) and any(".lora_B" in n for n in sent)
    assert set(saved) == set(plain) and set(sent) < set(saved)
    assert all(torch.equal(saved[n], plain[n]) for n in saved if ".lora_A" in n)  # the shared A
    with pytest.raises(ValueError, match="needs a LoRA plan"):
        FedConfig(foundation="f", hospitals=sites, plan="decoder", aggregation="ffa").check()


def test_affine_plans_send_norm_deltas_and_the_head_and_ffa_keeps_their_lora_a_home(tmp_path):
    """`affine` sends norm scale/shift deltas (encoder and decoder) and the head, nothing else;
    `lora+affine` is a LoRA plan: under FFA its A factors stay frozen and home."""
    sites = [{"dataset": "unused", "name": n} for n in ("a", "b")]
    sent = {}
    for plan, mode in (("affine", "fedavg"), ("lora+affine", "ffa")):
        cfg = FedConfig(foundation=str(shipped_foundation()), hospitals=sites, plan=plan,
                        aggregation=mode, out=str(tmp_path)).check()
        sent[plan] = set(trainable_state(build_model(cfg)[0].model))
    affine = sent["affine"]
    assert all(n.endswith(("weight_delta", "bias_delta")) or n.startswith("out.") for n in affine)
    assert any(n.startswith("swinViT.") for n in affine) and any(n.startswith("decoder") for n in affine)
    lora = sent["lora+affine"] - affine
    assert lora and all(n.endswith(".lora_B") for n in lora) and affine <= sent["lora+affine"]


def test_svd_keeps_a_trainable_A_when_no_site_moved_B_and_pairs_conv_sites():
    names = ["l.lora_A", "l.lora_B", "c.lora_A.weight", "c.lora_B.weight", "c.base.bias"]
    assert lora_pairs(names) == {"l": ("l.lora_A", "l.lora_B"),
                                 "c": ("c.lora_A.weight", "c.lora_B.weight")}
    a = torch.randn(2, 3, 3, 3, 3)
    zero_b = torch.zeros(4, 2, 1, 1, 1)
    out = aggregate_states([{"c.lora_A.weight": a, "c.lora_B.weight": zero_b}] * 2, [1, 1])
    assert out["c.lora_B.weight"].abs().max() == 0  # dW stays exactly zero
    row_norms = out["c.lora_A.weight"].reshape(2, -1).norm(dim=1)
    assert torch.allclose(row_norms, a.reshape(2, -1).norm(dim=1).mean().expand(2), rtol=1e-4)


def test_svd_keeps_a_rank_above_the_layer_size_exact_and_trainable():
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(16, 12, generator=g), torch.randn(36, 16, generator=g)) for _ in range(2)]
    out = aggregate_states([{"q.lora_A": a, "q.lora_B": b} for a, b in pairs], [1.0, 3.0])
    target = 0.25 * lora_update(*pairs[0]) + 0.75 * lora_update(*pairs[1])
    assert out["q.lora_A"].shape == (16, 12) and out["q.lora_B"].shape == (36, 16)
    assert torch.allclose(lora_update(out["q.lora_A"], out["q.lora_B"]), target, atol=1e-4)
    assert out["q.lora_A"][12:].abs().min() > 0  # the surplus ranks keep a trainable A


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
                    rounds=2, local_steps=6, baseline=False, pooled=False, simulation_workers=1,
                    evaluate_every=2)
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
    assert saved["federation"]["plan"] == "affine"  # the default plan


def test_site_split_gives_disjoint_shares(collection):
    target = collection / "Task10_NewSite"
    a = hospital_split({"dataset": str(target), "k": 2, "n_test": 2, "part": [0, 2]}, 0, seed=0)
    b = hospital_split({"dataset": str(target), "k": 2, "n_test": 2, "part": [1, 2]}, 1, seed=0)
    assert not set(a["support"] + a["test"]) & set(b["support"] + b["test"])
    with pytest.raises(ValueError, match="needs K=9"):
        hospital_split({"dataset": str(target), "k": 9, "n_test": 2, "part": [0, 2]}, 0, seed=0)


def test_arrays_round_trip_keeps_values():
    from medpeft.federated.strategy import to_arrays
    state = {"a": torch.randn(2, 3), "b": torch.arange(4.0)}
    back = to_state(to_arrays(state))
    assert all(torch.equal(state[k], back[k]) for k in state)


def test_deployment_on_superlink_and_supernodes_leaves_no_process(collection, tmp_path,
                                                                 monkeypatch):
    """`medpeft federate CONFIG --deployment`: local SuperLink and SuperNodes over TLS with
    SuperNode authentication (a SuperNode with an unregistered key is refused and the run goes
    on); a hospital whose SuperNode dies mid-round (SIGKILL) is left out of that round, the round
    completes with the other, and the hospital rejoins with its key and trains the next round; a
    table that reads at 80 columns, Flower's lines in log.txt, no process left behind."""
    import yaml
    from typer.testing import CliRunner

    from medpeft.cli import app
    from medpeft.cli_common import console
    target = collection / "Task10_NewSite"
    sites = [{"dataset": str(target), "k": 1, "n_test": 1, "part": [i, 2]} for i in range(2)]
    config = {"foundation": str(shipped_foundation()), "hospitals": sites, "out": str(tmp_path / "dep"),
              "plan": "encoder-lora+head", "rounds": 2, "local_steps": 2, "baseline": False,
              "pooled": False, "local": ["out.*"], "heartbeat_s": 20, "evaluate_every": 2,
              # 20 s, not Flower's minimum of 10: a loaded CI machine let site0's heartbeats lapse
              # for 2 x 10 s once, and the SuperLink dropped its reply as if it had gone offline
              # a reply lost to the drill's race (the node back online before the server pulled
              # its error reply) is a dropout after 3 min, not an hour's hang
              "round_timeout_s": 180}
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(console, "width", 80)
    from medpeft.federated import deployment
    # a drill: one more SuperNode, with a key nobody registered, knocks on the SuperLink
    # and a dropout: site1's SuperNode is killed once it has received round 1's training
    monkeypatch.setattr(deployment, "deploy", partial(deployment.deploy, timeout=900, uninvited=1,
                                                      drop=(1, 1)))
    result = CliRunner().invoke(app, ["federate", str(tmp_path / "fed.yaml"), "--deployment"])
    assert result.exit_code == 0, result.output
    logs = tmp_path / "dep" / "logs"
    assert "No SuperNode found with the given public key" in (logs / "superlink.log").read_text()
    assert "SuperNode ID" not in (logs / "uninvited-0.log").read_text()  # refused, never admitted
    assert all("SuperNode ID" in (logs / f"supernode-{i}.log").read_text() for i in range(2))
    credentials = tmp_path / "dep" / "credentials"
    assert (credentials / "supernodes" / "site0").stat().st_mode & 0o077 == 0  # private keys
    assert "root-certificates" in (tmp_path / "dep" / "flwr-home" / "config.toml").read_text()
    table = [line for line in result.output.splitlines() if "│" in line or "┃" in line]
    assert table and all(len(line) <= 80 for line in table)
    assert any("site0" in line for line in table) and any("site1" in line for line in table)
    assert "nan" not in result.output and "alone" not in result.output  # baseline: false
    assert (tmp_path / "dep" / "log.txt").is_file()
    report = json.loads((tmp_path / "dep" / "report.json").read_text())
    assert set(report["train"]["1"]) == {"site0"}  # site1 died mid-round: the round went on
    assert [(e["round"], e["site"], e["phase"]) for e in report["excluded"]] == [(1, "site1", "train")]
    assert "dropped out" in report["excluded"][0]["reason"]
    assert set(report["train"]["2"]) == {"site0", "site1"}  # site1 rejoined and trained
    node_id = lambda log: log.read_text().split("SuperNode ID: ")[1].split()[0]  # noqa: E731
    assert node_id(logs / "supernode-1-rejoined.log") == node_id(logs / "supernode-1.log")
    assert "| 1 | site0 | site1 |" in (tmp_path / "dep" / "report.md").read_text()
    assert report["bytes_total"]["ratio"] >= 40
    assert (tmp_path / "dep" / "global" / "adapter.safetensors").is_file()
    # the head is personalised: it never travels, and each site saved its own
    assert report["wire_tensors"] and not any(n.startswith("out.") for n in report["wire_tensors"])
    heads = [load_file(str(tmp_path / "dep" / "hospitals" / s / "adapter.safetensors"))
             for s in ("site0", "site1")]
    assert not torch.equal(heads[0]["out.conv.conv.weight"], heads[1]["out.conv.conv.weight"])
    assert marked_processes(str((tmp_path / "dep" / "flwr-home").resolve())) == []
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "roundz": 2}))
    bad = CliRunner().invoke(app, ["federate", str(tmp_path / "bad.yaml")])
    assert bad.exit_code != 0 and "unknown keys ['roundz']" in bad.output


def test_supernode_announces_the_configured_heartbeat_within_flowers_range(monkeypatch):
    import importlib

    from medpeft.federated import supernode
    readers = [importlib.import_module(name) for name in supernode._READERS]
    for module in readers:  # restored after the test
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", module.HEARTBEAT_DEFAULT_INTERVAL)
    supernode.announce(12)
    assert [module.HEARTBEAT_DEFAULT_INTERVAL for module in readers] == [12, 12]
    with pytest.raises(ValueError, match="heartbeat_s 5: Flower's SuperLink accepts 10 to 1800 s"):
        supernode.announce(5)
    with pytest.raises(ValueError, match="heartbeat_s 5: must be 10 to 1800 seconds"):
        FedConfig(foundation="f", hospitals=[{"dataset": "a"}, {"dataset": "b"}], heartbeat_s=5).check()


def test_simulation_trains_as_many_hospitals_at_once_as_asked(tmp_path, monkeypatch):
    """As many Ray workers as asked; each actor first skips MONAI's unused optional imports."""
    import flwr.simulation
    import ray

    from medpeft.federated.run import OFFLINE_ENV, simulate
    from medpeft.startup import skip_unused_optional_packages
    for name in [*OFFLINE_ENV, "FLWR_HOME"]:  # simulate() sets them: restored after the test
        monkeypatch.setenv(name, "")
    asked, ran = [], []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: asked.append(kw))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(flwr.simulation, "run_simulation", lambda **kw: ran.append(kw["num_supernodes"]))
    three = [{"dataset": "a"}, {"dataset": "b"}, {"dataset": "c"}]
    for workers in (1, 3, 0):
        simulate(FedConfig(foundation="f", hospitals=three, out=str(tmp_path), simulation_workers=workers))
    assert [kw["num_cpus"] for kw in asked] == [1, 3, max(1, min(3, os.cpu_count() or 1))]
    assert ran == [3, 3, 3]
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


def test_stop_marked_finds_and_ends_processes_of_this_run_only(tmp_path):
    import subprocess
    home = str(tmp_path / "flwr-home")
    mine = subprocess.Popen(["sleep", "60"], env={**os.environ, "FLWR_HOME": home},
                            start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], env={**os.environ, "FLWR_HOME": home + "-other"})
    try:
        assert marked_processes(home) == [mine.pid]
        stop_marked(home)
        assert mine.wait(timeout=5) is not None and other.poll() is None
    finally:
        other.kill()
        mine.kill()


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
                    rounds=3, local_steps=4, local=["out.*"]).check().resolved()
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


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_reply_with_non_finite_tensors_is_left_out_by_name(bad):
    from types import SimpleNamespace

    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    from medpeft.federated.accounting import Ledger
    from medpeft.federated.strategy import WEIGHT, AdapterFedAvg, to_arrays
    reference = {"x.lora_B": torch.zeros(5, 4), "out.bias": torch.zeros(3)}
    strategy = AdapterFedAvg(reference, Ledger(1000), "fedavg")

    def reply(state):  # what problem() reads of a site's reply (a Message needs a live run)
        return SimpleNamespace(has_error=lambda: False, content=RecordDict(
            {"arrays": to_arrays(state), "metrics": MetricRecord({WEIGHT: 2})}))

    fine = {"x.lora_B": torch.ones(5, 4), "out.bias": torch.ones(3)}
    broken = {"x.lora_B": torch.ones(5, 4), "out.bias": torch.tensor([0.0, bad, 1.0])}
    assert strategy.problem(reply(fine), with_arrays=True) is None
    assert strategy.problem(reply(broken), with_arrays=True) == "out.bias holds NaN or infinite values"
    assert isinstance(to_arrays(fine), ArrayRecord)



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


def test_a_hospital_that_drops_out_is_left_out_by_name_and_the_round_goes_on():
    """Of three hospitals asked, one SuperNode went offline (Flower's error reply) and one never
    answered (the round's timeout): both are named, the round averages the one that replied."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, MetricRecord, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

    from medpeft.federated.accounting import Ledger
    from medpeft.federated.strategy import WEIGHT, AdapterFedAvg, to_arrays, to_state
    reference = {"x.lora_B": torch.zeros(5, 4)}
    strategy = AdapterFedAvg(reference, Ledger(1000), "fedavg")
    sent = [SimpleNamespace(metadata=SimpleNamespace(dst_node_id=n, message_id=f"m{n}")) for n in (5, 6, 7)]
    strategy.hospitals = {5: "north", 6: "south", 7: "east"}  # learnt from earlier replies
    strategy.sent[(2, "train")] = sent
    answered = SimpleNamespace(metadata=SimpleNamespace(src_node_id=5), has_error=lambda: False,
                               content=RecordDict({"arrays": to_arrays({"x.lora_B": torch.ones(5, 4)}),
                                                   "metrics": MetricRecord({WEIGHT: 2}),
                                                   "site": ConfigRecord({"site": "north"})}))
    # Flower's SuperLink answers for an offline SuperNode: the reply comes from the SuperLink
    offline = SimpleNamespace(metadata=SimpleNamespace(src_node_id=SUPERLINK_NODE_ID,
                                                       reply_to_message_id="m6"),
                              has_error=lambda: True,
                              error=SimpleNamespace(code=ErrorCode.NODE_UNAVAILABLE, reason="x"))
    arrays, metrics = strategy.aggregate_train(2, [answered, offline])
    assert torch.equal(to_state(arrays)["x.lora_B"], torch.ones(5, 4)) and metrics["sites"] == 1
    reasons = {e["site"]: e["reason"] for e in strategy.excluded}
    assert set(reasons) == {"south", "east"} and all(e["round"] == 2 for e in strategy.excluded)
    assert "went offline" in reasons["south"] and "round_timeout_s" in reasons["east"]
    with pytest.raises(ValueError, match="min_hospitals 3"):
        FedConfig(foundation="f", hospitals=[{"dataset": "a"}, {"dataset": "b"}], min_hospitals=3).check()


def test_a_round_without_its_quorum_fails_by_name_instead_of_waiting_for_ever():
    """Flower's FedAvg waits without end for min_available_nodes; a hospital that dropped out and
    never came back must end the run with a named error after the strategy's own timeout."""
    from types import SimpleNamespace

    from flwr.app import ArrayRecord, ConfigRecord

    from medpeft.federated.accounting import Ledger
    from medpeft.federated.strategy import AdapterFedAvg
    asked = []
    grid = SimpleNamespace(get_node_ids=lambda: asked.append(1) or [11])  # one of two connected
    strategy = AdapterFedAvg({"x": torch.zeros(2)}, Ledger(1000), "fedavg", min_available_nodes=2,
                             min_train_nodes=2, min_evaluate_nodes=2, quorum_timeout_s=1.5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"round 2: 1 hospital\(s\) connected after waiting 2 s, "
                                           r"fewer than min_hospitals \(2\)"):
        strategy.configure_train(2, ArrayRecord(), ConfigRecord(), grid)
    assert 1.5 <= time.monotonic() - start < 10 and len(asked) >= 2  # it polled, then gave up
    with pytest.raises(RuntimeError, match="round 3: 1 hospital"):
        strategy.configure_evaluate(3, ArrayRecord(), ConfigRecord(), grid)


def test_round_zero_starts_with_min_hospitals_after_its_wait_and_not_below():
    from types import SimpleNamespace

    from medpeft.federated.server import wait_for_hospitals
    cfg = FedConfig(foundation="f", hospitals=[{"dataset": d} for d in "abc"], min_hospitals=2)
    assert wait_for_hospitals(SimpleNamespace(get_node_ids=lambda: [1, 2, 3]), cfg, 60) == 3
    assert wait_for_hospitals(SimpleNamespace(get_node_ids=lambda: [1, 2]), cfg, 0.5) == 2
    with pytest.raises(RuntimeError, match="1 of 3 hospitals connected within 0 s; min_hospitals is 2"):
        wait_for_hospitals(SimpleNamespace(get_node_ids=lambda: [1]), cfg, 0.5)


def test_a_serverapp_that_failed_ends_the_wait_with_its_error(tmp_path):
    """`flwr run --stream` exits 0 even when the ServerApp raised: the wait must not go on until
    the federation's timeout, and the user reads the ServerApp's own error."""
    import subprocess

    from medpeft.federated.deployment import wait_for_result
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "flwr-run.log").write_text(
        "Traceback (most recent call last):\n  ...\nRuntimeError: round 2: 1 hospital(s) "
        "connected after waiting 30 s\nERROR :     Exit Code: 201\n")
    link = subprocess.Popen(["sleep", "60"])
    submit = subprocess.Popen(["true"])
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"ServerApp ended without a result: RuntimeError: "
                                               r"round 2: 1 hospital\(s\) connected"):
            wait_for_result(tmp_path, link, submit, None, timeout=60, grace=1.0)
        assert time.monotonic() - start < 10
    finally:
        link.kill()


def test_sigterm_stops_the_processes_of_a_deployment(tmp_path):
    """`kill` or a scheduler's SIGTERM on `medpeft federate --deployment` leaves no Flower
    process behind: the signal ends the run through the same clean-up as Ctrl-C."""
    import signal

    from medpeft.federated.deployment import Processes
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "home")}
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        with Processes(env, tmp_path / "logs") as procs:
            child = procs.start("sleeper", ["sleep", "60"])
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert stopped.value.code == 128 + signal.SIGTERM
    assert child.poll() is not None and signal.getsignal(signal.SIGTERM) == before


def test_server_lr_moves_the_global_tensors_by_that_multiple_of_the_mean_update(monkeypatch):
    """FedOpt's server step: a round that starts from 1.0 and averages hospitals at 2.0 and 4.0
    (weights 1, 1) ends at 1 + 2 x (3 - 1) = 5 with server_lr 2; aggregations that re-factorise
    LoRA pairs refuse it by name."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from medpeft.federated.accounting import Ledger
    from medpeft.federated.strategy import WEIGHT, AdapterFedAvg, to_arrays, to_state
    start = {"x.weight_delta": torch.ones(4)}
    strategy = AdapterFedAvg(start, Ledger(1000), "fedavg", server_lr=2.0)
    monkeypatch.setattr(FedAvg, "configure_train", lambda *a, **k: [])  # a Message needs a live run
    two_hospitals = SimpleNamespace(get_node_ids=lambda: [1, 2])
    strategy.configure_train(1, to_arrays(start), ConfigRecord(), grid=two_hospitals)

    def reply(node, value):
        return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node), has_error=lambda: False,
                               content=RecordDict({"arrays": to_arrays({"x.weight_delta": value}),
                                                   "metrics": MetricRecord({WEIGHT: 1})}))
    arrays, _ = strategy.aggregate_train(1, [reply(5, torch.full((4,), 2.0)),
                                             reply(6, torch.full((4,), 4.0))])
    assert torch.allclose(to_state(arrays)["x.weight_delta"], torch.full((4,), 5.0))
    two = [{"dataset": "d1"}, {"dataset": "d2"}]
    FedConfig(foundation="f", hospitals=two, plan="affine", server_lr=2.0).check()
    FedConfig(foundation="f", hospitals=two, plan="lora-everywhere", aggregation="ffa",
              server_lr=2.0).check()
    FedConfig(foundation="f", hospitals=two, plan="sea-peft", aggregation="fedavg",
              server_lr=2.0).check()
    for plan, mode in (("lora-everywhere", "svd"), ("sea-peft", "svd")):
        with pytest.raises(ValueError, match="server_lr 2.0 moves each tensor along its mean"):
            FedConfig(foundation="f", hospitals=two, plan=plan, aggregation=mode, server_lr=2.0).check()
    with pytest.raises(ValueError, match="server_lr 0: must be > 0"):
        FedConfig(foundation="f", hospitals=two, plan="affine", server_lr=0).check()


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
                    local=["out.*"]).check().resolved()
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


def test_a_deployment_refuses_an_expired_or_mismatched_certificate_by_name(collection, tmp_path):
    """`tls: {ca, certificate, key}` (the hospital network's own PKI) is checked before any
    Flower process starts: each problem names its file, and no global adapter is written."""
    import yaml
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from typer.testing import CliRunner

    from medpeft.cli import app
    from medpeft.federated.credentials import _certificate, _name, _pem_key, hospital_credentials

    def pki(tag: str, *, days: float = 7, days_ago: float = 0, signer_tag: str | None = None):
        ca_key, cert_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
        ca = _certificate(_name("ca"), _name("ca"), ca_key.public_key(), ca_key, ca=True)
        signer = ec.generate_private_key(ec.SECP384R1()) if signer_tag else ca_key
        cert = _certificate(_name("127.0.0.1"), _name("ca"), cert_key.public_key(), signer, ca=False,
                            days=days, days_ago=days_ago)
        paths = {k: tmp_path / f"{tag}-{k}.pem" for k in ("ca", "certificate", "key")}
        paths["ca"].write_bytes(ca.public_bytes(Encoding.PEM))
        paths["certificate"].write_bytes(cert.public_bytes(Encoding.PEM))
        paths["key"].write_bytes(_pem_key(cert_key))
        return {k: str(v) for k, v in paths.items()}

    good = pki("good")
    assert str(hospital_credentials(good, tmp_path / "c", ["a"]).server_cert) == good["certificate"]
    expired = pki("expired", days=1, days_ago=10)
    with pytest.raises(ValueError, match=f"tls certificate {expired['certificate']} is not valid now"):
        hospital_credentials(expired, tmp_path / "c", ["a"])
    stranger = pki("stranger", signer_tag="other")
    with pytest.raises(ValueError, match="was not issued by the CA .*stranger-ca.pem"):
        hospital_credentials(stranger, tmp_path / "c", ["a"])
    with pytest.raises(ValueError, match="other-key.pem does not belong to the certificate .*good"):
        hospital_credentials({**good, "key": pki("other")["key"]}, tmp_path / "c", ["a"])
    sites = [{"dataset": str(collection / "Task10_NewSite"), "k": 1, "n_test": 1, "part": [i, 2]}
             for i in range(2)]
    config = {"foundation": str(shipped_foundation()), "hospitals": sites, "out": str(tmp_path / "dep"),
              "rounds": 1, "local_steps": 1, "baseline": False, "pooled": False, "tls": expired}
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["federate", str(tmp_path / "fed.yaml"), "--deployment"])
    said = " ".join(result.output.split())
    assert result.exit_code != 0 and "expired-certificate.pem is not valid now" in said
    assert not (tmp_path / "dep" / "global").exists() and not (tmp_path / "dep" / "logs").exists()


def test_report_dice_table_has_a_column_pair_per_arm_that_ran():
    from medpeft.federated.run import _dice_rows
    report = {"dice": {"0": {"a": 0.4}, "2": {"a": 0.7}}, "local_only": {"a": 0.6},
              "pooled": {"a": 0.75}}
    head, _, row = _dice_rows(report, "2")
    assert "Dice local-only" in head and "Dice pooled" in head
    assert row == "| a | 0.400 | 0.700 | 0.600 | +0.100 | 0.750 | -0.050 |"
    head, _, row = _dice_rows({**report, "pooled": {}}, "2")
    assert "pooled" not in head and row == "| a | 0.400 | 0.700 | 0.600 | +0.100 |"
