#!/usr/bin/env bash
# The runs behind the headline claims' tests (docs/reproduction.md, "Headline claims"), one after
# another, each a flow run into its own folder under $CLAIMS_DIR (default /work/claims). A finished
# run (its evidence.json exists) is skipped; an unfinished one (its run id is in <name>.runid) is
# resumed with `resume --origin-run-id`, so its training steps go on from their epoch checkpoints
# (flows/flow_support.py) and a later start continues where this one stopped.
#   CLAIMS_DIR=/work/claims OMP_NUM_THREADS=1 nohup bash benchmarks/claims_runs.sh > /work/claims/log.txt 2>&1 &
# Then: python benchmarks/claims.py (writes benchmarks/results/claims.json from the runs' evidence).
set -u
cd "$(dirname "$0")/.."
DIR=${CLAIMS_DIR:-/work/claims}
PY=${PYTHON:-.venv/bin/python}
export USERNAME=${USERNAME:-dev} RECSYS_DATA_HOME=${RECSYS_DATA_HOME:-../shared/data}
run() {  # name, flow, args...
  local name=$1 flow=$2; shift 2
  if [ -f "$DIR/$name/evidence.json" ]; then echo "$name: done"; return; fi
  local t0=$SECONDS status
  if [ -s "$DIR/$name.runid" ]; then
    local origin; origin=$(cat "$DIR/$name.runid")
    echo "$name: resume run $origin $(date -u +%FT%TZ)"
    "$PY" "flows/$flow" resume --origin-run-id "$origin" --run-id-file "$DIR/$name.runid.new" >> "$DIR/$name.log" 2>&1
    status=$?
    [ -s "$DIR/$name.runid.new" ] && mv "$DIR/$name.runid.new" "$DIR/$name.runid"
  else
    rm -rf "$DIR/$name"; echo "$name: start $(date -u +%FT%TZ)"
    "$PY" "flows/$flow" run --output-dir "$DIR/$name" --run-id-file "$DIR/$name.runid" "$@" > "$DIR/$name.log" 2>&1
    status=$?
  fi
  if [ "$status" = 0 ]; then echo "$name: finished in $((SECONDS - t0)) s"
  else echo "$name: FAILED after $((SECONDS - t0)) s (see $DIR/$name.log)"; fi
}
mkdir -p "$DIR"
# POSIT vs EASE (SGD, same learner) Coverage@100 on ML-1M: 5 seeds
run tail_ml-1m tail_flow.py --dataset ml-1m --methods mostpop,ease,posit --seeds 0,1,2,3,4
# BaM_p / BaM_l vs hard selection on ML-1M (REMI, our corrected defaults), one seed as the paper
run bam_ml-1m bam_flow.py --dataset ml-1m --model remi
# TALL vs EnLFT on ML-1M low-mainstream users (paired over users); VAE / WL as the base
run tall_ml-1m tall_flow.py --dataset ml-1m --methods vae,wl,enlft,tall --shards 1
