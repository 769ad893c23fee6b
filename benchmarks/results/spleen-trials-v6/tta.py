"""Test-time augmentation trial on the held-out source site: does averaging over small
scalings / shifts / intensity changes lift the spleen?"""
import sys, json
import numpy as np, torch, nibabel as nib
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd
from medpeft.data.layouts import read_dataset
from medpeft.data.ontology import class_mapping
from medpeft.data.transforms import load_transforms
from medpeft.models.weights import load_foundation
from medpeft.evaluate.metrics import dice_per_class

torch.set_num_threads(1)
f = load_foundation("src/medpeft/assets/phantom-foundation")
model = f.model.eval()
pp = f.preprocessing

def run(img):
    with torch.no_grad():
        lg = sliding_window_inference(img[None], roi_size=pp.patch, sw_batch_size=2,
                                      predictor=lambda x: model(x).float(), overlap=0.25, mode="gaussian")
    return torch.softmax(lg[0], 0)

def scaled(img, s):
    shp = img.shape[1:]
    new = [max(8, int(round(d * s))) for d in shp]
    x = F.interpolate(img[None].float(), size=new, mode="trilinear", align_corners=False)[0]
    p = run(x)
    return F.interpolate(p[None], size=list(shp), mode="trilinear", align_corners=False)[0]

def shifted(img, sh):
    # pad at the start by sh voxels on each axis (edge), predict, crop back
    x = F.pad(img[None].float(), (sh[2], 0, sh[1], 0, sh[0], 0), mode="replicate")[0]
    p = run(x)
    return p[:, sh[0]:, sh[1]:, sh[2]:]

VARIANTS = {
  "base": lambda im: run(im),
  "scale3": lambda im: (run(im) + scaled(im, 0.9) + scaled(im, 1.1)) / 3,
  "shift4": lambda im: sum(shifted(im, s) for s in [(0,0,0),(8,0,0),(0,8,0),(0,0,8)]) / 4,
  "inten3": lambda im: (run(im) + run((im + 0.04).clamp(0,1)) + run((im - 0.04).clamp(0,1))) / 3,
}
names = sys.argv[2].split(",") if len(sys.argv) > 2 else list(VARIANTS)
out = {}
for ph in sys.argv[1].split(","):
    ds = read_dataset(f"runs/cache/phantom-demo-s{ph}/Task06_SourceHoldout", label_files=True)
    mapping = class_mapping(ds.labels, f.classes)
    c2l = np.array(mapping.channel_to_local); lut = mapping.value_lut().astype(np.int64)
    pre = load_transforms(pp, None, with_label=False)
    for case in ds.cases:
        data = pre({"image": str(case.image)})
        truth = lut[np.asarray(nib.load(str(case.label)).dataobj).astype(np.int64)]
        for v in names:
            d = dict(data); d["pred"] = VARIANTS[v](data["image"])
            inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(d)
            pred = c2l[np.asarray(inv["pred"]).argmax(0)]
            dc = dice_per_class(pred, truth, mapping.n_local)
            out.setdefault(v, []).append(dc)
            print(ph, case.name, v, " ".join(f"{x:.2f}" for x in dc), flush=True)
labels = [n for n in ds.labels.values()] if isinstance(ds.labels, dict) else ds.labels
for v, rows in out.items():
    a = np.array(rows, dtype=float)
    print(v, "mean", round(float(np.nanmean(a)), 4), "per organ", np.round(np.nanmean(a, 0), 3).tolist())
