"""Does v6 find the spleen by its intensity? Each held-out source volume scored as it is, with
the spleen's voxels set to the median of the unlabelled tissue within 2 voxels of it
(invisible), and with them 60 HU brighter: spleen Dice and predicted / true volume.

Usage, from the repository root: python benchmarks/results/spleen-trials-v6/invisible.py
"""
import os
import tempfile

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.infer.predict import predict_labels
from medpeft.models.weights import load_foundation

torch.set_num_threads(1)
FOUNDATION = load_foundation("src/medpeft/assets/phantom-foundation")


def predicted(ct: np.ndarray, img: nib.Nifti1Image) -> np.ndarray:
    """Model channels for ``ct`` written in ``img``'s geometry."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.nii.gz")
        nib.save(nib.Nifti1Image(ct, img.affine, img.header), path)
        return predict_labels(FOUNDATION.model.eval(), path, FOUNDATION.preprocessing)


def main() -> None:
    for ph in (0, 1, 2):
        ds = read_dataset(f"runs/cache/phantom-demo-s{ph}/Task06_SourceHoldout", label_files=True)
        mapping = class_mapping(ds.labels, FOUNDATION.classes)
        lut = mapping.value_lut().astype(np.int64)
        c2l = np.array(mapping.channel_to_local)
        spleen = c2l[list(FOUNDATION.classes).index("spleen") + 1]
        for case in ds.cases:
            img = nib.load(str(case.image))
            ct = np.asarray(img.dataobj).astype(np.float32)
            truth = lut[np.asarray(nib.load(str(case.label)).dataobj).astype(np.int64)]
            t = truth == spleen
            ring = ndimage.binary_dilation(t, iterations=2) & ~t & (truth == 0)
            invisible, brighter = ct.copy(), ct.copy()
            invisible[t] = float(np.median(ct[ring]))
            brighter[t] += 60
            scores = []
            for name, x in (("as is", ct), ("invisible", invisible), ("+60 HU", brighter)):
                pred = c2l[predicted(x, img)] == spleen
                dice = 2 * (pred & t).sum() / max(pred.sum() + t.sum(), 1)
                scores.append(f"{name}: dice {dice:.2f} vol x{pred.sum() / t.sum():.2f}")
            print(ph, case.name, int(t.sum()), " | ".join(scores), flush=True)


if __name__ == "__main__":
    main()
