"""A saved black-box adapter as a model: the sealed service's features through the trained head.

``blackbox.safetensors`` holds the head (only what was trained) and ``blackbox_config.json`` its
kind, classes, feature channels and the service it was trained on.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from medpeft.data.transforms import Preprocessing, load_transforms
from medpeft.methods.blackbox.heads import BlackBoxHead
from medpeft.methods.blackbox.service import FeatureService

WEIGHTS, CONFIG = "blackbox.safetensors", "blackbox_config.json"


class BlackBoxPredictor(nn.Module):
    """Logits of CT patches: the service's features through the trained head."""

    def __init__(self, service: FeatureService, head: BlackBoxHead):
        super().__init__()
        self.head = head
        object.__setattr__(self, "service", service)  # not a submodule: never moved or saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.service(x))


def volume_features(service: FeatureService, image_path: str | Path, pp: Preprocessing
                    ) -> torch.Tensor:
    """Features of a whole preprocessed volume (1, C, ...) by sliding window, float16."""
    from monai.inferers import sliding_window_inference  # MONAI's inferers load slowly
    image = load_transforms(pp, None, with_label=False)({"image": str(image_path)})["image"]
    with torch.no_grad():
        feats = sliding_window_inference(image[None].as_tensor(), pp.patch, 2, service,
                                         overlap=0.25, mode="gaussian")
    return feats.half()


def load_blackbox(folder: str | Path, service: FeatureService) -> tuple[BlackBoxPredictor, dict]:
    """A saved black-box adapter on ``service``; returns (predictor, its config)."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    if config["channels"] != service.channels:
        raise ValueError(f"{folder}: adapter expects {config['channels']} feature channels, "
                         f"the service returns {service.channels}")
    head = BlackBoxHead(config["channels"], len(config["classes"]) + 1, config["kind"])
    head.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    return BlackBoxPredictor(service, head.eval()), config
