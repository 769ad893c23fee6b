#!/bin/bash
# late-shape.sh's arm run twice as long: v7b's third stage again for 3,200 steps (lr 5e-4, 64^3 ROI,
# organ-balanced, bf16, seed 0, the source tasks of phantom collections 0-7) with --augment shape,
# no offsets. Then decoder tuning (240 steps, K = 1 and 5) on phantoms 0/1/2. Resumable: run it
# again. Usage: THREADS=2 late-shape-3200.sh (after late-shape.sh, which writes the collections)
set -e
source /work/main/benchmarks/results/spleen-trials-v5/common.sh
tasks="Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas"
eight=$(for s in 0 1 2 3 4 5 6 7; do for t in $tasks; do echo --source runs/cache/phantom-demo-s$s/$t; done; done)
name=late-shape3200
run -m medpeft.cli pretrain $eight --out runs/pt-v6/$name --init src/medpeft/assets/phantom-foundation \
  --steps 3200 --lr 5e-4 --patch 64 64 64 --augment shape --seed 0 --checkpoint-every 200 \
  --sampling organ-balanced --bf16 --channels-last --resume >> runs/pt-v6/$name.log 2>&1
recipes $name
