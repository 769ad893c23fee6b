#!/bin/bash
# Continue a foundation for 1,600 steps (STEPS; lr 5e-4, organ-balanced, seed 0, bf16) on phantom-demo-s0's
# source tasks with another augmentation, then adapt_recipe on phantoms 0/1/2.
# Usage: [STEPS=N] [PATCH="X Y Z"] continue-1600.sh INIT AUGMENT NAME   (PATCH: the run's --patch)
#   shapephase1600: `continue-1600.sh runs/pt-v6/scratchshape9600 phase-shape shapephase1600`
#   (the foundation pre-trained without per-organ offsets, then taught them)
set -e
init=$1 augment=$2 name=$3
source "$(dirname "$0")/common.sh"
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --steps ${STEPS:-1600} --lr 5e-4 --seed 0 \
  --checkpoint-every 200 --augment $augment --sampling organ-balanced --bf16 --channels-last \
  --init $init ${PATCH:+--patch $PATCH} --resume > runs/pt-v6/$name.log 2>&1
recipes $name
