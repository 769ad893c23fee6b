"""The 3D U-Net of Models Genesis, as the CLIP-driven Universal Model and SuPreM ship it.

MONAI has no network with this layout, so it is written here with the published module names
(``down_tr64.ops.0.conv1`` ...), which is what lets their checkpoints load key for key. Its batch
norm always normalises with the statistics of the current batch, in training and in inference
alike ("continuous" batch norm, as in the original); the running statistics are kept only so the
checkpoints load. The head is MONAI's ``UnetOutBlock`` under the name ``out``, as in SwinUNETR.
"""
from __future__ import annotations

import torch
from monai.networks.blocks import UnetOutBlock
from torch import nn
from torch.nn import functional as F


class ContinuousBatchNorm3d(nn.BatchNorm3d):
    """Batch norm that uses the batch's statistics at inference too (Models Genesis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                            self.momentum, self.eps)


class LUConv(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, kernel_size=3, padding=1)
        self.bn1 = ContinuousBatchNorm3d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))


def _pair(c_in: int, depth: int, up: bool) -> nn.Sequential:
    width = 32 * 2 ** (depth + 1)
    if up:
        return nn.Sequential(LUConv(c_in, width), LUConv(width, width))
    return nn.Sequential(LUConv(c_in, width // 2), LUConv(width // 2, width))


class Down(nn.Module):
    def __init__(self, c_in: int, depth: int):
        super().__init__()
        self.ops = _pair(c_in, depth, up=False)
        self.pool = depth < 3

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.ops(x)
        return (F.max_pool3d(skip, 2) if self.pool else skip), skip


class Up(nn.Module):
    def __init__(self, c_in: int, depth: int):
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(c_in, c_in, kernel_size=2, stride=2)
        self.ops = _pair(c_in + c_in // 2, depth, up=True)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.ops(torch.cat([self.up_conv(x), skip], dim=1))


class UNet3D(nn.Module):
    """Encoder ``down_tr64..512``, decoder ``up_tr256..64``, head ``out`` (1x1x1 conv)."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.down_tr64, self.down_tr128 = Down(1, 0), Down(64, 1)
        self.down_tr256, self.down_tr512 = Down(128, 2), Down(256, 3)
        self.up_tr256, self.up_tr128, self.up_tr64 = Up(512, 2), Up(256, 1), Up(128, 0)
        self.out = UnetOutBlock(spatial_dims=3, in_channels=64, out_channels=out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, s64 = self.down_tr64(x)
        x, s128 = self.down_tr128(x)
        x, s256 = self.down_tr256(x)
        x, _ = self.down_tr512(x)
        return self.out(self.up_tr64(self.up_tr128(self.up_tr256(x, s256), s128), s64))
