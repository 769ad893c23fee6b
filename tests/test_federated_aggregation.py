"""Federated aggregation: exact LoRA averaging, the server step, replies left out by name."""
from __future__ import annotations

import time

import pytest
import torch
from conftest import measured_federated_plans, measured_federated_schedules

from medpeft.federated.aggregation import aggregate_states, lora_pairs, lora_update
from medpeft.federated.config import FedConfig
from medpeft.federated.hospital import build_model
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


def test_server_lr_moves_the_global_tensors_by_that_multiple_of_the_mean_update(monkeypatch):
    """FedOpt's server step: a round that starts from 1.0 and averages hospitals at 2.0 and 4.0
    (weights 1, 1) ends at 1 + 2 x (3 - 1) = 5 with server_lr 2; aggregations that re-factorise
    LoRA pairs refuse it by name."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from medpeft.federated.accounting import Ledger
    from medpeft.federated.strategy import WEIGHT, AdapterFedAvg, to_arrays
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


def test_a_hospital_that_drops_out_is_left_out_by_name_and_the_round_goes_on():
    """Of three hospitals asked, one SuperNode went offline (Flower's error reply) and one never
    answered (the round's timeout): both are named, the round averages the one that replied."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, MetricRecord, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode

    from medpeft.federated.accounting import Ledger
    from medpeft.federated.strategy import WEIGHT, AdapterFedAvg, to_arrays
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


def test_the_defaults_are_the_best_measured_setting_and_every_plan_accepts_them():
    """`medpeft federate`'s defaults are the best federated setting measured on v8: 3 x 40, the
    steps table's longest and best schedule, with the plan that federates best there (SEA-PEFT)
    at its better server step (1, plain FedAvg); and with them every plan and SecAgg+ run without
    a second setting. DP, which SEA-PEFT refuses, names the best fixed plan, which takes it."""
    from medpeft.federated.plans import BEST_FIXED, PLANS
    measured = measured_federated_schedules()  # affine's steps table
    best = max(measured, key=lambda schedule: measured[schedule][0])  # by federated Dice
    three = [{"dataset": f"d{i}"} for i in range(3)]
    default = FedConfig(foundation="f", hospitals=three)
    assert (default.rounds, default.local_steps) == best[:2] == (3, 40)
    at_step = {1.0: measured_federated_plans("federated-seeds-v8-3x40-slr1.md"),
               1.5: measured_federated_plans("federated-seeds-v8-3x40-slr1.5.md")}  # both 3 x 40
    assert default.server_lr == max(at_step, key=lambda step: at_step[step][default.plan]) == 1.0
    plans = at_step[default.server_lr]
    assert default.plan == max(plans, key=plans.get) and BEST_FIXED in plans
    for plan in PLANS:
        FedConfig(foundation="f", hospitals=three, plan=plan).check()
        FedConfig(foundation="f", hospitals=three, plan=plan, secure_aggregation=True).check()
    dp = {"clipping_norm": 1.0, "noise_multiplier": 1.0}
    with pytest.raises(ValueError, match=f"dp: .*use a fixed plan \\({BEST_FIXED}"):
        FedConfig(foundation="f", hospitals=three, dp=dp).check()
    FedConfig(foundation="f", hospitals=three, plan=BEST_FIXED, dp=dp).check()
