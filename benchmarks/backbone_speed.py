"""Training-step and inference time of candidate backbones, as ratios to MONAI's stock SwinUNETR
(feature size 12, 7x7x7 windows, 64^3) measured in the same run. Usage: python benchmarks/backbone_speed.py"""
from __future__ import annotations

import time

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import SwinUNETR, UNet

from medpeft.models.backbones import PRESETS, build_backbone


def measure(net: torch.nn.Module, size: tuple[int, int, int], repeats: int = 3) -> tuple[float, float]:
    x, y = torch.randn(1, 1, *size), torch.randint(0, 11, (1, 1, *size))
    loss, opt = DiceCELoss(to_onehot_y=True, softmax=True), torch.optim.AdamW(net.parameters())
    net.train()
    for i in range(repeats + 1):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        loss(net(x), y).backward()
        opt.step()
    train = (time.perf_counter() - t0) / repeats
    net.eval()
    with torch.no_grad():
        net(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(x)
    return train, (time.perf_counter() - t0) / repeats


def main() -> None:
    torch.manual_seed(0)
    cases = [
        ("stock SwinUNETR fs12 w7 (baseline)", SwinUNETR(1, 11, feature_size=12), (64, 64, 64)),
        ("SwinUNETR fs12 w4", build_backbone(PRESETS["swin-fast"], 11), (64, 64, 64)),
        ("swin-fast (fs12 w4) 64x64x32", build_backbone(PRESETS["swin-fast"], 11), (64, 64, 32)),
        ("MONAI UNet 16-128", UNet(3, 1, 11, (16, 32, 64, 128), (2, 2, 2), num_res_units=1), (64, 64, 64)),
    ]
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}")
    base = None
    for name, net, size in cases:
        train, infer = measure(net, size)
        base = base or (train, infer)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"{name:38s} {str(size):14s} {params:5.2f} M  train {train:6.3f} s ({train / base[0]:.2f}x)"
              f"  infer {infer:6.3f} s ({infer / base[1]:.2f}x)")


if __name__ == "__main__":
    main()
