#!/usr/bin/env bash
# Load benchmark: can one organization starve the others? 200 quiet organizations read while a
# steady ingest runs, first alone, then with one noisy organization hammering slow queries at ten
# times its limits; the quiet organizations' p99 is compared between the two runs.
#
#   bench/load.sh                          # DURATION=60 per run
#   DURATION=20 bench/load.sh              # shorter runs
#   BIN=/path/to/usage-api bench/load.sh   # measure this binary (else: cargo build --release)
#
# Runs, one after the other, DURATION s each, all on loopback, the server with its default limits
# (USAGE_API_ORG_RATE 100/s, _BURST 200, _CONCURRENCY 8, _EXECUTING half the cores,
# USAGE_API_REQUEST_TIMEOUT_MS 10 s, a pool of 16, no parallel workers) and its rollup worker on:
#   warm-up  quiet + ingest, WARMUP s (not reported)
#   quiet    quiet + ingest
#   mixed    quiet + ingest + noisy
# where
#   quiet   wrk -t2 -c$QUIET_CONNECTIONS, each connection pausing QUIET_DELAY_MS between requests;
#           every request is the next of QUIET_ORGS organizations (small-0001…, one token each)
#           and the next of four reads: the monthly list's page 1, a filtered page, the usage
#           records by month (Twilio format), the raw events (bench/load/quiet.lua);
#   noisy   the reseller (720,000 monthly rows): wrk -t2 -c$NOISY_CONNECTIONS (10× its concurrency
#           limit), NOISY_DELAY_MS between requests on each connection (80 connections / 80 ms =
#           1,000 requests/s, 10× its rate limit); each request a page in the deeper half at
#           per_page=250, an order_by no index serves, and a filter never seen before
#           (bench/load/noisy.lua);
#   ingest  one connection POSTing INGEST_BATCH new events to small-1000 every INGEST_DELAY_MS
#           (bench/load/ingest.lua).
# Goals: the quiet p99 of the mixed run within 2× the quiet run's; no answer other than 2xx, 304,
# 429 or 503 in any run (and no connection error or timeout); after the runs, once the rollup is
# clean, small-1000's Σ number_of_units grew by exactly 1.5 × the events stored, and these are
# the events answered `accepted` (plus at most the one batch per run whose answer wrk did not
# wait for when it stopped).
# Prints a table and writes it to bench/results/load-<date>.md (RESULTS).
#
# Environment: DURATION (s, 60), WARMUP (s, 10), QUIET_ORGS (200), QUIET_CONNECTIONS (16),
# QUIET_DELAY_MS (40), NOISY_CONNECTIONS (80), NOISY_DELAY_MS (80), INGEST_BATCH (50),
# INGEST_DELAY_MS (100), PORT (18092), DATABASE_URL (its server is used), BIN, RESULTS;
# USAGE_API_ORG_CONCURRENCY, USAGE_API_ORG_EXECUTING and USAGE_API_DB_PARALLEL_WORKERS are passed on
# to the server, to see what each default is worth.
# The dataset is bench/read.sh's (built by it when missing), copied to usage_api_bench_load for
# each run, so the ingest never changes it.
#
# Needs: a local Postgres, psql, wrk, curl, jq (Debian packages, installed when missing), and Rust
# unless BIN is given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-60}
WARMUP=${WARMUP:-10}
QUIET_ORGS=${QUIET_ORGS:-200}
QUIET_CONNECTIONS=${QUIET_CONNECTIONS:-16}
QUIET_DELAY_MS=${QUIET_DELAY_MS:-40}
NOISY_CONNECTIONS=${NOISY_CONNECTIONS:-80}
NOISY_DELAY_MS=${NOISY_DELAY_MS:-80}
INGEST_BATCH=${INGEST_BATCH:-50}
INGEST_DELAY_MS=${INGEST_DELAY_MS:-100}
PORT=${PORT:-18092}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
DBNAME=usage_api_bench_load
DB="${SERVER%/*}/$DBNAME"
ADMIN_DB="${SERVER%/*}/postgres"
BASE="http://127.0.0.1:$PORT"
INGEST_ORG=small-1000
WORK=$ROOT/bench/out/load
export OAUTH_DEV_SECRET=bench-secret-bench-secret-bench-secret
export PGAPPNAME=bench-load LOAD_DIR=$ROOT/bench/load

source "$ROOT/bench/lib.sh"

bench_args "$@"
for var in DURATION QUIET_ORGS QUIET_CONNECTIONS NOISY_CONNECTIONS INGEST_BATCH; do
    [[ ${!var} =~ ^[0-9]+$ && ${!var} -gt 0 ]] || die "$var must be a positive integer"
done
for var in WARMUP QUIET_DELAY_MS NOISY_DELAY_MS INGEST_DELAY_MS; do
    [[ ${!var} =~ ^[0-9]+$ ]] || die "$var must be an integer"
done
((QUIET_ORGS <= 999)) || die "QUIET_ORGS must be at most 999 (small-1000 takes the ingest)"

need_tools wrk psql jq curl
release_binary
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || commit="$commit+changes"
mkdir -p "$WORK"
rm -f "$WORK"/warmup-*.txt "$WORK"/quiet-*.txt "$WORK"/mixed-*.txt

step "dataset (bench/read.sh's, copied)"
DATASET_ONLY=1 BIN=$BIN bench/read.sh | sed 's/^/  read.sh: /'
psql_q "$ADMIN_DB" -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" \
    -c "CREATE DATABASE $DBNAME TEMPLATE usage_api_bench_read"
units_sql="SELECT coalesce(sum(number_of_units), 0) FROM usage_monthly WHERE organization_id = '$INGEST_ORG'"
units_before=$(psql_q "$DB" -Atc "$units_sql")

CONCURRENCY=${USAGE_API_ORG_CONCURRENCY:-8}
EXECUTING=${USAGE_API_ORG_EXECUTING:-$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))}
PARALLEL=${USAGE_API_DB_PARALLEL_WORKERS:-0}
step "server (default limits, rollup worker on)"
curl -s -o /dev/null "$BASE/health/live" && die "something already listens on port $PORT (set PORT)"
server=""
cleanup() {
    if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE -u USAGE_API_ORG_RATE -u USAGE_API_ORG_BURST \
    -u USAGE_API_REQUEST_TIMEOUT_MS -u USAGE_API_DB_POOL_SIZE \
    -u USAGE_API_ROLLUP_INTERVAL_MS DATABASE_URL="$DB" \
    "$BIN" serve --bind "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
server=$!
await_ready "$server" "$BASE" "$WORK/server.log"
rss_max=0
rss_sample() {
    local r
    r=$(ps -o rss= -p "$server" 2>/dev/null | tr -d ' ' || true)
    if [[ -n $r ]] && ((r > rss_max)); then rss_max=$r; fi
}

step "tokens and one request of each kind"
: >"$WORK/tokens.txt"
for i in $(seq 1 "$QUIET_ORGS"); do
    org=small-$(printf '%04d' "$i")
    printf '%s %s\n' "$org" "$("$BIN" token --org "$org")" >>"$WORK/tokens.txt"
done
noisy_token=$("$BIN" token --org reseller)
ingest_token=$("$BIN" token --org "$INGEST_ORG" --scope express-accounts-usage:write)
read -r first_org first_token <"$WORK/tokens.txt"
check() {
    local what=$1 want=$2 code
    shift 2
    code=$(curl -s -o "$WORK/check.out" -w '%{http_code}' "$@")
    [[ $code == "$want" ]] || die "$what answered $code, not $want: $(head -c 300 "$WORK/check.out")"
}
for path in "/express/usage/month" "/express/usage/month?per_page=25&filter=month%20ge%20%272024-01%27" \
    "/2010-04-01/Accounts/$first_org/Usage/Records/Monthly.json?StartDate=2023-01-01&EndDate=2024-12-31" \
    "/express/usage/events?per_page=50&start_date=2023-01-01&end_date=2025-01-01"; do
    check "GET $path ($first_org)" 200 -H "Authorization: Bearer $first_token" "$BASE$path"
done
t0=$(now)
check "a noisy request" 200 -H "Authorization: Bearer $noisy_token" \
    "$BASE/express/usage/month?per_page=250&page=2000&order_by=total_amount:desc&filter=product_id%20ne%20%27x%27"
noisy_alone_ms=$(calc "($(now) - $t0) * 1000" %.0f)
say "one noisy request alone: ${noisy_alone_ms} ms"

# run_wrk NAME SCRIPT THREADS CONNECTIONS SECONDS [VAR=VALUE…]: wrk on $BASE with SCRIPT, its output
# in $WORK/NAME.txt; in the background.
run_wrk() {
    local name=$1 script=$2 threads=$3 connections=$4 seconds=$5
    shift 5
    env "$@" wrk -t"$threads" -c"$connections" -d"${seconds}s" --timeout 30s -s "$LOAD_DIR/$script" \
        "$BASE" >"$WORK/$name.txt" 2>&1 &
}
# phase NAME SECONDS NOISY(0|1): the quiet readers and the ingest, and the noisy organization when
# NOISY is 1, together; samples the server's RSS meanwhile.
phase() {
    local name=$1 seconds=$2 noisy=$3 pids=() pid alive
    step "$name: ${seconds}s, quiet + ingest$( ((noisy)) && echo ' + noisy')"
    run_wrk "$name-quiet" quiet.lua 2 "$QUIET_CONNECTIONS" "$seconds" TOKENS="$WORK/tokens.txt" DELAY_MS="$QUIET_DELAY_MS"
    pids+=($!)
    run_wrk "$name-ingest" ingest.lua 1 1 "$seconds" TOKEN="$ingest_token" ACCOUNT_PREFIX=s1000 \
        BATCH="$INGEST_BATCH" DELAY_MS="$INGEST_DELAY_MS" RUN_ID="$name-$$"
    pids+=($!)
    if ((noisy)); then
        run_wrk "$name-noisy" noisy.lua 2 "$NOISY_CONNECTIONS" "$seconds" TOKEN="$noisy_token" \
            DELAY_MS="$NOISY_DELAY_MS" PAGES=2880
        pids+=($!)
    fi
    for _ in $(seq 1 $((seconds * 4 + 200))); do
        rss_sample
        alive=0
        for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive=1; fi; done
        ((alive)) || break
        sleep 0.25
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "wrk failed in $name (see $WORK/$name-*.txt)"; done
    # Let the server finish what the last requests started before the next run.
    for _ in $(seq 1 100); do
        [[ $(psql_q "$DB" -Atc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DBNAME'
              AND state = 'active' AND pid <> pg_backend_pid() AND query NOT ILIKE '%rollup%'") == 0 ]] && break
        sleep 0.1
    done
}
# field FILE KEY: KEY's value on the `result` line of FILE.
field() { awk -v k="$2" '$1 == "result" { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$1"; }
# statuses FILE: "200: 1234, 429: 56" of FILE.
statuses() { awk '$1 == "status" { printf "%s%s: %s", (n++ ? ", " : ""), $2, $3 }' "$1"; }
# bad_answers FILE: answers other than 2xx/304/429/503, plus wrk's connection errors and timeouts.
bad_answers() {
    local bad errors
    bad=$(awk '$1 == "status" && !($2 ~ /^2/ || $2 == 304 || $2 == 429 || $2 == 503) { n += $3 } END { print n + 0 }' "$1")
    errors=$(($(field "$1" connect) + $(field "$1" read) + $(field "$1" write) + $(field "$1" timeout)))
    echo $((bad + errors))
}
answered() { awk '$1 == "status" && $2 == '"$2"' { print $3 }' "$1" | grep . || echo 0; }

if ((WARMUP > 0)); then phase warmup "$WARMUP" 0; fi
phase quiet "$DURATION" 0
phase mixed "$DURATION" 1

step "totals after the runs"
accepted=0
for name in warmup quiet mixed; do
    [[ -f $WORK/$name-ingest.txt ]] || continue
    a=$(awk '$1 == "accepted" { print $2 }' "$WORK/$name-ingest.txt")
    accepted=$((accepted + ${a:-0}))
done
clean=""
for _ in $(seq 1 300); do
    if [[ $(psql_q "$DB" -Atc "SELECT count(*) FROM rollup_dirty") == 0 ]]; then clean=1; break; fi
    sleep 0.1
done
[[ -n $clean ]] || die "the rollup is not clean 30 s after the runs"
units_after=$(psql_q "$DB" -Atc "$units_sql")
# wrk stops with a POST in flight at the end of each run: the server may store that batch while
# wrk never reads its answer. So the events stored may exceed those answered `accepted` by one
# batch per run, never fall short; and the totals must match the events stored, exactly.
stored=$(psql_q "$DB" -Atc "SELECT count(*) FROM usage_events
    WHERE organization_id = '$INGEST_ORG' AND event_id LIKE 'load-%'")
exact=$(psql_q "$DB" -Atc "SELECT $units_after - $units_before = 1.5 * $stored")
unanswered=$((stored - accepted))
if [[ $exact != t ]] || ((unanswered < 0 || unanswered % INGEST_BATCH != 0 || unanswered > 3 * INGEST_BATCH)); then
    exact=f
fi
metrics=$(curl -s "$BASE/metrics")
metric_sum() { awk -v m="$1" 'index($1, m) == 1 { s += $2 } END { printf "%d", s }' <<<"$metrics"; }
say "ingest: $accepted events answered accepted, $stored stored; $INGEST_ORG Σ number_of_units $units_before → $units_after (exact: $exact)"

q_p99=$(calc "$(field "$WORK/quiet-quiet.txt" p99_us) / 1000")
m_p99=$(calc "$(field "$WORK/mixed-quiet.txt" p99_us) / 1000")
ratio=$(calc "$m_p99 / $q_p99")
bad=0
for f in "$WORK"/quiet-*.txt "$WORK"/mixed-*.txt; do bad=$((bad + $(bad_answers "$f"))); done
p99_ok=$(awk -v r="$ratio" 'BEGIN { print (r <= 2 ? "PASS" : "MISS") }')
bad_ok=$([[ $bad == 0 ]] && echo PASS || echo MISS)
exact_ok=$([[ $exact == t ]] && echo PASS || echo MISS)

row() {
    local name=$1 file=$WORK/$1.txt requests seconds
    requests=$(field "$file" requests)
    seconds=$(field "$file" seconds)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$requests" \
        "$(calc "$requests / $seconds" %.0f)" "$(calc "$(field "$file" p50_us) / 1000")" \
        "$(calc "$(field "$file" p99_us) / 1000")" "$(calc "$(field "$file" max_us) / 1000")" \
        "$(statuses "$file")" "$(bad_answers "$file")"
}
RESULTS=${RESULTS:-$ROOT/bench/results/load-$(date -u +%F).md}
{
    say "# bench/load.sh — $(date -u '+%F %H:%M') UTC, commit $commit"
    say
    say "\`DURATION=$DURATION bench/load.sh\`: $QUIET_ORGS quiet organizations over $QUIET_CONNECTIONS connections" \
        "(${QUIET_DELAY_MS} ms pause), the noisy reseller over $NOISY_CONNECTIONS connections (${NOISY_DELAY_MS} ms pause)," \
        "ingest $INGEST_BATCH events every ${INGEST_DELAY_MS} ms; server defaults (rate 100/s, burst 200," \
        "concurrency $CONCURRENCY, executing $EXECUTING, deadline 10 s, pool 16, parallel workers $PARALLEL), rollup worker on. One noisy request alone: ${noisy_alone_ms} ms."
    say
    say "| run | requests | req/s | p50 ms | p99 ms | max ms | answers | other answers, errors |"
    say "|---|---|---|---|---|---|---|---|"
    for name in quiet-quiet quiet-ingest mixed-quiet mixed-ingest mixed-noisy; do row "$name"; done
    say
    say "| goal | figure | |"
    say "|---|---|---|"
    say "| quiet p99 with the noisy organization ≤ 2× without | $m_p99 ms / $q_p99 ms = ${ratio}× | $p99_ok |"
    say "| answers other than 2xx/304/429/503, connection errors | $bad | $bad_ok |"
    say "| every event answered \`accepted\` stored ($accepted answered, $stored stored: $((unanswered / INGEST_BATCH)) batch(es) in flight when wrk stopped); Σ number_of_units of $INGEST_ORG grew by exactly 1.5 × stored | $units_before → $units_after | $exact_ok |"
    say
    say "Server: peak RSS $(calc "$rss_max / 1024" %.0f) MB; rate-limited answers $(metric_sum usage_api_rate_limited_total)," \
        "deadlines $(metric_sum usage_api_request_deadlines_total), database cancels $(metric_sum usage_api_db_cancels_total)."
} | tee "$RESULTS"
say "written to ${RESULTS#"$ROOT"/}"
[[ $p99_ok == PASS && $bad_ok == PASS && $exact_ok == PASS ]] || exit 1
