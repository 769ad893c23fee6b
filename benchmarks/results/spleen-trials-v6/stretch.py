"""Inference-time contrast stretch about soft tissue (57 HU): HU' = 57 + s (HU - 57). Per-organ Dice
at the held-out source site."""
import sys, numpy as np, nibabel as nib, torch, tempfile, os
from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.infer.predict import predict_labels
from medpeft.models.weights import load_foundation
from medpeft.evaluate.metrics import dice_per_class
torch.set_num_threads(1)
f = load_foundation(sys.argv[3] if len(sys.argv) > 3 else "src/medpeft/assets/phantom-foundation")
scales = [float(s) for s in sys.argv[2].split(",")]
rows = {s: [] for s in scales}
for ph in sys.argv[1].split(","):
    ds = read_dataset(f"runs/cache/phantom-demo-s{ph}/Task06_SourceHoldout", label_files=True)
    m = class_mapping(ds.labels, f.classes); lut = m.value_lut().astype(np.int64); c2l = np.array(m.channel_to_local)
    for c in ds.cases:
        img = nib.load(str(c.image)); ct = np.asarray(img.dataobj).astype(np.float32)
        truth = lut[np.asarray(nib.load(str(c.label)).dataobj).astype(np.int64)]
        for s in scales:
            x = 57 + s * (ct - 57)
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "x.nii.gz"); nib.save(nib.Nifti1Image(x, img.affine, img.header), p)
                pred = c2l[predict_labels(f.model.eval(), p, f.preprocessing)]
            dc = dice_per_class(pred, truth, m.n_local); rows[s].append(dc)
            print(ph, c.name, s, " ".join(f"{v:.2f}" for v in dc), flush=True)
for s, r in rows.items():
    a = np.array(r); print("scale", s, "mean", round(float(np.nanmean(a)), 4), np.round(np.nanmean(a, 0), 2).tolist())
