#!/usr/bin/env bash
# Runs schemathesis against a running Stepwise server's OpenAPI document:
#   scripts/schemathesis.sh http://127.0.0.1:PORT TOKEN [MAX_EXAMPLES]
# Installs it (pinned, scripts/schemathesis-requirements.txt) into
# build/schemathesis-venv on first use. Three bounded passes:
#  1. valid data (positive mode), every check: accepted, no 5xx, every
#     answer as documented (status, content type, schema);
#  2. invalid data (negative mode): refused with a 4xx, never a 5xx (the
#     conformance of answers to requests that are not even valid HTTP, such as
#     header values with newlines, which hyper refuses with a bare 400, is
#     not checked here);
#  3. plugin uploads, every check but "valid data is accepted" (random
#     bytes in a well-formed multipart are not a component: 422).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base=$1 token=$2 examples=${3:-25}
venv="$root/build/schemathesis-venv"
. "$root/scripts/python-venv.sh"
ensure_venv "$venv" "$root/scripts/schemathesis-requirements.txt" schemathesis
run() {
    "$venv/bin/schemathesis" run "$base/openapi.json" -H "Authorization: Bearer $token" \
        --max-examples "$examples" --workers 1 --no-color --seed 20261129 --phases examples,coverage,fuzzing "$@"
}
cd "$root/build"
# Uploads take a component or a workflow file the schema cannot describe:
# random bytes or text are refused (422), so they skip the positive-data check.
run --mode positive --checks all --exclude-path '/v1/plugins/{name}' --exclude-path '/v1/workflows/{name}'
run --mode negative --checks not_a_server_error,negative_data_rejection --suppress-health-check filter_too_much
run --include-path '/v1/plugins/{name}' --include-path '/v1/workflows/{name}' --checks all \
    --exclude-checks positive_data_acceptance
