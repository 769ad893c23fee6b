"""What one hospital does with its private data: local few-shot training and local evaluation.

Every hospital and the server build the same model: the foundation from its own checkpoint, then the
plan's method with the federation's seed, so that fresh adapter tensors agree everywhere before
the first round. Only the tensors handed in and out here ever leave the hospital.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import ConcatDataset

from medpeft.data.fewshot import read_manifest
from medpeft.evaluate.metrics import evaluate_cases, mean_dice
from medpeft.federated.config import HOSPITALS, FedConfig
from medpeft.federated.plans import plan_named, split_state
from medpeft.federated.privacy import DPSettings, clip_update
from medpeft.methods import MethodState, apply_method, param_groups, trainable_state
from medpeft.methods.adapter_io import WEIGHTS, save_adapter
from medpeft.models.weights import Foundation, load_foundation
from medpeft.pipelines.tune import crop_dataset, load_support
from medpeft.train.checkpoints import trainable_parameters
from medpeft.train.loop import LoopConfig, train_loop
from medpeft.train.losses import MarginalDiceCELoss


def build_model(cfg: FedConfig, *, for_saving: bool = False) -> tuple[Foundation, MethodState]:
    """The foundation with the plan's method applied; adapter init depends on ``cfg.seed`` only.
    Under FFA-LoRA the LoRA A factors stay frozen at that shared init (neither trained nor sent),
    except ``for_saving``: a saved adapter carries its A factors."""
    foundation = load_foundation(cfg.foundation)
    plan = plan_named(cfg.plan)
    torch.manual_seed(cfg.seed)
    state = apply_method(foundation.model, plan.method, plan.options)
    if cfg.aggregation == "ffa" and not for_saving:
        for name, param in foundation.model.named_parameters():
            if ".lora_A" in name:
                param.requires_grad_(False)
    return foundation, state


def initial_state(cfg: FedConfig) -> tuple[dict, dict]:
    """(tensors that travel, tensors kept at each hospital) before any training."""
    foundation, _ = build_model(cfg)
    return split_state(trainable_state(foundation.model), cfg.local)


def load_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model``'s trainable parameters; unknown names or shapes fail."""
    params = trainable_parameters(model)
    for name, value in tensors.items():
        if name not in params:
            raise ValueError(f"{source}: tensor {name!r} is not trained by this plan")
        if tuple(value.shape) != tuple(params[name].shape):
            raise ValueError(f"{source}: {name} has shape {tuple(value.shape)}, expected "
                             f"{tuple(params[name].shape)}")
        params[name].data.copy_(value)


class Hospital:
    """One hospital's private data (a K-shot manifest) and its training / evaluation."""

    def __init__(self, cfg: FedConfig, manifest: str | Path):
        self.cfg, self.manifest = cfg, Path(manifest)
        self.split = read_manifest(manifest)
        self.name = self.split.get("site", self.manifest.stem)

    @property
    def n_support(self) -> int:
        return len(self.split["support"])

    def _model(self, shared: dict, kept: dict, for_saving: bool = False
               ) -> tuple[Foundation, MethodState]:
        foundation, state = build_model(self.cfg, for_saving=for_saving)
        load_tensors(foundation.model, shared, "global adapter")
        load_tensors(foundation.model, kept, f"{self.name} local state")
        return foundation, state

    def training_data(self, foundation: Foundation):
        """Random training crops of the hospital's support volumes."""
        ds, mapping = load_support(foundation, self.split)
        return crop_dataset(foundation, ds, mapping, self.split["support"])

    def train(self, shared: dict, kept: dict, server_round: int, steps: int | None = None
              ) -> tuple[dict, dict, dict]:
        """Train locally from the global tensors; returns (tensors to send, kept tensors, metrics).
        Every call is one round: a fresh optimizer, warm-up and cosine cycle, the round's seed."""
        foundation, state = self._model(shared, kept)
        data = self.training_data(foundation)
        steps = steps or self.cfg.local_steps
        loop = LoopConfig(steps=steps, warmup=max(1, steps // 10), log_every=max(1, steps),
                          checkpoint_every=10 ** 9, seed=self.cfg.seed + 1000 * server_round,
                          bf16=self.cfg.bf16)
        with tempfile.TemporaryDirectory() as tmp:
            summary = train_loop(foundation.model, data, MarginalDiceCELoss(), loop, run_dir=Path(tmp),
                                 groups=param_groups(foundation.model, state))
        out, kept = split_state(trainable_state(foundation.model), self.cfg.local)
        if self.cfg.dp:  # the update leaves the hospital clipped to the DP bound
            out = clip_update(out, shared, DPSettings.from_dict(self.cfg.dp).clipping_norm)
        return out, kept, {"train-loss": float(summary.get("loss", float("nan"))),
                           "seconds": float(summary["seconds"])}

    @property
    def personal_dir(self) -> Path:
        """Where the hospital keeps its personalised adapter (global tensors + its kept ones)."""
        return Path(self.cfg.out) / HOSPITALS / self.name

    def saved_kept(self) -> dict:
        """The kept tensors of the personalised adapter this run saved last, or {} before there
        is one (``federate`` clears the folder when a run starts)."""
        path = self.personal_dir / WEIGHTS
        if not self.cfg.local or not path.is_file():
            return {}
        return split_state(load_file(str(path)), self.cfg.local)[1]

    def evaluate(self, shared: dict, kept: dict, *, save_personal: bool = True) -> float:
        """Mean Dice of the model with these tensors on the hospital's own test volumes. A hospital
        with kept tensors also saves that model as its personalised adapter (each time, so the
        last round's is what stays) unless ``save_personal`` is off (the comparison arms)."""
        foundation, state = self._model(shared, kept, for_saving=bool(kept and save_personal))
        if kept and save_personal:
            save_adapter(self.personal_dir, foundation.model, state, foundation,
                         extra={"site": self.name, "local_patterns": self.cfg.local})
        return self.dice(foundation)

    def dice(self, foundation: Foundation) -> float:
        ds, mapping = load_support(foundation, self.split)
        rows = evaluate_cases(foundation.model.eval(), ds, self.split["test"], mapping,
                              pp=foundation.preprocessing, classes=foundation.classes)
        return float(mean_dice(rows))


class PooledHospitals(Hospital):
    """Every hospital's support volumes in one place: the centralised bound a federation approaches."""

    def __init__(self, cfg: FedConfig, hospitals: list[Hospital]):
        self.cfg, self.hospitals, self.name = cfg, hospitals, "pooled"

    @property
    def n_support(self) -> int:
        return sum(hospital.n_support for hospital in self.hospitals)

    def training_data(self, foundation: Foundation):
        return ConcatDataset([hospital.training_data(foundation) for hospital in self.hospitals])
