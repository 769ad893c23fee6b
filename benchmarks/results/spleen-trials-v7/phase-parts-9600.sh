#!/bin/bash
# Which part of `phase-shape` costs the spleen? Every earlier arm with per-organ offsets (60% or
# 30% of patches, visible, textbook enhancement) left the spleen at 0.51-0.58 at phantom 0's
# source site, while `shape` (no offsets AND no histogram shift, blur or noise) gave 0.70. This
# splits the two: v4's recipe from random weights (swin-fast, 9,600 steps, lr 2e-3, organ-balanced,
# bf16, seed 0; the control scratchps9600 of spleen-trials-v5, which keeps both parts) with
# MEDPEFT_TRIAL_PHASE_PARTS=offsets (the per-organ offsets only) or =texture (the histogram shift,
# blur and noise only), phase-parts.patch applied in a worktree of main at 91999ce
# (SRC=/work/trial17/src). Then decoder tuning (240 steps, K = 1 and 5) on phantoms 0/1/2.
# Usage: MEDPEFT_TRIAL_PHASE_PARTS=offsets|texture phase-parts-9600.sh NAME
set -e
export MEDPEFT_TRIAL_PHASE_PARTS
name=$1
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --steps 9600 --lr 2e-3 --seed 0 \
  --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 --channels-last \
  --resume > runs/pt-v6/$name.log 2>&1
unset MEDPEFT_TRIAL_PHASE_PARTS  # adaptation keeps `shape`, which the patch does not touch
recipes $name
