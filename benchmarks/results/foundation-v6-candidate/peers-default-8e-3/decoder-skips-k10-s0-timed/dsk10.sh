#!/bin/bash
# decoder-skips K=10 split 0 under nnU-Net's conditions (one thread beside one other job), timed end to end
cd /work/v6r
M=runs/benchmark-peers/Task10_NewSite/k10-s0/manifest.json
F=src/medpeft/assets/phantom-foundation
export OMP_NUM_THREADS=1 PYTHONPATH=/work/v6r/src
start=$(date +%s.%N)
nice -n 5 /work/main/.venv/bin/medpeft adapt --foundation $F --manifest $M --out /tmp/s10/dsk10/adapter
mid=$(date +%s.%N)
nice -n 5 /work/main/.venv/bin/medpeft evaluate --foundation $F --manifest $M --adapter /tmp/s10/dsk10/adapter --out /tmp/s10/dsk10/eval
end=$(date +%s.%N)
python3 -c "print('adapt', round($mid-$start), 's; evaluate', round($end-$mid), 's; total', round($end-$start), 's')"
