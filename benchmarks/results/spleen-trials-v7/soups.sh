#!/bin/bash
# Weight soups of v7b's late-stage trials (docs/quality.md item 28): mixes of the shipped v7b,
# late-spleenfixed (the spleen's offsets off, late-stage.md's fourth arm) and late-shape (no
# offsets; run again by late-shape.sh late-shape:shape:1600, the same figures as its first run),
# each scored at the held-out source site and zero-shot at the new site of phantoms 0/1/2
# (benchmarks/pretrain_milestones.py --seed S), then tabulated (soups.md).
set -e
cd /work/main
P=runs/pt-v6
V=src/medpeft/assets/phantom-foundation
py() { OMP_NUM_THREADS=2 nice -n 5 .venv/bin/python "$@"; }
py benchmarks/foundation_soup.py $V $P/late-shape --alpha 0.3 --alpha 0.5 --alpha 0.7 --out $P/soup-v7b-ls
py benchmarks/foundation_soup.py $P/late-spleenfixed $P/late-shape --alpha 0.3 --alpha 0.5 --out $P/soup-sf-ls
py benchmarks/foundation_soup.py $V $P/late-spleenfixed --alpha 0.5 --alpha 1.5 --alpha 2 --alpha 3 \
   --alpha 4 --alpha 6 --out $P/tv-sf
for s in 0 1 2; do
  py benchmarks/pretrain_milestones.py --seed $s --out $P/soup-screen-s$s.json 1=$V 2=$P/late-spleenfixed \
     3=$P/late-shape 4=$P/soup-v7b-ls/soup-30 5=$P/soup-v7b-ls/soup-50 6=$P/soup-v7b-ls/soup-70 \
     7=$P/soup-sf-ls/soup-30 8=$P/soup-sf-ls/soup-50 9=$P/tv-sf/soup-50
done
py benchmarks/pretrain_milestones.py --out $P/tv-sf/milestones.json 50=$P/tv-sf/soup-50 \
   100=$P/late-spleenfixed 150=$P/tv-sf/soup-150 200=$P/tv-sf/soup-200 300=$P/tv-sf/soup-300 \
   400=$P/tv-sf/soup-400 600=$P/tv-sf/soup-600
