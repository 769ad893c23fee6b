"""One epoch of black-box adapter training on cached features vs recomputing them every step.

Both arms train the same Spatial Adapter + head for one epoch over as many support crops of the
same size (every crop once); the baseline calls the sealed foundation for each crop's features, the cached arm
reads them from the float16 memory map written once beforehand. Prints seconds per epoch and the
speed-up (the cache's one-off cost is printed too); each arm's fastest of ``--repeats`` epochs counts.

Usage: python benchmarks/blackbox_cache.py [--crops 16] [--kinds linear spatial1 spatial]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from medpeft.data.fewshot import make_split
from medpeft.experiments.demo import phantom_setting
from medpeft.experiments.demo_config import DemoConfig
from medpeft.methods.blackbox.cache import build_cache
from medpeft.methods.blackbox.heads import BlackBoxHead
from medpeft.methods.blackbox.service import foundation_service
from medpeft.models.weights import describe_foundation, load_foundation
from medpeft.pipelines.tune import crop_dataset, load_support
from medpeft.progress import progress_bar
from medpeft.train.losses import MarginalDiceCELoss


def epoch(head, loss, optimizer, items, features_of) -> float:
    t0 = time.perf_counter()
    for item in items:
        optimizer.zero_grad(set_to_none=True)
        loss(head(features_of(item)), item["label"][None], item["channel_to_local"][None]).backward()
        optimizer.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--kinds", nargs="+", default=["linear", "spatial1", "spatial"])
    ap.add_argument("--repeats", type=int, default=3, help="epochs per arm; the fastest counts")
    ap.add_argument("--cache", type=Path, default=Path("runs/cache"))
    args = ap.parse_args()
    with progress_bar() as progress:
        setting = phantom_setting(args.cache, DemoConfig(), progress, Console())
    info = describe_foundation(setting.foundation_dir)
    split = make_split(setting.target, 5, 0, DemoConfig().n_test)
    ds, mapping = load_support(info, split)
    crops = crop_dataset(info, ds, mapping, split["support"])
    service = foundation_service(load_foundation(setting.foundation_dir).model)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = build_cache(service, crops, args.crops, Path(tmp) / "cache", key={"bench": 1})
        build = time.perf_counter() - t0
        cached_items = [cache[i] for i in range(len(cache))]
        print("channel->local of the first crop:", cached_items[0]["channel_to_local"].tolist())
        # as many crops of the same size, as CT patches, for the recomputing arm
        raw = [{"image": crop["image"], "label": c["label"], "channel_to_local": c["channel_to_local"]}
               for crop, c in zip(_crops(crops, args.crops), cached_items)]
        loss = MarginalDiceCELoss()
        table = Table(title=f"one epoch over {args.crops} support crops, features "
                            f"{tuple(cached_items[0]['image'].shape)} (cache built once in "
                            f"{build:.1f} s)")
        for col in ("adapter", "recompute features (s)", "cached features (s)", "speed-up"):
            table.add_column(col, justify="left" if col == "adapter" else "right")
        for kind in args.kinds:
            torch.manual_seed(0)
            head = BlackBoxHead(service.channels, len(info.classes) + 1, kind)
            optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
            epoch(head, loss, optimizer, cached_items[:2], lambda it: it["image"][None])  # warm-up
            cached = min(epoch(head, loss, optimizer, cached_items, lambda it: it["image"][None])
                         for _ in range(args.repeats))
            recompute = min(epoch(head, loss, optimizer, raw, lambda it: service(it["image"][None]))
                            for _ in range(args.repeats))
            table.add_row(kind, f"{recompute:.2f}", f"{cached:.2f}", f"{recompute / cached:.1f}x")
    console = Console()
    console.print(table)
    console.print(f"{platform.node()}: {platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads; python benchmarks/blackbox_cache.py "
                  f"--crops {args.crops} --kinds {' '.join(args.kinds)}")


def _crops(crops, n: int) -> list[dict]:
    """``n`` CT crops of the support volumes, drawn like the cache's."""
    from itertools import islice

    from medpeft.train.loop import batches
    return [{"image": b["image"][0]} for b in islice(batches(crops, 1, 104729), n)]


if __name__ == "__main__":
    main()
