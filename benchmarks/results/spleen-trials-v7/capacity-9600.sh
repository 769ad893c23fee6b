#!/bin/bash
# Capacity under the offsets: does swin-small keep the spleen that the per-organ offsets cost
# swin-fast? The recipe of the best arm of phase-parts.md (`offsets9600`: 9,600 steps from random
# weights, --augment contrast-shape, lr 2e-3, organ-balanced, bf16, channels-last, seed 0) with
# --backbone swin-small (5.8x swin-fast's time a step on one thread: about 5 h on one thread, 3.7 h
# on two). Weights every 2,400 steps stay in runs/pt-v6/smallcs9600/snapshots/ for
# benchmarks/pretrain_milestones.py; then decoder tuning (240 steps, K = 1 and 5) on phantoms
# 0/1/2, compared with offsets9600's (phase-parts-9600/offsets/) by benchmarks/recipe_compare.py.
# Resumable: run it again. Usage: THREADS=2 capacity-9600.sh
set -e
name=smallcs9600
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --backbone swin-small --steps 9600 \
  --lr 2e-3 --seed 0 --checkpoint-every 200 --snapshot-every 2400 --augment contrast-shape \
  --sampling organ-balanced --bf16 --channels-last --resume >> runs/pt-v6/$name.log 2>&1
recipes $name
