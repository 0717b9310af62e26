#!/usr/bin/env bash
# Installs componentize-py (PyPI) in .venv and builds {{name}}.wasm.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/componentize-py ] || { python3 -m venv .venv && .venv/bin/pip install --quiet -r requirements.txt; }
.venv/bin/componentize-py --quiet -d wit -w step-log componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
