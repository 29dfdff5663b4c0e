#!/usr/bin/env bash
# Generated clients against a live server: for each language, generate a client from
# openapi.yaml with that language's usual generator (the generated code is never committed) and
# run a short scenario with it against `usage-api serve` on a real database of demo data.
#
#   clients/run.sh                      # python typescript rust; BIN=target/debug/usage-api
#   clients/run.sh python               # one language
#
# Every scenario reads the same environment (below) and must:
#   1. list the monthly usage with a filter (decimal_strings=true, a small page),
#   2. walk `next` to the end, the records' count and Σ total_amount equal exactly to the
#      expected figures, which this script computes from the raw events with SQL (an oracle
#      independent of the rollup and of the read path),
#   3. fetch one listed record through `show` (getMonthlyUsage) and find it equal,
#   4. receive a 400 (a filter that does not parse) and a 403 (another organization's account)
#      as the generated error type, with their `code`s.
# Run by .ci/run after the tests (it uses their debug binary).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/debug/usage-api}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
NAME=${SERVER##*/}
DB="${SERVER%/*}/${NAME:-usage_api}_clients"
export OAUTH_DEV_SECRET=generated-clients-development-secret-0123456789
LANGS=${*:-python typescript rust}

[[ -x $BIN ]] || { echo "no $BIN: build it first (cargo build)"; exit 1; }
for lang in $LANGS; do
    [[ -f $ROOT/clients/$lang/run.sh ]] || { echo "unknown language $lang"; exit 2; }
done

psql -X -q "${SERVER%/*}/postgres" -c "DROP DATABASE IF EXISTS \"${DB##*/}\"" >/dev/null
DATABASE_URL=$DB "$BIN" demo --no-serve >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
env DATABASE_URL="$DB" RUST_LOG=warn "$BIN" serve --no-migrate --bind "127.0.0.1:$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health/ready" && break
    sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$port/health/ready" || { cat "$log"; exit 1; }

# Two of the demo organization's accounts, calls only: a few pages at 7 records a page.
ours="'5ea75fe7aa224700012eae40', '5ea75fe7aa224700012eae41'"
export USAGE_API_URL="http://127.0.0.1:$port"
export USAGE_API_TOKEN=$("$BIN" token --org demo-org --ttl 3600 --scope express-accounts-usage:read)
export USAGE_API_FILTER="account_id in ($ours) and type eq 'CALL'"
export USAGE_API_PER_PAGE=7
export USAGE_API_FOREIGN_ACCOUNT=6fb86af8bb335811123fbf50 # other-org's
# The oracle: one record per group of the raw events, its total the exact Σ quantity × price.
read -r USAGE_API_EXPECT_RECORDS USAGE_API_EXPECT_TOTAL < <(psql -X -Atq -F ' ' "$DB" -c "
    SELECT count(*), trim_scale(sum(total)) FROM (
        SELECT sum(quantity * unit_price) AS total FROM usage_events
        WHERE account_id IN ($ours) AND usage_type = 'CALL'
        GROUP BY account_id, product_id, aggr_product_id,
                 date_trunc('month', occurred_at AT TIME ZONE 'UTC'), usage_type, description,
                 currency, direction, resolution, unit, unit_price, wallet_name) AS g")
export USAGE_API_EXPECT_RECORDS USAGE_API_EXPECT_TOTAL
echo "oracle: $USAGE_API_EXPECT_RECORDS records, Σ total_amount $USAGE_API_EXPECT_TOTAL"
(( USAGE_API_EXPECT_RECORDS > 2 * USAGE_API_PER_PAGE )) || { echo "too few records for paging"; exit 1; }

for lang in $LANGS; do
    echo "== generated client: $lang"
    start=$SECONDS
    bash "$ROOT/clients/$lang/run.sh"
    echo "== $lang: passed in $((SECONDS - start)) s"
done
