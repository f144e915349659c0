#!/usr/bin/env bash
# One-command set-up: creates .venv at the repository root with every backbone installed.
# Usage: bash bootstrap.sh        (idempotent; re-run after pulling)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: on CPU-only machines this resolves to the CPU wheel.
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
# mara_bench itself, plus the built-in backbones package (mara_bench_backbones), editable.
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
.venv/bin/python -m mara_bench --version
echo "set-up done: activate with 'source .venv/bin/activate'"
