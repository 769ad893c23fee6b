#!/bin/bash
# Foundation v8 candidate: v7b's three stages, then two more from v7b's weights that hold the
# spleen steady under stronger shape augmentation (docs/quality.md items 29-30). Each stage: 1,600
# steps, lr 5e-4 (a warm restart), 64^3 ROI, the source tasks of phantom collections 0-7,
# organ-balanced, bf16; the second stage draws with seed 2, so that it does not repeat the first's
# patches. The product options reproduce the trial runs (runs/pt-v6/late-strong-sf and
# long-strong-sf, made with strong-shape.patch's switches) patch for patch. About 23 min a stage
# on 2 threads of a 2-core AVX512-bf16 Xeon. Resumable: run it again.
# Usage (from the repository root): [OUT=runs/pt-v8] [THREADS=2] pretrain.sh
set -e
source benchmarks/results/spleen-trials-v5/common.sh
OUT=${OUT:-runs/pt-v8}
V7B=benchmarks/results/foundation-v7b-candidate
for s in 0 1 2 3 4 5 6 7; do
  [ -f runs/cache/phantom-demo-s$s/Task10_NewSite/dataset.json ] || \
    run -m medpeft.cli phantom runs/cache/phantom-demo-s$s --size demo --seed $s
done
previous=$V7B
for stage in 4:0 5:2; do
  IFS=: read -r n seed <<< "$stage"
  run -m medpeft.cli pretrain $EIGHT --out $OUT/stage$n --init $previous --steps 1600 --lr 5e-4 \
    --patch 64 64 64 --augment contrast-strong-shape --steady-organ spleen --seed $seed \
    --checkpoint-every 200 --sampling organ-balanced --bf16 --channels-last --resume
  previous=$OUT/stage$n
done
