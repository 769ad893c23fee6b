"""Which parts of the model a federation trains and sends, by name (the seed's comparison).

A plan is an adaptation method with its options; the tensors it trains are what travels, except
those matching the user's ``local`` glob patterns, which each hospital keeps (personalised parts).
The frozen foundation weights never travel: every hospital loads them from its own checkpoint.

Two kinds of plan: a ``Plan`` trains a fixed set of tensors; a ``SearchedPlan`` (SEA-PEFT)
re-chooses the set every round. Each checks the settings it can honour; ``federated.flows``
holds what each kind does at the server and at a hospital.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from fnmatch import fnmatchcase

from medpeft.adapters.kinds import SWIN
from medpeft.methods import SEA
from medpeft.methods.sea.loop import SeaConfig

# Few audits (one a round) call for a shorter memory than the central search's.
FEDERATED_SEA = {"decay": 0.5, "window": 3, "votes": 2, "guard": 1, "audit_sites": 8}
# where SEA-PEFT, the default, cannot go (differential privacy, per-hospital tensors): the fixed
# plan under 1% of the weights that federates best on v7b and v8 (docs/federated.md "Federated plans
# compared": level with lora+affine at half its bytes; on v8 0.763 at federate's 3 x 40, 3 seeds)
BEST_FIXED = "affine"
USE_BEST_FIXED = f"use a fixed plan ({BEST_FIXED}, the best measured under 1% of the weights)"


def fed_sea_config(overrides: dict | None = None) -> SeaConfig:
    """Federated SEA-PEFT settings: ``budget``, smoother and controller (the central search's
    step schedule does not apply: hospitals audit once a round)."""
    unknown = sorted(set(overrides or {}) - {f.name for f in fields(SeaConfig)})
    if unknown:
        raise ValueError(f"sea: unknown settings {unknown}; known: {sorted(FEDERATED_SEA)} "
                         "and budget, lam")
    cfg = replace(SeaConfig(), **{**FEDERATED_SEA, **(overrides or {})})
    if cfg.budget <= 0 or cfg.votes < 1 or cfg.audit_sites < 1:
        raise ValueError(f"federated sea-peft: budget, votes and audit_sites must be positive ({cfg})")
    return cfg


def server_lr_refused(server_lr: float, name: str, aggregation: str) -> ValueError:
    return ValueError(f"server_lr {server_lr} moves each tensor along its mean update: it needs "
                      f"aggregation fedavg or ffa, not svd's re-factorised LoRA pairs (got plan "
                      f"{name!r}, aggregation {aggregation!r}); for svd, set server_lr: 1 "
                      "(medpeft federate --server-lr 1)")


@dataclass(frozen=True)
class Plan:
    """A fixed set of trained tensors: every round trains and sends the same ones."""

    method: str
    options: dict = field(default_factory=dict)
    doc: str = ""

    @property
    def has_lora_pairs(self) -> bool:
        """Whether its adapters hold LoRA pairs (the ones svd / fedavg / ffa tell apart)."""
        return "lora" in self.method.split("+")

    def check(self, *, name: str, aggregation: str, dp: dict, local: list[str], sea: dict,
              secure: bool = False, server_lr: float = 1.0) -> None:
        """Refuse the federation settings this plan cannot honour (messages name the setting)."""
        if server_lr != 1 and aggregation == "svd" and self.has_lora_pairs:
            raise server_lr_refused(server_lr, name, aggregation)
        if sea:
            raise ValueError(f"'sea' settings apply to plan {SEA}, not {name}")
        if secure and aggregation not in ("fedavg", "ffa"):
            raise ValueError(f"secure_aggregation with aggregation {aggregation!r}: the server "
                             "holds only the sum, so choose fedavg or ffa (svd needs each "
                             "hospital's own LoRA factors)")
        if dp and aggregation == "svd":
            raise ValueError("dp: the noise is calibrated to a weighted mean of clipped updates: "
                             "use aggregation fedavg or ffa (got svd)")


@dataclass(frozen=True)
class SearchedPlan(Plan):
    """SEA-PEFT: one global active set, re-chosen each round from the hospitals' audits."""

    def check(self, *, name: str, aggregation: str, dp: dict, local: list[str], sea: dict,
              secure: bool = False, server_lr: float = 1.0) -> None:
        if server_lr != 1 and aggregation == "svd":  # re-factorised pairs: no mean update to scale
            raise server_lr_refused(server_lr, name, aggregation)
        fed_sea_config(sea)
        if secure and aggregation != "fedavg":
            raise ValueError(f"secure_aggregation with plan {name}: the server holds only the "
                             f"sum, so use aggregation fedavg (got {aggregation})")
        if dp:
            raise ValueError(f"dp: the noise is calibrated to a fixed set of tensors; plan {name} "
                             f"changes its set every round: {USE_BEST_FIXED}")
        if local:
            raise ValueError(f"plan {name} shares one active set: 'local' tensors are not "
                             f"supported with it: {USE_BEST_FIXED}")


PLANS: dict[str, Plan] = {
    "encoder-lora+head": Plan("lora", {"targets": [f"{SWIN}.attn.qkv", f"{SWIN}.attn.proj"]},
                              "LoRA on the Swin encoder's attention, plus the head"),
    "lora-everywhere": Plan("lora", {"targets": ["swinViT.*", "encoder*", "decoder*"], "rank": 4},
                            "LoRA r4 on every linear and convolution layer, plus the head "
                            "(4% of the phantom foundation: 24x fewer bytes than full FT)"),
    "affine": Plan("affine", {}, "norm scale and shift everywhere, plus the head (6,791 weights "
                   "on the phantom foundation: plain averaging is exact)"),
    "lora+affine": Plan("lora+affine", {}, "LoRA at the lora method's sites and norm scale and "
                        "shift everywhere, plus the head (15,431 weights on the phantom "
                        "foundation)"),
    "decoder": Plan("decoder", {}, "fine-tune the decoder and the head"),
    "full": Plan("full", {}, "fine-tune every weight (the communication baseline)"),
    SEA: SearchedPlan(SEA, {}, "SEA-PEFT: one global active set, re-chosen each round from the hospitals' "
                       "audits under the budget (settings: the federation's `sea`)"),
}

# the plans whose adapters are LoRA pairs: the ones the svd / fedavg / ffa aggregations tell apart
LORA_PLANS = tuple(name for name, plan in PLANS.items() if plan.has_lora_pairs)


def plan_named(name: str) -> Plan:
    if name not in PLANS:
        raise ValueError(f"unknown federation plan {name!r}; choose from {', '.join(PLANS)}")
    return PLANS[name]


def is_local(name: str, local: list[str]) -> bool:
    """Whether tensor ``name`` stays at its hospital (matches one of the ``local`` patterns)."""
    return any(fnmatchcase(name, p) for p in local)


def split_state(state: dict, local: list[str]) -> tuple[dict, dict]:
    """(tensors that travel, tensors kept at the hospital)."""
    shared = {n: t for n, t in state.items() if not is_local(n, local)}
    kept = {n: t for n, t in state.items() if is_local(n, local)}
    return shared, kept
