#!/bin/bash
# Phase-flag trial: v6 continued 800 steps (lr 5e-4, phase-shape, organ-balanced, 64^3, bf16, seed 0) on
# phantom-demo-s0's source tasks, the network told by a second input channel whether the patch's
# organs were moved by the phase offsets (MEDPEFT_TRIAL_FLAG=1, phase-flag.patch); then adapt_recipe
# (source site, zero-shot, decoder K=1/K=5 240 steps) on phantom 0, once with the flag at 0 (the
# scanner's own appearance) and once at 1 (appearance may be shifted). The control is
# loss-focal-800's "ce" arm (the same 800 steps without the flag).
# Run in a worktree of main at 123b3f3 with phase-flag.patch applied, runs/cache linked to the
# phantom collections (medpeft phantom runs/cache/phantom-demo-s0 --size demo --seed 0).
cd "${WT:-.}" && mkdir -p runs/pt-flag
SOURCES=$(for t in Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas; do echo --source runs/cache/phantom-demo-s0/$t; done)
run() { MEDPEFT_TRIAL_FLAG=1 OMP_NUM_THREADS=${THREADS:-2} PYTHONPATH=${WT:-.}/src nice -n 5 ${PY:-python} "$@"; }
run -m medpeft.cli pretrain $SOURCES --out runs/pt-flag/flag800 --steps 800 --lr 5e-4 --seed 0 \
  --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 --channels-last \
  --init src/medpeft/assets/phantom-foundation --patch 64 64 64 --resume > runs/pt-flag/flag800.log 2>&1
for value in 0 1; do
  MEDPEFT_TRIAL_FLAG_VALUE=$value run benchmarks/adapt_recipe.py --foundation runs/pt-flag/flag800 --method decoder \
    --steps 240 --augment shape --shots 1 --shots 5 --seed 0 --out runs/pt-flag/flag800-value$value-recipe-s0 \
    > runs/pt-flag/flag800-value$value-recipe-s0.log 2>&1
done
