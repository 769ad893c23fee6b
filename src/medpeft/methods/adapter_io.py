"""Adapter artefacts: ``adapter.safetensors`` (only what was trained) + ``adapter_config.json``.

The config records the method, its options and the SHA-256 of the base weights; loading onto
any other base model is refused, since a delta is meaningless on the wrong weights. A saved
adapter is rebuilt by its method (the sites it inserts, the parts it unfreezes), so this I/O sits
in the methods layer. :func:`open_adapter` opens any adapter folder, black-box ones included.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from medpeft.adapters.base import sites_of
from medpeft.adapters.inject import unwrap
from medpeft.io import write_json
from medpeft.methods import MethodState, apply_method, base_parameter_count, trainable_state
from medpeft.methods.blackbox.predictor import CONFIG as BLACKBOX_CONFIG
from medpeft.methods.blackbox.predictor import load_blackbox
from medpeft.methods.blackbox.service import foundation_service, load_service
from medpeft.methods.novel_organs import set_head_classes
from medpeft.models.weights import Foundation, save_foundation, save_state

WEIGHTS = "adapter.safetensors"
CONFIG = "adapter_config.json"


def save_adapter(folder: str | Path, model: torch.nn.Module, method: MethodState,
                 foundation: Foundation, *, extra: dict | None = None) -> Path:
    folder = Path(folder)
    delta = trainable_state(model)
    save_state(folder / WEIGHTS, delta)
    n_train = sum(t.numel() for t in delta.values())
    write_json(folder / CONFIG, {
        "method": method.name, "options": method.options,
        "base_model": foundation.path.name if foundation.path else None,
        "base_sha256": foundation.sha256,
        "sites": [{"name": s.name, "kind": s.kind, "location": s.location, "n_params": s.n_params,
                   "enabled": s.enabled} for s in method.sites],
        "classes": list(foundation.classes), "tensors": sorted(delta),
        "trainable_parameters": n_train, "base_parameters": base_parameter_count(model),
        **(extra or {}),
    })
    return folder


def adapter_classes(config: dict, foundation: Foundation) -> tuple[str, ...]:
    """The organs a white-box adapter segments (novel organs included)."""
    return tuple(config.get("classes", foundation.classes))


def load_adapter(folder: str | Path, foundation: Foundation) -> torch.nn.Module:
    """Apply a saved adapter to ``foundation.model`` (in place) and return the model."""
    folder = Path(folder)
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing (is {folder} a medpeft adapter?)")
    config = json.loads(config_path.read_text())
    if config["base_sha256"] != foundation.sha256:
        raise ValueError(f"{config_path}: adapter was trained on base weights "
                         f"{config['base_sha256'][:12]}, not on {foundation.sha256[:12]}")
    model = foundation.model
    classes = adapter_classes(config, foundation)
    if classes != foundation.classes and not any(n.startswith("out.") for n in config["tensors"]):
        raise ValueError(f"{config_path}: segments {list(classes)} but saved no head")
    set_head_classes(model, foundation.classes, classes)
    apply_method(model, config["method"], config["options"])
    params = dict(model.named_parameters())
    tensors = load_file(str(folder / WEIGHTS))
    missing = sorted(set(config["tensors"]) - set(tensors))
    unknown = sorted(set(tensors) - set(params))
    if missing or unknown:
        raise ValueError(f"{folder / WEIGHTS}: missing tensors {missing}, unknown tensors {unknown}")
    for name, value in tensors.items():
        if params[name].shape != value.shape:
            raise ValueError(f"{folder / WEIGHTS}: {name} has shape {tuple(value.shape)}, "
                             f"model expects {tuple(params[name].shape)}")
        params[name].data.copy_(value)
    enabled = {s["name"]: s["enabled"] for s in config.get("sites", [])}
    for site in sites_of(model):
        site.enabled = enabled.get(site.name, True)
    model.eval()
    return model


def export_merged(adapter_dir: str | Path, foundation: Foundation, out_dir: str | Path) -> Path:
    """Fold a saved adapter into the base weights: a plain foundation checkpoint (same keys as the
    base model) that any SwinUNETR loader can use. Kinds that cannot fold (bottleneck adapters)
    are refused by name."""
    model = unwrap(load_adapter(adapter_dir, foundation))
    config = json.loads((Path(adapter_dir) / CONFIG).read_text())
    return save_foundation(out_dir, model, foundation.backbone, adapter_classes(config, foundation),
                           pp=foundation.preprocessing,
                           extra={"merged_from": {"adapter": str(adapter_dir),
                                                  "method": config["method"],
                                                  "base_sha256": foundation.sha256}})


def adapter_config(folder: str | Path) -> dict:
    """The config of any saved adapter folder (black-box or not)."""
    for name in (BLACKBOX_CONFIG, CONFIG):
        if (Path(folder) / name).is_file():
            return json.loads((Path(folder) / name).read_text())
    raise FileNotFoundError(f"{folder}: no adapter config (is it a medpeft adapter folder?)")


def open_adapter(folder: str | Path, foundation: Foundation, blackbox: str | Path | None = None
                 ) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """Any saved adapter, ready to predict, and the classes of its outputs: a black-box one on
    its service (the ``blackbox`` file, else ``foundation`` sealed), any other applied to
    ``foundation``'s model."""
    folder = Path(folder)
    if (folder / BLACKBOX_CONFIG).exists():
        service = load_service(blackbox) if blackbox else foundation_service(foundation.model)
        predictor, config = load_blackbox(folder, service)
        return predictor, tuple(config["classes"])
    return load_adapter(folder, foundation), adapter_classes(adapter_config(folder), foundation)
