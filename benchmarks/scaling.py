"""Scale and speed, measured in one run: training, data loading, inference, 2 processes vs 1.

1. Training steps/s and peak memory per backbone and method, float32 against float32 with the
   training loop's oneDNN routing of 3D convolutions (what it does on a CPU without native bf16),
   bf16 autocast (also with channels-last 3D tensors), gradient checkpointing of the Swin blocks
   and torch.compile (each arm in a fresh process; peak memory:
   CUDA max allocated, or on CPU the process's peak RSS above what it held before the first step).
2. Data-loader throughput (cached phantom volumes -> random class-balanced 64^3 crops) against
   the training throughput of the same crops: the loop is I/O bound if the ratio is below 1.
3. Sliding-window inference (overlap 0.25, Gaussian blending) in volumes/min, float32 vs bf16.
4. Scaling: the same global batch (2 crops a step) on 1 process against 2 gloo ranks (DDP).
Ratios are against the float32 / 1-process baseline measured in the same run. Writes the phantom
on first use (runs/cache).

Usage: python benchmarks/scaling.py [--steps 6] [--patch 64 64 64] [--backbones swin-fast swin-small]
         [--methods full decoder lora head]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from medpeft.device import mixed_precision, resolve_device, supports_bf16
from medpeft.methods import apply_method, param_groups
from medpeft.models.backbones import PRESETS, build_backbone, set_gradient_checkpointing
from medpeft.train.cpu_convolutions import route_convolutions
from medpeft.train.losses import MarginalDiceCELoss

PATCH = (64, 64, 64)
CLASSES = 11
VARIANTS = ("fp32", "fp32+onednn", "bf16", "bf16+channels-last", "grad-checkpoint", "compile")


def _peak_mb(device: torch.device, before_kb: int) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb) / 1024


def train_arm(backbone: str, method: str, variant: str, steps: int,
              patch: tuple[int, ...] = PATCH) -> dict:
    """Steps/s and peak memory of one (backbone, method, variant) on random crops of ``patch``
    (fp32+onednn: the float32 training loop's convolution routing, ``train.cpu_convolutions``)."""
    device = resolve_device()
    torch.manual_seed(0)
    model = build_backbone(PRESETS[backbone], CLASSES + 1)
    state = apply_method(model, method, {"rank": 8} if method == "lora" else {})
    if variant == "grad-checkpoint":
        set_gradient_checkpointing(model)
    model.to(device).train()
    layout = torch.channels_last_3d if variant.endswith("channels-last") else torch.contiguous_format
    model.to(memory_format=layout)
    if variant == "fp32+onednn":
        route_convolutions(model)
    optimizer = torch.optim.AdamW(param_groups(model, state), lr=1e-4)
    loss_fn = MarginalDiceCELoss()
    net = torch.compile(model) if variant == "compile" else model
    x = torch.randn(1, 1, *patch, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, CLASSES + 1, (1, 1, *patch), device=device)
    c2l = torch.arange(CLASSES + 1, device=device)[None]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with mixed_precision(device, variant.startswith("bf16")):
            logits = net(x)
        loss_fn(logits.float(), y, c2l).backward()
        optimizer.step()
    t0 = time.perf_counter()
    step()  # warm-up (allocator, kernels; torch.compile compiles here)
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"steps_per_s": steps / (time.perf_counter() - t0), "peak_mb": _peak_mb(device, before),
            "first_step_s": warmup_s}


def loader_arm(cache: str, steps: int) -> dict:
    """Crops/s of the cached phantom loader against training steps/s on those crops."""
    from rich.console import Console

    from medpeft.data.fewshot import make_split
    from medpeft.experiments.demo import phantom_setting
    from medpeft.experiments.demo_config import DemoConfig
    from medpeft.models.weights import load_foundation
    from medpeft.pipelines.tune import crop_dataset, load_support
    from medpeft.progress import progress_bar
    from medpeft.train.loop import batches
    with progress_bar() as progress:
        setting = phantom_setting(Path(cache), DemoConfig(), progress, Console())
    foundation = load_foundation(setting.foundation_dir)
    split = make_split(setting.target, 5, 0, 6)
    ds, mapping = load_support(foundation, split)
    data = crop_dataset(foundation, ds, mapping, split["support"])
    stream = batches(data, 1, 0)
    next(stream)
    t0 = time.perf_counter()
    crops = [next(stream) for _ in range(4 * steps)]
    load_rate = len(crops) / (time.perf_counter() - t0)
    model = foundation.model.train()
    state = apply_method(model, "decoder")
    optimizer = torch.optim.AdamW(param_groups(model, state), lr=1e-4)
    loss_fn = MarginalDiceCELoss()
    t0 = time.perf_counter()
    for batch in crops[:steps]:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(batch["image"]), batch["label"], batch["channel_to_local"]).backward()
        optimizer.step()
    return {"crops_per_s": load_rate, "steps_per_s": steps / (time.perf_counter() - t0)}


def inference_arm(cache: str, variant: str, volumes: int) -> dict:
    from rich.console import Console

    from medpeft.experiments.demo import phantom_setting
    from medpeft.experiments.demo_config import DemoConfig
    from medpeft.infer.predict import predict_probabilities
    from medpeft.models.weights import load_foundation
    from medpeft.progress import progress_bar
    with progress_bar() as progress:
        setting = phantom_setting(Path(cache), DemoConfig(), progress, Console())
    foundation = load_foundation(setting.foundation_dir)
    paths = [c.image for c in setting.target.cases[:volumes]]
    predict_probabilities(foundation.model, paths[0], foundation.preprocessing, bf16=variant == "bf16")
    t0 = time.perf_counter()
    for path in paths:
        predict_probabilities(foundation.model, path, foundation.preprocessing,
                              bf16=variant == "bf16")
    return {"volumes_per_min": 60 * len(paths) / (time.perf_counter() - t0)}


def _ddp_rank(rank: int, world: int, port: int, steps: int, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    from medpeft.train import distributed
    with distributed.process_group("cpu"):
        torch.manual_seed(0)
        model = build_backbone(PRESETS["swin-fast"], CLASSES + 1)
        state = apply_method(model, "full")
        net = distributed.wrap(model, torch.device("cpu"))
        optimizer = torch.optim.AdamW(param_groups(model, state), lr=1e-4)
        loss_fn = MarginalDiceCELoss()
        per_rank = 2 // world  # the same global batch of 2 crops
        x = torch.randn(per_rank, 1, *PATCH)
        y = torch.randint(0, CLASSES + 1, (per_rank, 1, *PATCH))
        c2l = torch.arange(CLASSES + 1)[None].expand(per_rank, -1)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x), y, c2l).backward()
            optimizer.step()
        step()
        distributed.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        distributed.barrier()
        if rank == 0:
            Path(result).write_text(json.dumps({"steps_per_s": steps / (time.perf_counter() - t0)}))


def scaling_arm(world: int, steps: int) -> dict:
    import tempfile

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp) / "result.json")
        if world == 1:
            os.environ.pop("WORLD_SIZE", None)
            _ddp_rank(0, 1, port, steps, result)
        else:
            mp.spawn(_ddp_rank, args=(world, port, steps, result), nprocs=world, join=True)
        return json.loads(Path(result).read_text())


def _child(*args: str, flags: list[str]) -> dict:
    """Run one arm in a fresh process (clean peak memory) with the run's ``flags``; its JSON
    result."""
    out = subprocess.run([sys.executable, __file__, *flags, "--one", *args], capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"arm {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--backbones", nargs="+", default=["swin-fast", "swin-small"])
    parser.add_argument("--methods", nargs="+", default=["full", "decoder", "lora", "head"])
    parser.add_argument("--cache", default="runs/cache")
    parser.add_argument("--volumes", type=int, default=3)
    parser.add_argument("--patch", type=int, nargs=3, default=list(PATCH), help="training crops")
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, *rest = args.one
        result = {"train": lambda: train_arm(rest[0], rest[1], rest[2], args.steps,
                                             tuple(args.patch)),
                  "loader": lambda: loader_arm(args.cache, args.steps),
                  "inference": lambda: inference_arm(args.cache, rest[0], args.volumes),
                  "scaling": lambda: scaling_arm(int(rest[0]), args.steps)}[kind]()
        print(json.dumps(result))
        return
    flags = ["--steps", str(args.steps), "--patch", *map(str, args.patch), "--cache", args.cache,
             "--volumes", str(args.volumes)]
    device = resolve_device()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"device {device}, bf16 native: {supports_bf16(device)}, torch {torch.__version__}")
    crop = "x".join(map(str, args.patch))
    print(f"\n1. training, random {crop} crops, batch 1, {args.steps} steps after 1 warm-up")
    print(f"{'backbone':<11}{'method':<9}{'fp32 steps/s':>13}{'peak MB':>9}"
          + "".join(f"{v[:8] + ' x':>8}{'MB':>9}" for v in VARIANTS[1:]) + f"{'compile s':>12}")
    for backbone in args.backbones:
        for method in args.methods:
            arms = {v: _child("train", backbone, method, v, flags=flags) for v in VARIANTS}
            base = arms["fp32"]
            print(f"{backbone:<11}{method:<9}{base['steps_per_s']:>13.3f}{base['peak_mb']:>9.0f}"
                  + "".join(f"{arms[v]['steps_per_s'] / base['steps_per_s']:>8.2f}"
                            f"{arms[v]['peak_mb']:>9.0f}" for v in VARIANTS[1:])
                  + f"{arms['compile']['first_step_s']:>12.0f}")
    loader = _child("loader", flags=flags)
    print(f"\n2. data: {loader['crops_per_s']:.1f} crops/s loaded vs {loader['steps_per_s']:.2f} "
          f"training steps/s (swin-fast decoder): the loader is "
          f"{loader['crops_per_s'] / loader['steps_per_s']:.0f}x faster than training")
    inference = {v: _child("inference", v, flags=flags) for v in ("fp32", "bf16")}
    print(f"\n3. sliding-window inference on {args.volumes} phantom volumes: "
          f"{inference['fp32']['volumes_per_min']:.1f} volumes/min float32, "
          f"{inference['bf16']['volumes_per_min']:.1f} bf16 "
          f"({inference['bf16']['volumes_per_min'] / inference['fp32']['volumes_per_min']:.2f}x)")
    one, two = _child("scaling", "1", flags=flags), _child("scaling", "2", flags=flags)
    speedup = two["steps_per_s"] / one["steps_per_s"]
    print(f"\n4. global batch 2, swin-fast full FT: 1 process {one['steps_per_s']:.3f} steps/s, "
          f"2 gloo ranks {two['steps_per_s']:.3f} steps/s: speed-up {speedup:.2f}x, "
          f"scaling efficiency {speedup / 2:.0%}")
    print("\ncommand: python benchmarks/scaling.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
