#!/bin/bash
# v5's recipe in full with other code: 9,600 steps from scratch (swin-fast, lr 2e-3, organ-balanced,
# bf16, seed 0, --augment phase: no shape), then 1,600 steps of phase-shape at lr 5e-4 from it, on
# phantom-demo-s0's six source tasks; then adapt_recipe on phantoms 0/1/2. One thread, nice 5.
# Usage: two-stage.sh NAME SRC
#   halftwostage /work/trial/src: the per-organ offsets on 30% of the patches in both stages
#   (a worktree with offsets-30.patch applied)
#   PATCH="64 64 64" two-stage.sh tall2stage /work/main/src: v5's recipe with a 64^3 ROI (stage 2
#   keeps stage 1's)
set -e
name=$1 SRC=$2
source "$(dirname "$0")/common.sh"
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name-stage1 --steps 9600 --lr 2e-3 --seed 0 \
  --checkpoint-every 200 --augment phase --sampling organ-balanced --bf16 --channels-last --resume \
  --snapshot-every 2400 ${PATCH:+--patch $PATCH} > runs/pt-v6/$name-stage1.log 2>&1
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --steps 1600 --lr 5e-4 --seed 0 \
  --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 --channels-last \
  --init runs/pt-v6/$name-stage1 --resume > runs/pt-v6/$name.log 2>&1
recipes $name
