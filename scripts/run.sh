#!/usr/bin/env bash
# Install (if needed) and run the project's main job on the embedded default dataset
# (Amazon Digital Music, shipped inside the package). Extra arguments go to the flow's `run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Metaflow refuses to run as 'root' or without a user name.
if [ -z "${METAFLOW_USER:-}" ] && { [ -z "${USER:-}" ] || [ "${USER:-}" = root ]; } && { [ -z "${USERNAME:-}" ] || [ "${USERNAME:-}" = root ]; }; then
  export METAFLOW_USER=recsys
fi
exec .venv/bin/python flows/tall_flow.py --no-pylint run --max-workers 2 "$@"
