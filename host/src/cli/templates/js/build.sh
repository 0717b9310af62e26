#!/usr/bin/env bash
# Builds {{name}}.wasm: installs the pinned toolchain (npm: rolldown,
# SpiderMonkey's componentizer, TypeScript; @stepwise/sdk from ./stepwise-sdk),
# builds Stepwise's QuickJS runtime from source once (Rust and clang, which
# stepwise-sdk/runtime-src/build.sh installs; ~1 min the first time, a no-op
# after), then the step on it with `stepwise plugins build-js`.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules ] || npm install --no-audit --no-fund --loglevel=error
stepwise-sdk/runtime-src/build.sh stepwise-sdk/runtime
STEPWISE="${STEPWISE:-{{stepwise}}}" node build.mjs
