"""A MONAI bundle from a foundation and an adapter: the path into MONAI Label and 3D Slicer.

The adapter is folded into the base weights (``medpeft export --merge``; kinds that cannot fold
are refused by name), saved as ``models/model.pt``, and ``configs/inference.json`` rebuilds
medpeft's own inference with MONAI's components only: the same preprocessing (RAS, the
foundation's spacing, HU window, body crop), the same Gaussian sliding window, softmax,
inversion to the input grid, argmax and canonical organ ids. So
``python -m monai.bundle run --config_file OUT/configs/inference.json --bundle_root OUT
--dataset_dir SCANS`` segments a folder of NIfTI scans as ``medpeft predict`` does, without
medpeft installed.
"""
from __future__ import annotations

import json
from pathlib import Path

import monai
import torch

from medpeft.adapters.inject import unwrap
from medpeft.data.ontology import label_ids
from medpeft.io import atomic_path, write_json, write_text
from medpeft.methods.adapter_io import load_adapter
from medpeft.models.weights import Foundation


def _transforms(pp) -> list[dict]:
    return [
        {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": list(pp.spacing), "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": pp.hu_window[0],
         "a_max": pp.hu_window[1], "b_min": 0.0, "b_max": 1.0, "clip": True},
        # medpeft.data.transforms.inside_body: anything above the bottom of the HU window
        {"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
         "select_fn": "$lambda x: x > 0.0", "margin": 2, "allow_smaller": True},
    ]


def inference_config(foundation: Foundation, classes: tuple[str, ...]) -> dict:
    """The bundle's ``inference.json``: medpeft predict, written in MONAI bundle syntax."""
    b, pp = foundation.backbone, foundation.preprocessing
    n = len(classes) + 1
    return {
        "imports": ["$import glob", "$import numpy"],
        "bundle_root": ".",
        "dataset_dir": "./scans",
        "output_dir": "$@bundle_root + '/eval'",
        "datalist": "$sorted(glob.glob(@dataset_dir + '/*.nii*'))",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "SwinUNETR", "in_channels": 1, "out_channels": n,
                        "feature_size": b.feature_size, "window_size": b.window_size,
                        "depths": list(b.depths), "num_heads": list(b.num_heads)},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": _transforms(pp)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': f} for f in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1,
                       "shuffle": False, "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(pp.patch),
                    "sw_batch_size": 2, "overlap": 0.25, "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
             "orig_keys": "image", "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "MapLabelValued", "keys": "pred", "orig_labels": list(range(n)),
             "target_labels": [0, *label_ids(classes)]},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
             "output_postfix": "seg", "separate_folder": False, "resample": False,
             "output_dtype": "$numpy.uint8"}]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path":
                      "$@bundle_root + '/models/model.pt'", "load_dict": {"model": "@network"},
                      "strict": True, "map_location": "@device"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device",
                      "val_data_loader": "@dataloader", "network": "@network",
                      "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "run": ["$@evaluator.run()"],
    }


def metadata(foundation: Foundation, classes: tuple[str, ...], adapter_config: dict) -> dict:
    pp = foundation.preprocessing
    channels = {"0": "background", **{str(i + 1): c for i, c in enumerate(classes)}}
    return {
        "version": "0.1.0", "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "name": f"medpeft {adapter_config['method']} adapter",
        "task": "CT organ segmentation", "authors": "exported by medpeft",
        "description": (f"Foundation {foundation.sha256[:12]} with a {adapter_config['method']} "
                        "adapter folded into its weights."),
        "copyright": "see LICENSE",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT",
                                 "num_channels": 1, "spatial_shape": list(pp.patch),
                                 "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True}},
            "outputs": {"pred": {"type": "image", "format": "segmentation",
                                 "num_channels": len(channels), "spatial_shape": list(pp.patch),
                                 "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": channels}}},
        "label_ids": {str(i): c for i, c in zip(label_ids(classes), classes)},
    }


def write_bundle(adapter_dir: str | Path, foundation: Foundation, out: str | Path) -> Path:
    """Write the MONAI bundle folder ``out``; returns it."""
    adapter_dir, out = Path(adapter_dir), Path(out)
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if str(adapter_config.get("method", "")).startswith("blackbox"):
        raise ValueError(f"{adapter_dir}: a black-box adapter runs on a feature service, not "
                         "on foldable weights; it cannot be exported as a bundle yet")
    classes = tuple(adapter_config.get("classes", foundation.classes))
    model = unwrap(load_adapter(adapter_dir, foundation))  # refuses kinds that cannot fold
    (out / "models").mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "models" / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    write_json(out / "configs" / "inference.json", inference_config(foundation, classes))
    write_json(out / "configs" / "metadata.json", metadata(foundation, classes, adapter_config))
    write_text(out / "docs" / "README.md", _readme(adapter_config, classes))
    write_text(out / "LICENSE", _license(foundation, adapter_config))
    return out


def _readme(adapter_config: dict, classes: tuple[str, ...]) -> str:
    return (f"# medpeft {adapter_config['method']} adapter as a MONAI bundle\n\n"
            f"Segments {', '.join(classes)} on CT (NIfTI in; label maps with canonical organ "
            "ids out, see `configs/metadata.json` `label_ids`).\n\n"
            "```bash\npython -m monai.bundle run --config_file configs/inference.json "
            "--bundle_root . --dataset_dir /path/to/scans\n```\n\n"
            "Output: `eval/<scan>_seg.nii.gz` in each scan's own geometry.\n")


def _license(foundation: Foundation, adapter_config: dict) -> str:
    return ("No license is granted by medpeft for these weights.\n\n"
            f"They combine the foundation model {foundation.sha256} with a "
            f"{adapter_config['method']} adapter trained on a site's own labelled scans. The "
            "owners of that foundation and of those scans decide the terms under which this "
            "bundle may be shared or used; state them here before distributing it.\n")
