#!/bin/bash
# Does the spleen need more context? v5 continued STEPS (default 1,600) steps (lr 5e-4, phase-shape, organ-balanced,
# seed 0, bf16: once1600's recipe) with a taller ROI, then adapt_recipe on phantoms 0/1/2.
# Usage: context.sh X Y Z NAME [STEPS]   e.g. context.sh 64 64 64 tall1600; ... tall3200 3200
# (v5's ROI is 64x64x32 at 5 mm: 16 cm of the 37 cm body in z; 64 covers 32 cm.)
set -e
x=$1 y=$2 z=$3 name=$4 steps=${5:-1600}
source "$(dirname "$0")/common.sh"
run -m medpeft.cli pretrain $SOURCES --out runs/pt-v6/$name --steps $steps --lr 5e-4 --seed 0 \
  --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 --channels-last \
  --init src/medpeft/assets/phantom-foundation --patch $x $y $z --resume > runs/pt-v6/$name.log 2>&1
recipes $name
