"""Fine-tuning methods that unfreeze parts of the backbone: full, decoder-only, head-only."""
from __future__ import annotations

from torch import nn

from medpeft.models.backbones import part_of

PARTS_TRAINED = {"full": ("encoder", "decoder", "head"), "decoder": ("decoder", "head"),
                 "head": ("head",)}


def unfreeze_parts(model: nn.Module, method: str) -> None:
    """Train only the backbone parts that ``method`` names; freeze the rest."""
    parts = PARTS_TRAINED[method]
    for name, p in model.named_parameters():
        p.requires_grad_(part_of(name) in parts)
