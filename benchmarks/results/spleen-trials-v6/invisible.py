"""Does v6 find the spleen by its intensity? Spleen voxels set to the median of the background
around them (invisible), or the whole image unchanged; spleen Dice and predicted volume."""
import numpy as np, nibabel as nib, torch, tempfile, os
from scipy import ndimage
from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.infer.predict import predict_labels
from medpeft.models.weights import load_foundation
torch.set_num_threads(1)
f = load_foundation("src/medpeft/assets/phantom-foundation")
for ph in (0, 1, 2):
    ds = read_dataset(f"runs/cache/phantom-demo-s{ph}/Task06_SourceHoldout", label_files=True)
    m = class_mapping(ds.labels, f.classes); lut = m.value_lut().astype(np.int64); c2l = np.array(m.channel_to_local)
    sl = c2l[list(f.classes).index("spleen") + 1]
    for c in ds.cases:
        img = nib.load(str(c.image)); ct = np.asarray(img.dataobj).astype(np.float32)
        truth = lut[np.asarray(nib.load(str(c.label)).dataobj).astype(np.int64)]
        t = truth == sl
        ring = ndimage.binary_dilation(t, iterations=2) & ~t & (truth == 0)
        res = []
        for name, val in (("as is", None), ("invisible", float(np.median(ct[ring]))), ("+60 HU", None)):
            x = ct.copy()
            if name == "invisible": x[t] = val
            if name == "+60 HU": x[t] += 60
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "x.nii.gz"); nib.save(nib.Nifti1Image(x, img.affine, img.header), p)
                pred = c2l[predict_labels(f.model.eval(), p, f.preprocessing)] == sl
            dice = 2 * (pred & t).sum() / max(pred.sum() + t.sum(), 1)
            res.append(f"{name}: dice {dice:.2f} vol x{pred.sum() / t.sum():.2f}")
        print(ph, c.name, int(t.sum()), " | ".join(res), flush=True)
