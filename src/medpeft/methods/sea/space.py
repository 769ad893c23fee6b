"""The SEA-PEFT search space: every adapter variant the allocator may switch on, all inserted.

A variant is (kind, options, tag) at the layers its patterns match; several variants may share a
layer (LoRA r4 and r16 on the same ``qkv``), each with its own switch. Finer layers come before
the blocks that contain them, since a module wrapped by a site is no longer matched by a pattern.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from medpeft.adapters.base import AdapterSite
from medpeft.adapters.inject import inject
from medpeft.adapters.kinds import KINDS, SWIN, site_factory


@dataclass(frozen=True)
class Variant:
    kind: str
    targets: tuple[str, ...]
    options: dict = field(default_factory=dict, hash=False)
    tag: str = ""


SWIN_SPACE: tuple[Variant, ...] = (
    Variant("lora", (f"{SWIN}.attn.qkv",), {"rank": 4}, "r4"),
    Variant("lora", (f"{SWIN}.attn.qkv",), {"rank": 16}, "r16"),
    Variant("adaptformer", (f"{SWIN}.mlp",), {"bottleneck": 8}, "b8"),
    Variant("lora", ("decoder*.conv_block.conv*.conv",), {"rank": 4}, "r4"),
    Variant("affine", ("swinViT.*", "encoder*", "decoder*")),
    Variant("conv-adapter", ("decoder*.conv_block",), {"bottleneck": 8, "kernel": 3}),
)


def add_variant(model: nn.Module, variant: Variant) -> list[AdapterSite]:
    """Insert one variant at its patterns; its sites carry its tag and record their options."""
    if variant.kind not in KINDS:
        raise ValueError(f"unknown adapter kind {variant.kind!r} in the search space")
    build = site_factory(variant.kind, dict(variant.options))

    def factory(module: nn.Module, name: str) -> AdapterSite:
        site = build(module, name)
        site.tag = variant.tag
        site.options = dict(variant.options)
        return site
    return inject(model, list(variant.targets), factory, KINDS[variant.kind].accept)


def insert_space(model: nn.Module, space: tuple[Variant, ...] = SWIN_SPACE) -> list[AdapterSite]:
    """Insert every variant of ``space`` (enabled, zero-initialised); returns all the sites."""
    return [site for variant in space for site in add_variant(model, variant)]


def describe(site: AdapterSite) -> dict:
    """What ``rebuild`` needs to re-create one site on a fresh model."""
    return {"kind": site.kind, "location": site.location, "tag": site.tag,
            "options": dict(getattr(site, "options", {}))}


def rebuild(model: nn.Module, chosen: list[dict]) -> list[AdapterSite]:
    """Insert exactly the ``chosen`` sites (``describe`` records, in insertion order)."""
    return [site for c in chosen for site in add_variant(
        model, Variant(c["kind"], (c["location"],), c.get("options", {}), c.get("tag", "")))]
