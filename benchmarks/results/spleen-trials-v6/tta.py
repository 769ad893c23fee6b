"""Test-time augmentation at the held-out source site: does averaging the class probabilities
over small scalings, shifts or intensity changes lift the spleen? (No flips: left and right
organs are different classes.)

Usage, from the repository root: python benchmarks/results/spleen-trials-v6/tta.py 0 [VARIANTS]
  (phantoms joined by commas, e.g. 1,2; VARIANTS: base,scale3,shift4,inten3 by default)
"""
import sys

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd

from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.data.transforms import load_transforms
from medpeft.evaluate.metrics import dice_per_class
from medpeft.models.weights import load_foundation

torch.set_num_threads(1)
FOUNDATION = load_foundation("src/medpeft/assets/phantom-foundation")
MODEL, PP = FOUNDATION.model.eval(), FOUNDATION.preprocessing


def run(img: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = sliding_window_inference(img[None], roi_size=PP.patch, sw_batch_size=2,
                                          predictor=lambda x: MODEL(x).float(), overlap=0.25,
                                          mode="gaussian")
    return torch.softmax(logits[0], 0)


def scaled(img: torch.Tensor, s: float) -> torch.Tensor:
    shape = list(img.shape[1:])
    size = [max(8, round(d * s)) for d in shape]
    x = F.interpolate(img[None].float(), size=size, mode="trilinear", align_corners=False)[0]
    return F.interpolate(run(x)[None], size=shape, mode="trilinear", align_corners=False)[0]


def shifted(img: torch.Tensor, sh: tuple[int, int, int]) -> torch.Tensor:
    """Edge-padded at the start of each axis by ``sh`` voxels, predicted, cropped back."""
    x = F.pad(img[None].float(), (sh[2], 0, sh[1], 0, sh[0], 0), mode="replicate")[0]
    return run(x)[:, sh[0]:, sh[1]:, sh[2]:]


VARIANTS = {
    "base": run,
    "scale3": lambda im: (run(im) + scaled(im, 0.9) + scaled(im, 1.1)) / 3,
    "shift4": lambda im: sum(shifted(im, s) for s in
                             [(0, 0, 0), (8, 0, 0), (0, 8, 0), (0, 0, 8)]) / 4,
    "inten3": lambda im: (run(im) + run((im + 0.04).clamp(0, 1))
                          + run((im - 0.04).clamp(0, 1))) / 3,
}


def main() -> None:
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(VARIANTS)
    rows: dict[str, list] = {}
    pre = load_transforms(PP, None, with_label=False)
    for ph in sys.argv[1].split(","):
        ds = read_dataset(f"runs/cache/phantom-demo-s{ph}/Task06_SourceHoldout", label_files=True)
        mapping = class_mapping(ds.labels, FOUNDATION.classes)
        c2l = np.array(mapping.channel_to_local)
        lut = mapping.value_lut().astype(np.int64)
        for case in ds.cases:
            data = pre({"image": str(case.image)})
            truth = lut[np.asarray(nib.load(str(case.label)).dataobj).astype(np.int64)]
            for v in names:
                d = {**data, "pred": VARIANTS[v](data["image"])}
                inv = Invertd(keys="pred", transform=pre, orig_keys="image",
                              nearest_interp=False)(d)
                dice = dice_per_class(c2l[np.asarray(inv["pred"]).argmax(0)], truth,
                                      mapping.n_local)
                rows.setdefault(v, []).append(dice)
                print(ph, case.name, v, " ".join(f"{x:.2f}" for x in dice), flush=True)
    for v, dice in rows.items():
        a = np.array(dice, dtype=float)
        print(v, "mean", round(float(np.nanmean(a)), 4), "per organ",
              np.round(np.nanmean(a, 0), 3).tolist())


if __name__ == "__main__":
    main()
