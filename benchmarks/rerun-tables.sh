#!/bin/bash
# Re-measure every table issue 18 (item 4) names on a new shipped foundation: F=v7b (the default)
# or F=v6 (its records: benchmarks/results/foundation-v6-candidate/cells). The streams run in a git
# worktree /work/$F at a fixed commit, so that code edits on `main` do not reach a running
# benchmark. Resumable: each benchmark keeps its finished cells, so running the same stream again
# continues it; `save` copies the finished cells' records into the candidate folder's `cells/`
# and stages them (commit them: a session's `runs/` does not outlive it) and `setup` puts them back.
#   Usage: [F=v7b] benchmarks/rerun-tables.sh setup [COMMIT]   the worktree at COMMIT (default
#                                             HEAD), with the phantom collections and saved cells
#          rerun-tables.sh peers|sea|rest     one stream, one thread, nice 5 (two streams: two cores;
#                                             sea runs rest's tables after its leaders)
#          rerun-tables.sh default            peers' default row alone (decoder-skips, every K)
#          WORKERS=2 rerun-tables.sh peers    the peers stream two cells at a time (both cores)
#          rerun-tables.sh peers-table        the peers table of the finished cells, into
#                                             benchmarks/results/peers-phantom-$F.{md,png,csv}
#          rerun-tables.sh leaders|novel|others  sea's leaders alone; rest's halves (novel: the
#                                             FSEFT cut; others: transductive, federated, demo)
#          rerun-tables.sh federated          the federated tables: SecAgg+ at server step 1 on
#                                             3 seeds (federate's and the demo's settings), DP,
#                                             LoRA everywhere, the deployment
#          rerun-tables.sh steps              the server step 1.5 arms the defaults' tests compare,
#                                             SecAgg+ against the clear for LoRA everywhere
#          rerun-tables.sh status             finished cells of each stream
#          rerun-tables.sh save               the finished cells' records into cells/
# Streams (one thread, v6's times): peers ~4-5 h; sea ~10 h: SEA-PEFT and the two best fixed
# methods, then `rest` (FSEFT novel organs, transductive, federated plans, the demo; ~3 h alone),
# then the other methods. Logs: /work/$F/runs/*.log.
# Edit it by writing a new file and renaming it over this one: a running stream's bash reads on
# from its byte offset in the file it opened.
set -e
F=${F:-v7b}
WT=/work/$F MAIN=/work/main HERE=benchmarks/results/foundation-$F-candidate
RECORDS="scores.json result.json adapt_summary.json outcome.json manifest.json"
case $1 in
setup)
  cd $MAIN
  [ -d $WT ] || git worktree add -q --detach $WT "${2:-HEAD}"
  cmp -s $HERE/foundation.safetensors $WT/src/medpeft/assets/phantom-foundation/foundation.safetensors ||
    { echo "$WT does not ship this folder's weights" >&2; exit 1; }
  mkdir -p $WT/runs $MAIN/runs/cache && ln -sfn $MAIN/runs/cache $WT/runs/cache
  for s in 0 1 2; do  # the collections the benchmarks read (29 s each)
    PYTHONPATH=$WT/src $MAIN/.venv/bin/python -c "from pathlib import Path; \
from medpeft.data.phantom.collection import write_collection as w; \
w(Path('$MAIN/runs/cache/phantom-demo-s$s'), 'demo', $s)"; done
  [ -d $HERE/cells ] && cp -rn $HERE/cells/. $WT/runs/
  exit 0;;
save)
  cd $WT/runs
  { find benchmark-peers sea-comparison-$F benchmark-fseft-novel-$F fseft-novel-grown-$F-k5 -type f 2>/dev/null \
      \( $(printf -- '-name %s -o ' $RECORDS) -false \)
    # rest's tables: the transductive arms' records, each federated plan's report, the demo's
    find bench-transductive bench-federated-plans -maxdepth 2 -type f \
      \( -name '*.json' -o -name '*.md' \) 2>/dev/null
    find demo -maxdepth 1 -type f \( -name results.json -o -name report.md \) 2>/dev/null
    # the federated stream's arms: each run's tables, reports and server records
    find fed-$F-* fed-deploy-secure-$F -maxdepth 2 -type f \( -name '*.md' -o -name report.json \
      -o -name server.json -o -name '*.csv' \) 2>/dev/null
  } | while read -r f; do
      mkdir -p "$MAIN/$HERE/cells/$(dirname "$f")" && cp "$f" "$MAIN/$HERE/cells/$f"; done
  git -C $MAIN add $HERE/cells  # new folders too: `git commit -a` alone would leave them out
  echo "saved and staged: $(find $MAIN/$HERE/cells -name scores.json -o -name result.json | wc -l) cells"
  exit 0;;
esac
cd $WT
if [ "$1" = status ]; then  # peers: 6 foundation methods x K 1/5/10 x 3 seeds + zero-shot; sea: 11 x 9
  echo "peers: $(ls runs/benchmark-peers/Task10_NewSite/*/*/scores.json runs/benchmark-peers/Task10_NewSite/zero-shot/scores.json 2>/dev/null | wc -l) of 55 cells"
  echo "sea:   $(ls runs/sea-comparison-$F/*/*/result.json 2>/dev/null | wc -l) of 99 cells"
  # novel: 2 tasks x (zero-shot + 4 methods x K 1/5/10 x 3 seeds)
  echo "novel: $(ls runs/benchmark-fseft-novel-$F/Task10_NewSite/*/*/scores.json runs/benchmark-fseft-novel-$F/Task10_NewSite/*/*/*/scores.json 2>/dev/null | wc -l) of 74 cells"
  echo "federated: $(ls runs/fed-$F-*/*/report.json runs/fed-deploy-secure-$F/report.md 2>/dev/null | wc -l) arms"
  for f in transductive federated-plans demo; do
    echo "rest:  $f $([ -s runs/$f.log ] && echo started || echo 'not started')"; done
  [ -s $MAIN/$HERE/cells/demo/results.json ] && echo "rest:  demo saved (cells/demo)"
  exit 0
fi
# the foundation-free peers (nnU-Net, both scratch recipes) never use the foundation: v5's run's
REUSE="--reuse-peers benchmarks/results/peers-phantom-v5.csv --reuse-methods nnunet scratch scratch@light-fp32"
LEADERS="--method sea-peft --method lora+affine --method affine"  # sea's first methods
run() { OMP_NUM_THREADS=1 PYTHONPATH=$WT/src nice -n 5 $MAIN/.venv/bin/python "$@"; }
sea() {  # the SEA-PEFT comparison at every K, 3 seeds; $1: its --method options (none: all)
  for k in 1 5 10; do
    run benchmarks/sea_comparison.py --shots $k --seeds 0 1 2 --out runs/sea-comparison-$F \
        $1 >> runs/sea.log 2>&1
  done
}
grid_as() {  # a benchmark grid's config with its output folder renamed: $1 the config, $2 the name
  sed "s|^out: .*|out: runs/$2|" "$1" > runs/$2.yaml
  run -m medpeft.cli benchmark runs/$2.yaml >> runs/fseft.log 2>&1
}
novel() {  # FSEFT's novel-organ cut (~2.5 h) on v6's config, then the novel gallbladder under
  # medpeft adapt's own K=5 recipe (v7b's config), each output folder named for $F
  grid_as configs/fseft-phantom-novel-v6.yaml benchmark-fseft-novel-$F
  grid_as $MAIN/benchmarks/results/fseft-novel-grown-v7b/k5.yaml fseft-novel-grown-$F-k5
}
others() {  # the transductive table, the federated plans, the demo
  run benchmarks/transductive.py >> runs/transductive.log 2>&1
  run benchmarks/federated_plans.py --rounds 3 --local-steps 10 >> runs/federated-plans.log 2>&1
  # the demo, unless a clean-clone run's records were saved (the README's table comes from one)
  [ -s $MAIN/$HERE/cells/demo/results.json ] ||
    PYTHONPATH=$WT/src $MAIN/.venv/bin/python -m medpeft.cli demo >> runs/demo.log 2>&1
}
fp() { run benchmarks/federated_plans.py "$@" >> runs/federated.log 2>&1; }
secure_arms() {  # seeds 0-2 of each arm under SecAgg+ (fedavg): $1 the server step, then arms
  # "PLAN LOCAL_STEPS", each run in runs/fed-$F-PLAN-slrSTEP-3xSTEPS-sSEED
  local lr=$1 arms=("${@:2}") s arm plan steps
  for s in 0 1 2; do
    for arm in "${arms[@]}"; do
      read -r plan steps <<< "$arm"
      fp --plans $plan --secure --aggregations fedavg --server-lr $lr --rounds 3 \
          --local-steps $steps --seed $s --out runs/fed-$F-$plan-slr$lr-3x$steps-s$s
    done
  done
}
federated() {  # the federated tables (~3 h alone), each under SecAgg+ at server step 1 on seeds
  # 0-2 first: medpeft federate's default (SEA-PEFT, 3 x 40) against affine, the demo's setting
  # (affine, 3 x 20) beside SEA-PEFT at 3 x 20 and affine at 3 x 10; then site-level DP, LoRA
  # everywhere against SEA-PEFT in the clear (3 x 10), and SecAgg+ in --deployment
  # (arms whose seeds table is committed are not run again: their records were not saved)
  [ -s $MAIN/benchmarks/results/federated-seeds-$F-3x40-slr1.md ] || secure_arms 1 "sea-peft 40" "affine 40"
  [ -s $MAIN/benchmarks/results/federated-seeds-$F-3x20-slr1.md ] || secure_arms 1 "affine 20" "sea-peft 20"
  secure_arms 1 "affine 10"
  run benchmarks/federated_dp.py --out runs/fed-$F-dp >> runs/federated.log 2>&1
  for s in 1 2; do  # seed 0: the plans table's run (runs/bench-federated-plans, the same arms)
    fp --plans lora-everywhere sea-peft --rounds 3 --local-steps 10 --seed $s --out runs/fed-$F-seeds-s$s
  done
  [ -s runs/fed-deploy-secure-$F/report.md ] ||
    run -m medpeft.cli federate $MAIN/benchmarks/results/federated-deployment-secagg-v8.yaml \
        --deployment --out runs/fed-deploy-secure-$F >> runs/federated.log 2>&1
}
steps() {  # what the defaults' tests compare beyond the federated stream (~1.2 h alone): the
  # server step 1.5 for SEA-PEFT at 3 x 40 (federate's default is step 1) and for affine at the
  # demo's 3 x 20 and at 3 x 10, seeds 0-2 under SecAgg+; then SecAgg+ against the clear for
  # LoRA everywhere (fedavg, ffa) at seed 0, the plans table's arms in the clear
  secure_arms 1.5 "sea-peft 40" "affine 20" "affine 10"
  secure_arms 1 "affine 10"  # the 3 x 10 row's partner at step 1 (also the federated stream's)
  fp --plans lora-everywhere --secure --aggregations fedavg ffa --rounds 3 --local-steps 10 \
      --seed 0 --out runs/fed-$F-secagg-lora
}
rest() { novel; others; }
case $1 in
peers|default)  # the default row first, then every row
  run benchmarks/peers.py --seeds 0 1 2 $REUSE \
      --skip zero-shot decoder lora sea-peft blackbox-spatial full >> runs/peers.log 2>&1
  [ "$1" = default ] || run benchmarks/peers.py --seeds 0 1 2 $REUSE --workers ${WORKERS:-1} \
      >> runs/peers.log 2>&1;;
peers-table)  # the peers table of the finished cells (training nothing; safe beside the stream)
  run benchmarks/peers.py --seeds 0 1 2 $REUSE --report-only > /dev/null 2>> runs/peers.log
  for f in peers.md peers.png results.csv; do
    cp runs/benchmark-peers/$f $MAIN/benchmarks/results/peers-phantom-$F.${f##*.}; done
  sed -i "s|(peers.png)|(peers-phantom-$F.png)|" $MAIN/benchmarks/results/peers-phantom-$F.md;;
sea)  # first the methods that decide the conclusion (SEA-PEFT and the two best fixed methods
  # of K=1 seed 0) at every K and seed, then the rest's tables (each a table on the last
  # foundation until then), then every method
  sea "$LEADERS"
  rest
  sea "";;
rest) rest;;
novel|others|federated|steps) $1;;  # rest's two halves, one per core; the federated tables
leaders) sea "$LEADERS";;
*) echo "usage: rerun-tables.sh setup [COMMIT]|peers|default|peers-table|sea|leaders|rest|novel|others|federated|steps|status|save" >&2; exit 2;;
esac
