#!/bin/bash
# Offsets on every organ but the spleen, from random weights. A last stage with the spleen's own
# offsets off (late-spleenfixed) brought the spleen as far back as one without any offsets
# (late-shape) while the other organs kept their transfer; 1,600 steps after v7b's stages cannot
# undo what those stages taught. This arm asks the same from the first step: item 22's best arm
# (`contrast-shape` from random weights: swin-fast, 9,600 steps, lr 2e-3, organ-balanced, bf16,
# seed 0, phantom-demo-s0's six source tasks) with MEDPEFT_TRIAL_FIXED_ORGANS=spleen
# (fixed-organs.patch applied in a worktree, SRC=<worktree>/src). Its controls are item 22's
# offsets-only arm (phase-parts-9600/, the same recipe with every organ's offsets) and item 12's
# shape-only foundation (no offsets). Then decoder tuning (240 steps, K = 1 and 5) on phantoms
# 0/1/2. Resumable: run it again.
# Usage: MEDPEFT_TRIAL_FIXED_ORGANS=spleen SRC=/work/trial27/src THREADS=2 spleen-fixed-9600.sh NAME
set -e
name=$1
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --steps 9600 --lr 2e-3 --seed 0 \
  --checkpoint-every 200 --augment contrast-shape --sampling organ-balanced --bf16 \
  --channels-last --resume > runs/pt-v6/$name.log 2>&1
recipes $name
