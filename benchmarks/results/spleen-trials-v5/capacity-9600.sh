#!/bin/bash
# Capacity: swin-small (feature size 24, 7^3 windows) against swin-fast under one recipe, from
# scratch: phase-shape, 9,600 steps, lr 2e-3, organ-balanced, bf16, channels-last, seed 0, on
# phantom-demo-s0's six source tasks (swin-fast's run: scratch-9600.sh phase-shape scratchps9600).
# A long run: two threads, nice 5, --resume continues it; checkpoints at 2,400 / 4,800 / 7,200 are
# copied aside for pretrain_milestones.py (the loop keeps only the newest).
# Usage: capacity-9600.sh [THREADS]
set -e
name=smallps9600 THREADS=${1:-2}
source "$(dirname "$0")/common.sh"
mkdir -p runs/pt-v6/snaps
( while sleep 30; do for s in 0002400 0004800 0007200; do
    c=runs/pt-v6/$name/checkpoints/ckpt-$s
    [ -d $c ] && [ ! -d runs/pt-v6/snaps/$name-$s ] && cp -r $c runs/pt-v6/snaps/$name-$s
  done; done ) &
watcher=$!
trap 'kill $watcher' EXIT
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --backbone swin-small --steps 9600 \
  --lr 2e-3 --seed 0 --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 \
  --channels-last --resume >> runs/pt-v6/$name.log 2>&1
