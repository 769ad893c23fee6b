#!/bin/bash
# The source hospital adapts the foundation on its own new patients: decoder-skips (medpeft
# adapt's default) on hospital-A held-out volumes of phantom collections 1 and 2, scored on
# phantom 0's (the README's source-site figure). One folder holds the 12 volumes (links), the
# manifests choose support and test. Needs runs/cache/phantom-demo-s{0,1,2}
# (medpeft phantom runs/cache/phantom-demo-sN --size demo --seed N).
set -e
cd /work/main
R=runs/srcsite/HospitalA
mkdir -p $R/imagesTr $R/labelsTr
for s in 0 1 2; do for i in 0 1 2 3; do for d in imagesTr labelsTr; do
  ln -sf $PWD/runs/cache/phantom-demo-s$s/Task06_SourceHoldout/$d/sourceholdout_00$i.nii.gz $R/$d/p${s}_00$i.nii.gz
done; done; done
python3 - <<'PY'
import json
R = "runs/srcsite/HospitalA"
d = json.load(open("runs/cache/phantom-demo-s0/Task06_SourceHoldout/dataset.json"))
d["training"] = [{"image": f"./imagesTr/p{s}_00{i}.nii.gz", "label": f"./labelsTr/p{s}_00{i}.nii.gz"}
                 for s in range(3) for i in range(4)]
d["numTraining"] = 12
json.dump(d, open(f"{R}/dataset.json", "w"), indent=1)
PY
M=benchmarks/results/spleen-trials-v6/source-site-adaptation
for m in a b k8; do
  OMP_NUM_THREADS=1 medpeft adapt --foundation src/medpeft/assets/phantom-foundation \
    --manifest $M/manifest-$m.json --out runs/srcsite/ad-$m
  OMP_NUM_THREADS=1 medpeft evaluate --foundation src/medpeft/assets/phantom-foundation \
    --manifest $M/manifest-$m.json --adapter runs/srcsite/ad-$m --out runs/srcsite/eval-$m
done
