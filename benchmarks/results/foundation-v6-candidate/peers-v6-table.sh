#!/bin/bash
# The v6 peers table from the saved cells, training nothing: every row's cells from the
# `rerun-tables.sh peers` stream (cells/benchmark-peers), the default's K=5 and K=10 from its 8e-3
# re-run (peers-default-8e-3/cells), the black-box row calibrated (blackbox-calibrated-v6/), the
# foundation-free peers read back from v5's run. Writes
# benchmarks/results/peers-phantom-v6.{md,csv,png}. Run from the repository root after
# `rerun-tables.sh save`.
set -e
HERE=benchmarks/results/foundation-v6-candidate OUT=runs/peers-v6-table
rm -rf $OUT && mkdir -p $OUT
cp -r $HERE/cells/benchmark-peers/. $OUT/
cp -r $HERE/peers-default-8e-3/cells/benchmark-peers/. $OUT/  # the default at K >= 5: 8e-3
# the black-box row with its head calibrated to the labelled share (d72cc31)
cp -r benchmarks/results/blackbox-calibrated-v6/peers-bb-calibrated/Task10_NewSite/. $OUT/Task10_NewSite/
sed "s|^out: .*|out: $OUT|" configs/peers-phantom.yaml > $OUT/peers.yaml
python benchmarks/peers.py $OUT/peers.yaml --report-only --reuse-peers \
    benchmarks/results/peers-phantom-v5.csv --reuse-methods nnunet scratch scratch@light-fp32
for f in md png; do cp $OUT/peers.$f benchmarks/results/peers-phantom-v6.$f; done
cp $OUT/results.csv benchmarks/results/peers-phantom-v6.csv
sed -i 's|(peers.png)|(peers-phantom-v6.png)|' benchmarks/results/peers-phantom-v6.md
