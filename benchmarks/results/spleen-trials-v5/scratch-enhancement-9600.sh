#!/bin/bash
# The spleen with each organ's textbook contrast enhancement instead of random per-organ offsets,
# from scratch: v4's recipe (swin-fast, 9,600 steps, lr 2e-3, organ-balanced, bf16, seed 0) with
# --augment enhancement-shape instead of phase, on phantom-demo-s0's six source tasks; then
# adapt_recipe on phantoms 0/1/2. One thread, nice 5.
cd /work/main
run() { OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python "$@"; }
run -m medpeft.cli pretrain \
  $(for t in Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas; do echo --source runs/cache/phantom-demo-s0/$t; done) \
  --out runs/pt-v6/scratchenh9600 --steps 9600 --lr 2e-3 --seed 0 --checkpoint-every 200 --augment enhancement-shape \
  --sampling organ-balanced --bf16 --channels-last --resume > runs/pt-v6/scratchenh9600.log 2>&1
for s in 0 1 2; do
  run benchmarks/adapt_recipe.py --foundation runs/pt-v6/scratchenh9600 --method decoder --steps 240 \
     --augment shape --shots 1 --shots 5 --seed $s --out runs/pt-v6/scratchenh9600-recipe-s$s \
     > runs/pt-v6/scratchenh9600-recipe-s$s.log 2>&1
done
