# Shared by the spleen trials' run scripts (source it): phantom-demo-s0's six source tasks (and
# phantom collections 0-7's), a niced runner (SRC: the src/ folder whose code runs; THREADS: its
# threads) and decoder tuning's recipe on phantoms 0/1/2 for a foundation.
cd /work/main
TASKS="Task01_AbdomenMulti Task02_Liver Task03_Kidney Task04_Spleen Task05_SpinePelvis Task07_Pancreas"
SOURCES=$(for t in $TASKS; do echo --source runs/cache/phantom-demo-s0/$t; done)
# EIGHT: the same tasks of phantom collections 0-7 (v6's third stage and later)
EIGHT=$(for s in 0 1 2 3 4 5 6 7; do for t in $TASKS; do echo --source runs/cache/phantom-demo-s$s/$t; done; done)
run() { OMP_NUM_THREADS=${THREADS:-1} PYTHONPATH=${SRC:-/work/main/src} nice -n 5 .venv/bin/python "$@"; }
recipes() {  # recipes NAME: adapt_recipe on phantoms 0/1/2 for runs/pt-v6/NAME
  for s in 0 1 2; do
    run benchmarks/adapt_recipe.py --foundation runs/pt-v6/$1 --method decoder --steps 240 \
       --augment shape --shots 1 --shots 5 --seed $s --out runs/pt-v6/$1-recipe-s$s \
       > runs/pt-v6/$1-recipe-s$s.log 2>&1
  done
}
