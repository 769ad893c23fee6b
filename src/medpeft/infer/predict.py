"""Sliding-window inference (MONAI) with predictions returned in the *input's* geometry."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd
from scipy import ndimage

from medpeft.data.ontology import label_ids
from medpeft.data.transforms import Preprocessing, load_transforms
from medpeft.device import mixed_precision, resolve_device
from medpeft.infer.review import organ_reviews, read_reviews, record_reviews
from medpeft.io import save_nifti, write_json
from medpeft.progress import Reporter


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, image_path: str | Path, pp: Preprocessing,
                          overlap: float = 0.25, *, device: str | torch.device | None = None,
                          bf16: bool = False) -> np.ndarray:
    """Class probabilities (C, X, Y, Z) on the input file's own voxel grid.

    The model runs on ``device`` (moved there); the volume and the blended output stay on the CPU,
    so a whole CT never has to fit in GPU memory. ``bf16``: the model runs under bf16 autocast
    where the device supports it natively (blending stays float32).
    """
    pre = load_transforms(pp, None, with_label=False)
    data = pre({"image": str(image_path)})
    device = resolve_device(device)
    model.to(device).eval()
    with mixed_precision(device, bf16):
        logits = sliding_window_inference(data["image"][None], roi_size=pp.patch, sw_batch_size=2,
                                          predictor=lambda x: model(x).float(), overlap=overlap,
                                          mode="gaussian", sw_device=device, device="cpu")
    data["pred"] = torch.softmax(logits[0], dim=0)
    inverted = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)
    return np.asarray(inverted["pred"].detach().cpu(), dtype=np.float32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (26-connectivity) of a binary mask; empty if it has none.
    (scipy: MONAI's transform needs scikit-image on the CPU.)"""
    parts, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    return parts == np.bincount(parts.ravel())[1:].argmax() + 1


def keep_largest_components(channels: np.ndarray) -> np.ndarray:
    """Each organ reduced to its largest connected component; its other voxels become background."""
    out = channels.copy()
    for c in np.unique(channels):
        if c != 0:
            organ = channels == c
            out[organ & ~largest_component(organ)] = 0
    return out


def segment(model: torch.nn.Module, image_path: str | Path, pp: Preprocessing,
            device: str | torch.device | None = None, *, largest_component: bool = False,
            bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Model channel index per voxel (0 = background) and the winning channel's probability,
    both on the input's voxel grid; ``largest_component`` keeps only each organ's largest
    connected component (an organ's confidence, ``infer.review``, is then over the voxels kept)."""
    shape = nib.load(str(image_path)).shape[:3]  # first: a file that is no NIfTI is named by nibabel
    probs = predict_probabilities(model, image_path, pp, device=device, bf16=bf16)
    if probs.shape[1:] != shape:
        raise RuntimeError(f"{image_path}: inverted prediction {probs.shape[1:]} != input {shape}")
    channels = probs.argmax(0).astype(np.uint8)
    winning = probs.max(0)  # the argmax channel's probability
    return (keep_largest_components(channels) if largest_component else channels), winning


def predict_labels(model: torch.nn.Module, image_path: str | Path, pp: Preprocessing,
                   device: str | torch.device | None = None, *, largest_component: bool = False,
                   bf16: bool = False) -> np.ndarray:
    """Model channel index per voxel (0 = background), on the input's voxel grid."""
    return segment(model, image_path, pp, device, largest_component=largest_component, bf16=bf16)[0]


def segment_and_review(model: torch.nn.Module, image_path: str | Path, pp: Preprocessing, *,
                       case: str, out_dir: Path, classes: tuple[str, ...],
                       largest_component: bool = False, bf16: bool = False) -> np.ndarray:
    """``segment``'s channel map, with the case's organs put into ``out_dir``'s ``review.csv``
    first: the caller writes its output after, so an output on disk always has its rows."""
    channels, winning = segment(model, image_path, pp, largest_component=largest_component, bf16=bf16)
    record_reviews(out_dir, organ_reviews(case, channels, winning, voxel_ml(image_path), classes))
    return channels


def voxel_ml(image_path: str | Path) -> float:
    """The volume of one voxel of the image, in mL."""
    return float(np.prod(nib.load(str(image_path)).header.get_zooms()[:3])) / 1000.0


def save_prediction(path: str | Path, channels: np.ndarray, image_path: str | Path,
                    classes: tuple[str, ...]) -> None:
    """Write channel indices as canonical organ ids, with the input image's affine."""
    lut = np.array([0] + label_ids(classes), dtype=np.uint8)
    save_nifti(path, lut[channels], nib.load(str(image_path)).affine)


def nifti_inputs(source: str | Path) -> list[Path]:
    """The NIfTI files to predict: ``source`` itself, or every .nii/.nii.gz file in the folder."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    files = sorted(p for p in source.iterdir() if p.name.endswith((".nii.gz", ".nii")))
    if not files:
        raise FileNotFoundError(f"{source}: no .nii or .nii.gz files in it")
    return files


def output_case(target: Path) -> str:
    """The case an output file is named for (its name without .nii.gz / .seg.dcm)."""
    return target.name.removesuffix(".nii.gz").removesuffix(".seg.dcm")


def prepare_output(out_dir: str | Path, classes: tuple[str, ...]) -> Path:
    """The output folder, created, with ``labels.json`` (organ id -> organ) written in it."""
    out_dir = Path(out_dir)
    read_reviews(out_dir)  # a review.csv that is not ours is refused before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "labels.json", {str(i): c for i, c in zip(label_ids(classes), classes)})
    return out_dir


def failure_reason(err: BaseException) -> str:
    """What went wrong, in one line: MONAI wraps a transform's error in a RuntimeError that names
    only the transform object ("applying transform <...LoadImaged object at 0x...>"), and a
    reader's error carries every reader's traceback, so the innermost cause's first line."""
    while err.__cause__ is not None:
        err = err.__cause__
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def predict_files(model: torch.nn.Module, inputs: list[Path], out_dir: str | Path,
                  pp: Preprocessing, *, classes: tuple[str, ...], overwrite: bool = False,
                  progress: Reporter | None = None, largest_component: bool = False, bf16: bool = False
                  ) -> tuple[list[Path], dict[str, str]]:
    """One label NIfTI per input, in the input's exact geometry, and each case's organs to review
    (``review.csv``, ``infer.review``); returns (written, failures).

    A file that cannot be read or predicted is reported in ``failures`` and the rest go on;
    outputs that already exist are kept unless ``overwrite`` (so a re-run resumes).
    """
    out_dir = prepare_output(out_dir, classes)
    written, failures = [], {}
    task = progress.add_task("predicting", total=len(inputs)) if progress else None
    for path in inputs:
        target = out_dir / (path.name if path.name.endswith(".gz") else path.name + ".gz")
        try:
            if overwrite or not target.exists():
                channels = segment_and_review(model, path, pp, case=output_case(target),
                                              out_dir=out_dir, classes=classes,
                                              largest_component=largest_component, bf16=bf16)
                save_prediction(target, channels, path, classes)
            written.append(target)
        except Exception as err:  # noqa: BLE001  (one bad file must not stop the others)
            failures[str(path)] = failure_reason(err)
        if progress:
            progress.advance(task)
    return written, failures
