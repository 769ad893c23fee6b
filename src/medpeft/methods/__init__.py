"""Adaptation methods: which sites exist and which parameters train. One entry point for all."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from medpeft.adapters.base import AdapterSite
from medpeft.methods.finetune import PARTS_TRAINED, unfreeze_parts
from medpeft.methods.peft import add_lora

METHODS = ("full", "decoder", "head", "lora")
# Defaults that suit each method in the few-shot regime (tuned on the phantom target site).
DEFAULT_LR = {"full": 1e-3, "decoder": 3e-3, "head": 1e-2, "lora": 3e-3}


@dataclass
class MethodState:
    name: str
    options: dict = field(default_factory=dict)
    sites: list[AdapterSite] = field(default_factory=list)


def apply_method(model: nn.Module, name: str, options: dict | None = None) -> MethodState:
    """Prepare ``model`` in place for ``name``; afterwards ``requires_grad`` marks what trains."""
    options = dict(options or {})
    if name in PARTS_TRAINED:
        unfreeze_parts(model, name)
        return MethodState(name, options)
    if name == "lora":
        sites = add_lora(model, rank=int(options.get("rank", 4)), alpha=options.get("alpha"),
                         targets=options.get("targets"))
        return MethodState(name, options, sites)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def trainable_state(model: nn.Module) -> dict:
    """The tensors a method trains, by parameter name: the adapter's delta."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def base_parameter_count(model: nn.Module) -> int:
    """Parameters of the backbone itself, not counting inserted adapter parameters."""
    adapter = {id(p) for s in model.modules() if isinstance(s, AdapterSite)
               for p in s.adapter_parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in adapter)
