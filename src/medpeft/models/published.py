"""Published checkpoints loaded into medpeft's backbones, with a strict key report.

Every checkpoint's keys are renamed to MONAI SwinUNETR's (feature size 48, 7x7x7 windows) or to
the Models Genesis U-Net's (``medpeft.models.unet3d``) and then compared with the model: a key
that should load but is missing, a key of the wrong shape and a key that nothing explains are all
errors that name the keys; keys a checkpoint carries beyond the backbone (self-supervised heads,
the Universal Model's text-driven head) are listed as ignored.
Nothing is loaded with a silent ``strict=False``.

| name | file | what loads | head |
|---|---|---|---|
| ``fseft`` | FSEFT foundation model ``fseft.pth`` | all | 29 sigmoid classes (``classifier``) |
| ``monai-ssl`` | MONAI self-supervised ``model_swinvit.pt`` | Swin encoder | new |
| ``btcv`` | MONAI research BTCV Swin UNETR | all | 14 softmax classes (``out``) |
| ``universal`` | CLIP-driven Universal Model, Swin UNETR | encoder + decoder | new |
| ``suprem`` | SuPreM Swin UNETR | encoder + decoder | new |
| ``universal-unet``, ``suprem-unet`` | their U-Nets (``down_tr64...``) | encoder + decoder | new |

A sigmoid head of C classes becomes a softmax head of 1 + C channels with a zero background row:
for any one organ, softmax([0, z]) = sigmoid(z), so binary per-organ predictions are unchanged.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medpeft.data.ontology import resolve
from medpeft.data.transforms import PRESETS as PREPROCESSING
from medpeft.data.transforms import Preprocessing
from medpeft.models.backbones import PRESETS, build_backbone, part_of
from medpeft.models.checkpoint_file import read_checkpoint
from medpeft.models.weights import save_foundation

FSEFT_CLASSES = ("spleen", "rkidney", "lkidney", "gall", "esophagus", "liver", "stomach", "aorta",
                 "postcava", "psv", "pancreas", "radrenal", "ladrenal", "duodenum", "bladder",
                 "prost_ut", "liver_tumor", "kidney_tumor", "kidney_cyst", "celiac_truck", "rlung",
                 "llung", "bone", "brain", "lung_tumor", "pancreas_tumor", "hv", "hvt",
                 "colon_tumor")
BTCV_CLASSES = ("spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver",
                "stomach", "aorta", "inferior vena cava", "portal vein and splenic vein",
                "pancreas", "right adrenal gland", "left adrenal gland")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the backbone; the message names the offending keys."""


SHOWN_KEYS = 10  # of each kind in the error: a wrong file would otherwise print hundreds of lines


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # should have loaded, absent
    new: list[str] = field(default_factory=list)  # not provided by this checkpoint by design
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    preprocessing: Preprocessing | None = None  # the checkpoint's own (spacing, HU window, ROI)

    def problems(self, shown: int | None = None) -> list[str]:
        """Every offending key, or the first ``shown`` of each kind and how many more."""
        kinds = {"missing": [f"missing: {k}" for k in self.missing],
                 "mis-shaped": [f"shape of {k}: checkpoint {list(a)} vs model {list(b)}"
                                for k, a, b in self.mismatched],
                 "unexpected": [f"unexpected: {k}" for k in self.unexpected]}
        lines = []
        for kind, named in kinds.items():
            lines += named[:shown]
            if shown is not None and len(named) > shown:
                lines.append(f"... and {len(named) - shown} more {kind} keys")
        return lines

    def summary(self, name: str) -> str:
        """One line: how much of the backbone the checkpoint fits, and a hint when nothing does."""
        text = (f"{len(self.loaded)} tensors fit, {len(self.missing)} missing, "
                f"{len(self.mismatched)} of another shape, {len(self.unexpected)} unexplained")
        return text + (f"; none fits: is this a {name} checkpoint?" if not self.loaded else "")


def _strip(prefix: str) -> Callable[[str], str]:
    return lambda k: k[len(prefix):] if k.startswith(prefix) else k


def _fseft(key: str) -> str | None:
    key = _strip("module.")(key)
    return "out.conv.conv." + key[len("classifier."):] if key.startswith("classifier.") else key


def _monai_ssl(key: str) -> str | None:
    key = _strip("module.")(key)
    if not key.startswith(("patch_embed.", "layers1.", "layers2.", "layers3.", "layers4.")):
        return None  # the self-supervised heads (rotation, contrastive, reconstruction)
    return "swinViT." + key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")


def _universal(key: str) -> str | None:
    key = _strip("module.")(key)
    return key[len("backbone."):] if key.startswith("backbone.") else None


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    remap: Callable[[str], str | None]  # checkpoint key -> model key, None = known extra
    parts: tuple[str, ...]  # parts that must load completely
    classes: tuple[str, ...] | None  # the checkpoint's head classes (None: no usable head)
    preprocessing: Preprocessing = PREPROCESSING["seed-1.5mm"]  # what the weights were trained on
    backbone: str = "swin-base"
    sigmoid: bool = False
    encoder_prefixes: tuple[str, ...] = ()  # when only part of the encoder is provided


SPECS: dict[str, CheckpointSpec] = {
    "fseft": CheckpointSpec("fseft", _fseft, ("encoder", "decoder", "head"), FSEFT_CLASSES,
                            sigmoid=True),
    "monai-ssl": CheckpointSpec("monai-ssl", _monai_ssl, ("encoder",), None,
                                PREPROCESSING["monai-ssl"], encoder_prefixes=("swinViT.",)),
    "btcv": CheckpointSpec("btcv", _strip("module."), ("encoder", "decoder", "head"), BTCV_CLASSES,
                           PREPROCESSING["btcv"]),
    "universal": CheckpointSpec("universal", _universal, ("encoder", "decoder"), None),
    "suprem": CheckpointSpec("suprem", _universal, ("encoder", "decoder"), None),
    "universal-unet": CheckpointSpec("universal-unet", _universal, ("encoder", "decoder"), None,
                                     backbone="unet3d"),
    "suprem-unet": CheckpointSpec("suprem-unet", _universal, ("encoder", "decoder"), None,
                                  backbone="unet3d"),
}


def unwrap(obj) -> dict[str, torch.Tensor]:
    """The state dict inside a saved object (``state_dict``, ``net`` or ``model`` entry, or itself)."""
    for key in ("state_dict", "net", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    if isinstance(obj, dict) and all(torch.is_tensor(v) for v in obj.values()):
        return obj
    raise CheckpointError("no state dict found (expected a 'state_dict', 'net' or 'model' entry)")


def _should_load(spec: CheckpointSpec, key: str) -> bool:
    if part_of(key) not in spec.parts:
        return False
    return not (spec.encoder_prefixes and part_of(key) == "encoder"
                and not key.startswith(spec.encoder_prefixes))


def _head_rows(spec: CheckpointSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A sigmoid head as a softmax head: a zero background row in front."""
    if not spec.sigmoid:
        return state
    out = dict(state)
    for name in ("out.conv.conv.weight", "out.conv.conv.bias"):
        if name in out:
            w = out[name]
            out[name] = torch.cat([torch.zeros_like(w[:1]), w], dim=0)
    return out


def load_published(source: str | Path | dict, name: str, out_channels: int | None = None, *,
                   trust: bool = False) -> tuple[torch.nn.Module, LoadReport]:
    """The checkpoint's backbone with ``source`` (a path or a loaded object) in it.

    ``out_channels``: head size for checkpoints without a usable head (default 2). A path is read
    as weights only (``medpeft.models.checkpoint_file``) unless ``trust``. Raises
    :class:`CheckpointError` naming the missing, mis-shaped or unexplained keys (the first
    :data:`SHOWN_KEYS` of each kind, with counts).
    """
    if name not in SPECS:
        raise CheckpointError(f"unknown checkpoint kind {name!r}; choose from {sorted(SPECS)}")
    spec = SPECS[name]
    if not isinstance(source, dict):
        source = read_checkpoint(source, trust=trust)
    if spec.classes is not None:
        out_channels = len(spec.classes) + 1
    model = build_backbone(PRESETS[spec.backbone], out_channels or 2)
    target = model.state_dict()
    report, renamed = LoadReport(preprocessing=spec.preprocessing), {}
    for key, value in unwrap(source).items():
        new = spec.remap(key)
        if new is None:
            report.ignored.append(key)
        elif new not in target:
            report.unexpected.append(key)
        else:
            renamed[new] = value
    renamed = _head_rows(spec, renamed)
    for key, value in renamed.items():
        if tuple(value.shape) != tuple(target[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            report.loaded.append(key)
    for key in target:
        if key not in renamed:
            (report.missing if _should_load(spec, key) else report.new).append(key)
    if report.problems():
        raise CheckpointError(f"checkpoint {name} does not fit the {spec.backbone} backbone "
                              f"({report.summary(name)}):\n  - "
                              + "\n  - ".join(report.problems(shown=SHOWN_KEYS)))
    model.load_state_dict({**target, **{k: renamed[k] for k in report.loaded}}, strict=True)
    return model, report


def canonical_class(name: str) -> str:
    """A checkpoint's class name in the ontology where it names one organ, else kept (snake_case)."""
    organs = resolve(name)
    return organs[0] if len(organs) == 1 else name.strip().lower().replace(" ", "_")


def import_checkpoint(source: str | Path | dict, kind: str, out_dir: str | Path,
                      classes: tuple[str, ...] | None = None, *, trust: bool = False
                      ) -> tuple[Path, LoadReport]:
    """Write a published checkpoint as a medpeft foundation folder (weights, classes, its
    preprocessing). ``classes`` names the head's organs for checkpoints without a usable head."""
    spec = SPECS.get(kind)
    if spec is None:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; choose from {sorted(SPECS)}")
    names = spec.classes or classes
    if not names:
        raise CheckpointError(f"a {kind} checkpoint has no usable head: name the organs to "
                              "segment (--classes liver,spleen)")
    model, report = load_published(source, kind, out_channels=len(names) + 1, trust=trust)
    folder = save_foundation(out_dir, model, PRESETS[spec.backbone],
                             tuple(canonical_class(c) for c in names), pp=spec.preprocessing,
                             extra={"imported": {"kind": kind, "source": str(source)
                                                 if not isinstance(source, dict) else "in memory",
                                                 "loaded": len(report.loaded),
                                                 "new": report.new, "ignored": report.ignored}})
    return Path(folder), report
