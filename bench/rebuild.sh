#!/usr/bin/env bash
# Ingest never waits for the rollup: a full rebuild (`usage-api rollup --full`) over EVENTS events
# while producers POST fresh events continuously to a live `serve` (its own rollup worker on).
# Every POST must be answered 200 in under a second, and afterwards the totals must be exact:
# Σ number_of_units of the monthly aggregates = Σ quantity of the stored events, and the stored
# events = the bulk load + every event the producers were told was accepted.
#
#   bench/rebuild.sh                      # EVENTS=1000000, the release build
#   EVENTS=200000 PROFILE=debug bench/rebuild.sh
#
# Needs: Rust, a local Postgres (DATABASE_URL's server), psql, python3, curl; uses the database
# usage_api_rebuild_bench (rebuilt) and bench/out/. Exits non-zero when a goal is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

EVENTS=${EVENTS:-1000000}
ACCOUNTS=${ACCOUNTS:-2000}
THREADS=${THREADS:-4}
PORT=${PORT:-18093}
PROFILE=${PROFILE:-release}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
DB="${SERVER%/*}/usage_api_rebuild_bench"
OUT=$PWD/bench/out
export OAUTH_DEV_SECRET=bench-secret-bench-secret-bench-secret
need_tools psql curl python3

if [[ $PROFILE == release ]]; then cargo build --release --quiet; else cargo build --quiet; fi
BIN=$PWD/target/$PROFILE/usage-api
mkdir -p "$OUT"
psql "${SERVER%/*}/postgres" -qc "DROP DATABASE IF EXISTS usage_api_rebuild_bench" 2>/dev/null
DATABASE_URL=$DB $BIN migrate >/dev/null

step "data: $EVENTS events over $ACCOUNTS accounts, 24 months (CSV), loaded and rolled up"
reseller_files "$DB" "$EVENTS" "$ACCOUNTS" "$OUT/rebuild-accounts.csv" "$OUT/rebuild-events.csv"
DATABASE_URL=$DB $BIN accounts import "$OUT/rebuild-accounts.csv" >/dev/null
DATABASE_URL=$DB $BIN ingest "$OUT/rebuild-events.csv" >/dev/null
DATABASE_URL=$DB $BIN rollup >/dev/null

step "serve, $THREADS producers posting batches of 10, and a full rebuild meanwhile"
log=$OUT/rebuild-serve.log
env DATABASE_URL="$DB" USAGE_API_BIND="127.0.0.1:$PORT" RUST_LOG=warn \
    USAGE_API_ORG_RATE=1000000 USAGE_API_ORG_BURST=1000000 USAGE_API_ORG_CONCURRENCY=1000 USAGE_API_ORG_EXECUTING=1000 \
    "$BIN" serve --no-migrate >"$log" 2>&1 &
server=$!
stop=$OUT/rebuild-stop
rm -f "$stop"
trap 'touch "$stop"; kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready" && break
    sleep 0.1
done
token=$(DATABASE_URL=$DB $BIN token --org reseller --scope express-accounts-usage:write)
PORT=$PORT TOKEN=$token THREADS=$THREADS STOP=$stop ACCOUNTS=$ACCOUNTS \
    python3 bench/producers.py >"$OUT/rebuild-producers.json" &
producers=$!
sleep 3
started=$(now)
DATABASE_URL=$DB $BIN rollup --full >/dev/null
rebuilt=$(calc "$(now) - $started")
sleep 3
touch "$stop"
wait "$producers"
say "full rebuild: ${rebuilt} s while the producers posted"

step "afterwards: every POST, and the totals"
for _ in $(seq 1 600); do
    [[ $(psql "$DB" -Atc "SELECT count(*) FROM rollup_dirty") == 0 ]] && break
    sleep 0.1
done
summary=$(cat "$OUT/rebuild-producers.json")
say "producers: $summary"
read -r stored units quantity < <(psql "$DB" -At -F ' ' -c "
    SELECT (SELECT count(*) FROM usage_events),
           (SELECT trim_scale(sum(number_of_units)) FROM usage_monthly),
           (SELECT trim_scale(sum(quantity)) FROM usage_events)")
accepted=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["accepted"])' <<<"$summary")
say "events stored: $stored (bulk $EVENTS + accepted $accepted)"
say "Σ number_of_units $units, Σ quantity $quantity"
python3 - "$summary" "$stored" "$EVENTS" "$units" "$quantity" <<'PY'
import json, sys
from decimal import Decimal
s, stored, bulk, units, quantity = json.loads(sys.argv[1]), *sys.argv[2:]
failures = []
if set(s["statuses"]) != {"200"}: failures.append(f"answers other than 200: {s['statuses']}")
if s["over_1s"]: failures.append(f"{s['over_1s']} POSTs took a second or more (max {s['max_ms']} ms)")
if int(stored) != int(bulk) + s["accepted"]: failures.append("events lost or counted twice")
if Decimal(units) != Decimal(quantity): failures.append("the aggregates do not add up to the events")
print("goals: " + ("met" if not failures else "MISSED: " + "; ".join(failures)))
sys.exit(1 if failures else 0)
PY
