#!/bin/bash
# Foundation v7 candidate: v6's three stages with `contrast` offsets (phase without its intensity
# curve, blur and noise; spleen-trials-v7/phase-parts.md), each resumable (--resume):
#   1. 9,600 steps from random weights, contrast-shape, lr 2e-3, organ-balanced, bf16, seed 0, on
#      phantom-demo-s0's six source tasks (the trial arm `offsets9600`, whose transforms are
#      contrast-shape's, is copied in as this stage when present);
#   2. 1,600 more at lr 5e-4 (v5's second stage);
#   3. 3,200 more at lr 5e-4 with a 64^3 ROI on the source tasks of phantom collections 0-7 (v6's).
# Then decoder tuning (240 steps, K = 1 and 5) on phantoms 0/1/2, the protocol of every trial.
# FIRST (default contrast-shape): stage 1's augmentation (contrast: no rotation and scaling, as
# v6's first stage); OUT (default runs/pt-v7): the runs' folder. The next candidate:
# FIRST=contrast OUT=runs/pt-v7b pretrain.sh. THREADS (default 2) threads, nice 5. Collections: `medpeft phantom runs/cache/phantom-demo-sS
# --size demo --seed S`.
set -e
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
out=${OUT:-runs/pt-v7}
first=${FIRST:-contrast-shape}
mkdir -p $out
common="--seed 0 --checkpoint-every 200 --sampling organ-balanced --bf16 --channels-last --resume"
export THREADS=${THREADS:-2}
if [ $first = contrast-shape ] && [ ! -d $out/stage1 ] && [ -f runs/pt-v6/offsets9600/foundation.json ]; then
  cp -r runs/pt-v6/offsets9600 $out/stage1
fi
run -m medpeft.cli pretrain $SOURCES --out $out/stage1 --steps 9600 --lr 2e-3 --augment $first $common > $out/stage1.log 2>&1
run -m medpeft.cli pretrain $SOURCES --out $out/stage2 --steps 1600 --lr 5e-4 --init $out/stage1 \
  --augment contrast-shape $common > $out/stage2.log 2>&1
run -m medpeft.cli pretrain $EIGHT --out $out/v7 --steps 3200 --lr 5e-4 --init $out/stage2 \
  --patch 64 64 64 --augment contrast-shape $common > $out/v7.log 2>&1
export THREADS=1
for s in 0 1 2; do
  run benchmarks/adapt_recipe.py --foundation $out/v7 --method decoder --steps 240 --augment shape \
     --shots 1 --shots 5 --seed $s --out $out/v7-recipe-s$s > $out/v7-recipe-s$s.log 2>&1 &
done
wait
