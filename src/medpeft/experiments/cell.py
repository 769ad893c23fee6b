"""The cached cell every experiment is made of: adapt, then score, once per folder.

A cell's record is written atomically when the cell finishes. A re-run reads the record back
instead of training again, so an interrupted grid, demo or benchmark loses at most the cell it
was in (and that cell's adaptation resumes from its checkpoint).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from medpeft.io import write_json
from medpeft.methods.adapter_io import adapter_config, open_adapter
from medpeft.models.weights import Foundation, load_foundation
from medpeft.pipelines import AdaptRequest, adapt
from medpeft.progress import Reporter

Record = TypeVar("Record")


def cached(path: str | Path, compute: Callable[[], Record]) -> Record:
    """The record an earlier run saved at ``path`` (JSON), else ``compute()``'s, saved once whole."""
    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    record = compute()
    write_json(path, record)
    return record


@dataclass
class AdaptedCell:
    """An adapter just trained in a cell, opened on its foundation, ready to be scored."""

    foundation: Foundation  # loaded after training; its model carries a white-box adapter
    model: torch.nn.Module
    classes: tuple[str, ...]
    trainable: int  # parameters trained (the adapter's size)
    seconds: float  # training wall time
    summary: dict  # the pipeline's training summary


def adapt_and_open(request: AdaptRequest, progress: Reporter | None = None) -> AdaptedCell:
    """Adapt by ``request`` (resuming a checkpoint in its folder), then open the adapter on a
    freshly loaded foundation."""
    summary = adapt(request, progress)
    foundation = load_foundation(request.foundation)
    model, classes = open_adapter(request.out, foundation)
    return AdaptedCell(foundation, model, classes,
                       adapter_config(request.out)["trainable_parameters"], summary["seconds"],
                       summary)
