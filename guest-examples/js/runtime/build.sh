#!/usr/bin/env bash
# Builds Stepwise's QuickJS runtime modules from source, one per step world:
#   <out>/stepwise-qjs-log.wasm       skippable-step-log       (log)
#   <out>/stepwise-qjs-services.wasm  skippable-step-services  (log, services)
#   <out>/stepwise-qjs-kv.wasm        skippable-step-kv        (log, config, kv)
#   <out>/stepwise-qjs-full.wasm      skippable-step           (all of them)
# (default <out>: ../sdk/runtime, where @stepwise/sdk/build looks for them).
# Cargo builds in ./target, or in $STEPWISE_QUICKJS_TARGET_DIR when set.
#
# Installs what it needs, idempotently: the wasm32-unknown-unknown Rust target
# (rustup) and clang with llvm-ar (Debian's packages), which compile
# QuickJS's C for wasm32. Cargo skips the build when nothing changed, and
# unchanged modules are not copied again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../sdk/runtime"}

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "installing the wasm32-unknown-unknown Rust target" >&2
    rustup target add wasm32-unknown-unknown >&2
fi
if ! command -v clang > /dev/null || ! command -v llvm-ar > /dev/null; then
    echo "installing clang and llvm (QuickJS's C is compiled for wasm32)" >&2
    apt-get update -qq >&2 && apt-get install -y -qq clang llvm > /dev/null
fi

# clang 14 targets the wasm MVP by default; the features Rust's wasm32 target
# has anyway let QuickJS copy and fill memory with single instructions.
export CC_wasm32_unknown_unknown=clang AR_wasm32_unknown_unknown=llvm-ar
export CFLAGS_wasm32_unknown_unknown="-mbulk-memory -msign-ext -mnontrapping-fptoint -mmutable-globals"
cargo build --quiet --release --target wasm32-unknown-unknown --manifest-path "$here/Cargo.toml" --workspace \
    --target-dir "${STEPWISE_QUICKJS_TARGET_DIR:-$here/target}"

mkdir -p "$out"
for world in log services kv full; do
    built="${STEPWISE_QUICKJS_TARGET_DIR:-$here/target}/wasm32-unknown-unknown/release/stepwise_qjs_$world.wasm"
    cmp -s "$built" "$out/stepwise-qjs-$world.wasm" 2>/dev/null || cp "$built" "$out/stepwise-qjs-$world.wasm"
done
