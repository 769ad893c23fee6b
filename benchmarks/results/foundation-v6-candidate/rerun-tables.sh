#!/bin/bash
# Re-measure every table issue 18 (item 4) names on this candidate, before it can ship: in a git
# worktree whose shipped foundation is this folder's, so that each benchmark runs unchanged and
# `main` stays on v5 (and its README true) until every table is in. Resumable: each benchmark keeps
# its finished cells, so running the same stream again continues it.
#   Usage: rerun-tables.sh setup            the worktree /work/v6 of branch v6-tables, whose commit
#                                           d484231 ships the candidate (its foundation.json carries
#                                           the recipe) and gives DemoConfig that recipe
#          rerun-tables.sh peers|sea|rest   one stream, one thread, nice 5 (two streams: two cores)
#          rerun-tables.sh status           finished cells of each stream
# Streams (single-thread estimates from v5's cells x 1.5 for the 64^3 ROI): peers ~6 h; sea ~12 h;
# rest (FSEFT novel organs, transductive, federated plans, the demo) ~3 h. Logs: /work/v6/runs/*.log.
set -e
WT=/work/v6 MAIN=/work/main HERE=benchmarks/results/foundation-v6-candidate
case $1 in
setup)
  cd $MAIN
  [ -d $WT ] || git worktree add -q $WT v6-tables
  cmp -s $HERE/foundation.safetensors $WT/src/medpeft/assets/phantom-foundation/foundation.safetensors ||
    { echo "$WT does not ship this folder's weights: check out branch v6-tables there" >&2; exit 1; }
  mkdir -p $WT/runs && ln -sfn $MAIN/runs/cache $WT/runs/cache  # the phantom collections
  exit 0;;
esac
cd $WT
if [ "$1" = status ]; then  # peers: 6 foundation methods x K 1/5/10 x 3 seeds + zero-shot; sea: 11 x 9
  echo "peers: $(ls runs/benchmark-peers/Task10_NewSite/*/*/scores.json runs/benchmark-peers/Task10_NewSite/zero-shot/scores.json 2>/dev/null | wc -l) of 55 cells"
  echo "sea:   $(ls runs/sea-comparison-v6/*/*/result.json 2>/dev/null | wc -l) of 99 cells"
  for f in fseft transductive federated-plans demo; do
    echo "rest:  $f $([ -s runs/$f.log ] && echo started || echo 'not started')"; done
  exit 0
fi
run() { OMP_NUM_THREADS=1 PYTHONPATH=$WT/src nice -n 5 $MAIN/.venv/bin/python "$@"; }
case $1 in
peers)  # foundation-free rows (nnU-Net, both scratch recipes) read back from v5's run
  run benchmarks/peers.py --seeds 0 1 2 --reuse-peers benchmarks/results/peers-phantom-v5.csv \
      --reuse-methods nnunet scratch scratch@light-fp32 >> runs/peers.log 2>&1;;
sea)
  for k in 1 5 10; do
    run benchmarks/sea_comparison.py --shots $k --seeds 0 1 2 --out runs/sea-comparison-v6 \
        >> runs/sea.log 2>&1
  done;;
rest)
  run -m medpeft.cli benchmark configs/fseft-phantom-novel-v6.yaml >> runs/fseft.log 2>&1
  run benchmarks/transductive.py >> runs/transductive.log 2>&1
  run benchmarks/federated_plans.py --rounds 3 --local-steps 10 >> runs/federated-plans.log 2>&1
  PYTHONPATH=$WT/src $MAIN/.venv/bin/python -m medpeft.cli demo >> runs/demo.log 2>&1;;
*) echo "usage: rerun-tables.sh setup|peers|sea|rest|status" >&2; exit 2;;
esac
