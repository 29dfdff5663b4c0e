#!/usr/bin/env bash
# Usage-triggers benchmark, two measures in one run:
#
# 1. Delivery latency. 100 organizations of 5 accounts, 1,000 triggers created through the API
#    (bench/triggers.py: 10 per organization, organization-wide and per account, every period and
#    `TriggerBy`, parent and child categories), then a burst of events crossing all of them: one
#    POST /express/usage/events per organization, 8 at a time. The time from each ingest's answer
#    (its commit) to the arrival of each delivery at a receiver on loopback: p50, p99 (goal: p99
#    under 5 s). `serve` runs as in production: its rollup worker (woken by each ingest, else
#    every 500 ms) fires, its delivery worker (16 at a time) delivers.
# 2. The rollup's cost of evaluating triggers. EVENTS events (default 500,000) of the current
#    month over the same 500 accounts, loaded with `usage-api ingest`; then `usage-api rollup` of
#    every (account, month) group, RUNS times each (default 3), interleaved: with no trigger, and
#    with the 1,000 triggers, thresholds out of reach and no firing recorded, so every trigger is
#    evaluated after each batch and none fires (the evaluation's whole cost). Goal: under 10 %
#    more, medians compared.
#
#   bench/triggers.sh               # measure BIN (else: cargo build --release)
#   LATENCY_ONLY=1 bench/triggers.sh   # the first measure alone (no results file)
#
# Own database usage_api_bench_triggers (dropped and made again). Writes
# bench/results/triggers-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
DB="${SERVER%/*}/usage_api_bench_triggers"
EVENTS=${EVENTS:-500000}
RUNS=${RUNS:-3}
PORT=${PORT:-18093}
RESULTS=${RESULTS:-$ROOT/bench/results/triggers-$(date -u +%Y-%m-%d).md}
export PGAPPNAME=bench-triggers
export OAUTH_DEV_SECRET=bench-triggers-development-secret-0123456789
WORK=$(mktemp -d)

source "$ROOT/bench/lib.sh"
q() { psql -X -q -v ON_ERROR_STOP=1 "$DB" "$@"; }

need_tools psql curl python3
if [[ -z ${BIN:-} ]]; then
    cargo build --release --quiet
    BIN=$ROOT/target/release/usage-api
fi
[[ -x $BIN ]] || die "BIN=$BIN is not an executable"

step "database and accounts"
psql -X -q "${SERVER%/*}/postgres" -c "DROP DATABASE IF EXISTS usage_api_bench_triggers" >/dev/null
DATABASE_URL=$DB "$BIN" migrate >/dev/null
{
    echo "id,organization_id,name"
    for o in $(seq -w 0 99); do
        for a in 0 1 2 3 4; do echo "org-$o-a$a,org-$o,Account $a of org-$o"; done
    done
} >"$WORK/accounts.csv"
DATABASE_URL=$DB "$BIN" accounts import "$WORK/accounts.csv" >/dev/null
for o in $(seq -w 0 99); do
    printf 'org-%s %s\n' "$o" "$("$BIN" token --org "org-$o" --ttl 7200 \
        --scope 'express-accounts-usage:write express-accounts-usage:triggers')"
done >"$WORK/tokens.txt"

step "1. delivery latency: 1,000 triggers, a burst crossing all of them"
server=""
trap 'if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
env -u RUST_BACKTRACE DATABASE_URL="$DB" USAGE_API_WEBHOOK_ALLOW_HOSTS=127.0.0.1 RUST_LOG=warn \
    "$BIN" serve --no-migrate --bind "127.0.0.1:$PORT" >"$WORK/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/health/ready" && break
    sleep 0.1
done
python3 "$ROOT/bench/triggers.py" "http://127.0.0.1:$PORT" "$WORK/tokens.txt" "$WORK/latency.json"
lag() { python3 -c "import json; print(json.load(open('$WORK/latency.json'))['$1'])"; }
DELIVERED=$(lag delivered)
DISTINCT=$(lag distinct_ids)
P50=$(lag p50_seconds)
P99=$(lag p99_seconds)
MAX=$(lag max_seconds)
BURST=$(lag burst_seconds)
[[ $DELIVERED == 1000 && $DISTINCT == 1000 ]] || die "delivered $DELIVERED ($DISTINCT distinct) of 1000"
kill "$server"
wait "$server" 2>/dev/null || true
server=""

if [[ -n ${LATENCY_ONLY:-} ]]; then
    say "p50 $P50 s, p99 $P99 s, max $MAX s"
    exit 0
fi

step "2. the rollup with and without evaluating the triggers ($EVENTS events)"
q -c "COPY (SELECT 'ev-' || n, 'org-' || lpad((n % 100)::text, 2, '0') || '-a' || (n / 100 % 5),
             'P' || (n % 7), 'AP', CASE WHEN n % 2 = 0 THEN 'CALL' ELSE 'MESSAGE' END,
             CASE WHEN n % 2 = 0 THEN 'MINUTES' ELSE 'SEGMENTS' END,
             CASE WHEN n % 3 = 0 THEN 'INBOUND' ELSE 'OUTBOUND' END, '', 'bench', 'w',
             to_char(date_trunc('month', now() AT TIME ZONE 'UTC')
                     + (n % greatest(1, extract(day FROM now() AT TIME ZONE 'UTC')::int - 1))
                       * interval '1 day' + interval '1 hour',
                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
             (n % 13 + 1)::text, '0.0125', 'USD'
      FROM generate_series(1, $EVENTS) n) TO STDOUT CSV" >"$WORK/events.csv"
sed -i '1i event_id,account_id,product_id,aggr_product_id,type,unit,direction,resolution,description,wallet_name,occurred_at,quantity,unit_price,currency' "$WORK/events.csv"
DATABASE_URL=$DB "$BIN" ingest "$WORK/events.csv" >/dev/null
DATABASE_URL=$DB "$BIN" rollup >/dev/null
q -c "UPDATE usage_triggers SET trigger_value = 1e15, date_fired = NULL;
      DELETE FROM usage_trigger_firings;
      CREATE TABLE bench_triggers AS SELECT * FROM usage_triggers"
TRIGGERS=$(q -Atc "SELECT count(*) FROM bench_triggers")
mark_all() {
    q -c "INSERT INTO rollup_dirty (organization_id, account_id, month)
          SELECT DISTINCT organization_id, account_id,
                 date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date
          FROM usage_events ON CONFLICT DO NOTHING"
}
timed() {
    local t0
    q -c "CHECKPOINT"
    t0=$(now)
    DATABASE_URL=$DB "$BIN" rollup >/dev/null
    calc "$(now) - $t0" %.3f
}
without=() with=()
for run in $(seq 1 "$RUNS"); do
    q -c "DELETE FROM usage_triggers"
    mark_all
    without+=("$(timed)")
    q -c "INSERT INTO usage_triggers SELECT * FROM bench_triggers"
    mark_all
    with+=("$(timed)")
    fired=$(q -Atc "SELECT count(*) FROM usage_trigger_firings")
    [[ $fired == 0 ]] || die "a trigger fired in the evaluation run"
    say "run $run: without ${without[-1]} s, with ${with[-1]} s"
done
WITHOUT=$(printf '%s\n' "${without[@]}" | median)
WITH=$(printf '%s\n' "${with[@]}" | median)
EXTRA=$(calc "($WITH / $WITHOUT - 1) * 100" %.1f)
NGROUPS=$(q -Atc "SELECT count(DISTINCT (account_id, month)) FROM usage_monthly")

verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v < g) ? "met" : "missed" }'; }
mkdir -p "$(dirname "$RESULTS")"
cat >"$RESULTS" <<EOF
# Usage triggers ($(date -u +%Y-%m-%d), $(git -C "$ROOT" rev-parse --short HEAD))

Command: \`bench/triggers.sh\` (BIN=$BIN). 2 shared cores: the load generator, the receiver,
the server and Postgres run on the same machine.

## 1. From the ingest's commit to the delivery

100 organizations × 5 accounts, $DELIVERED triggers fired by one burst (100 POSTs of 10 events,
8 at a time, ${BURST} s), every delivery arrived once ($DISTINCT distinct webhook-ids).

| p50 | p99 | max | goal p99 < 5 s |
|---:|---:|---:|---|
| ${P50} s | ${P99} s | ${MAX} s | $(verdict "$P99" 5) |

## 2. The rollup's cost of evaluating the triggers

$EVENTS events, $NGROUPS (account, month) groups, all marked dirty; \`usage-api rollup\`, $RUNS runs
each, interleaved. With: $TRIGGERS triggers, thresholds out of reach, every one evaluated.

| runs without triggers (s) | runs with (s) | median without | median with | extra | goal < 10 % |
|---|---|---:|---:|---:|---|
| ${without[*]} | ${with[*]} | $WITHOUT | $WITH | ${EXTRA} % | $(verdict "$EXTRA" 10) |
EOF
cat "$RESULTS"
