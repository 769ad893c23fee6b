#!/bin/bash
# v5's recipe in full with other code: 9,600 steps from scratch (swin-fast, lr 2e-3, organ-balanced,
# bf16, seed 0, --augment phase: no shape), then 1,600 steps of phase-shape at lr 5e-4 from it, on
# phantom-demo-s0's six source tasks; then adapt_recipe on phantoms 0/1/2. One thread, nice 5.
# Usage: two-stage.sh NAME SRC
#   halftwostage /work/trial/src: the per-organ offsets on 30% of the patches in both stages
#   (RandOrganIntensityd's prob 0.6 -> 0.3 in a worktree)
set -e
name=$1 src=$2
cd /work/main
run() { OMP_NUM_THREADS=1 PYTHONPATH=$src nice -n 5 .venv/bin/python "$@"; }
sources=$(for t in Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas; do echo --source runs/cache/phantom-demo-s0/$t; done)
run -m medpeft.cli pretrain $sources --out runs/pt-v6/$name-stage1 --steps 9600 --lr 2e-3 --seed 0 \
  --checkpoint-every 200 --augment phase --sampling organ-balanced --bf16 --channels-last --resume \
  > runs/pt-v6/$name-stage1.log 2>&1
run -m medpeft.cli pretrain $sources --out runs/pt-v6/$name --steps 1600 --lr 5e-4 --seed 0 \
  --checkpoint-every 200 --augment phase-shape --sampling organ-balanced --bf16 --channels-last \
  --init runs/pt-v6/$name-stage1 --resume > runs/pt-v6/$name.log 2>&1
for s in 0 1 2; do
  run benchmarks/adapt_recipe.py --foundation runs/pt-v6/$name --method decoder --steps 240 \
     --augment shape --shots 1 --shots 5 --seed $s --out runs/pt-v6/$name-recipe-s$s \
     > runs/pt-v6/$name-recipe-s$s.log 2>&1
done
