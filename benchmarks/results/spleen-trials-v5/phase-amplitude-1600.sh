#!/bin/bash
# Is the per-organ intensity offset's amplitude what costs the spleen? v5 continued 1,600 steps
# (lr 5e-4, organ-balanced, seed 0, bf16) on phantom-demo-s0's source tasks, then adapt_recipe on
# phantoms 0/1/2 (each its own holdout, new site and split).
#   $1 = run name, $2 = --augment, $3 = the src/ folder whose code runs.
#   nophase1600: `phase-amplitude-1600.sh nophase1600 shape /work/main/src`
#   mild1600:    the same code with RandOrganIntensityd's max_offset 0.25 -> 0.10 (about +-42 HU
#                instead of +-106), in a worktree: `... mild1600 phase-shape /work/trial/src`
#   control:     once1600 (source-data-scaling.sh 1 1600 once1600): phase-shape at 0.25.
cd /work/main
SRC=$3
run() { OMP_NUM_THREADS=1 PYTHONPATH=$SRC nice -n 5 .venv/bin/python "$@"; }
run -m medpeft.cli pretrain \
  $(for t in Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas; do echo --source runs/cache/phantom-demo-s0/$t; done) \
  --out runs/pt-v6/$1 --steps 1600 --lr 5e-4 --seed 0 --checkpoint-every 200 --augment $2 \
  --sampling organ-balanced --bf16 --channels-last --init src/medpeft/assets/phantom-foundation --resume > runs/pt-v6/$1.log 2>&1
for s in 0 1 2; do
  run benchmarks/adapt_recipe.py --foundation runs/pt-v6/$1 --method decoder --steps 240 --augment shape \
     --shots 1 --shots 5 --seed $s --out runs/pt-v6/$1-recipe-s$s > runs/pt-v6/$1-recipe-s$s.log 2>&1
done
