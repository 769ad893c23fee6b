#!/bin/bash
# Phase-flag trial from random weights: v4's recipe with phase-shape (swin-fast, 9,600 steps, lr 2e-3,
# organ-balanced, bf16, seed 0; the control scratchps9600 of spleen-trials-v5) on phantom-demo-s0's six
# source tasks, one coin per patch moving the appearance (per-organ offsets, and on half of those the
# intensity curve; prob 0.6) and a second input channel saying whether it did (MEDPEFT_TRIAL_FLAG=1,
# phase-flag.patch). Then adapt_recipe on phantoms 0/1/2 with the flag at 1 (appearance may be
# shifted: the new site) and the reference rows with the flag at 0 (the scanner's own appearance).
# Run in a worktree of main at 123b3f3 with phase-flag.patch applied, runs/cache linked to the
# phantom collections (medpeft phantom runs/cache/phantom-demo-sN --size demo --seed N, N = 0, 1, 2).
cd "${WT:-.}" && mkdir -p runs/pt-flag
SOURCES=$(for t in Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas; do echo --source runs/cache/phantom-demo-s0/$t; done)
run() { MEDPEFT_TRIAL_FLAG=1 OMP_NUM_THREADS=${THREADS:-2} PYTHONPATH=${WT:-.}/src nice -n 5 ${PY:-python} "$@"; }
name=flagscratch9600
run -m medpeft.cli pretrain $SOURCES --out runs/pt-flag/$name --steps 9600 --lr 2e-3 --seed 0 \
  --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 --channels-last \
  --resume > runs/pt-flag/$name.log 2>&1
for s in 0 1 2; do
  MEDPEFT_TRIAL_FLAG_VALUE=0 run benchmarks/adapt_recipe.py --foundation runs/pt-flag/$name --method decoder \
    --steps 1 --shots 1 --seed $s --out runs/pt-flag/$name-value0-s$s > runs/pt-flag/$name-value0-s$s.log 2>&1
done
for s in 0 1 2; do
  MEDPEFT_TRIAL_FLAG_VALUE=1 run benchmarks/adapt_recipe.py --foundation runs/pt-flag/$name --method decoder \
    --steps 240 --augment shape --shots 1 --shots 5 --seed $s --out runs/pt-flag/$name-value1-s$s \
    > runs/pt-flag/$name-value1-s$s.log 2>&1
done
