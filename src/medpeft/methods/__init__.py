"""Adaptation methods: which sites exist and which parameters train. One entry point for all.

Fine-tuning presets unfreeze backbone parts (``full``, ``decoder``, ``head``); PEFT presets insert
adapter sites (``lora``, ``bitfit``, ``affine``, ``adaptformer``, ``adapter``, ``conv-adapter``,
``ssf``, ``ia3``) and combinations joined by ``+`` (``lora+affine``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from medpeft.adapters.base import AdapterSite
from medpeft.adapters.kinds import KINDS
from medpeft.methods.finetune import PARTS_TRAINED, unfreeze_parts
from medpeft.methods.peft import add_peft, peft_kinds

PRESETS = ("full", "decoder", "head", "lora", "bitfit", "affine", "adaptformer", "adapter", "ssf",
           "ia3", "lora+affine")
METHODS = ("full", "decoder", "head", "lora")  # the demo's comparison
# Defaults that suit each method in the few-shot regime (tuned on the phantom target site).
DEFAULT_LR = {"full": 1e-3, "decoder": 3e-3, "head": 1e-2, "lora": 3e-3, "bitfit": 1e-2,
              "affine": 1e-2, "adaptformer": 3e-3, "adapter": 3e-3, "conv-adapter": 3e-3,
              "ssf": 1e-2, "ia3": 1e-2}


def default_lr(method: str) -> float:
    """A preset's learning rate; a combination takes the smallest of its kinds' rates."""
    check_method(method)
    if method in PARTS_TRAINED:
        return DEFAULT_LR[method]
    return min(DEFAULT_LR[k] for k in peft_kinds(method))


@dataclass
class MethodState:
    name: str
    options: dict = field(default_factory=dict)
    sites: list[AdapterSite] = field(default_factory=list)


def check_method(name: str) -> None:
    """Raise a clear error for a method name that is neither a preset nor a kind combination."""
    if name in PARTS_TRAINED:
        return
    try:
        peft_kinds(name)
    except ValueError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(PRESETS)} or join "
                         f"adapter kinds with '+' ({', '.join(KINDS)})") from None


def apply_method(model: nn.Module, name: str, options: dict | None = None) -> MethodState:
    """Prepare ``model`` in place for ``name``; afterwards ``requires_grad`` marks what trains."""
    options = dict(options or {})
    check_method(name)
    if name in PARTS_TRAINED:
        unfreeze_parts(model, name)
        return MethodState(name, options)
    return MethodState(name, options, add_peft(model, name, options))


def trainable_state(model: nn.Module) -> dict:
    """The tensors a method trains, by parameter name: the adapter's delta."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def base_parameter_count(model: nn.Module) -> int:
    """Parameters of the backbone itself, not counting inserted adapter parameters."""
    adapter = {id(p) for s in model.modules() if isinstance(s, AdapterSite)
               for p in s.adapter_parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in adapter)
