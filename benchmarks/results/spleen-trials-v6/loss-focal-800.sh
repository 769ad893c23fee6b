#!/bin/bash
# Loss trial: v6 continued 800 steps (lr 5e-4, phase-shape, organ-balanced, 64^3, bf16, seed 0) on
# phantom-demo-s0's source tasks, Dice + focal (MEDPEFT_TRIAL_LOSS=focal) against Dice + CE; then
# adapt_recipe (source site, zero-shot, decoder K=1/K=5 240 steps) on phantom 0.
# Run in a worktree of main at fdd7b12 with loss-focal.patch applied (git apply), runs/cache linked to
# the phantom collections (medpeft phantom runs/cache/phantom-demo-s0 --size demo --seed 0).
cd "${WT:-.}" && mkdir -p runs/pt-loss
SOURCES=$(for t in Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas; do echo --source runs/cache/phantom-demo-s0/$t; done)
run() { OMP_NUM_THREADS=1 PYTHONPATH=${WT:-.}/src nice -n 5 ${PY:-python} "$@"; }
for arm in focal ce; do
  MEDPEFT_TRIAL_LOSS=$arm run -m medpeft.cli pretrain $SOURCES --out runs/pt-loss/${arm}800 --steps 800 --lr 5e-4 --seed 0 \
    --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 --channels-last \
    --init src/medpeft/assets/phantom-foundation --patch 64 64 64 --resume > runs/pt-loss/${arm}800.log 2>&1
done
for arm in focal ce; do
  run benchmarks/adapt_recipe.py --foundation runs/pt-loss/${arm}800 --method decoder --steps 240 \
     --augment shape --shots 1 --shots 5 --seed 0 --out runs/pt-loss/${arm}800-recipe-s0 > runs/pt-loss/${arm}800-recipe-s0.log 2>&1
done
