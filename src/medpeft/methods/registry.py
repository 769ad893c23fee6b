"""One parser for every method name. Its family says which pipeline adapts it.

- ``tune``: the foundation's own weights or inserted adapters train under one loop. This covers
  the presets (``decoder``, ``lora``, ...), kind combinations (``lora+affine``) and the
  from-scratch peer (``scratch``).
- ``searched``: SEA-PEFT picks the adapter sites under a parameter budget, then refines them
  (``sea-peft``).
- ``black-box``: a head on the frozen features of a sealed service (``blackbox-linear``,
  ``blackbox-spatial``, ``blackbox-spatial1``).

``head@random`` names how a novel organ's head row starts, after an ``@`` (default: prototype).
"""
from __future__ import annotations

from dataclasses import dataclass

from medpeft.methods import SEA, check_method
from medpeft.methods.blackbox.heads import KINDS as BLACKBOX_KINDS
from medpeft.methods.blackbox.heads import PREFIX, blackbox_kind
from medpeft.methods.finetune import SCRATCH
from medpeft.methods.novel_organs import INITS, PROTOTYPE, RANDOM

TUNE, SEARCHED, BLACKBOX = "tune", "searched", "black-box"
FAMILIES = (TUNE, SEARCHED, BLACKBOX)


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method name: what trains (``base``), how (``family``) and a novel row's start."""

    name: str  # as written, e.g. "head@random"
    base: str  # without the initialisation, e.g. "head"
    family: str  # TUNE | SEARCHED | BLACKBOX
    head_init: str = "random"  # novel organs' head rows: random | prototype
    blackbox_kind: str | None = None  # linear | spatial | spatial1 for the black-box family

    @property
    def is_peer(self) -> bool:
        """The from-scratch peer: the same network, none of the foundation's weights."""
        return self.base == SCRATCH


def resolve(name: str) -> MethodSpec:
    """Parse and check ``name``; a ValueError lists what exists when it is not a method."""
    base, _, init = name.partition("@")
    kind = blackbox_kind(base)
    # unsaid: a black-box head starts from class prototypes; a tuned model's novel row at random
    # (prototype rows collapsed to no organ at K = 5 / 10 on the novel gallbladder, v2 and v5:
    # docs/fseft.md)
    init = init or (PROTOTYPE if kind is not None else RANDOM)
    if init not in INITS:
        raise ValueError(f"method {name!r}: the initialisation after '@' is one of "
                         f"{', '.join(INITS)}")
    if kind is not None:
        return MethodSpec(name, base, BLACKBOX, init, kind)
    if base == SEA:
        return MethodSpec(name, base, SEARCHED, init)
    try:
        check_method(base)
    except ValueError as err:
        raise ValueError(f"{err}; or a black-box head: "
                         f"{', '.join(PREFIX + k for k in BLACKBOX_KINDS)}") from None
    return MethodSpec(name, base, TUNE, init)
