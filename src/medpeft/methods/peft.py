"""Fixed-topology PEFT: freeze the backbone, insert one or more adapter kinds, train the head.

A method name is a kind (``lora``) or a ``+``-joined combination (``lora+affine``). Options are
shared by name (``rank``, ``alpha``, ``bottleneck``, ``scale``, ``kernel``); each kind takes the
ones it understands. ``targets`` are glob patterns, ``kind:pattern`` for one kind of a combination.
"""
from __future__ import annotations

from torch import nn

from medpeft.adapters.base import AdapterSite
from medpeft.adapters.kinds import KINDS, add_sites
from medpeft.methods.sea.space import rebuild


def peft_kinds(method: str) -> list[str]:
    """The adapter kinds of a PEFT method name; raises on an unknown kind."""
    kinds = method.split("+")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or len(set(kinds)) != len(kinds):
        raise ValueError(f"unknown or repeated adapter kind in {method!r}; kinds: {', '.join(KINDS)}")
    return kinds


def _targets_for(kind: str, targets: list[str] | None, n_kinds: int) -> list[str] | None:
    if not targets:
        return None
    mine = [t.split(":", 1)[1] for t in targets if t.startswith(f"{kind}:")]
    shared = [t for t in targets if ":" not in t]
    if shared and n_kinds > 1:
        raise ValueError(f"with several kinds, write targets as 'kind:pattern' (got {shared})")
    return mine + shared or None


def freeze(model: nn.Module) -> None:
    """Make every parameter of ``model`` frozen."""
    for p in model.parameters():
        p.requires_grad_(False)


def train_head(model: nn.Module, options: dict) -> None:
    """Train the segmentation head unless ``options["train_head"]`` is False."""
    if options.get("train_head", True):
        for p in model.out.parameters():
            p.requires_grad_(True)


def add_searched(model: nn.Module, options: dict) -> list[AdapterSite]:
    """Freeze ``model`` and insert the sites a SEA-PEFT search chose (``options["sites"]``)."""
    if not options.get("sites"):
        raise ValueError("sea-peft needs its chosen sites: run the search (medpeft adapt --method "
                         "sea-peft); a saved sea-peft adapter lists them in its config")
    freeze(model)
    sites = rebuild(model, options["sites"])
    train_head(model, options)
    return sites


def add_peft(model: nn.Module, method: str, options: dict) -> list[AdapterSite]:
    """Freeze ``model``, insert the method's sites, and (by default) train the head."""
    kinds = peft_kinds(method)
    freeze(model)
    sites: list[AdapterSite] = []
    for kind in kinds:
        own = {k: v for k, v in options.items() if k in KINDS[kind].options}
        sites += add_sites(model, kind, _targets_for(kind, options.get("targets"), len(kinds)), **own)
    train_head(model, options)
    return sites
