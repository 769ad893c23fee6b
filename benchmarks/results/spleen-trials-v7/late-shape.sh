#!/bin/bash
# A last stage without the offsets: can the shipped v7b keep its transfer and get the spleen back?
# The offsets cost the spleen at the source site (README items 12-24) but carry the transfer to the
# non-contrast new site; continuing v5 without them moved the spleen +0.05 and adaptation by 0.01
# or less (items 10 and 12). Each arm NAME:AUGMENT:STEPS runs v7b's third stage again from the
# shipped weights (lr 5e-4, 64^3 ROI, organ-balanced, bf16, seed 0, the source tasks of phantom
# collections 0-7): `late-shape` with --augment shape (rotation and scaling, no offsets), its
# control `late-contrast` with v7b's own contrast-shape, and `late-shape3200`, the first arm twice
# as long. Then decoder tuning (240 steps, K = 1 and 5) on phantoms 0/1/2, compared by
# benchmarks/recipe_compare.py (late-stage.md). Resumable: run it again.
# Usage: THREADS=2 late-shape.sh [NAME:AUGMENT:STEPS ...] (default: the three arms)
set -e
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
arms=${*:-late-shape:shape:1600 late-contrast:contrast-shape:1600 late-shape3200:shape:3200}
for s in 0 1 2 3 4 5 6 7; do
  [ -f runs/cache/phantom-demo-s$s/Task10_NewSite/dataset.json ] || \
    run -m medpeft.cli phantom runs/cache/phantom-demo-s$s --size demo --seed $s
done
for arm in $arms; do
  IFS=: read -r name augment steps <<< "$arm"
  run -m medpeft.cli pretrain $EIGHT --out runs/pt-v6/$name --init src/medpeft/assets/phantom-foundation \
    --steps $steps --lr 5e-4 --patch 64 64 64 --augment $augment --seed 0 --checkpoint-every 200 \
    --sampling organ-balanced --bf16 --channels-last --resume >> runs/pt-v6/$name.log 2>&1
done
for arm in $arms; do recipes ${arm%%:*}; done
