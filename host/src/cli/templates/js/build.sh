#!/usr/bin/env bash
# Installs componentize-js (npm) and builds {{name}}.wasm.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules ] || npm install --no-audit --no-fund --loglevel=error
node build.mjs
