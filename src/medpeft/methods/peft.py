"""Fixed-topology PEFT: LoRA sites on the Swin attention projections, plus the head."""
from __future__ import annotations

from torch import nn

from medpeft.adapters.base import AdapterSite
from medpeft.adapters.inject import inject
from medpeft.adapters.lora import LoRALinear

ATTENTION_TARGETS = ["swinViT.layers*.blocks.*.attn.qkv", "swinViT.layers*.blocks.*.attn.proj"]


def add_lora(model: nn.Module, rank: int = 4, alpha: float | None = None,
             targets: list[str] | None = None) -> list[AdapterSite]:
    """Freeze the backbone, insert LoRA on ``targets`` (default: attention qkv and proj), train the head."""
    for p in model.parameters():
        p.requires_grad_(False)
    sites = inject(model, targets or ATTENTION_TARGETS,
                   lambda m, name: LoRALinear(m, name, rank=rank, alpha=alpha), kind=nn.Linear)
    for p in model.out.parameters():
        p.requires_grad_(True)
    return sites
