"""Inference-time contrast stretch about soft tissue (57 HU): HU' = 57 + s (HU - 57); per-organ
Dice at the held-out source site for each s.

Usage, from the repository root:
  python benchmarks/results/spleen-trials-v6/stretch.py 0 1.0,1.3,1.6 [FOUNDATION]
"""
import os
import sys
import tempfile

import nibabel as nib
import numpy as np
import torch

from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.evaluate.metrics import dice_per_class
from medpeft.infer.predict import predict_labels
from medpeft.models.weights import load_foundation

torch.set_num_threads(1)


def main() -> None:
    f = load_foundation(sys.argv[3] if len(sys.argv) > 3 else "src/medpeft/assets/phantom-foundation")
    scales = [float(s) for s in sys.argv[2].split(",")]
    rows: dict[float, list] = {s: [] for s in scales}
    for ph in sys.argv[1].split(","):
        ds = read_dataset(f"runs/cache/phantom-demo-s{ph}/Task06_SourceHoldout", label_files=True)
        mapping = class_mapping(ds.labels, f.classes)
        lut = mapping.value_lut().astype(np.int64)
        c2l = np.array(mapping.channel_to_local)
        for case in ds.cases:
            img = nib.load(str(case.image))
            ct = np.asarray(img.dataobj).astype(np.float32)
            truth = lut[np.asarray(nib.load(str(case.label)).dataobj).astype(np.int64)]
            for s in scales:
                with tempfile.TemporaryDirectory() as d:
                    path = os.path.join(d, "x.nii.gz")
                    nib.save(nib.Nifti1Image(57 + s * (ct - 57), img.affine, img.header), path)
                    pred = c2l[predict_labels(f.model.eval(), path, f.preprocessing)]
                dice = dice_per_class(pred, truth, mapping.n_local)
                rows[s].append(dice)
                print(ph, case.name, s, " ".join(f"{v:.2f}" for v in dice), flush=True)
    for s, dice in rows.items():
        a = np.array(dice, dtype=float)
        print("scale", s, "mean", round(float(np.nanmean(a)), 4),
              np.round(np.nanmean(a, 0), 2).tolist())


if __name__ == "__main__":
    main()
