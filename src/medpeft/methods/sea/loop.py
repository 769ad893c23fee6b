"""The search-audit-allocate loop: train the active sites, audit all, re-select under the budget.

Every candidate site is inserted once and starts switched off; AdamW skips parameters without
gradients, so only the active sites train, and an inactive site keeps its weights. After
``warmup`` steps, every ``audit_every`` steps the audit scores the sites and feeds the smoother;
every ``allocate_every`` steps the knapsack proposes an active set, the ranking controller turns
its proposals into (rare) state changes, and the loop carries them out within the budget. The
budget (adapter sites plus the always-trained head) is checked after every change and step; the
allocation itself is ``allocator.Allocator``, which federated SEA-PEFT shares.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import yaml
from torch import nn

from medpeft.adapters.base import AdapterSite
from medpeft.io import append_csv
from medpeft.methods.sea.allocator import Allocator, Candidate
from medpeft.methods.sea.audit import Score, first_order, measure, toggle_off, toggle_on
from medpeft.methods.sea.smoothing import UtilitySmoother
from medpeft.progress import Reporter


@dataclass
class SeaConfig:
    """Schedule and stabiliser settings. ``budget``: a fraction of the model (< 1) or a count."""

    budget: float = 0.01
    steps: int = 160
    warmup: int = 20
    audit_every: int = 10
    allocate_every: int = 20
    audit_sites: int = 4  # trained sites toggled per audit, in rotation (bounds the audit's cost)
    decay: float = 0.9
    window: int = 5
    lam: float = 0.25
    votes: int = 2
    guard: int = 2
    seed: int = 0

    def budget_params(self, n_model: int) -> int:
        return int(self.budget * n_model) if self.budget < 1 else int(self.budget)

    def to_dict(self) -> dict:
        return asdict(self)


def read_sea_settings(path: str | Path) -> dict:
    """SEA-PEFT's search settings from a YAML file (``configs/sea-peft.yaml`` lists them all);
    an unknown or mistyped entry is named with the file."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the SEA-PEFT settings ({err})") from err
    known = {f.name for f in fields(SeaConfig)} - {"seed"}  # the seed is the run's own
    if not isinstance(raw, dict) or set(raw) - known:
        raise ValueError(f"{path}: unknown SEA-PEFT settings "
                         f"{sorted(set(raw) - known) if isinstance(raw, dict) else raw!r}; "
                         f"known: {', '.join(sorted(known))}")
    for name, value in raw.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{path}: {name} must be a number, not {value!r}")
    return raw


def sea_config(k: int, **overrides) -> SeaConfig:
    """The default schedule for K support volumes (longer searches for more volumes: 120 / 160 /
    200 steps for K = 1 / 5 / 10), with the ``overrides`` that are not None."""
    steps = 120 if k <= 1 else 160 if k <= 5 else 200
    cfg = replace(SeaConfig(steps=steps), **{k: v for k, v in overrides.items() if v is not None})
    if cfg.budget <= 0:
        raise ValueError(f"budget must be positive, got {cfg.budget}")
    if min(cfg.audit_every, cfg.allocate_every, cfg.votes) < 1 or cfg.warmup < 0:
        raise ValueError("audit_every, allocate_every and votes must be >= 1")
    return cfg


@dataclass
class SearchOutcome:
    chosen: list[AdapterSite]
    budget: int
    used: int
    audit_seconds: float
    seconds: float
    transitions: list[dict] = field(default_factory=list)


class _Search:
    """The central search's state: audits feed the smoother, whose scores the allocator ranks."""

    def __init__(self, sites, fixed, scores, cfg, *, rates, budget, run_dir):
        self.sites = {s.name: s for s in sites}
        if len(self.sites) != len(sites):
            raise ValueError("two candidate sites share a name; give variants distinct tags")
        self.allocator = Allocator([Candidate(s.name, s.location, s.n_params) for s in sites],
                                   budget=budget, fixed_cost=sum(p.numel() for p in fixed),
                                   votes=cfg.votes, guard=cfg.guard, on_switch=self._enable)
        self.scores, self.cfg, self.run_dir = scores, cfg, run_dir
        self.n_audits = 0
        self.step_size = {k: r * cfg.audit_every for k, r in rates.items()}
        self.smoother = UtilitySmoother(cfg.decay, cfg.window, cfg.lam)
        self.trained: set[str] = set()
        self.rotation = 0
        self.round = 0
        self.audit_seconds = 0.0

    def _enable(self, name: str, on: bool) -> None:
        self.sites[name].enabled = on

    def active(self) -> list[AdapterSite]:
        return [s for s in self.sites.values() if s.enabled]

    def values(self) -> dict[str, float]:
        return {n: self.smoother.score(n) or 0.0 for n in self.sites}

    def untrained(self) -> set[str]:
        """Sites whose score is still a first-order estimate (never trained)."""
        return set(self.sites) - self.trained

    # audit -----------------------------------------------------------------------------------
    def audit(self, model: nn.Module, step: int, estimate_fresh: bool = True) -> None:
        t0 = time.perf_counter()
        model.eval()
        score = self.scores[self.n_audits % len(self.scores)]  # one audit crop per round
        self.n_audits += 1
        base = measure(model, score)
        trained = [s for s in self.sites.values() if s.name in self.trained]
        n = min(self.cfg.audit_sites, len(trained))
        chosen = [trained[(self.rotation + i) % len(trained)] for i in range(n)]
        self.rotation += n
        rows = [("toggle-off", toggle_off(model, score, [s for s in chosen if s.enabled], base)),
                ("toggle-on", toggle_on(model, score, [s for s in chosen if not s.enabled], base))]
        fresh = [s for s in self.sites.values() if not s.enabled and s.name not in self.trained]
        estimate = first_order(model, score, fresh, self.step_size) if estimate_fresh else {}
        rows.append(("first-order", {n: v * self.allocator.factor() for n, v in estimate.items()}))
        model.train()
        self.allocator.calibrate(rows[0][1])  # admitted sites' first measurements
        log = []
        for source, utilities in rows:
            for name, u in utilities.items():
                self.smoother.update(name, u)
                log.append({"step": step, "site": name, "kind": self.sites[name].kind,
                            "active": self.sites[name].enabled, "source": source, "utility": u,
                            "score": self.smoother.score(name), "dice": base})
        append_csv(self.run_dir / "audits.csv", log)
        self.audit_seconds += time.perf_counter() - t0

    # allocation ------------------------------------------------------------------------------
    def start(self, initial: list[str] | None) -> None:
        self.allocator.start(self.values(), estimated=self.untrained(), initial=initial)

    def allocate(self, step: int) -> None:
        self.round += 1
        proposed = self.allocator.allocate(self.values(), estimated=self.untrained(),
                                           round_no=self.round, when=f"step {step}")
        active = self.active()
        append_csv(self.run_dir / "allocations.csv", [{
            "round": self.round, "step": step, "active": len(active),
            "used": self.allocator.used(), "budget": self.allocator.budget, "proposed": proposed,
            "calibration": self.allocator.factor(), "sites": " ".join(s.name for s in active)}])


def search(model: nn.Module, sites: list[AdapterSite], batches: Iterator, loss_of: Callable,
           *, score: Score | list[Score], cfg: SeaConfig, run_dir: Path, rates: dict[str, float],
           fixed: list[nn.Parameter], budget: int, initial: list[str] | None = None,
           progress: Reporter | None = None) -> SearchOutcome:
    """Run the search on ``model`` (candidate ``sites`` inserted, backbone frozen).

    ``loss_of(model, batch)`` is the training loss, ``score(model)`` the audit's Dice (a list:
    one per audit round, in rotation), ``rates``
    the learning rate of each site kind and of ``"head"`` (the ``fixed`` parameters, which
    always train and count against ``budget``). ``initial`` forces the starting active set
    (default: the knapsack on first-order estimates).
    """
    run_dir = Path(run_dir)
    for name in ("audits.csv", "allocations.csv", "transitions.csv"):
        (run_dir / name).unlink(missing_ok=True)
    state = _Search(sites, fixed, score if isinstance(score, list) else [score], cfg, rates=rates,
                    budget=budget, run_dir=run_dir)
    for s in sites:
        for p in s.adapter_parameters():
            p.requires_grad_(True)
    groups = [{"name": k, "lr": rates[k],
               "params": [p for s in sites if s.kind == k for p in s.adapter_parameters()]}
              for k in sorted({s.kind for s in sites})]
    optimizer = torch.optim.AdamW(groups + [{"name": "head", "params": fixed, "lr": rates["head"]}],
                                  weight_decay=1e-5)
    torch.manual_seed(cfg.seed)
    for s in sites:
        s.enabled = False
    if initial is None:  # first-order estimates of every (fresh) site pick the starting set
        state.audit(model, 0)
    state.start(initial)
    task = progress.add_task("SEA-PEFT search", total=cfg.steps) if progress else None
    t0 = time.perf_counter()
    model.train()
    for step in range(1, cfg.steps + 1):
        warm = min(1.0, step / max(1, cfg.warmup // 2))
        for g in optimizer.param_groups:
            g["lr"] = rates[g["name"]] * warm
        optimizer.zero_grad(set_to_none=True)
        loss_of(model, next(batches)).backward()
        optimizer.step()
        state.trained.update(s.name for s in state.active())
        if step >= cfg.warmup and step % cfg.audit_every == 0:  # fresh estimates: before allocations
            state.audit(model, step, estimate_fresh=step % cfg.allocate_every == 0)
        if step >= cfg.warmup and step % cfg.allocate_every == 0 and step < cfg.steps:
            state.allocate(step)
        state.allocator.check()
        if progress:
            progress.update(task, advance=1, description=f"SEA-PEFT search {len(state.active())} "
                            f"sites, {state.allocator.used():,}/{budget:,} params")
    transitions = state.allocator.ctrl.transitions
    append_csv(run_dir / "transitions.csv", transitions)
    model.eval()
    return SearchOutcome(state.active(), budget, state.allocator.used(), state.audit_seconds,
                         time.perf_counter() - t0, transitions)
