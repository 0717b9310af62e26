#!/usr/bin/env bash
# Builds {{name}}.wasm (a component for wasm32-wasip2) from this crate.
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2
target="${CARGO_TARGET_DIR:-target}"
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm"
