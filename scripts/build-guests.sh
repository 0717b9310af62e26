#!/usr/bin/env bash
# Builds every example and test guest component from source: Rust, JavaScript,
# Python and WAT.
#
# Output (idempotent: cargo skips up-to-date crates, unchanged files are not copied):
#   build/plugins/<name>.wasm            valid step plugins (accept-quote steps and test steps)
#   build/plugins/<name>.toml            their manifests, where they have one
#   build/invalid-components/<name>.wasm components the host must refuse (tests only)
#   build/variants/<name>.wasm           versions of one test plugin, for hot-reload tests
#   build/plugins/js-*.wasm, py-*.wasm, wat-echo.wasm  JavaScript, Python and WAT guests
#
# Installs what it needs: the wasm32-wasip2 Rust target, the npm packages of
# guest-examples/js (npm ci), the wasm32-unknown-unknown target and clang for
# the QuickJS runtime (guest-examples/js/runtime/build.sh), componentize-py in
# build/python-venv. The JavaScript steps are built with the `stepwise` binary
# (debug, built here).
#
# --accept-quote: only the four Rust guests the accept-quote workflow runs
# (the demo), into $STEPWISE_DEMO_PLUGINS (default build/plugins): no
# JavaScript or Python toolchain is installed, no test guest is built.
set -euo pipefail
accept_quote_only=false
if [ "${1:-}" = "--accept-quote" ]; then
    accept_quote_only=true
fi

root=$(cd "$(dirname "$0")/.." && pwd)
guests="$root/guest-examples/rust"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2 >&2
fi

accept_quote="retrieve-cart reserve-inventory authorize-payment create-order"
if $accept_quote_only; then
    steps="$accept_quote"
    packages=$(printf -- '-p %s ' $accept_quote)
    plugins="${STEPWISE_DEMO_PLUGINS:-$root/build/plugins}"
else
    steps="$accept_quote echo flaky fail panic compensate-fails hostile cart-limit enrich-cart cart-total apply-gift-card"
    packages=--workspace
    plugins="$root/build/plugins"
fi

# The guests' own target directory, whatever CARGO_TARGET_DIR says (the host's may be elsewhere).
# shellcheck disable=SC2086 # $packages is a list of arguments
cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$guests/Cargo.toml" $packages \
    --target-dir "$guests/target"

out="$guests/target/wasm32-wasip2/release"
mkdir -p "$plugins"

copy() { # copy <cargo artifact> <destination>, only when it changed
    cmp -s "$1" "$2" 2>/dev/null || cp "$1" "$2"
}

for step in $steps; do
    copy "$out/${step//-/_}.wasm" "$plugins/$step.wasm"
    # A plugin's manifest (plugin.toml in its crate) lands beside its component.
    if [ -f "$guests/$step/plugin.toml" ]; then
        copy "$guests/$step/plugin.toml" "$plugins/$step.toml"
    else
        rm -f "$plugins/$step.toml"
    fi
done
if $accept_quote_only; then
    exit 0
fi
invalid="$root/build/invalid-components"
mkdir -p "$invalid"
copy "$out/wrong_version.wasm" "$invalid/wrong-version.wasm"
mkdir -p "$root/build/variants"
for variant in versioned-v1 versioned-v2; do
    copy "$out/${variant//-/_}.wasm" "$root/build/variants/$variant.wasm"
done
copy "$out/not-a-step.wasm" "$invalid/not-a-step.wasm"

# JavaScript guests and the WAT guest: rolldown, componentize-js (SpiderMonkey)
# and the wasm-tools bundled in jco, from npm, pinned by package-lock.json.
js="$root/guest-examples/js"
if [ ! -f "$js/node_modules/.package-lock.json" ] || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
    echo "installing the JavaScript toolchain (npm ci in guest-examples/js)" >&2
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
fi
# JavaScript steps on QuickJS are Stepwise's runtime module (built from
# source: Rust and QuickJS's C for wasm32) pre-initialised with each step by
# `stepwise plugins build-js`: both are built first.
"$js/runtime/build.sh" "$js/sdk/runtime"
# From the repository root, so that cargo reads its .cargo/config.toml (the
# bundled SQLite's flags) whatever directory this script was started from.
(cd "$root" && cargo build --quiet -p stepwise --bin stepwise)
STEPWISE="${CARGO_TARGET_DIR:-$root/target}/debug/stepwise" node "$js/build.mjs" "$plugins"

# Python guests: componentize-py from PyPI, pinned, in a virtual environment.
python="$root/guest-examples/python"
venv="$root/build/python-venv"
. "$root/scripts/python-venv.sh"
ensure_venv "$venv" "$python/requirements.txt" componentize-py
# step directory -> the smallest world that has what the step imports
for entry in authorize_payment:step-services cart_total:step-log; do
    step="${entry%%:*}" world="${entry#*:}" name="py-${step//_/-}"
    out="$plugins/$name.wasm"
    if [ ! -f "$out" ] || [ -n "$(find "$python/$step" "$root/wit" -newer "$out" -name '*.py' -o -newer "$out" -name '*.wit' | head -1)" ]; then
        started=$(date +%s)
        "$venv/bin/componentize-py" --quiet -d "$root/wit" -w "$world" componentize -p "$python/$step" app -o "$out.partial"
        mv "$out.partial" "$out"
        echo "built $name ($(stat -c %s "$out") bytes) in $(( $(date +%s) - started )) s" >&2
    fi
    if [ -f "$python/$step/$name.toml" ]; then
        copy "$python/$step/$name.toml" "$plugins/$name.toml"
    fi
done
