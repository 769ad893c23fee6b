"""Inference forward time with the Swin windows' attention fused (MONAI's ``use_flash_attention``,
torch's scaled_dot_product_attention; what medpeft builds) against MONAI's eager attention, same
weights, same input, measured in the same run, with the largest output difference; then a
training step of the shipped foundation with its Swin encoder frozen (decoder-skips), with and
without ``medpeft.train.frozen_parts`` (the frozen encoder run without autograd, so fused).
Usage: python benchmarks/attention_speed.py [--threads N] [--repeats R]"""
from __future__ import annotations

import argparse
import time

import torch

from medpeft.methods.finetune import unfreeze_parts
from medpeft.models.backbones import PRESETS, build_backbone, set_fused_attention
from medpeft.models.weights import load_foundation, shipped_foundation
from medpeft.train.frozen_parts import frozen_parts_without_autograd


@torch.no_grad()
def forward_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int, bf16: bool
                    ) -> tuple[float, torch.Tensor]:
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        out = model(x).float()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return (time.perf_counter() - start) / repeats, out


def step_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int, bf16: bool) -> float:
    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out = model(x)
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def frozen_encoder_steps(repeats: int) -> None:
    model = load_foundation(shipped_foundation()).model.train()
    unfreeze_parts(model, "decoder-skips")
    x = torch.randn(2, 1, 64, 64, 64)
    for bf16 in (False, True):
        grad_mode = step_seconds(model, x, repeats, bf16)
        with frozen_parts_without_autograd(model):
            frozen = step_seconds(model, x, repeats, bf16)
        print(f"decoder-skips step (shipped foundation, 2 x 64^3) {'bf16' if bf16 else 'float32':8s} "
              f"grad mode {grad_mode:6.3f} s  frozen encoder without autograd {frozen:6.3f} s "
              f"({frozen / grad_mode:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = [("swin-fast", (2, 1, 64, 64, 64), False), ("swin-fast", (2, 1, 64, 64, 64), True),
             ("swin-base", (1, 1, 96, 96, 96), False)]
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, sliding-window batch of 2 "
          "(swin-fast, medpeft predict) or 1 (swin-base at its 96^3 preset)")
    for preset, shape, bf16 in cases:
        model = build_backbone(PRESETS[preset], 11).eval()
        x = torch.randn(*shape)
        set_fused_attention(model, False)
        eager, eager_out = forward_seconds(model, x, args.repeats, bf16)
        set_fused_attention(model, True)
        fused, fused_out = forward_seconds(model, x, args.repeats, bf16)
        agree = (fused_out.argmax(1) == eager_out.argmax(1)).float().mean().item()
        print(f"{preset:10s} {str(tuple(shape[2:])):14s} {'bf16' if bf16 else 'float32':8s} "
              f"eager {eager:6.3f} s  fused {fused:6.3f} s ({fused / eager:.2f}x)  "
              f"max |diff| {(fused_out - eager_out).abs().max().item():.1e}  argmax agrees {agree:.4f}")
    frozen_encoder_steps(args.repeats)


if __name__ == "__main__":
    main()
