"""Training-step time and peak memory of every adaptation method, as ratios to full fine-tuning
of the same backbone and patch measured in the same run, plus our LoRA against the same model
wrapped by Hugging Face ``peft``. Each method runs in a fresh process so peak memory is its own.

Usage: python benchmarks/adapter_overhead.py [--backbone swin-fast] [--patch 64 64 32] [--steps 4]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from medpeft.methods import PRESETS, apply_method
from medpeft.models.backbones import PRESETS as BACKBONES
from medpeft.models.backbones import build_backbone
from medpeft.train.losses import MarginalDiceCELoss

PEFT_LORA = "lora (HF peft)"


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def _hf_peft_lora(model: torch.nn.Module) -> None:
    from peft import LoraConfig, inject_adapter_in_model
    for p in model.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                       target_modules=r".*attn\.(qkv|proj)$"), model)
    for p in model.out.parameters():
        p.requires_grad_(True)


def measure_one(method: str, backbone: str, patch: tuple[int, ...], steps: int) -> dict:
    torch.manual_seed(0)
    model = build_backbone(BACKBONES[backbone], 11)
    if method == PEFT_LORA:
        _hf_peft_lora(model)
    else:
        apply_method(model, method, {"rank": 4})
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    loss_fn = MarginalDiceCELoss()
    x, y = torch.rand(1, 1, *patch), torch.randint(0, 11, (1, 1, *patch))
    c2l = torch.arange(11)[None]
    model.train()
    rss0, times = _rss_kib(), []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y, c2l).backward()
        opt.step()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"method": method, "trainable": sum(p.numel() for p in params),
            "step_s": sorted(times)[len(times) // 2], "peak_mib": max(peak - rss0, 0) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="swin-fast", choices=list(BACKBONES))
    ap.add_argument("--patch", type=int, nargs=3, default=[64, 64, 32])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.backbone, tuple(args.patch), args.steps)))
        return
    methods = list(PRESETS)
    try:
        import peft  # noqa: F401
        methods.append(PEFT_LORA)
    except ImportError:
        print("peft is not installed: skipping the HF peft comparison")
    rows = []
    for m in methods:
        cmd = [sys.executable, __file__, "--one", m, "--backbone", args.backbone, "--steps",
               str(args.steps), "--patch", *map(str, args.patch)]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True)
                               .stdout.strip().splitlines()[-1]))
    full = next(r for r in rows if r["method"] == "full")
    print(f"{args.backbone}, patch {tuple(args.patch)}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; median of {args.steps} steps; ratios vs full fine-tuning")
    print(f"{'method':16s} {'trainable':>10s} {'step s':>7s} {'x full':>7s} {'peak MiB':>9s} {'x full':>7s}")
    for r in rows:
        print(f"{r['method']:16s} {r['trainable']:10,d} {r['step_s']:7.3f} "
              f"{r['step_s'] / full['step_s']:7.2f} {r['peak_mib']:9.0f} "
              f"{r['peak_mib'] / max(full['peak_mib'], 1e-9):7.2f}")
    ours = next(r for r in rows if r["method"] == "lora")
    ref = next((r for r in rows if r["method"] == PEFT_LORA), None)
    if ref:
        print(f"our LoRA / HF peft LoRA step time: {ours['step_s'] / ref['step_s']:.2f}x")


if __name__ == "__main__":
    main()
