#!/bin/bash
# Capacity under the offsets: does swin-small keep the spleen that the per-organ offsets cost
# swin-fast? The recipe of the best arm of phase-parts.md (`offsets9600`: 9,600 steps from random
# weights, --augment contrast-shape, lr 2e-3, organ-balanced, bf16, channels-last, seed 0) with
# --backbone swin-small (5.8x swin-fast's time a step on one thread: about 5 h on one thread, 3.7 h
# on two). Steps 2,400 / 4,800 / 7,200 are copied to runs/pt-v6/snaps/ for
# benchmarks/pretrain_milestones.py; then decoder tuning (240 steps, K = 1 and 5) on phantoms
# 0/1/2, compared with offsets9600's (phase-parts-9600/offsets/) by benchmarks/recipe_compare.py.
# Resumable: run it again. Usage: THREADS=2 capacity-9600.sh
set -e
name=smallcs9600
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
mkdir -p runs/pt-v6/snaps
( while sleep 30; do for s in 0002400 0004800 0007200; do
    c=runs/pt-v6/$name/checkpoints/ckpt-$s
    [ -d $c ] && [ ! -d runs/pt-v6/snaps/$name-$s ] && cp -r $c runs/pt-v6/snaps/$name-$s
  done; done ) &
watcher=$!
trap 'kill $watcher' EXIT
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --backbone swin-small --steps 9600 \
  --lr 2e-3 --seed 0 --checkpoint-every 200 --augment contrast-shape --sampling organ-balanced \
  --bf16 --channels-last --resume >> runs/pt-v6/$name.log 2>&1
recipes $name
