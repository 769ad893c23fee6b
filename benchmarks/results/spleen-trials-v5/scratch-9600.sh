#!/bin/bash
# A foundation from scratch with another pre-training augmentation: v4's recipe (swin-fast, 9,600
# steps, lr 2e-3, organ-balanced, bf16, seed 0) with --augment AUGMENT instead of phase, on
# phantom-demo-s0's six source tasks; then adapt_recipe on phantoms 0/1/2. One thread, nice 5.
# Usage: scratch-9600.sh AUGMENT NAME [SRC]   (runs: shape scratchshape9600,
#                                              enhancement-shape scratchenh9600,
#   phase-shape scratchps9600 (the control of the next), phase-shape scratchhalf9600
#   /work/trial/src: the per-organ offsets on 30% of the patches instead of 60%, a worktree with
#   offsets-30.patch applied; contrast-shape scratch-spleenfixed with
#   MEDPEFT_TRIAL_FIXED_ORGANS=spleen and ../spleen-trials-v7/fixed-organs.patch, session 27)
set -e
augment=$1 name=$2 SRC=${3:-/work/main/src}
source "$(dirname "$0")/common.sh"
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --steps 9600 --lr 2e-3 --seed 0 \
  --checkpoint-every 200 --augment $augment --sampling organ-balanced --bf16 --channels-last \
  --resume > runs/pt-v6/$name.log 2>&1
recipes $name
