"""Federated SEA-PEFT: sites audit locally, the server pools and allocates one global active set."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from medpeft.federated.config import FedConfig
from medpeft.federated.plans import fed_sea_config
from medpeft.federated.run import federate
from medpeft.federated.sea_server import FederatedSearch, SeaFedAvg, pool
from medpeft.federated.secure import utilities_from_aggregate, utilities_to_tensors
from medpeft.methods.adapter_io import load_adapter
from medpeft.methods.sea.smoothing import UtilitySmoother
from medpeft.models.weights import load_foundation, shipped_foundation


def _qkv_pair(search: FederatedSearch) -> tuple[str, str]:
    """LoRA r4 and r16 on the same attention layer (one may replace the other)."""
    r4 = next(c for c in search.candidates if c.name.endswith(":lora[r4]") and "qkv" in c.name)
    r16 = next(c for c in search.candidates if c.name == r4.name.replace("[r4]", "[r16]"))
    return r4.name, r16.name


def test_federated_search_takes_the_first_proposal_then_changes_only_on_consistent_votes():
    search = FederatedSearch(0, str(shipped_foundation()), fed_sea_config({"votes": 2, "guard": 1}))
    allocator = search.allocator  # the central search's allocator (methods.sea.allocator)
    names = [c.name for c in search.candidates]
    r4, r16 = _qkv_pair(search)
    zero = dict.fromkeys(names, 0.0)
    search.allocate({**zero, r4: 0.5}, 1)  # only r4 is worth anything: taken at once
    assert allocator.active == {r4}
    trained = {n: t + 1.0 for n, t in search.wire().items()}
    search.update(trained)  # the sites trained r4 in round 2 and measured it lower
    measured = {**zero, r4: 0.1, r16: 1.0}
    search.allocate(measured, 2)  # calibration 0.1 / 0.5: r16's estimate counts 0.2 > 0.1
    assert allocator.factor() == 0.1 / 0.5
    assert allocator.active == {r4}  # one vote is not enough
    search.allocate(measured, 3)
    assert allocator.active == {r16}  # two consistent votes: r16 replaces r4 on the layer
    assert allocator.used() <= allocator.budget
    owned = {n for n, o in search.owner.items() if o == r4}
    assert all(torch.equal(search.values[n], search.fresh[n]) for n in owned)  # reset
    wire = set(search.wire())
    assert not wire & owned and {n for n, o in search.owner.items() if o == r16} <= wire
    assert all(n.startswith("out.") for n in wire if n not in search.owner)  # and the head
    assert [t["to"] for t in allocator.ctrl.transitions] == ["active", "inactive", "active"]
    assert [t["round"] for t in allocator.ctrl.transitions] == [1, 3, 3]


def test_a_secure_round_steps_the_active_set_by_server_lr_before_allocating():
    """Under SecAgg+ with server_lr 2 the round's active tensors move twice the mean update,
    from the values the round started with; the allocation then runs on the summed utilities."""
    from medpeft.federated.accounting import Ledger
    search = FederatedSearch(0, str(shipped_foundation()), fed_sea_config())
    strategy = SeaFedAvg(search, Ledger(1000), "fedavg", server_lr=2.0)
    start = {n: t.clone() for n, t in search.wire().items()}
    names = [c.name for c in search.candidates]
    summed = {**{n: t + 0.01 for n, t in start.items()},
              **utilities_to_tensors([0.5 if i == 0 else 0.0 for i in range(len(names))])}
    wire = strategy.secure_aggregate(summed, [1.0, 1.0], 1, start=start)
    for name, value in start.items():
        assert torch.allclose(search.values[name], value + 0.02, atol=1e-6), name
    assert search.allocator.active == {names[0]} and set(start) < set(wire)


def test_pool_weights_sites_and_skips_unmeasured_candidates():
    pooled = pool([[1.0, math.nan, 2.0], [3.0, math.nan, math.nan]], [1.0, 3.0], ["a", "b", "c"])
    assert pooled["a"] == 2.5 and math.isnan(pooled["b"]) and pooled["c"] == 2.0


def test_masked_utilities_sum_to_the_pooled_utilities():
    """Under SecAgg+ the server gets the weighted mean of every tensor; the two utility tensors'
    means give what ``pool`` gives from the clear utilities, NaN where nobody measured."""
    sites = [[1.0, math.nan, 2.0, -0.5], [3.0, math.nan, math.nan, 0.25], [0.5, math.nan, 4.0, 1.0]]
    weights = [1.0, 3.0, 2.0]
    sent = [utilities_to_tensors(u) for u in sites]
    mean = {n: sum(w * t[n] for w, t in zip(weights, sent)) / sum(weights) for n in sent[0]}
    tensors, utilities = utilities_from_aggregate({**mean, "out.weight": torch.ones(2)})
    expected = pool(sites, weights, list("abcd"))
    assert list(tensors) == ["out.weight"]
    for got, name in zip(utilities, "abcd"):
        assert (math.isnan(got) and math.isnan(expected[name])) or abs(got - expected[name]) < 1e-6


def test_smoother_survives_a_round_trip_between_rounds():
    smoother = UtilitySmoother(0.5, 3, 0.25)
    for u in (0.1, 0.4, -0.2, 0.3):
        smoother.update("x", u)
    back = UtilitySmoother(0.5, 3, 0.25).load_dict(json.loads(json.dumps(smoother.to_dict())))
    assert back.score("x") == smoother.score("x")
    back.update("x", 0.2), smoother.update("x", 0.2)
    assert back.score("x") == smoother.score("x")


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_federated_sea_sends_exactly_the_allocated_sets_and_saves_a_loadable_adapter(
        collection, tmp_path, monkeypatch, secure):
    """Plain, and under SecAgg+ (the audits' utilities masked and summed with the tensors)."""
    target = collection / "Task10_NewSite"
    sites = [{"dataset": str(target), "k": 1, "n_test": 1, "part": [i, 2]} for i in range(2)]
    cfg = FedConfig(foundation=str(shipped_foundation()), hospitals=sites, out=str(tmp_path / "sea"),
                    plan="sea-peft", rounds=2, local_steps=2, baseline=False, pooled=False,
                    aggregation="fedavg" if secure else "svd", server_lr=1.0, secure_aggregation=secure,
                    sea={"audit_sites": 2}, simulation_workers=1, evaluate_every=2)
    pooled_rounds = []
    original = SeaFedAvg.secure_aggregate

    def spy(self, aggregate, weights, server_round, *, start):
        pooled_rounds.append(utilities_from_aggregate(aggregate)[1])
        return original(self, aggregate, weights, server_round, start=start)

    monkeypatch.setattr(SeaFedAvg, "secure_aggregate", spy)
    report = federate(cfg)
    sea = report["sea"]
    if secure:  # both rounds allocated from summed utilities, some candidates measured
        n = len(FederatedSearch(cfg.seed, cfg.foundation, fed_sea_config()).candidates)
        assert len(pooled_rounds) == 2 and all(len(u) == n for u in pooled_rounds)
        assert all(any(math.isfinite(x) for x in u) for u in pooled_rounds)
    assert [r["round"] for r in sea["rounds"]] == [1, 2] and sea["rounds"][0]["active"]
    assert all(r["used"] <= r["budget"] for r in sea["rounds"])
    # what travelled is the head plus the candidates the server made active, nothing else
    allocated = {n for r in sea["rounds"] for n in r["active"]}
    owner = FederatedSearch(cfg.seed, cfg.foundation, fed_sea_config()).owner
    assert {owner[n] for n in report["wire_tensors"] if n in owner} == allocated
    head = {n for n, _ in load_foundation(cfg.foundation).model.out.named_parameters()}
    assert {n for n in report["wire_tensors"] if n not in owner} == {f"out.{n}" for n in head}
    assert report["bytes_total"]["ratio"] >= 40
    for site in ("site0", "site1"):
        assert report["dice"]["2"][site] >= report["dice"]["0"][site] - 0.05
    # the global adapter is a plain sea-peft artefact with the final active set
    config = json.loads((tmp_path / "sea" / "global" / "adapter_config.json").read_text())
    assert config["method"] == "sea-peft"
    assert {s["name"] for s in config["sites"]} == set(sea["rounds"][-1]["active"])
    saved = load_file(str(tmp_path / "sea" / "global" / "adapter.safetensors"))
    assert any(t.abs().sum() > 0 for n, t in saved.items() if "lora_B" in n or "affine" in n)
    model = load_adapter(tmp_path / "sea" / "global", load_foundation(cfg.foundation))
    assert model(torch.zeros(1, 1, 64, 64, 64)).shape[1] == len(config["classes"]) + 1
