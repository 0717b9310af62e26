#!/usr/bin/env bash
# The accept-quote demo on a fresh machine: installs the wasm32-wasip2 target,
# builds the guest components and the host (all idempotent), then runs the
# workflow once and prints the execution as JSON.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/build-guests.sh
cargo build --quiet -p stepwise --bin stepwise

exec target/debug/stepwise run guest-examples/workflows/accept-quote.toml \
    --input-file guest-examples/workflows/accept-quote.input.json \
    --plugins build/plugins "$@"
