#!/bin/bash
# Capacity under the offsets, at swin-fast's windows: does a network twice as wide keep the spleen
# that the per-organ offsets cost swin-fast? The recipe of phase-parts.md's best arm (`offsets`:
# 9,600 steps from random weights, the offsets alone with rotation and scaling = --augment
# contrast-shape, lr 2e-3, organ-balanced, seed 0) with --backbone swin-wide (feature size 24 as
# swin-small, 4x4x4 windows as swin-fast: 1.05 s a step on 2 float32 threads of the AVX2 EPYC,
# 1.9x swin-fast's 0.55 s; swin-small's 7x7x7 windows pad and take 1.98 s). About 2.8 h on 2
# threads. Weights every 2,400 steps stay in runs/pt-v6/wide9600/snapshots/ (read them with
# benchmarks/pretrain_milestones.py --backbone swin-wide); then decoder tuning (240 steps, K = 1
# and 5) on phantoms 0/1/2, compared with phase-parts-9600/offsets/ by benchmarks/recipe_compare.py.
# It replaced a swin-small run of the same recipe (5.3 h here for the same width; removed after 130 steps).
# Resumable: run it again. Usage: THREADS=2 capacity-wide-9600.sh
set -e
name=wide9600
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --backbone swin-wide --steps 9600 \
  --lr 2e-3 --seed 0 --checkpoint-every 200 --snapshot-every 2400 --augment contrast-shape \
  --sampling organ-balanced --bf16 --channels-last --resume >> runs/pt-v6/$name.log 2>&1
recipes $name
