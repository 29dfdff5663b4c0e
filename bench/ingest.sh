#!/usr/bin/env bash
# Ingestion and rollup benchmark, every figure against the database's own ceiling in the same run:
#
#   1. bulk ingest of N events (default 10,000,000) with `usage-api ingest` (peak RSS too),
#      against a plain COPY of the same CSV file into a bare table with a primary key;
#   2. a full rollup of them (`usage-api rollup --full`), against a hand-written
#      INSERT … SELECT … GROUP BY of the same aggregates into a bare table;
#   3. 1,000 new events sent over HTTP on top of them → how long until the API shows them.
#
#   bench/ingest.sh                 # EVENTS=10000000 by default
#   EVENTS=1000000 bench/ingest.sh  # a quicker run
#
# Needs: Rust, a local Postgres (DATABASE_URL's server), psql, GNU time, curl; uses the database
# usage_api_ingest_bench (rebuilt) and a scratch directory under bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

EVENTS=${EVENTS:-10000000}
ACCOUNTS=${ACCOUNTS:-2000}
PORT=${PORT:-18091}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
DB="${SERVER%/*}/usage_api_ingest_bench"
OUT=bench/out
export OAUTH_DEV_SECRET=bench-secret-bench-secret-bench-secret

command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --quiet
bin=$PWD/target/release/usage-api
mkdir -p "$OUT"

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }
rate() { echo "scale=0; $1 / $2" | bc; }

psql "${SERVER%/*}/postgres" -qc "DROP DATABASE IF EXISTS usage_api_ingest_bench" 2>/dev/null
DATABASE_URL=$DB $bin migrate >/dev/null

echo "== data: $EVENTS events over $ACCOUNTS accounts, 24 months, 15 products (CSV)"
reseller_files "$DB" "$EVENTS" "$ACCOUNTS" "$OUT/accounts.csv" "$OUT/events.csv"
DATABASE_URL=$DB $bin accounts import "$OUT/accounts.csv" >/dev/null
ls -la "$OUT/events.csv" | awk '{printf "file: %.0f MB\n", $5 / 1048576}'

echo
echo "== 1. bulk ingest"
psql "$DB" -qc "CREATE TABLE bare_events (event_id text PRIMARY KEY, account_id text, product_id text,
  aggr_product_id text, usage_type text, description text, unit text, direction text, resolution text,
  wallet_name text, occurred_at timestamptz, quantity numeric, unit_price numeric, currency text)"
t0=$(now)
psql "$DB" -qc "\copy bare_events FROM '$OUT/events.csv' CSV HEADER"
t1=$(now)
copy_s=$(elapsed "$t0" "$t1")
t0=$(now)
DATABASE_URL=$DB /usr/bin/time -f "%M" -o "$OUT/ingest.rss" $bin ingest "$OUT/events.csv" > "$OUT/ingest.out" 2> "$OUT/ingest.err"
t1=$(now)
ingest_s=$(elapsed "$t0" "$t1")
rss_mb=$(echo "scale=1; $(cat "$OUT/ingest.rss") / 1024" | bc)
echo "plain COPY into a bare table with a PK: ${copy_s}s  $(rate "$EVENTS" "$copy_s") rows/s"
echo "usage-api ingest:                      ${ingest_s}s  $(rate "$EVENTS" "$ingest_s") events/s  ($(cat "$OUT/ingest.out"))"
echo "ratio ingest / COPY: $(echo "scale=2; $copy_s / $ingest_s" | bc)   peak RSS of ingest: ${rss_mb} MB"

echo
echo "== 2. full rollup"
psql "$DB" -qc "VACUUM ANALYZE"
psql "$DB" -qc "CREATE TABLE bare_monthly AS SELECT * FROM usage_monthly WITH NO DATA"
# Warm the cache once, so that neither contender pays for reading the events from disk.
psql "$DB" -qAtc "SELECT count(*), sum(quantity) FROM usage_events" >/dev/null
t0=$(now)
psql "$DB" -qc "INSERT INTO bare_monthly (id, organization_id, account_id, product_id, aggr_product_id, month,
    usage_type, description, currency, direction, resolution, unit, price, wallet_name, number_of_units,
    total_amount, event_count)
  SELECT md5(e.account_id || e.product_id || e.usage_type || date_trunc('month', e.occurred_at AT TIME ZONE 'UTC'))::uuid,
         a.organization_id, e.account_id, e.product_id, e.aggr_product_id,
         date_trunc('month', e.occurred_at AT TIME ZONE 'UTC')::date, e.usage_type, e.description, e.currency,
         e.direction, e.resolution, e.unit, e.unit_price, e.wallet_name, sum(e.quantity),
         sum(e.quantity * e.unit_price), count(*)
  FROM usage_events e JOIN accounts a ON a.id = e.account_id
  GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14"
t1=$(now)
hand_s=$(elapsed "$t0" "$t1")
t0=$(now)
DATABASE_URL=$DB $bin rollup --full > "$OUT/rollup.out"
t1=$(now)
rollup_s=$(elapsed "$t0" "$t1")
echo "hand-written INSERT … SELECT … GROUP BY: ${hand_s}s"
echo "usage-api rollup --full:                 ${rollup_s}s  ($(cat "$OUT/rollup.out"))"
echo "ratio rollup / hand-written: $(echo "scale=2; $rollup_s / $hand_s" | bc)"

echo
echo "== 3. 1,000 new events on top → visible in the API"
DATABASE_URL=$DB $bin serve --bind "127.0.0.1:$PORT" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.1; done
writer=$($bin token --org reseller --scope express-accounts-usage:write)
reader=$($bin token --org reseller)
python3 - "$OUT/new.json" <<'PY'
import json, sys
events = [{"event_id": f"new-{n}", "account_id": f"acc-{1 + n % 50}", "product_id": "P-NEW",
           "aggr_product_id": "AP-NEW", "type": "CALL", "unit": "MINUTES",
           "occurred_at": "2024-12-15T10:00:00Z", "quantity": "1.5", "unit_price": "0.01",
           "currency": "USD"} for n in range(1000)]
json.dump(events, open(sys.argv[1], "w"))
PY
filter="filter=product_id%20eq%20%27P-NEW%27&per_page=250"
t0=$(now)
curl -sf -X POST -H "Authorization: Bearer $writer" -H 'Content-Type: application/json' \
    --data-binary @"$OUT/new.json" "http://127.0.0.1:$PORT/express/usage/events" > "$OUT/post.out"
t_posted=$(now)
while :; do
    body=$(curl -sf -H "Authorization: Bearer $reader" "http://127.0.0.1:$PORT/express/usage/month?$filter")
    # 50 accounts → 50 aggregates of 30 events × 1.5 units each.
    if echo "$body" | python3 -c 'import json,sys; b=json.load(sys.stdin); sys.exit(0 if b["total"] == 50 and sum(r["number_of_units"] for r in b["_embedded"]["usage"]) == 1500 else 1)'; then
        break
    fi
    waited=$(elapsed "$t0" "$(now)"); if [ "${waited%.*}" -ge 30 ] 2>/dev/null; then echo "not visible after 30 s"; exit 1; fi
    sleep 0.02
done
t1=$(now)
echo "POST of 1,000 events answered in $(elapsed "$t0" "$t_posted")s; all visible in the API after $(elapsed "$t0" "$t1")s"
