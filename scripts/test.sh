#!/usr/bin/env bash
# Install (if needed) and run the test suite: unit, flow smoke and notebook tiers.
# Reproduction runs are marked `slow` and excluded; run them with: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Real-data tests read ../shared/data when it is there (see docs/datasets.md).
if [ -z "${RECSYS_DATA_HOME:-}" ] && [ -d ../shared/data ]; then
  export RECSYS_DATA_HOME="$(cd ../shared/data && pwd)"
fi
# OpenMP spin-waiting makes torch several times slower on a busy 2-core machine.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/python -m pytest "$@"
