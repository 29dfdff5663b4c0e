#!/usr/bin/env bash
# Schema fuzzing: schemathesis against a live `usage-api serve` on a real database, with all
# checks, once per scope (read, write, triggers) on the operations that scope may call. Zero
# failures or the script fails. Run by .ci/run after the tests (it uses their debug binary).
#
#   clients/schemathesis/run.sh            # BIN=target/debug/usage-api by default
#   SCOPES=triggers clients/schemathesis/run.sh   # one scope's operations only
#
# Its own database (<DATABASE_URL's name>_schemathesis, made anew) holds `usage-api demo`'s data.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/clients/schemathesis
BIN=${BIN:-$ROOT/target/debug/usage-api}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
NAME=${SERVER##*/}
DB="${SERVER%/*}/${NAME:-usage_api}_schemathesis"
VENV=$ROOT/target/schemathesis-venv
export OAUTH_DEV_SECRET=schema-fuzzing-development-secret-0123456789

[[ -x $BIN ]] || { echo "no $BIN: build it first (cargo build)"; exit 1; }
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'schemathesis==4.32.5'
fi
"$VENV/bin/schemathesis" --version

psql -X -q "${SERVER%/*}/postgres" -c "DROP DATABASE IF EXISTS \"${DB##*/}\"" >/dev/null
DATABASE_URL=$DB "$BIN" demo --no-serve >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
# One client sending as fast as it can: the per-organization limits (tested on their own) are
# set out of its way, so that every answer is the operation's own.
env DATABASE_URL="$DB" USAGE_API_WEBHOOK_ALLOW_HOSTS=127.0.0.1 RUST_LOG=warn \
    USAGE_API_ORG_RATE=1000000 USAGE_API_ORG_BURST=1000000 USAGE_API_ORG_CONCURRENCY=1000 USAGE_API_ORG_EXECUTING=1000 \
    "$BIN" serve --no-migrate --bind "127.0.0.1:$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health/ready" && break
    sleep 0.1
done

token() { "$BIN" token --org demo-org --ttl 3600 --scope "$1"; }
fuzz() {
    local scope=$1
    shift
    echo "== schemathesis with the $scope scope"
    PYTHONPATH=$HERE SCHEMATHESIS_HOOKS=hooks "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" run "$ROOT/openapi.yaml" \
        --url "http://127.0.0.1:$port" -H "Authorization: Bearer $(token "express-accounts-usage:$scope")" \
        --checks all --workers 1 --max-time 90 --no-color "$@"
}
for scope in ${SCOPES:-read write triggers}; do
    case $scope in
        read) fuzz read --include-method GET --exclude-path-regex '[Tt]riggers' ;;
        # One operation, no links: nothing for the stateful phase to chain.
        write) fuzz write --include-operation-id sendUsageEvents --phases examples,coverage,fuzzing ;;
        triggers) fuzz triggers --include-path-regex '[Tt]riggers' ;;
        *) echo "unknown scope $scope"; exit 2 ;;
    esac
done
