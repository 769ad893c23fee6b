#!/bin/bash
# Does the spleen need more context? v5 continued STEPS (default 1,600) steps with once1600's recipe
# (lr 5e-4, phase-shape, organ-balanced, seed 0, bf16) on a taller ROI, then adapt_recipe on
# phantoms 0/1/2: continue-1600.sh with its PATCH and STEPS.
# Usage: context.sh X Y Z NAME [STEPS]   e.g. context.sh 64 64 64 tall1600; ... tall3200 3200
# (v5's ROI is 64x64x32 at 5 mm: 16 cm of the 37 cm body in z; 64 covers 32 cm.)
set -e
PATCH="$1 $2 $3" STEPS=${5:-1600} bash "$(dirname "$0")/continue-1600.sh" \
  src/medpeft/assets/phantom-foundation phase-shape $4
