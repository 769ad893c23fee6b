"""Which parts of the model a federation trains and sends, by name (the seed's comparison).

A plan is an adaptation method with its options; the tensors it trains are what travels, except
those matching the user's ``local`` glob patterns, which each site keeps (personalised parts).
The frozen foundation weights never travel: every site loads them from its own checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from medpeft.adapters.kinds import SWIN
from medpeft.methods import SEA


@dataclass(frozen=True)
class Plan:
    method: str
    options: dict = field(default_factory=dict)
    doc: str = ""


PLANS: dict[str, Plan] = {
    "encoder-lora+head": Plan("lora", {"targets": [f"{SWIN}.attn.qkv", f"{SWIN}.attn.proj"]},
                              "LoRA on the Swin encoder's attention, plus the head"),
    "lora-everywhere": Plan("lora", {"targets": ["swinViT.*", "encoder*", "decoder*"], "rank": 4},
                            "LoRA r4 on every linear and convolution layer, plus the head "
                            "(4% of the phantom foundation: 24x fewer bytes than full FT)"),
    "decoder": Plan("decoder", {}, "fine-tune the decoder and the head"),
    "full": Plan("full", {}, "fine-tune every weight (the communication baseline)"),
    SEA: Plan(SEA, {}, "SEA-PEFT: one global active set, re-chosen each round from the sites' "
                       "audits under the budget (settings: the federation's `sea`)"),
}

# the plans whose adapters are LoRA pairs: the ones the svd / fedavg / ffa aggregations tell apart
LORA_PLANS = tuple(name for name, plan in PLANS.items() if plan.method == "lora")


def plan_named(name: str) -> Plan:
    if name not in PLANS:
        raise ValueError(f"unknown federation plan {name!r}; choose from {', '.join(PLANS)}")
    return PLANS[name]


def is_local(name: str, local: list[str]) -> bool:
    """Whether tensor ``name`` stays at its site (matches one of the ``local`` patterns)."""
    return any(fnmatchcase(name, p) for p in local)


def split_state(state: dict, local: list[str]) -> tuple[dict, dict]:
    """(tensors that travel, tensors kept at the site)."""
    shared = {n: t for n, t in state.items() if not is_local(n, local)}
    kept = {n: t for n, t in state.items() if is_local(n, local)}
    return shared, kept
