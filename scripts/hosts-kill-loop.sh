#!/usr/bin/env bash
# Repeats the multi-host kill test (three `stepwise serve` on one PostgreSQL,
# one SIGKILLed mid-burst, the ledger audited) N times, 20 by default; not
# part of the default suite. Prints each run's figures and a summary; stops
# at the first failure.
#   scripts/hosts-kill-loop.sh [N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${1:-20}
scripts/build-guests.sh
STEPWISE_TEST_POSTGRES=$(scripts/postgres.sh)
export STEPWISE_TEST_POSTGRES
cargo build --quiet -p stepwise --bin stepwise
cargo test --quiet -p stepwise-tests --test hosts --no-run
log=build/hosts-kill-loop.log
: > "$log"
started=$(date +%s)
for n in $(seq 1 "$runs"); do
    begun=$(date +%s)
    if ! cargo test --quiet -p stepwise-tests --test hosts three_hosts -- --nocapture > build/hosts-kill-run.log 2>&1; then
        cat build/hosts-kill-run.log >&2
        echo "run $n of $runs FAILED (log above)" >&2
        exit 1
    fi
    figures=$(grep '^three hosts:' build/hosts-kill-run.log)
    echo "run $n: $figures ($(( $(date +%s) - begun )) s)" | tee -a "$log"
done
executions=$(grep -o '[0-9]* executions' "$log" | awk '{s += $1} END {print s}')
taken=$(grep -o '[0-9]* taken over' "$log" | awk '{s += $1} END {print s}')
calls=$(grep -o '[0-9]* checked' "$log" | awk '{s += $1} END {print s}')
echo "$runs runs passed in $(( $(date +%s) - started )) s: $executions executions, $taken taken over, $calls ledger calls checked"
