"""SEA-PEFT pieces: knapsack, smoothing, ranking controller, toggles, and the loop on a toy problem
whose useful sites are known."""
from __future__ import annotations

import csv
import itertools
import random

import pytest
import torch
from torch import nn

from medpeft.adapters.base import sites_of
from medpeft.methods.sea.audit import toggle_off
from medpeft.methods.sea.fsr import RankingController
from medpeft.methods.sea.knapsack import Item, greedy_knapsack, total_cost
from medpeft.methods.sea.loop import SeaConfig, search
from medpeft.methods.sea.smoothing import UtilitySmoother
from medpeft.methods.sea.space import Variant, insert_space


def _optimum(items: list[Item], budget: int) -> float:
    best = 0.0
    for r in range(len(items) + 1):
        for combo in itertools.combinations(items, r):
            groups = [i.group for i in combo]
            if total_cost(list(combo)) <= budget and len(groups) == len(set(groups)):
                best = max(best, sum(max(i.value, 0) for i in combo))
    return best


def test_knapsack_near_optimal_and_never_over_budget():
    rng = random.Random(0)
    worst = 1.0
    for _ in range(300):
        n = rng.randint(3, 10)
        items = [Item(f"s{i}", f"g{rng.randint(0, n - 1)}", rng.randint(1, 50),
                      rng.uniform(-0.2, 1.0)) for i in range(n)]
        budget = rng.randint(10, 120)
        chosen = greedy_knapsack(items, budget)
        assert total_cost(chosen) <= budget
        assert len({i.group for i in chosen}) == len(chosen)
        assert all(i.value > 0 for i in chosen)
        opt = _optimum(items, budget)
        if opt > 0:
            worst = min(worst, sum(i.value for i in chosen) / opt)
    assert worst >= 0.9, worst


def test_one_outlier_does_not_flip_a_ranking():
    rng = random.Random(1)
    sm = UtilitySmoother(decay=0.9, window=5, lam=0.25)
    for t in range(30):
        sm.update("good", 0.02 + rng.gauss(0, 0.002))
        sm.update("weak", 0.01 + rng.gauss(0, 0.002) + (1.0 if t == 12 else 0.0))
        if t >= 5:
            assert sm.score("good") > sm.score("weak"), t


def test_controller_changes_state_at_most_once_per_guard_period():
    ctrl = RankingController(votes=2, guard=3)
    ctrl.add("s", False)
    changes = []
    for r in range(40):  # the proposal flips every other round: utility around the threshold
        proposed = {"s"} if (r // 2) % 2 == 0 else set()
        up, down = ctrl.vote(proposed)
        for name in up + down:
            ctrl.commit(name, name in up, r)
            changes.append(r)
    assert changes, "a consistent two-round vote must be able to change the state"
    assert all(b - a > ctrl.guard for a, b in zip(changes, changes[1:])), changes


def test_controller_needs_consecutive_votes():
    ctrl = RankingController(votes=3, guard=0)
    ctrl.add("s", False)
    assert ctrl.vote({"s"}) == ([], []) and ctrl.vote({"s"}) == ([], [])
    assert ctrl.vote(set()) == ([], [])  # the streak breaks
    assert ctrl.vote({"s"}) == ([], []) and ctrl.vote({"s"}) == ([], [])
    assert ctrl.vote({"s"}) == (["s"], [])


class Chunks(nn.Module):
    """Six 4-feature chunks per voxel, each read by its own linear layer; logits are the sum."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 2, bias=False) for _ in range(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(layer(x[..., 4 * i: 4 * i + 4]) for i, layer in enumerate(self.layers))


SPACE = (Variant("lora", ("layers.*",), {"rank": 1}, "r1"),
         Variant("lora", ("layers.*",), {"rank": 2}, "r2"))
DIRECTIONS = torch.nn.functional.normalize(
    torch.randn(6, 4, generator=torch.Generator().manual_seed(3)), dim=1)


def _toy_model() -> Chunks:
    model = Chunks()
    with torch.no_grad():  # "pre-trained" on a source where every chunk reads +signal
        for i, layer in enumerate(model.layers):
            layer.weight.copy_(torch.outer(torch.tensor([-1.0, 1.0]), DIRECTIONS[i]))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _target_batch(n: int, gen: torch.Generator) -> dict:
    """The planted shift: only chunks 0 and 3 carry the label, with flipped sign; others are noise."""
    y = torch.randint(0, 2, (1, n), generator=gen)
    x = torch.randn(1, n, 24, generator=gen) * 0.3
    sign = (2 * y - 1).float()[..., None]
    for chunk, amp in ((0, 1.0), (3, 0.8)):
        x[..., 4 * chunk: 4 * chunk + 4] -= amp * sign * DIRECTIONS[chunk]
    return {"x": x, "y": y}


def _dice(model: nn.Module, batch: dict) -> torch.Tensor:
    p = torch.softmax(model(batch["x"]), dim=-1)[..., 1]
    t = batch["y"].float()
    return 2 * (p * t).sum() / (p.sum() + t.sum())


def _run_toy(tmp_path, budget: int, initial: list[str]):
    torch.manual_seed(0)
    model = _toy_model()
    sites = insert_space(model, SPACE)
    gen = torch.Generator().manual_seed(1)
    audit_batch = _target_batch(4096, gen)
    batches = iter(lambda: _target_batch(512, gen), None)

    def loss_of(m, batch):
        return 1 - _dice(m, batch)

    cfg = SeaConfig(steps=160, warmup=10, audit_every=5, allocate_every=10, votes=2, guard=2)
    out = search(model, sites, batches, loss_of, score=lambda m: _dice(m, audit_batch), cfg=cfg,
                 run_dir=tmp_path,
                 rates={"lora": 0.05, "head": 0.0}, fixed=[], budget=budget, initial=initial)
    return model, sites, out, _dice(model, audit_batch).item()


def test_loop_admits_useful_sites_never_trained_at_warmup(tmp_path):
    model, sites, out, dice = _run_toy(tmp_path, budget=12, initial=["layers.1:lora[r1]"])
    chosen = {s.location for s in out.chosen}
    assert {"layers.0", "layers.3"} <= chosen, chosen  # neither was active during warm-up
    assert "layers.1" not in chosen
    assert out.used <= 12
    assert dice > 0.85
    with open(tmp_path / "allocations.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(int(r["used"]) <= 12 for r in rows)
    assert (tmp_path / "audits.csv").stat().st_size > 0
    assert (tmp_path / "transitions.csv").stat().st_size > 0


def test_budget_binds_when_useful_sites_exceed_it(tmp_path):
    _, _, out, _ = _run_toy(tmp_path, budget=6, initial=None)
    assert out.used == 6  # one rank-1 site: the budget is spent, not exceeded
    assert [s.location for s in out.chosen] in (["layers.0"], ["layers.3"])


def test_toggling_one_variant_leaves_the_other_on_the_same_layer():
    model = _toy_model()
    insert_space(model, SPACE)
    r1, r2 = [s for s in sites_of(model) if s.location == "layers.2"]
    assert {r1.tag, r2.tag} == {"r1", "r2"}
    for site in (r1, r2):
        with torch.no_grad():
            site.lora_B.normal_()
    batch = _target_batch(64, torch.Generator().manual_seed(0))
    both = model(batch["x"])
    r2.enabled = False
    only_r1 = model(batch["x"])
    r2.enabled = True
    r1.enabled = False
    without_r1 = float(_dice(model, batch).detach())
    r1.enabled = True
    base = float(_dice(model, batch).detach())
    u = toggle_off(model, lambda m: _dice(m, batch), [r1], base)
    assert r2.enabled and r1.enabled  # the audit restored r1 and never touched r2
    assert torch.equal(model(batch["x"]), both)
    assert not torch.equal(only_r1, both)
    assert set(u) == {r1.name}
    # the utility is the Dice lost when r1 alone is off, and it is not trivially zero
    assert u[r1.name] == pytest.approx(base - without_r1, abs=1e-6) and abs(u[r1.name]) > 1e-4


def test_budget_below_the_head_is_refused(tmp_path):
    model = _toy_model()
    sites = insert_space(model, SPACE)
    with pytest.raises(ValueError, match="budget"):
        search(model, sites, iter([]), None, score=None, cfg=SeaConfig(), run_dir=tmp_path,
               rates={"lora": 0.1, "head": 0.1},
               fixed=[nn.Parameter(torch.zeros(10))], budget=5)


def test_allocator_admits_by_value_per_parameter_and_calibrates_only_estimates():
    from medpeft.methods.sea.allocator import Allocator, Candidate
    switched = []
    alloc = Allocator([Candidate("a4", "L1", 10), Candidate("a16", "L1", 40), Candidate("b", "L2", 30)],
                      budget=60, fixed_cost=5, votes=1, guard=0,
                      on_switch=lambda n, on: switched.append((n, on)))
    alloc.start({"a4": 1.0, "a16": 1.5, "b": 0.9}, estimated={"a4", "a16", "b"})
    assert alloc.active == {"a4", "b"}  # a16 + b would cost 75 > 55; one variant per layer
    assert switched == [("a4", True), ("b", True)] or switched == [("b", True), ("a4", True)]
    assert alloc.predicted == {"a4": 1.0, "b": 0.9} and alloc.factor() == 1.0
    alloc.calibrate({"a4": 0.25, "b": float("nan")})  # b not measured yet: still predicted
    assert alloc.factor() == 0.25 and alloc.predicted == {"b": 0.9}
    # a4's value is now measured, b's still an estimate; a16's estimate outranks a4 per parameter
    proposed = alloc.allocate({"a4": 0.25, "a16": 4.0, "b": 0.9}, estimated={"a16"}, round_no=1,
                              when="step 20")
    assert proposed == 1 and alloc.active == {"a16"}  # b: 40 + 30 + 5 > 60; a4 replaced
    assert alloc.predicted == {"b": 0.9, "a16": 4.0}
    assert [(t["site"], t["to"]) for t in alloc.ctrl.transitions][-3:] == \
        [("a4", "inactive"), ("b", "inactive"), ("a16", "active")]
    alloc.active.add("b")  # a caller that bypasses the allocator is caught, not trusted
    with pytest.raises(RuntimeError, match="budget exceeded"):
        alloc.check()


class _DtypeProbe(nn.Module):
    """A 1x1x1 convolution that records the dtype of its output (bf16 under autocast)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, x):
        out = self.conv(x)
        self.seen.append(out.dtype)
        return out


@pytest.mark.parametrize("bf16", [True, False])
def test_search_loss_and_audit_run_the_forward_pass_in_bf16_where_native(bf16):
    """SEA-PEFT's search and audits autocast as adaptation does (they ran in float32 before)."""
    from medpeft.device import supports_bf16
    from medpeft.methods.sea.audit import SoftDiceScore
    from medpeft.pipelines.sea import training_loss
    from medpeft.train.losses import MarginalDiceCELoss
    batch = {"image": torch.rand(1, 1, 4, 4, 4), "label": torch.randint(0, 3, (1, 1, 4, 4, 4)),
             "channel_to_local": torch.arange(3)[None]}
    model = _DtypeProbe()
    loss = training_loss(MarginalDiceCELoss(), bf16=bf16)(model, batch)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    SoftDiceScore([batch], bf16=bf16)(model)
    expected = torch.bfloat16 if bf16 and supports_bf16(torch.device("cpu")) else torch.float32
    assert model.seen == [expected, expected]
