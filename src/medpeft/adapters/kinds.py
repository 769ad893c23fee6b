"""Every adapter kind by name: default placement, what layers it takes, its options.

Default placements are written for MONAI's SwinUNETR; LoRA and BitFit also name the Models
Genesis U-Net's layers (``down_tr*`` / ``up_tr*``), so they tune either backbone without targets.

``add_sites`` inserts one kind; ``candidate_sites`` lists every place a kind could go and what it
would cost, without changing the model (``medpeft inspect sites``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from medpeft.adapters.adaptformer import AdaptFormer
from medpeft.adapters.base import AdapterSite, channel_layout, innermost
from medpeft.adapters.bottleneck import BottleneckAdapter
from medpeft.adapters.conv_adapter import ConvAdapter
from medpeft.adapters.inject import inject, match_modules
from medpeft.adapters.lora import LoRAConv3d, LoRALinear
from medpeft.adapters.scaling import IA3, SSF
from medpeft.adapters.unfreeze import NORMS, BitFit, NormAffine

SWIN = "swinViT.layers*.blocks.*"
UNET_CONVS = ("down_tr*.ops.*.conv1", "up_tr*.ops.*.conv1")  # the U-Net's 3x3x3 convolutions


def _token_block(m: nn.Module) -> bool:
    try:
        return channel_layout(m)[1] == -1 and not isinstance(m, (nn.Linear, nn.LayerNorm))
    except TypeError:
        return False


def _volume_block(m: nn.Module) -> bool:
    try:
        return channel_layout(m)[1] == 1 and not isinstance(m, (nn.Conv3d, nn.InstanceNorm3d))
    except TypeError:
        return False


def _lora(module: nn.Module, name: str, rank: int = 4, alpha: float | None = None) -> AdapterSite:
    cls = LoRAConv3d if isinstance(innermost(module), nn.Conv3d) else LoRALinear
    return cls(module, name, rank=rank, alpha=alpha)


def _ia3(module: nn.Module, name: str) -> AdapterSite:
    return IA3(module, name, where="kv" if name.endswith("qkv") else "input")


@dataclass(frozen=True)
class Kind:
    """One adapter kind: default targets, which layers it accepts, how to build a site."""

    targets: tuple[str, ...]
    accept: Callable[[nn.Module], bool]
    build: Callable[..., AdapterSite]
    options: tuple[str, ...] = ()
    doc: str = ""


KINDS: dict[str, Kind] = {
    "lora": Kind((f"{SWIN}.attn.qkv", f"{SWIN}.attn.proj", *UNET_CONVS),
                 lambda m: isinstance(m, (nn.Linear, nn.Conv3d)), _lora, ("rank", "alpha"),
                 "low-rank update of a linear or Conv3d layer"),
    "adaptformer": Kind((f"{SWIN}.mlp",), _token_block, AdaptFormer, ("bottleneck", "scale"),
                        "parallel bottleneck beside the MLP"),
    "adapter": Kind((f"{SWIN}.attn", f"{SWIN}.mlp"), _token_block, BottleneckAdapter,
                    ("bottleneck",), "sequential bottleneck after attention / MLP"),
    "conv-adapter": Kind(("decoder*.conv_block",), _volume_block, ConvAdapter,
                         ("bottleneck", "kernel"), "residual conv bottleneck after a decoder block"),
    "ssf": Kind((f"{SWIN}.attn.qkv", f"{SWIN}.attn.proj", f"{SWIN}.mlp.linear1",
                 f"{SWIN}.mlp.linear2"), lambda m: isinstance(m, (nn.Linear, nn.Conv3d) + NORMS),
                SSF, (), "per-channel scale and shift of a layer's output"),
    "ia3": Kind((f"{SWIN}.attn.qkv", f"{SWIN}.mlp.linear2"), lambda m: isinstance(m, nn.Linear),
                _ia3, (), "rescale keys, values and MLP activations"),
    "bitfit": Kind(("swinViT.*", "encoder*", "decoder*", "down_tr*", "up_tr*"),
                   lambda m: isinstance(m, (nn.Linear, nn.Conv3d, nn.ConvTranspose3d))
                   and m.bias is not None, BitFit, (), "unfreeze biases"),
    "affine": Kind(("swinViT.*", "encoder*", "decoder*"), lambda m: isinstance(m, NORMS),
                   NormAffine, (), "unfreeze LayerNorm / InstanceNorm gamma and beta"),
}


def _kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown adapter kind {kind!r}; choose from {', '.join(KINDS)}")
    return KINDS[kind]


def site_factory(kind: str, options: dict) -> Callable[[nn.Module, str], AdapterSite]:
    spec = _kind(kind)
    unknown = set(options) - set(spec.options)
    if unknown:
        raise ValueError(f"{kind}: unknown options {sorted(unknown)}; it takes {list(spec.options)}")
    return lambda module, name: spec.build(module, name, **options)


def add_sites(model: nn.Module, kind: str, targets: list[str] | None = None,
              **options) -> list[AdapterSite]:
    """Insert ``kind`` sites at ``targets`` (glob patterns; default: the kind's usual places)."""
    spec = _kind(kind)
    return inject(model, list(targets or spec.targets), site_factory(kind, options), spec.accept)


def candidate_sites(model: nn.Module, kinds: list[str] | None = None,
                    targets: dict[str, list[str]] | None = None,
                    options: dict[str, dict] | None = None) -> list[dict]:
    """Every place each kind could go with its exact cost; the model is not changed."""
    rows = []
    for kind in kinds or list(KINDS):
        spec = _kind(kind)
        factory = site_factory(kind, (options or {}).get(kind, {}))
        patterns = (targets or {}).get(kind) or list(spec.targets)
        for name in match_modules(model, patterns, spec.accept):
            site = factory(model.get_submodule(name), name)
            rows.append({"kind": kind, "location": name, "layer": type(innermost(site.base)).__name__,
                         "n_params": site.n_params})
    return rows
