#!/bin/bash
# Longer: does item 29's closest recipe (strong-shape.patch's stronger shape augmentation with the
# spleen's offsets held at 0) reach the spleen floor with twice the steps, on two pre-training seeds?
# Each arm NAME:INIT:SEED continues a finished 1,600-step trial stage (runs/pt-v6/INIT) for 1,600
# more steps with the same recipe (contrast-shape, lr 5e-4 warm restart, 64^3 ROI, 8 collections,
# organ-balanced, bf16) and a new data seed, so the continuation does not redraw the first
# stage's patches. Run with the patch applied in a worktree: SRC=<worktree>/src; THREADS per arm.
# Resumable: run it again. Usage: trial-runs.sh [NAME:INIT:SEED ...]
set -e
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
export MEDPEFT_TRIAL_SHAPE=strong MEDPEFT_TRIAL_FIXED_ORGANS=spleen
arms=${*:-long-strong-sf:late-strong-sf:2 long-strong-sf-seed1:late-strong-sf-seed1:3}
for arm in $arms; do
  IFS=: read -r name init seed <<< "$arm"
  run -m medpeft.cli pretrain $EIGHT --out runs/pt-v6/$name --init runs/pt-v6/$init \
    --steps 1600 --lr 5e-4 --patch 64 64 64 --augment contrast-shape --seed $seed \
    --checkpoint-every 200 --sampling organ-balanced --bf16 --channels-last --resume \
    >> runs/pt-v6/$name.log 2>&1 &
done
wait
