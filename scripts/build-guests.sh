#!/usr/bin/env bash
# Builds every example and test guest component from source.
#
# Output (idempotent: cargo skips up-to-date crates, unchanged files are not copied):
#   build/plugins/<name>.wasm            valid step plugins (accept-quote steps and test steps)
#   build/plugins/<name>.toml            their manifests, where they have one
#   build/invalid-components/<name>.wasm components the host must refuse (tests only)
#   build/variants/<name>.wasm           versions of one test plugin, for hot-reload tests
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
guests="$root/guest-examples/rust"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi

cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$guests/Cargo.toml" --workspace

out="$guests/target/wasm32-wasip2/release"
plugins="$root/build/plugins"
invalid="$root/build/invalid-components"
mkdir -p "$plugins" "$invalid"

copy() { # copy <cargo artifact> <destination>, only when it changed
    cmp -s "$1" "$2" 2>/dev/null || cp "$1" "$2"
}

for step in retrieve-cart reserve-inventory authorize-payment create-order \
            echo flaky fail panic compensate-fails hostile cart-limit enrich-cart; do
    copy "$out/${step//-/_}.wasm" "$plugins/$step.wasm"
    # A plugin's manifest (plugin.toml in its crate) lands beside its component.
    if [ -f "$guests/$step/plugin.toml" ]; then
        copy "$guests/$step/plugin.toml" "$plugins/$step.toml"
    else
        rm -f "$plugins/$step.toml"
    fi
done
copy "$out/wrong_version.wasm" "$invalid/wrong-version.wasm"
mkdir -p "$root/build/variants"
for variant in versioned-v1 versioned-v2; do
    copy "$out/${variant//-/_}.wasm" "$root/build/variants/$variant.wasm"
done
copy "$out/not-a-step.wasm" "$invalid/not-a-step.wasm"
