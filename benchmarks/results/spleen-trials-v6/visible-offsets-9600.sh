#!/bin/bash
# Visible-offsets trial from random weights: v4's recipe with phase-shape (swin-fast, 9,600 steps,
# lr 2e-3, organ-balanced, bf16, seed 0; the control scratchps9600 of spleen-trials-v5) on
# phantom-demo-s0's six source tasks, every per-organ offset kept at least MEDPEFT_TRIAL_VISIBLE
# (0.05 of the window, 21 HU) away from the unlabelled tissue around the organ
# (visible-offsets.patch, applied in a worktree of main at 11e0497: SRC=/work/trial16/src).
# Then decoder tuning (240 steps, K = 1 and 5) on phantoms 0/1/2, as every spleen trial.
# Usage: visible-offsets-9600.sh [NAME]; SEED (default 0) seeds pre-training; a margin of 0
# (MEDPEFT_TRIAL_VISIBLE=0) is the control: the same random draws, no offset moved.
set -e
export MEDPEFT_TRIAL_VISIBLE=${MEDPEFT_TRIAL_VISIBLE:-0.05}
name=${1:-visible9600}
seed=${SEED:-0}
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --steps 9600 --lr 2e-3 --seed $seed \
  --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 --channels-last \
  --resume > runs/pt-v6/$name.log 2>&1
unset MEDPEFT_TRIAL_VISIBLE  # adaptation keeps `shape`; the patch only touches the offsets
recipes $name
