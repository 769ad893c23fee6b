"""Adaptation methods: which sites exist and which parameters train. One entry point for all.

Fine-tuning presets unfreeze backbone parts (``full``, ``decoder``, ``head``); PEFT presets insert
adapter sites (``lora``, ``bitfit``, ``affine``, ``adaptformer``, ``adapter``, ``conv-adapter``,
``ssf``, ``ia3``) and combinations joined by ``+`` (``lora+affine``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from medpeft.adapt_defaults import ADAPT_AUGMENT as ADAPT_AUGMENT
from medpeft.adapt_defaults import ADAPT_BF16 as ADAPT_BF16
from medpeft.adapt_defaults import ADAPT_STEPS
from medpeft.adapt_defaults import DEFAULT_METHOD as DEFAULT_METHOD
from medpeft.adapters.base import AdapterSite
from medpeft.adapters.kinds import KINDS
from medpeft.methods.finetune import PARTS_TRAINED, SCRATCH, unfreeze_parts
from medpeft.methods.peft import add_peft, add_searched, peft_kinds
from medpeft.train.checkpoints import trainable_parameters

PRESETS = ("full", "decoder", "decoder-skips", "head", "lora", "bitfit", "affine", "adaptformer",
           "adapter", "ssf", "ia3", "lora+affine")
SEA = "sea-peft"  # searched topology: the sites are chosen by medpeft.methods.sea
# Rates that suit each part in the few-shot regime (swept on the phantom target site at K=5:
# benchmarks/lr_sweep.py); ``scratch`` takes the foundation's own pre-training rate. A PEFT method
# trains each adapter kind and the head as their own groups.
DEFAULT_LR = {"scratch": 2e-3, "full": 1e-3, "decoder": 3e-3, "decoder-skips": 1e-3, "head": 1e-2,
              "lora": 3e-3, "bitfit": 1e-2, "affine": 1e-2, "adaptformer": 3e-3, "adapter": 3e-3,
              "conv-adapter": 3e-3, "ssf": 1e-2, "ia3": 1e-2}


@dataclass(frozen=True)
class ShotScaling:
    """How a method's recipe grows with K support volumes: rate DEFAULT_LR x min(1 +
    ``rate_per_volume`` x (K - 1), ``rate_cap``) (an adapter method's kinds; the head keeps its
    rate), steps ``steps_per_volume`` x K within [ADAPT_STEPS, ``steps_cap``]."""

    rate_cap: int = 1
    steps_per_volume: int = 0
    steps_cap: int = ADAPT_STEPS
    short_rate_cap: int = 1  # the cap on a schedule shorter than ADAPT_STEPS (``rate_growth``)
    rate_per_volume: int = 1


# Measured for decoder tuning and full fine-tuning only (v5 foundation, mean of seeds 0/1/2, each
# on its own phantom; benchmarks/lr_sweep.py, docs/quality.md "Adaptation recipe"). Decoder rates at 240
# steps: K=1 best at 3e-3 (0.614; 6e-3 0.605, 1.2e-2 0.565); K=5 0.749 / 0.762 / 0.766 / 0.766 at
# 3e-3 / 6e-3 / 1.2e-2 / 2.4e-2; K=10 0.767 / 0.780 / 0.786 / 0.783. Decoder steps at 1.2e-2: 480
# beat 240 at every seed, K=5 0.773 against 0.766, K=10 0.814 against 0.786; at K=10 960 steps
# beat 480 at every seed too (0.826; more not measured).
# Full fine-tuning, 240 steps, K=5: 0.769 / 0.714 / 0.750 at 1e-3 against 0.825 / 0.755 / 0.804
# at 4e-3. Given the decoder's step growth as well (the peers benchmark's splits, 4e-3): K=5 480
# steps 0.842 / 0.835 / 0.842 against 240 steps' 0.826 / 0.804 / 0.808; K=10 960 steps against
# 240, ahead at every seed too (benchmarks/results/steps-v5/README.md).
# SEA-PEFT's refine (its search is unchanged) takes the decoder's growth; every kind's rate grows,
# the head's does not (benchmarks/sea_refine.py, results/sea-refine-v5.md, seeds 0/1/2): K=5, 240
# steps at the base rates 0.754, 480 steps 0.774, 480 at 4x 0.791; K=10, 240 0.768, 960 0.821,
# 960 at 4x 0.831, better at every seed.
# The decoder with the encoder's skip blocks took full fine-tuning's recipe on v5 (measured that
# way: benchmarks/results/steps-v5/, K = 1 / 5 / 10 on the peers benchmark's splits); on v6 its
# rate grows on its own (below), its steps as everyone's.
# The grown rates were measured on schedules of ADAPT_STEPS or more (240-960 steps). On short ones
# the decoder's collapses: FSEFT's 80-step novel-organ cut on v6 at 4x its rate (1.2e-2) ended at
# Dice 0.000 with the loss flat at ~1.0 (spleen K=5 seed 1, gallbladder K=10 seed 0), where 3e-3
# reached 0.508 / 0.407 on the same manifests (docs/fseft.md). decoder-skips' 4x (4e-3)
# holds: the suite's K=5 in 60 steps (tests/test_organ_floor.py) 0.788 against 0.733 at 1e-3,
# every organ >= 0.61 against >= 0.54 (both bf16; 4e-3 in float32: 0.789). Full fine-tuning and
# SEA-PEFT's kinds were not measured on short schedules, so they keep their base rates there.
GROWN_WITH_K = ShotScaling(rate_cap=4, steps_per_volume=96, steps_cap=960)
SHOT_SCALING = {method: GROWN_WITH_K for method in ("decoder", "full", SEA)}
# decoder-skips on v6 (64^3 ROI), re-checked off the benchmark on phantoms 1 and 2 at its default
# steps: 8e-3 beat 4e-3 at K=5 (0.814 / 0.833 against 0.808 / 0.822; 1.6e-2 0.806 / 0.848) and
# at K=10 (0.848 / 0.860 against 0.838 / 0.854): 8x its K=1 rate from K=5 on, 3x / 5x / 7x at
# K=2 / 3 / 4 (interpolated, not measured); 4x on short schedules, where 4e-3 was measured
# (benchmarks/results/foundation-v6-candidate/k5-recipe/).
SHOT_SCALING["decoder-skips"] = replace(GROWN_WITH_K, rate_cap=8, rate_per_volume=2, short_rate_cap=4)


# With one support volume a decoder adapter calls uncertain organ voxels background: on the
# phantom's new site its K=1 models miss far more organ voxels than they invent. Lowering the
# background's logit by an offset, folded into the head's bias after adaptation: at 1.0, K=1
# 0.642 / 0.574 / 0.625 -> 0.681 / 0.599 / 0.659 (rate-study seeds 0/1/2) and 0.666 / 0.656 ->
# 0.665 / 0.687 (peers seeds 1/2); 1.5 had the same mean gain with a worse worst case (-0.010).
# At K=5 every offset of 1 or more lost (0.5: +0.003), so K >= 2 keeps none
# (benchmarks/background_offset.py, results/background-offset-v5.md). decoder-skips the same,
# measured on six K=1 adapters of its own (rate-study seeds 0/1/2 and the peers splits): +0.025
# on the mean at 1.0, 5 of 6 gaining (the sixth -0.009), so the same rule. With the v6 foundation
# (64^3 ROI) decoder-skips takes 2.0: total offsets 0.5-3.0 on its K=1 adapters of phantoms 1 and 2
# (not the benchmark's) gave 0.646 / 0.670 / 0.682 / 0.686 / 0.685 / 0.679, 2.0 ahead on both
# (benchmarks/results/foundation-v6-candidate/k1-recipe); decoder tuning was not re-measured.
BACKGROUND_OFFSET: dict[str, dict[int, float]] = {"decoder": {1: 1.0}, "decoder-skips": {1: 2.0}}


def background_offset(method: str, shots: int) -> float:
    """The logit offset ``method``'s adapter with ``shots`` support volumes takes off the
    background (0 where none was measured to help)."""
    return BACKGROUND_OFFSET.get(method, {}).get(shots, 0.0)


def _scaling(method: str) -> ShotScaling:
    """``method``'s growth with K (none for the parts not measured)."""
    return SHOT_SCALING.get(method, ShotScaling())


def adapt_steps(method: str, shots: int) -> int:
    """`medpeft adapt`'s default steps for ``method`` with ``shots`` support volumes."""
    scaling = _scaling(method)
    return min(max(ADAPT_STEPS, scaling.steps_per_volume * shots), scaling.steps_cap)


def rate_growth(method: str, shots: int, steps: int | None = None) -> int:
    """The factor ``method``'s default rates take for ``shots`` support volumes: 1 +
    ``rate_per_volume`` x (K - 1) up to the cap, or up to the short cap on a schedule shorter than
    ADAPT_STEPS (``steps``; None: the default, never shorter)."""
    scaling = _scaling(method)
    short = steps is not None and steps < ADAPT_STEPS
    grown = 1 + scaling.rate_per_volume * (max(shots, 1) - 1)
    return min(grown, scaling.short_rate_cap if short else scaling.rate_cap)


def lr_plan(method: str, shots: int = 1, steps: int | None = None) -> dict[str, float]:
    """The default rate of each parameter group ``method`` trains with ``shots`` support volumes
    for ``steps`` steps (None: :func:`adapt_steps`), by group name."""
    check_method(method)
    grow = rate_growth(method, shots, steps)
    if method in PARTS_TRAINED:
        return {method: DEFAULT_LR[method] * grow}
    kinds = list(KINDS) if method == SEA else peft_kinds(method)
    return {**{k: DEFAULT_LR[k] * grow for k in kinds}, "head": DEFAULT_LR["head"]}


@dataclass
class MethodState:
    name: str
    options: dict = field(default_factory=dict)
    sites: list[AdapterSite] = field(default_factory=list)


def check_method(name: str) -> None:
    """Raise a clear error for a method name that is neither a preset nor a kind combination."""
    if name in PARTS_TRAINED or name == SEA:
        return
    try:
        peft_kinds(name)
    except ValueError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(PRESETS)}, {SEA}, {SCRATCH} (a "
                         f"peer: the same network from random weights), or join "
                         f"adapter kinds with '+' ({', '.join(KINDS)})") from None


def apply_method(model: nn.Module, name: str, options: dict | None = None) -> MethodState:
    """Prepare ``model`` in place for ``name``; afterwards ``requires_grad`` marks what trains."""
    options = dict(options or {})
    check_method(name)
    if name in PARTS_TRAINED:
        unfreeze_parts(model, name)
        return MethodState(name, options)
    if name == SEA:
        return MethodState(name, options, add_searched(model, options))
    return MethodState(name, options, add_peft(model, name, options))


def trainable_state(model: nn.Module) -> dict:
    """The tensors a method trains, by parameter name: the adapter's delta."""
    return {n: p.detach().clone() for n, p in trainable_parameters(model).items()}


def base_parameter_count(model: nn.Module) -> int:
    """Parameters of the backbone itself, not counting inserted adapter parameters."""
    adapter = {id(p) for s in model.modules() if isinstance(s, AdapterSite)
               for p in s.adapter_parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in adapter)


def group_rates(method: str, lr: float | dict[str, float] | None = None, *,
                shots: int = 1, steps: int | None = None) -> dict[str, float]:
    """Each group's rate: the defaults for ``shots`` support volumes and ``steps`` steps, all set
    to ``lr`` (a number) or updated by ``lr`` (a dict)."""
    plan = lr_plan(method, shots, steps)
    if isinstance(lr, dict):
        unknown = set(lr) - set(plan)
        if unknown:
            raise ValueError(f"{method} trains groups {sorted(plan)}; no group {sorted(unknown)}")
        return {**plan, **lr}
    return {name: lr for name in plan} if lr else plan


def param_groups(model: nn.Module, state: MethodState,
                 lr: float | dict[str, float] | None = None) -> list[dict]:
    """Optimizer groups: each adapter kind and the head at their own rate (see ``group_rates``).

    Every trainable parameter lands in exactly one group.
    """
    plan = group_rates(state.name, lr)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if state.name in PARTS_TRAINED:
        groups = {state.name: trainable}
    else:
        groups = {kind: [] for kind in plan}
        for site in state.sites:
            groups[site.kind] += [p for p in site.adapter_parameters() if p.requires_grad]
        groups["head"] = [p for p in model.out.parameters() if p.requires_grad]
    return [{"name": name, "params": params, "lr": plan[name]}
            for name, params in groups.items() if params]
