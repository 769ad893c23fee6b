#!/bin/bash
# A last stage without the offsets: can the shipped v7b keep its transfer and get the spleen back?
# The offsets cost the spleen at the source site (README items 12-24) but carry the transfer to the
# non-contrast new site; continuing v5 without them moved the spleen +0.05 and adaptation by 0.01
# or less (items 10 and 12). Two arms from the shipped v7b, each v7b's third stage again for 1,600
# steps (lr 5e-4, 64^3 ROI, organ-balanced, bf16, seed 0, the source tasks of phantom collections
# 0-7): `late-shape` with --augment shape (rotation and scaling, no offsets) and its control
# `late-contrast` with v7b's own contrast-shape. Then decoder tuning (240 steps, K = 1 and 5) on
# phantoms 0/1/2, compared by benchmarks/recipe_compare.py. Resumable: run it again.
# Usage: THREADS=2 late-shape.sh
set -e
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
tasks="Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas"
for s in 0 1 2 3 4 5 6 7; do
  [ -f runs/cache/phantom-demo-s$s/Task10_NewSite/dataset.json ] || \
    run -m medpeft.cli phantom runs/cache/phantom-demo-s$s --size demo --seed $s
done
eight=$(for s in 0 1 2 3 4 5 6 7; do for t in $tasks; do echo --source runs/cache/phantom-demo-s$s/$t; done; done)
for arm in late-shape:shape late-contrast:contrast-shape; do
  name=${arm%%:*}
  run -m medpeft.cli pretrain $eight --out runs/pt-v6/$name --init src/medpeft/assets/phantom-foundation \
    --steps 1600 --lr 5e-4 --patch 64 64 64 --augment ${arm#*:} --seed 0 --checkpoint-every 200 \
    --sampling organ-balanced --bf16 --channels-last --resume >> runs/pt-v6/$name.log 2>&1
done
for name in late-shape late-contrast; do recipes $name; done
