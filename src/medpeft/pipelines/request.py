"""What one adaptation is asked to do, whichever pipeline runs it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medpeft.methods import ADAPT_AUGMENT, ADAPT_BF16


@dataclass(frozen=True)
class AdaptRequest:
    """One adaptation: the foundation, the manifest's support volumes, the method, the folder.

    Settings a family does not use must stay at their defaults (``AdaptRequest.check`` in
    :mod:`medpeft.pipelines` says which, so that no flag is silently ignored).
    """

    foundation: Path
    manifest: Path
    method: str  # any name medpeft.methods.registry.resolve parses
    out: Path
    # training steps (SEA-PEFT: refinement steps, after its search); None: the method's default,
    # which may grow with the support set (medpeft.methods.adapt_steps), else ADAPT_STEPS
    steps: int | None = None
    seed: int = 0
    resume: bool = False
    patience: int = 0  # stop once the training loss's moving average is flat this many steps
    organs: tuple[str, ...] = ()  # the task (default: the foundation's organs)
    # tune family
    lr: float | dict[str, float] | None = None  # one rate, or {group: rate} over the defaults
    options: dict | None = None  # the method's options (rank, alpha, targets, bottleneck, ...)
    bf16: bool = ADAPT_BF16
    grad_checkpoint: bool = False
    augment: str = ADAPT_AUGMENT  # medpeft.data.augment
    # searched family: medpeft.methods.sea.loop.sea_config settings (budget, steps, votes, ...)
    sea: dict = field(default_factory=dict)
    audit_volume: str | None = None
    # black-box family
    blackbox: Path | None = None  # a TorchScript / ONNX features model (default: the foundation)
    unlabelled: tuple[Path, ...] = ()  # transductive adaptation on these scans of the site
    gamma: float = 0.2  # the size band of the transductive prior
