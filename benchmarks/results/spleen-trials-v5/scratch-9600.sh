#!/bin/bash
# A foundation from scratch with another pre-training augmentation: v4's recipe (swin-fast, 9,600
# steps, lr 2e-3, organ-balanced, bf16, seed 0) with --augment AUGMENT instead of phase, on
# phantom-demo-s0's six source tasks; then adapt_recipe on phantoms 0/1/2. One thread, nice 5.
# Usage: scratch-9600.sh AUGMENT NAME [SRC]   (runs: shape scratchshape9600,
#                                              enhancement-shape scratchenh9600,
#   phase-shape scratchps9600 (the control of the next), phase-shape scratchhalf9600
#   /work/trial/src: the per-organ offsets on 30% of the patches
#   instead of 60%, RandOrganIntensityd's prob 0.6 -> 0.3 in a worktree)
set -e
augment=$1 name=$2 src=${3:-/work/main/src}
cd /work/main
run() { OMP_NUM_THREADS=1 PYTHONPATH=$src nice -n 5 .venv/bin/python "$@"; }
run -m medpeft.cli pretrain \
  $(for t in Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas; do echo --source runs/cache/phantom-demo-s0/$t; done) \
  --out runs/pt-v6/$name --steps 9600 --lr 2e-3 --seed 0 --checkpoint-every 200 --augment $augment \
  --sampling organ-balanced --bf16 --channels-last --resume > runs/pt-v6/$name.log 2>&1
for s in 0 1 2; do
  run benchmarks/adapt_recipe.py --foundation runs/pt-v6/$name --method decoder --steps 240 \
     --augment shape --shots 1 --shots 5 --seed $s --out runs/pt-v6/$name-recipe-s$s \
     > runs/pt-v6/$name-recipe-s$s.log 2>&1
done
