"""Fine-tuning methods that unfreeze parts of the backbone: full, decoder-only, head-only, and the
decoder with the encoder's skip blocks (``decoder-skips``: on the phantom's new site, most of what
full fine-tuning gains over decoder tuning at K=5, with 36% of the weights).

``scratch`` is the peer every adaptation must beat, not an adaptation: the same network with
every part trained, started from random weights instead of the foundation's (``adapt``
re-initialises it), so that its artefact loads like a full fine-tuning one.
"""
from __future__ import annotations

from torch import nn

from medpeft.models.backbones import SKIP_BLOCKS, part_of

SKIPS = "skip blocks"  # SwinUNETR's convolutional encoder blocks, trained apart by decoder-skips
PARTS_TRAINED = {"full": ("encoder", SKIPS, "decoder", "head"), "decoder": ("decoder", "head"),
                 "decoder-skips": (SKIPS, "decoder", "head"),
                 "head": ("head",), "scratch": ("encoder", SKIPS, "decoder", "head")}
SCRATCH = "scratch"


def trained_part(param_name: str) -> str:
    """The part a parameter trains with: its backbone part, with SwinUNETR's skip blocks (the
    encoder's convolutional blocks feeding the decoder, SKIP_BLOCKS) named apart."""
    return SKIPS if param_name.startswith(SKIP_BLOCKS) else part_of(param_name)


def unfreeze_parts(model: nn.Module, method: str) -> None:
    """Train only the backbone parts that ``method`` names; freeze the rest."""
    parts = PARTS_TRAINED[method]
    part_by_name = {name: trained_part(name) for name, _ in model.named_parameters()}
    if SKIPS in parts and "encoder" not in parts and SKIPS not in part_by_name.values():
        raise ValueError(f"{method}: this backbone has no SwinUNETR skip blocks "
                         f"({', '.join(SKIP_BLOCKS)}); use decoder")
    for name, p in model.named_parameters():
        p.requires_grad_(part_by_name[name] in parts)
