#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs
# (idempotently), builds every guest from source (Rust, JavaScript, Python,
# WAT), checks formatting and lints, runs the unit and integration tests and
# a smoke run of the benchmark.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$(date +%s)

scripts/build-guests.sh
# The web view is tested in headless Chromium (Debian's package).
if ! command -v chromium > /dev/null; then
    echo "installing chromium for the web view test" >&2
    apt-get update -qq && apt-get install -y -qq chromium > /dev/null
fi
# The PostgreSQL store's conformance and the multi-host tests run against a
# throwaway cluster that the project's own script starts (Debian's package).
STEPWISE_TEST_POSTGRES=$(scripts/postgres.sh)
export STEPWISE_TEST_POSTGRES
cargo fmt --all -- --check
cargo fmt --manifest-path guest-examples/rust/Cargo.toml --all -- --check
cargo fmt --manifest-path guest-examples/js/runtime/Cargo.toml --all -- --check
CC_wasm32_unknown_unknown=clang AR_wasm32_unknown_unknown=llvm-ar \
    CFLAGS_wasm32_unknown_unknown="-mbulk-memory -msign-ext -mnontrapping-fptoint -mmutable-globals" cargo clippy --quiet --release \
    --manifest-path guest-examples/js/runtime/Cargo.toml --target-dir guest-examples/js/runtime/target \
    --target wasm32-unknown-unknown --workspace -- -D warnings
cargo clippy --quiet --workspace --all-targets -- -D warnings
cargo build --quiet -p stepwise --bin stepwise
cargo test --workspace
# The benchmark harness, as a smoke run (it asserts no timing; figures come
# from `cargo run --release -p stepwise -- bench`, see README "Performance").
target/debug/stepwise bench --quick --postgres "$STEPWISE_TEST_POSTGRES" --json build/bench-quick.json > /dev/null

echo "test suite wall time: $(( $(date +%s) - started )) s"
