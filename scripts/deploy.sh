#!/usr/bin/env bash
# Scheduled cloud runs of the main job (flows/tall_flow.py): deploy it, trigger it, or run it once
# on Kubernetes / AWS Batch. Needs Metaflow configured for AWS (`metaflow configure aws`) and, for
# Argo / Kubernetes, `metaflow configure kubernetes`; see docs/deployment.md.
#
#   scripts/deploy.sh argo          [ARGS]  deploy to Argo Workflows (runs weekly: @schedule)
#   scripts/deploy.sh argo-trigger  [ARGS]  start the deployed Argo workflow now
#   scripts/deploy.sh sfn           [ARGS]  deploy to AWS Step Functions (weekly EventBridge rule)
#   scripts/deploy.sh sfn-trigger   [ARGS]  start the deployed state machine now
#   scripts/deploy.sh package-list  [ARGS]  list the files the code package carries (recsys/ included)
#   scripts/deploy.sh k8s-run       [ARGS]  one run, every step on Kubernetes
#   scripts/deploy.sh batch-run     [ARGS]  one run, every step on AWS Batch
#
# ARGS go to the Metaflow command (e.g. `argo --only-json`, `k8s-run --dataset ml-1m`), except the
# @project options `--branch NAME` and `--production`, which are moved before it where Metaflow
# expects them: `scripts/deploy.sh argo --production`.
#
# What every deployment / cloud run gets besides ARGS:
#   --package-suffixes .py,.gz,.md  the embedded dataset (recsys/data/embedded/*.gz) travels too
#   --config-value cfg <JSON>       params/tall_<dataset>.yaml baked in: params/ sits outside the code
#                                   package (only flows/ and, through flows/recsys, the package do)
# Environment:
#   PYTHON           interpreter (default: .venv/bin/python when there is one, else python3)
#   RECSYS_DATASET   whose params/tall_<dataset>.yaml to bake in (default: the ARGS' --dataset, else
#                    amazon-digital-music); deploy one workflow per dataset (say with --branch)
#   RECSYS_PARAMS    a different settings file (YAML, same layout) to bake in
#   RECSYS_IMAGE     container image holding the project's dependencies (torch, numpy, ...)
#   RECSYS_K8S_PVC   a PersistentVolumeClaim mounted at RECSYS_SHARED_DIR (Kubernetes / Argo)
#   RECSYS_BATCH_EFS an EFS file system id mounted at RECSYS_SHARED_DIR (AWS Batch / Step Functions)
#   RECSYS_SHARED_DIR mount point (default /mnt/recsys); with a volume, steps write under
#                    $RECSYS_SHARED_DIR/outputs (steps hand files to each other by path, so every
#                    step's container must see the same folder)
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
cmd=$1
shift

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# Metaflow refuses to run as 'root' or without a user name.
if [ -z "${METAFLOW_USER:-}" ] && { [ -z "${USER:-}" ] || [ "${USER:-}" = root ]; } && { [ -z "${USERNAME:-}" ] || [ "${USERNAME:-}" = root ]; }; then
  export METAFLOW_USER=recsys
fi

# @project options belong before the command; everything else after it.
# A run's `--dataset NAME` also picks the settings file to bake in (unless RECSYS_DATASET is set).
project=()
args=()
run_dataset=
while [ $# -gt 0 ]; do
  case $1 in
    --dataset) args+=("$1"); [ $# -ge 2 ] && { run_dataset=$2; args+=("$2"); shift; } ;;
    --dataset=*) args+=("$1"); run_dataset=${1#--dataset=} ;;
    --production) project+=("$1") ;;
    --branch) [ $# -ge 2 ] || { echo "error: --branch needs a name" >&2; exit 2; }; project+=("$1" "$2"); shift ;;
    --branch=*) project+=("$1") ;;
    *) args+=("$1") ;;
  esac
  shift
done

dataset=${RECSYS_DATASET:-${run_dataset:-amazon-digital-music}}
params=${RECSYS_PARAMS:-params/tall_$dataset.yaml}
shared=${RECSYS_SHARED_DIR:-/mnt/recsys}
suffixes=(--package-suffixes .py,.gz,.md)

bake_config() {
  [ -f "$params" ] || { echo "error: no settings file $params (set RECSYS_DATASET or RECSYS_PARAMS)" >&2; exit 2; }
  local cfg
  cfg=$("$PYTHON" -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1])) or {}))' "$params")
  config=(--config-value cfg "$cfg")
}

# The compute decorator's spec: `kubernetes` or `batch`, plus image / shared volume when asked for.
compute_spec() {
  local deco=$1 attrs=()
  [ -n "${RECSYS_IMAGE:-}" ] && attrs+=("image=$RECSYS_IMAGE")
  if [ "$deco" = kubernetes ] && [ -n "${RECSYS_K8S_PVC:-}" ]; then
    attrs+=("persistent_volume_claims={\"$RECSYS_K8S_PVC\": \"$shared\"}")
  fi
  if [ "$deco" = batch ] && [ -n "${RECSYS_BATCH_EFS:-}" ]; then
    attrs+=("efs_volumes=[\"$RECSYS_BATCH_EFS:$shared\"]")
  fi
  local IFS=,
  if [ ${#attrs[@]} -gt 0 ]; then spec="$deco:${attrs[*]}"; else spec=$deco; fi
}

# With a shared volume (the PVC on Kubernetes, the EFS on Batch), every step writes its files there.
shared_env() {
  output_env=()
  local volume
  if [ "$1" = kubernetes ]; then volume=${RECSYS_K8S_PVC:-}; else volume=${RECSYS_BATCH_EFS:-}; fi
  if [ -n "$volume" ]; then
    output_env=(--with "environment:vars={\"RECSYS_OUTPUT_DIR\": \"$shared/outputs\"}")
  fi
}

flow() { exec "$PYTHON" flows/tall_flow.py "$@"; }

# `${a[@]+"${a[@]}"}`: an empty array under `set -u` on bash < 4.4.
case $cmd in
  argo|sfn)
    bake_config
    if [ "$cmd" = argo ]; then deco=kubernetes; sub=(argo-workflows create); else deco=batch; sub=(step-functions create); fi
    shared_env "$deco"
    compute_spec "$deco"
    with=()
    [ "$spec" != "$deco" ] && with=(--with "$spec")
    flow ${project[@]+"${project[@]}"} --datastore s3 "${suffixes[@]}" "${config[@]}" --with retry \
      ${with[@]+"${with[@]}"} ${output_env[@]+"${output_env[@]}"} "${sub[@]}" ${args[@]+"${args[@]}"}
    ;;
  argo-trigger)
    flow ${project[@]+"${project[@]}"} argo-workflows trigger ${args[@]+"${args[@]}"} ;;
  sfn-trigger)
    flow ${project[@]+"${project[@]}"} step-functions trigger ${args[@]+"${args[@]}"} ;;
  package-list)
    flow ${project[@]+"${project[@]}"} "${suffixes[@]}" package list ${args[@]+"${args[@]}"} ;;
  k8s-run|batch-run)
    bake_config
    if [ "$cmd" = k8s-run ]; then deco=kubernetes; else deco=batch; fi
    shared_env "$deco"
    compute_spec "$deco"
    flow ${project[@]+"${project[@]}"} --datastore s3 "${suffixes[@]}" "${config[@]}" \
      ${output_env[@]+"${output_env[@]}"} run --with "$spec" ${args[@]+"${args[@]}"}
    ;;
  -h|--help|help) usage ;;
  *) echo "error: unknown command '$cmd'" >&2; usage ;;
esac
