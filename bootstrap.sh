#!/usr/bin/env bash
# One-command set-up: creates .venv at the repository root with every backbone installed.
# Usage: bash bootstrap.sh        (idempotent; re-run after pulling)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
# pip on some machines warns about configured local indexes that do not exist; keep the log readable
NOISE='is ignored: it is neither a file nor a directory|BuildBackendWarning|^ *!!|\*{20}|^ *$|Please |By 2027|See https|corresp\(|return .\\n|with strategy|name as your package|Editable installation'
pip_install() {
  local rc=0
  .venv/bin/python -m pip install -q "$@" >.venv/pip.log 2>&1 || rc=$?
  grep -v -E "$NOISE" .venv/pip.log || true
  return $rc
}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip_install --upgrade pip
# torch first and pinned: on CPU-only machines this resolves to the CPU wheel.
pip_install -r requirements.txt
pip_install --no-deps -r requirements-nodeps.txt
# mara_bench itself, plus the built-in backbones package (mara_bench_backbones), editable.
pip_install --no-deps --no-build-isolation -e .
# fail loudly if anything essential is missing
.venv/bin/python -c "import torch, e3nn, mace, nequip, torch_harmonics, torch_geometric, ase, mara_bench, mara_bench_backbones" \
  || { echo "bootstrap: the environment is incomplete (see pip output above)"; exit 1; }
.venv/bin/python -m mara_bench --version
echo "set-up done: activate with 'source .venv/bin/activate'"
