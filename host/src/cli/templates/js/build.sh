#!/usr/bin/env bash
# Installs the pinned toolchain (npm: rolldown, QuickJS and SpiderMonkey
# componentizers, TypeScript; @stepwise/sdk from ./stepwise-sdk) and builds
# {{name}}.wasm.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules ] || npm install --no-audit --no-fund --loglevel=error
node build.mjs
