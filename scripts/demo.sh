#!/usr/bin/env bash
# The accept-quote demo on a fresh machine: installs the wasm32-wasip2 target,
# builds the four Rust guest components it runs and the host (all idempotent;
# no JavaScript or Python toolchain, no test guest), then runs the workflow
# once and prints the execution as JSON: the only thing on stdout (progress
# goes to stderr). The components go to $STEPWISE_DEMO_PLUGINS (default
# build/plugins).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
plugins="${STEPWISE_DEMO_PLUGINS:-$root/build/plugins}"

STEPWISE_DEMO_PLUGINS="$plugins" scripts/build-guests.sh --accept-quote >&2
cargo build --quiet -p stepwise --bin stepwise >&2

exec "${CARGO_TARGET_DIR:-target}/debug/stepwise" run guest-examples/workflows/accept-quote.toml \
    --input-file guest-examples/workflows/accept-quote.input.json \
    --plugins "$plugins" "$@"
