#!/usr/bin/env bash
# The accept-quote demo on a fresh machine: installs the wasm32-wasip2 target,
# builds the Rust guest components it needs and the host (all idempotent; no
# JavaScript or Python toolchain), then runs the workflow once and prints the
# execution as JSON: the only thing on stdout (progress goes to stderr).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/build-guests.sh --rust-only >&2
cargo build --quiet -p stepwise --bin stepwise >&2

exec target/debug/stepwise run guest-examples/workflows/accept-quote.toml \
    --input-file guest-examples/workflows/accept-quote.input.json \
    --plugins build/plugins "$@"
