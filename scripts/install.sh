#!/usr/bin/env bash
# Create .venv and install recsys with its test tools.
#
# torch is installed first, on its own, so that nothing pulls a multi-GB CUDA build where a CPU
# one is meant. Override with TORCH_SPEC, e.g. for a GPU box:
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash scripts/install.sh
# and for a CPU-only build on a machine whose default index serves CUDA wheels:
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || { echo "error: '$PY -m venv' failed; on Debian/Ubuntu run: apt-get install python3-venv" >&2; exit 1; }
fi
stamp="$VENV/.recsys-installed"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  # shellcheck disable=SC2086  # TORCH_SPEC may carry pip options on purpose
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $TORCH_SPEC
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[dev]"
  touch "$stamp"
fi
