"""Our own weights on disk: a foundation checkpoint is ``foundation.safetensors`` plus
``foundation.json`` (backbone, organ classes, preprocessing, the weights' SHA-256)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medpeft.data.transforms import Preprocessing
from medpeft.io import atomic_path, write_json
from medpeft.models.backbones import BackboneConfig, build_backbone

WEIGHTS = "foundation.safetensors"
META = "foundation.json"


@dataclass(frozen=True)
class Foundation:
    model: torch.nn.Module | None  # None: described only (black-box use reads no weights)
    backbone: BackboneConfig
    classes: tuple[str, ...]  # foreground organs, channel i + 1
    preprocessing: Preprocessing
    sha256: str
    path: Path | None = None
    # the training crops of adaptation, where its foundation.json measured smaller ones to serve
    # (``"adaptation": {"crop": [D, H, W]}``); None: the preprocessing's ROI, as inference's windows
    adapt_crop: tuple[int, int, int] | None = None

    def adaptation_preprocessing(self) -> Preprocessing:
        """The preprocessing adaptation crops with: inference keeps ``preprocessing``'s windows."""
        return replace(self.preprocessing, patch=self.adapt_crop) if self.adapt_crop else self.preprocessing

    def with_classes(self, classes: tuple[str, ...]) -> Foundation:
        """The same foundation segmenting ``classes`` (its head is set by the caller)."""
        return replace(self, classes=tuple(classes))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_state(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomic safetensors write of contiguous CPU copies."""
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def save_foundation(folder: str | Path, model: torch.nn.Module, backbone: BackboneConfig,
                    classes: tuple[str, ...], *, pp: Preprocessing, extra: dict | None = None) -> Path:
    folder = Path(folder)
    save_state(folder / WEIGHTS, model.state_dict())
    write_json(folder / META, {
        "backbone": backbone.to_dict(), "classes": list(classes), "preprocessing": pp.to_dict(),
        "sha256": file_sha256(folder / WEIGHTS), **(extra or {}),
    })
    return folder


def shipped_foundation() -> Path | None:
    """The foundation model pre-trained on the phantom collection that ships with medpeft."""
    folder = Path(__file__).resolve().parent.parent / "assets" / "phantom-foundation"
    return folder if (folder / META).is_file() and (folder / WEIGHTS).is_file() else None


def describe_foundation(folder: str | Path) -> Foundation:
    """A foundation's classes, preprocessing and weights hash from ``foundation.json`` alone."""
    meta_path = Path(folder) / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: missing (is {folder} a medpeft foundation checkpoint?)")
    meta = json.loads(meta_path.read_text())
    return Foundation(None, BackboneConfig.from_dict(meta["backbone"]), tuple(meta["classes"]),
                      Preprocessing.from_dict(meta["preprocessing"]), meta["sha256"], Path(folder),
                      adapt_crop=_adapt_crop(meta, meta_path))


def load_foundation(folder: str | Path) -> Foundation:
    """Load a foundation checkpoint; fails naming the file if it is missing or corrupt."""
    folder = Path(folder)
    meta_path, weights_path = folder / META, folder / WEIGHTS
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (is {folder} a medpeft foundation checkpoint?)")
    meta = json.loads(meta_path.read_text())
    digest = file_sha256(weights_path)
    if digest != meta["sha256"]:
        raise ValueError(f"{weights_path}: SHA-256 {digest[:12]} does not match {meta_path.name}")
    backbone = BackboneConfig.from_dict(meta["backbone"])
    classes = tuple(meta["classes"])
    model = build_backbone(backbone, len(classes) + 1)
    model.load_state_dict(load_file(str(weights_path)), strict=True)
    return Foundation(model, backbone, classes, Preprocessing.from_dict(meta["preprocessing"]),
                      digest, folder, adapt_crop=_adapt_crop(meta, meta_path))


def _adapt_crop(meta: dict, meta_path: Path) -> tuple[int, int, int] | None:
    """``foundation.json``'s adaptation crop, checked: Swin UNETR halves the grid five times, so
    each side must be a positive multiple of 32."""
    crop = meta.get("adaptation", {}).get("crop")
    if crop is None:
        return None
    if len(crop) != 3 or any(not isinstance(s, int) or s <= 0 or s % 32 for s in crop):
        raise ValueError(f"{meta_path}: adaptation.crop must be three positive multiples of 32, "
                         f"not {crop}")
    return tuple(crop)
