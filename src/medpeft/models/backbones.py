"""Backbones (MONAI networks) with a named encoder / decoder / head split.

``swin-fast`` is the default on CPUs: MONAI SwinUNETR at feature size 12 with 4x4x4 windows,
which tile the 32/16/8/4-token grids of a 64-voxel patch exactly (the stock 7x7x7 windows pad
32 tokens to 35 and cost ~2x the time; see docs/speed.md "Backbone choice"). ``swin-base`` is the
published configuration of the seed foundation models (feature size 48, 7x7x7 windows).
``swin-wide`` is swin-small's width (feature size 24) with swin-fast's exact 4x4x4 windows: the
capacity of swin-small at about half its time a step (1.9x swin-fast's, against 3.6x).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import SwinUNETR


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "swin_unetr"
    feature_size: int = 12
    window_size: int = 4
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (3, 6, 12, 24)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> BackboneConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRESETS: dict[str, BackboneConfig] = {
    "swin-fast": BackboneConfig(feature_size=12, window_size=4),
    "swin-small": BackboneConfig(feature_size=24, window_size=7),
    "swin-wide": BackboneConfig(feature_size=24, window_size=4),
    "swin-base": BackboneConfig(feature_size=48, window_size=7),
    "unet3d": BackboneConfig(name="unet3d"),  # Models Genesis U-Net (Universal Model, SuPreM)
}

# SwinUNETR's convolutional encoder blocks at 1, 1/2, 1/4 and 1/8 resolution, which feed the decoder's
# skip connections (not the Swin stages, nor the bottleneck block encoder10): part of "encoder".
SKIP_BLOCKS = ("encoder1.", "encoder2.", "encoder3.", "encoder4.")
# Parameter-name prefixes of each part of MONAI's SwinUNETR and of the Models Genesis U-Net.
PARTS: dict[str, tuple[str, ...]] = {
    "encoder": ("swinViT.", *SKIP_BLOCKS, "encoder10.", "down_tr"),
    "decoder": ("decoder1.", "decoder2.", "decoder3.", "decoder4.", "decoder5.", "up_tr"),
    "head": ("out.",),
}


def build_backbone(cfg: BackboneConfig, out_channels: int) -> torch.nn.Module:
    """A fresh network with ``out_channels`` outputs (background + organs)."""
    if cfg.name == "unet3d":
        from medpeft.models.unet3d import UNet3D
        return UNet3D(out_channels)
    if cfg.name != "swin_unetr":
        raise ValueError(f"unknown backbone {cfg.name!r}")
    # use_flash_attention: MONAI's fused attention (torch's scaled_dot_product_attention) wherever
    # no gradient is taken (prediction, evaluation, frozen features): the same outputs (1e-5) in
    # 0.71x a float32 forward of swin-fast at 64^3 on one thread (docs/speed.md). Training runs
    # the eager attention, except in a frozen encoder, which train.frozen_parts runs without
    # autograd (so fused).
    return SwinUNETR(in_channels=1, out_channels=out_channels, feature_size=cfg.feature_size,
                     window_size=cfg.window_size, depths=cfg.depths, num_heads=cfg.num_heads,
                     use_flash_attention=True)


def set_gradient_checkpointing(model: torch.nn.Module, enabled: bool = True) -> int:
    """Recompute the Swin blocks' activations in the backward pass instead of storing them
    (MONAI's ``use_checkpoint`` switch, flipped on a built model); returns the blocks switched."""
    blocks = [m for m in model.modules() if hasattr(m, "use_checkpoint")
              and type(m).__name__ == "SwinTransformerBlock"]
    for block in blocks:
        block.use_checkpoint = enabled
    return len(blocks)


def set_fused_attention(model: torch.nn.Module, enabled: bool = True) -> int:
    """Switch MONAI's fused window attention (``use_flash_attention``, on in every network
    :func:`build_backbone` makes) on a built model; returns the attention blocks switched."""
    blocks = [m for m in model.modules() if hasattr(m, "use_flash_attention")]
    for block in blocks:
        block.use_flash_attention = enabled
    return len(blocks)


def part_of(param_name: str) -> str:
    """Which part ("encoder", "decoder", "head") a parameter or module name belongs to."""
    for part, prefixes in PARTS.items():
        if param_name.startswith(prefixes):
            return part
    raise KeyError(f"parameter {param_name!r} is in no known part")


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
