#!/bin/bash
# decoder-skips K=10 rate check on v6 (960 steps, the default), phantoms 1 and 2: 4e-3 (today) vs 8e-3
cd /work/main
for s in 1 2; do
  OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/lr_sweep.py --foundation /work/v6/src/medpeft/assets/phantom-foundation \
    --method decoder-skips --rate 8e-3 --rate 4e-3 --shots 10 --steps 960 --seed $s --out runs/v6-skips-k10-lr-s$s
done
