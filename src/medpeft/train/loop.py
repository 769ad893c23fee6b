"""The one training loop behind pre-training and every adaptation method.

Step-based AdamW with linear warm-up and cosine decay over the trainable parameters only,
optionally stopped early when the training loss's moving average stops improving.
Checkpoints (``medpeft.train.checkpoints``) are committed atomically; ``resume=True`` continues
from the newest complete one. Under torchrun the loop trains DDP replicas (see
``medpeft.train.distributed``); rank 0 alone writes.
"""
from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from monai.data import DataLoader, list_data_collate
from torch.nn.utils import get_total_norm
from torch.utils.data import WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

from medpeft.device import mixed_precision, precision, supports_bf16, to_device
from medpeft.io import append_jsonl
from medpeft.models.backbones import set_gradient_checkpointing
from medpeft.progress import Reporter
from medpeft.train import distributed
from medpeft.train.checkpoints import (
    checkpoint_seconds,
    load_checkpoint,
    save_checkpoint,
    save_snapshot,
)
from medpeft.train.cpu_convolutions import pays_on as routing_pays
from medpeft.train.cpu_convolutions import route_convolutions, unroute_convolutions
from medpeft.train.frozen_parts import frozen_parts_without_autograd


@dataclass
class LoopConfig:
    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-5
    warmup: int = 10
    batch_size: int = 1
    checkpoint_every: int = 50
    # Weights kept every N steps under run_dir/snapshots (checkpoints keep only the newest): the
    # points of a pre-training curve; 0 keeps none.
    snapshot_every: int = 0
    log_every: int = 10
    seed: int = 0
    # Early stopping on the training loss's moving average (FSEFT's few-shot protocol, where no
    # labelled volume is spare for validation): stop once its EMA has not improved by 1% for
    # ``patience`` steps after warm-up; 0 turns it off.
    patience: int = 0
    ema_decay: float = 0.9
    workers: int = 0  # data-loading worker processes (0: load in the training process)
    bf16: bool = False  # bf16 autocast where the device runs it natively (see medpeft.device)
    grad_checkpoint: bool = False  # recompute Swin block activations in backward (less memory)
    # channels-last 3D weights and crops; None: where bf16 runs natively and a convolution's own
    # weights train (see ``channels_last_pays``)
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        # a 0 here would otherwise divide by zero or train nothing and still write a result
        if self.steps < 1 or self.checkpoint_every < 1:
            raise ValueError(f"steps ({self.steps}) and checkpoint_every ({self.checkpoint_every}) "
                             "must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)


def batches(dataset, batch_size: int, seed: int, rank: int = 0, *, world: int = 1,
            workers: int = 0, weights: list[float] | None = None) -> Iterator[dict]:
    """An endless stream of collated batches, reshuffled every epoch by ``seed``. With several
    ranks, each draws from its own shard of the volumes (``DistributedSampler``) and its own
    random crops; ``workers`` processes load and crop ahead of the training step. ``weights``
    (one per volume): draw volumes with replacement in proportion to them instead (every rank
    with its own generator)."""
    generator = torch.Generator().manual_seed(seed + 7_777 * rank)
    extra = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
    if weights is not None:
        if len(weights) != len(dataset):
            raise ValueError(f"{len(weights)} sampling weights for {len(dataset)} volumes")
        sampler = WeightedRandomSampler(weights, len(dataset), replacement=True,
                                        generator=generator)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                            collate_fn=list_data_collate, **extra)
        while True:
            yield from loader
    if world == 1:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                            collate_fn=list_data_collate, generator=generator, **extra)
        while True:
            yield from loader
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=list_data_collate, generator=generator, **extra)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _schedule(cfg: LoopConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def channels_last_pays(model: torch.nn.Module, *, bf16: bool, device: torch.device) -> bool:
    """Whether a channels-last 3D layout speeds training up: under native bf16, where the weights
    of some spatial (larger than 1x1x1) convolution train. Measured at 64^3, one thread
    (docs/scaling-up.md): 1.2-1.3x for decoder, decoder-skips, full fine-tuning and conv
    adapters; 3-7% slower where only linear layers, norms, LoRA factors and the 1x1x1 head
    train."""
    if not (bf16 and supports_bf16(device)):
        return False
    return any(p.requires_grad for m in model.modules()
               if isinstance(m, torch.nn.modules.conv._ConvNd) and m.weight[0, 0].numel() > 1
               for p in m.parameters(recurse=False))


def check_groups(model: torch.nn.Module, groups: list[dict]) -> None:
    """Every trainable parameter must be in exactly one group, and only trainable ones."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    seen = [id(p) for g in groups for p in g["params"]]
    if len(seen) != len(set(seen)) or set(seen) != trainable:
        raise ValueError(f"optimizer groups cover {len(set(seen))} tensors ({len(seen)} entries) "
                         f"but the model trains {len(trainable)}")


def train_loop(model: torch.nn.Module, dataset, loss_fn: Callable, cfg: LoopConfig, *, run_dir: Path,
               groups: list[dict] | None = None, resume: bool = False, progress: Reporter | None = None,
               desc: str = "training", stop_after: int | None = None,
               device: str | torch.device | None = None,
               weights: list[float] | None = None) -> dict:
    """Train ``model``'s trainable parameters for ``cfg.steps`` steps; returns a summary.

    ``groups`` are optimizer parameter groups with their own ``lr`` (default: one group at
    ``cfg.lr``). ``stop_after`` ends the run early after that many steps (simulates a crash).
    The model is moved to ``device`` (see ``medpeft.device``) and stays there. ``weights``: draw
    the volumes in proportion to these (see ``batches``).
    """
    t0 = time.perf_counter()  # the training seconds include placing the model and the data
    run_dir = Path(run_dir)
    device = distributed.rank_device(device)
    main, rank, world = distributed.is_main(), distributed.rank(), distributed.world_size()
    model.to(device)
    ckpt_dir = run_dir / "checkpoints"
    optimizer, scheduler = _optimizer(model, groups, cfg)
    start = load_checkpoint(ckpt_dir, model, optimizer, scheduler) if resume else 0
    earlier = checkpoint_seconds(ckpt_dir) if start else 0.0  # the seconds of steps 1..start
    if not resume and main:  # a fresh run: nothing of an earlier one stays
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        shutil.rmtree(run_dir / "snapshots", ignore_errors=True)
    net, layout = _place(model, cfg, device)
    torch.manual_seed(cfg.seed + start + rank)
    stream = batches(dataset, cfg.batch_size, cfg.seed + start, rank, world=world,
                     workers=cfg.workers, weights=weights)
    progress = progress if main else None
    task = progress.add_task(desc, total=cfg.steps, completed=start) if progress else None
    model.train()
    running, logged = [], math.nan
    plateau, bad = LossPlateau(cfg.patience, cfg.ema_decay), BadSteps()
    step, done = start, cfg.steps
    with frozen_parts_without_autograd(model):  # a frozen Swin encoder: fused attention
        for step in range(start, cfg.steps):
            if stop_after is not None and step - start >= stop_after:
                return {"steps": step, "stopped": True}
            value = _descend(net, to_device(next(stream), device), loss_fn, optimizer,
                             bf16=cfg.bf16, layout=layout, device=device)
            scheduler.step()
            bad.count(value, step, run_dir)
            running += [value] if math.isfinite(value) else []
            if main and running and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                logged, running = _log(run_dir, step, running, optimizer, t0 - earlier), []
            if main and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                save_checkpoint(ckpt_dir, step + 1, model, optimizer, scheduler=scheduler,
                                 seconds=earlier + time.perf_counter() - t0)
            if main and cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0:
                save_snapshot(run_dir, step + 1, model)
            if progress:
                progress.update(task, advance=1, description=_bar_text(desc, value, bad.total))
            if math.isfinite(value) and plateau.update(value) and step + 1 >= cfg.warmup:
                done = step + 1
                break
    _wind_down(model, cfg, ckpt_dir, main)
    summary = {"steps": done, "seconds": earlier + time.perf_counter() - t0, "resumed_from": start,
               "device": str(device), "ranks": world,
               "channels_last": layout == torch.channels_last_3d, "precision": precision(device, cfg.bf16),
               "loss": logged if not running else sum(running) / len(running)}
    return _with_anomalies(summary, cfg, bad=bad, plateau=plateau)


def _with_anomalies(summary: dict, cfg: LoopConfig, *, bad: BadSteps, plateau: LossPlateau) -> dict:
    """The summary with what a reader must know: steps skipped as not finite, an early stop."""
    if bad.total:
        summary["skipped_steps"] = bad.total  # not finite: not taken
    if summary["steps"] < cfg.steps:
        summary["stopped_early"] = f"loss EMA {plateau.best:.4f} flat for {cfg.patience} steps"
    return summary


def batch_loss(net: torch.nn.Module, batch: dict, loss_fn, *, bf16: bool,
               layout: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The loss of one batch: the forward pass under bf16 autocast where the batch's device runs
    it natively, in ``layout``; the loss itself in float32."""
    with mixed_precision(batch["image"].device, bf16):
        logits = net(batch["image"].contiguous(memory_format=layout))
    return loss_fn(logits.float(), batch["label"], batch["channel_to_local"])


def _descend(net: torch.nn.Module, batch: dict, loss_fn, optimizer, *, bf16: bool,
             layout: torch.memory_format, device: torch.device) -> float:
    """One step down the loss; returns the loss (averaged over ranks, so the same on every rank).
    A step whose loss or gradients are not finite is not taken (NaN is returned): one bad batch
    must not poison the weights for every step after it."""
    optimizer.zero_grad(set_to_none=True)
    loss = batch_loss(net, batch, loss_fn, bf16=bf16, layout=layout)
    loss.backward()
    value = distributed.mean_over_ranks(loss.item(), device)
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not math.isfinite(value) or (grads and not torch.isfinite(get_total_norm(grads))):
        return math.nan  # gradients are averaged over ranks: every rank skips the same step
    optimizer.step()
    return value


def _bar_text(desc: str, value: float, skipped: int) -> str:
    """The progress bar's words: the step's loss, and how many steps were not taken (a skipped
    step has no loss to show, and "loss nan" would read as a diverged run)."""
    loss = f" loss {value:.3f}" if math.isfinite(value) else ""
    return f"{desc}{loss}" + (f" ({skipped} skipped)" if skipped else "")


class BadSteps:
    """Counts the steps not taken; too many in a row means the run diverged, and it stops with
    a message instead of writing weights that segment nothing."""

    IN_A_ROW = 10

    def __init__(self) -> None:
        self.total = self.in_a_row = 0

    def count(self, value: float, step: int, run_dir: Path) -> None:
        if math.isfinite(value):
            self.in_a_row = 0
            return
        self.total, self.in_a_row = self.total + 1, self.in_a_row + 1
        if self.in_a_row >= self.IN_A_ROW:
            raise TrainingDiverged(
                f"{run_dir}: the loss or its gradients were not finite for {self.in_a_row} steps "
                f"in a row (up to step {step + 1}); the run was stopped and its weights not saved. "
                "Try a lower --lr or --no-bf16")


class TrainingDiverged(ValueError):
    """Training stopped: its steps no longer give finite losses or gradients."""


def _place(model: torch.nn.Module, cfg: LoopConfig, device: torch.device
           ) -> tuple[torch.nn.Module, torch.memory_format]:
    """The network the steps call (wrapped for several ranks: gradients averaged over them) and
    the memory layout of its inputs; gradient checkpointing as ``cfg`` asks."""
    if cfg.grad_checkpoint:
        set_gradient_checkpointing(model)
    channels_last = cfg.channels_last
    if channels_last is None:
        channels_last = channels_last_pays(model, bf16=cfg.bf16, device=device)
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    if routing_pays(device, bf16=cfg.bf16):
        route_convolutions(model)  # 1.3-1.4x a float32 CPU step (see its module)
    return distributed.wrap(model, device), layout


def _optimizer(model: torch.nn.Module, groups: list[dict] | None, cfg: LoopConfig):
    """AdamW over ``groups`` (default: every trainable parameter at ``cfg.lr``) and its warm-up +
    cosine schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter has requires_grad=True")
    groups = groups or [{"name": "all", "params": params, "lr": cfg.lr}]
    check_groups(model, groups)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))


def _log(run_dir: Path, step: int, running: list[float], optimizer, t0: float) -> float:
    """Append the mean loss since the last line to ``metrics.jsonl``, with the training seconds
    since ``t0``; returns that mean."""
    logged = sum(running) / len(running)
    append_jsonl(run_dir / "metrics.jsonl", {
        "step": step + 1, "loss": logged,
        "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)},
        "seconds": time.perf_counter() - t0})
    return logged


def _wind_down(model: torch.nn.Module, cfg: LoopConfig, ckpt_dir: Path, main: bool) -> None:
    """Leave the model as it came (eval mode, no recomputation, contiguous); a finished run
    needs no checkpoints."""
    model.eval()
    if cfg.grad_checkpoint:
        set_gradient_checkpointing(model, False)
    unroute_convolutions(model)
    model.to(memory_format=torch.contiguous_format)
    distributed.barrier()
    if main:
        shutil.rmtree(ckpt_dir, ignore_errors=True)


class LossPlateau:
    """True once the loss's exponential moving average has not improved by 1% for ``patience``
    updates (never when ``patience`` is 0)."""

    def __init__(self, patience: int, decay: float = 0.9):
        self.patience, self.decay = patience, decay
        self.ema: float | None = None
        self.best, self.since = math.inf, 0

    def update(self, loss: float) -> bool:
        self.ema = loss if self.ema is None else self.decay * self.ema + (1 - self.decay) * loss
        if self.ema < 0.99 * self.best:
            self.best, self.since = self.ema, 0
        else:
            self.since += 1
        return self.patience > 0 and self.since >= self.patience
