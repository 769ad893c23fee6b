"""Fine-tuning methods that unfreeze parts of the backbone: full, decoder-only, head-only.

``scratch`` is the peer every adaptation must beat, not an adaptation: the same network with
every part trained, started from random weights instead of the foundation's (``adapt``
re-initialises it), so that its artefact loads like a full fine-tuning one.
"""
from __future__ import annotations

from torch import nn

from medpeft.models.backbones import part_of

PARTS_TRAINED = {"full": ("encoder", "decoder", "head"), "decoder": ("decoder", "head"),
                 "head": ("head",), "scratch": ("encoder", "decoder", "head")}
SCRATCH = "scratch"


def unfreeze_parts(model: nn.Module, method: str) -> None:
    """Train only the backbone parts that ``method`` names; freeze the rest."""
    parts = PARTS_TRAINED[method]
    for name, p in model.named_parameters():
        p.requires_grad_(part_of(name) in parts)
