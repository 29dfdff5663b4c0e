#!/usr/bin/env bash
# Read benchmark: the API over HTTP (wrk) against pgbench running the same SQL the server runs
# for the same request, in the same run, on the demo organization.
#
#   bench/read.sh            # DURATION=15 CONNECTIONS=32 by default
#
# Needs: Rust, a local Postgres (DATABASE_URL's server), Debian's wrk and pgbench (installed here
# when missing). Uses the database usage_api_bench, rebuilt each run.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-18090}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
DB="${SERVER%/*}/usage_api_bench"
export OAUTH_DEV_SECRET=bench-secret-bench-secret-bench-secret

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v pgbench >/dev/null || { apt-get update -qq && apt-get install -y -qq postgresql-client; }

cargo build --release --quiet
bin=target/release/usage-api

psql "${SERVER%/*}/postgres" -qc "DROP DATABASE IF EXISTS usage_api_bench" >/dev/null
DATABASE_URL=$DB $bin demo --no-serve >/dev/null
psql "$DB" -qc "VACUUM ANALYZE" >/dev/null
rows=$(psql "$DB" -Atc "SELECT count(*) FROM usage_monthly WHERE organization_id = 'demo-org'")

DATABASE_URL=$DB $bin serve --bind "127.0.0.1:$PORT" --db-pool-size "$CONNECTIONS" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done
token=$($bin token --org demo-org)

# The SQL the server runs for GET /express/usage/month (page 1, 50 rows, default order).
sql=$(mktemp)
cat > "$sql" <<'SQL'
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT COUNT(*) FROM usage_monthly WHERE organization_id = 'demo-org';
SELECT id, account_id, product_id, aggr_product_id, month, usage_type, description, currency,
       direction, resolution, unit, price, wallet_name, number_of_units, total_amount
  FROM usage_monthly WHERE organization_id = 'demo-org' ORDER BY id DESC LIMIT 50 OFFSET 0;
COMMIT;
SQL

echo "dataset: demo-org, $rows monthly rows; $CONNECTIONS connections, ${DURATION}s each"
echo
echo "== API: GET /express/usage/month (page 1, per_page 50)"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$PORT/express/usage/month" | tee /tmp/usage-bench-wrk.txt
echo
echo "== pgbench: the same page + count SQL (prepared)"
pgbench -n -M prepared -c"$CONNECTIONS" -j2 -T"$DURATION" -r -f "$sql" "$DB" 2>&1 \
    | grep -E "latency average|tps =|^ +[0-9.]+ +[0-9]+ +[A-Z]" | tee /tmp/usage-bench-pgbench.txt
api=$(awk '/Requests\/sec/ {print $2}' /tmp/usage-bench-wrk.txt)
db=$(awk '/tps =/ {print $3}' /tmp/usage-bench-pgbench.txt)
echo
echo "API req/s: $api   pgbench tps: $db   ratio API/DB: $(echo "scale=2; $api / $db" | bc)"
