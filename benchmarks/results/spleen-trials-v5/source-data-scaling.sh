#!/bin/bash
# v5 continued at lr 5e-4 with phase-shape (as v5's own second stage) on the source tasks of N phantom
# collections (seeds 0..N-1; only their source tasks: no seed's holdout or new site is read):
#   $1 = N collections, $2 = steps, $3 = out name.  e.g. `source-data-scaling.sh 4 1600 four1600`
#   PATCH="X Y Z": the run's --patch (talleight3200: `PATCH="64 64 64" ... 8 3200 talleight3200`)
# The collections: `medpeft phantom runs/cache/phantom-demo-sS --size demo --seed S` (about 15 s each).
# Then: python benchmarks/adapt_recipe.py --foundation runs/pt-v6/$3 --method decoder --steps 240 \
#         --augment shape --shots 1 --shots 5 --out runs/pt-v6/$3-recipe
cd /work/main && OMP_NUM_THREADS=${THREADS:-2} exec nice -n 5 .venv/bin/python -m medpeft.cli pretrain \
  $(for s in $(seq 0 $(($1 - 1))); do for t in Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen \
      Task05_SpinePelvis Task07_Pancreas; do echo --source runs/cache/phantom-demo-s$s/$t; done; done) \
  --out runs/pt-v6/$3 --steps $2 --lr 5e-4 --seed 0 --checkpoint-every 200 --augment phase-shape \
  --sampling organ-balanced --bf16 --channels-last --init src/medpeft/assets/phantom-foundation ${PATCH:+--patch $PATCH} --resume
