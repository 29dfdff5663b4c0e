#!/usr/bin/env bash
# Read benchmark: GET /express/usage/month over HTTP (wrk) against pgbench running the naive SQL
# for the same request, one after the other, on a 1.92-million-row dataset.
#
#   bench/read.sh                                  # DURATION=15 CONNECTIONS=32
#   DURATION=10 bench/read.sh                      # shorter runs
#   REBUILD=1 bench/read.sh                        # rebuild the dataset even if it is current
#   DATASET_ONLY=1 bench/read.sh                   # build (or check) the dataset, then stop
#   BIN=/path/to/usage-api bench/read.sh           # measure this binary (else: cargo build --release)
#
# PROFILE=1 also samples the server with `perf record -g` during every wrk run and writes a flame
# graph per scenario (bench/out/read/flame-<scenario>.svg, with inferno, installed by cargo when
# missing) and the hottest functions to the results; perf costs the measured runs a few percent.
#
# Environment: DURATION (s, default 15), CONNECTIONS (32), WARMUP (s before each run, 2; 0 = none),
# WRK_TIMEOUT (s, 30: slower answers are counted as timeouts, outside the percentiles),
# POOL (server's --db-pool-size, default CONNECTIONS), PORT (18090), DATABASE_URL (its server is
# used; default postgres://root@127.0.0.1:5432/usage_api), REBUILD, BIN, RESULTS (markdown path).
# The server runs with USAGE_API_ROLLUP_INTERVAL_MS=0, without RUST_BACKTRACE, and with the
# per-organization limits lifted (rate, burst, concurrency, turns: one organization's capacity is
# measured here, its limits by bench/load.sh); its log goes to bench/out/read/server.log.
#
# Dataset (database usage_api_bench_read, built once through the product's own commands —
# `accounts import`, `ingest`, `rollup` — and reused while its version row in bench.dataset
# matches this script's generator):
#   - organization `reseller`: 2,000 accounts × 15 products × 24 months = 720,000 monthly rows;
#   - organizations `small-0001`..`small-2000`: 5 accounts × 5 products × 24 months = 600 each;
#   one event per (account, product, month), exact decimal quantities and prices: 1,920,000 events.
#
# Scenarios (wrk -t2, CONNECTIONS connections, DURATION s each; never two at the same time):
#   small   small-0042, page 1 (per_page 50, default order)  vs pgbench count + LIMIT 50 OFFSET 0
#   r-p1    reseller, page 1                                   vs pgbench OFFSET 0
#   r-p200  reseller, page 200 reached by following _links.next 199 times from page 1 (the href
#           verbatim) vs pgbench OFFSET 9950
#   r-last  reseller, _links.last of page 1                    vs pgbench OFFSET 719950
#   r-bare  reseller, ?page=200 by its number alone (no position token) vs the same pgbench as
#           r-p200 (OFFSET 9950)
#   304     small-0042 page 1 with If-None-Match: <its ETag>   vs the uncached small run
# plus the server's peak RSS over all HTTP runs. Prints a table and the goals (PASS/MISS), and writes
# both, with a mermaid chart, to bench/results/read-<date>.md.
#
# Needs: a local Postgres (DATABASE_URL's server, a role that may create databases), psql, pgbench,
# wrk, curl, jq (Debian packages, installed here when missing), and Rust unless BIN is given.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2}
WRK_TIMEOUT=${WRK_TIMEOUT:-30}
POOL=${POOL:-$CONNECTIONS}
PORT=${PORT:-18090}
REBUILD=${REBUILD:-0}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
DBNAME=usage_api_bench_read
DB="${SERVER%/*}/$DBNAME"
ADMIN_DB="${SERVER%/*}/postgres"
BASE="http://127.0.0.1:$PORT"
SMALL=small-0042
WORK=$ROOT/bench/out/read
export OAUTH_DEV_SECRET=bench-secret-bench-secret-bench-secret
export PGAPPNAME=bench-read

source "$ROOT/bench/lib.sh"
# fmt_rate N: 1234 / 56.7 / 8.91, enough digits for a rate of any size.
fmt_rate() { awk -v n="$1" 'BEGIN { printf (n >= 100 ? "%.0f" : (n >= 10 ? "%.1f" : "%.2f")), n }'; }
join_by() {
    local sep=$1 out="" x first=1
    shift
    for x in "$@"; do
        if ((first)); then out=$x; first=0; else out+="$sep$x"; fi
    done
    printf '%s' "$out"
}

bench_args "$@"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer (seconds)"
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -gt 0 ]] || die "CONNECTIONS must be a positive integer"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be an integer (seconds)"

# --- tools --------------------------------------------------------------------------------------
need_tools wrk pgbench psql jq curl

release_binary
# The commit the binary was built from, when it lies in a git tree (target/ inside a checkout).
if commit=$(git -C "$(dirname "$BIN")" rev-parse --short HEAD 2>/dev/null); then
    [[ -z $(git -C "$(dirname "$BIN")" status --porcelain --untracked-files=no 2>/dev/null) ]] || commit="$commit+changes"
else
    commit=unknown
fi

mkdir -p "$WORK"
server=""
sampler=""
cleanup() {
    if [[ -n $sampler ]]; then kill "$sampler" 2>/dev/null || true; fi
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_q "$ADMIN_DB" -Atc 'SELECT 1' >/dev/null 2>&1 \
    || die "cannot connect to $ADMIN_DB (is Postgres running? set DATABASE_URL)"

# --- dataset ------------------------------------------------------------------------------------
ACCOUNTS_SQL=$(cat <<'SQL'
COPY (
  SELECT 'r-' || lpad(a::text, 4, '0') AS id, 'reseller' AS organization_id,
         'Reseller account ' || a AS name
  FROM generate_series(1, 2000) a
  UNION ALL
  SELECT 's' || lpad(o::text, 4, '0') || '-' || a, 'small-' || lpad(o::text, 4, '0'),
         'Small ' || o || ' account ' || a
  FROM generate_series(1, 2000) o, generate_series(1, 5) a
) TO STDOUT WITH (FORMAT csv, HEADER)
SQL
)
# One event per (account, product, month); the reseller's accounts have 15 products, the small
# organizations' 5. Quantities have 3 decimals, prices up to 6; every column varies.
EVENTS_SQL=$(cat <<'SQL'
COPY (
  WITH product AS (
    SELECT p,
           'TD-USG-P' || lpad(p::text, 3, '0') AS product_id,
           'TD-AGG-' || (p % 3) AS aggr_product_id,
           (ARRAY['CALL', 'MESSAGE', 'NUMBER', 'API_REQUEST', 'SPEECH_TRANSCRIPTION'])[1 + p % 5] AS type,
           'Product ' || p AS description,
           (ARRAY['MINUTES', 'SEGMENTS', 'NUMBERS', 'REQUESTS', 'SECONDS'])[1 + p % 5] AS unit,
           (ARRAY['INBOUND', 'OUTBOUND', NULL])[1 + p % 3] AS direction,
           CASE WHEN p % 5 = 0 THEN 'ANSWERED' END AS resolution,
           (ARRAY['main', 'contact center', 'marketing'])[1 + p % 3] AS wallet_name,
           (ARRAY[0.0085, 0.014, 1, 0.0001, 19.99, 0.25, 0.0042, 3.5, 0.000001, 12])[1 + p % 10] AS unit_price
    FROM generate_series(0, 14) p
  ), owner AS (
    SELECT 'r-' || lpad(a::text, 4, '0') AS account_id, 15 AS products, a AS n
    FROM generate_series(1, 2000) a
    UNION ALL
    SELECT 's' || lpad(o::text, 4, '0') || '-' || a, 5, 2000 + (o - 1) * 5 + a
    FROM generate_series(1, 2000) o, generate_series(1, 5) a
  )
  SELECT o.account_id || '-' || pr.p || '-' || m AS event_id, o.account_id, pr.product_id,
         pr.aggr_product_id, pr.type, pr.description, pr.unit, pr.direction, pr.resolution,
         pr.wallet_name,
         to_char(timestamp '2023-01-01' + m * interval '1 month'
                 + ((o.n * 7919 + pr.p * 104729) % 2332800) * interval '1 second',
                 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS occurred_at,
         (((o.n::bigint * 7919 + pr.p * 104729 + m * 1299709) % 10000000) / 1000.0)::numeric(12, 3) AS quantity,
         pr.unit_price, 'USD' AS currency
  FROM owner o JOIN product pr ON pr.p < o.products CROSS JOIN generate_series(0, 23) m
) TO STDOUT WITH (FORMAT csv, HEADER)
SQL
)
DATASET_VERSION="v1-$(printf '%s\n%s' "$ACCOUNTS_SQL" "$EVENTS_SQL" | sha1sum | cut -c1-12)"
EXPECTED_EVENTS=1920000

# Prints "reseller_rows small_rows all_rows dirty_marks" of the bench database.
dataset_counts() {
    psql_q "$DB" -AtF' ' -c "SELECT
        (SELECT count(*) FROM usage_monthly WHERE organization_id = 'reseller'),
        (SELECT count(*) FROM usage_monthly WHERE organization_id = '$SMALL'),
        (SELECT count(*) FROM usage_monthly),
        (SELECT count(*) FROM rollup_dirty)"
}
dataset_ok() {
    local counts
    counts=$(dataset_counts) || return 1
    [[ $counts == "720000 600 1920000 0" ]] || { say "dataset check: reseller, $SMALL, all rows, dirty marks = $counts; expected 720000 600 1920000 0"; return 1; }
}

build_dataset() {
    step "dataset: building $DBNAME ($DATASET_VERSION)"
    local t0 t1 out
    t0=$(now)
    psql_q "$ADMIN_DB" -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)"
    DATABASE_URL=$DB "$BIN" migrate >/dev/null
    out=$(psql_q "$DB" -c "$ACCOUNTS_SQL" | DATABASE_URL=$DB "$BIN" accounts import - --format csv) \
        || die "generating or importing the accounts failed"
    say "accounts import: $out"
    [[ $out == "accounts: 12000, rejected: 0" ]] || die "accounts import did not take 12,000 accounts"
    out=$(psql_q "$DB" -c "$EVENTS_SQL" \
        | DATABASE_URL=$DB "$BIN" ingest - --format csv --rejects "$WORK/rejects.txt") \
        || die "generating or ingesting the events failed (rejects: $WORK/rejects.txt)"
    say "ingest: $out  ($(calc "$(now) - $t0" %.1f)s so far)"
    [[ $out == "accepted: $EXPECTED_EVENTS, duplicate: 0, rejected: 0" ]] \
        || die "ingest did not accept exactly $EXPECTED_EVENTS events (rejects: $WORK/rejects.txt)"
    out=$(DATABASE_URL=$DB "$BIN" rollup) || die "usage-api rollup failed"
    say "rollup: $out  ($(calc "$(now) - $t0" %.1f)s so far)"
    psql_q "$DB" -c "VACUUM ANALYZE"
    dataset_ok || die "the dataset is not the expected shape after a fresh build"
    t1=$(now)
    BUILD_SECONDS=$(calc "$t1 - $t0" %.1f)
    psql_q "$DB" -c "CREATE SCHEMA bench;
        CREATE TABLE bench.dataset (version text PRIMARY KEY, built_at timestamptz NOT NULL DEFAULT now(),
                                    build_seconds numeric NOT NULL, events bigint NOT NULL);
        INSERT INTO bench.dataset (version, build_seconds, events)
            VALUES ('$DATASET_VERSION', $BUILD_SECONDS, $EXPECTED_EVENTS)"
    DATASET_NOTE="built in ${BUILD_SECONDS}s this run"
    say "dataset built in ${BUILD_SECONDS}s"
}

step "dataset"
have=""
if [[ $REBUILD != 1 ]] \
    && [[ -n $(psql_q "$ADMIN_DB" -Atc "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'") ]]; then
    have=$(psql_q "$DB" -Atc "SELECT version || ' ' || build_seconds || ' ' || to_char(built_at, 'YYYY-MM-DD')
                               FROM bench.dataset" 2>/dev/null || true)
fi
if [[ -n $have && ${have%% *} == "$DATASET_VERSION" ]]; then
    # The binary under test may bring new migrations; apply them, then check the shape again.
    DATABASE_URL=$DB "$BIN" migrate >/dev/null
    read -r _ BUILD_SECONDS built_on <<<"$have"
    if dataset_ok; then
        DATASET_NOTE="reused (built $built_on in ${BUILD_SECONDS}s)"
        say "reusing $DBNAME ($DATASET_VERSION, built $built_on in ${BUILD_SECONDS}s); REBUILD=1 rebuilds it"
    else
        say "the existing dataset failed its check; rebuilding it"
        build_dataset
    fi
else
    if [[ $REBUILD == 1 ]]; then say "REBUILD=1"; else say "no current dataset (${have:-none}); building one"; fi
    build_dataset
fi
read -r reseller_rows small_rows all_rows _ <<<"$(dataset_counts)"
say "usage_monthly: reseller $reseller_rows rows, $SMALL $small_rows rows, $all_rows in all"
if [[ ${DATASET_ONLY:-0} == 1 ]]; then say "DATASET_ONLY=1: done"; exit 0; fi

# --- server -------------------------------------------------------------------------------------
step "server"
curl -s -o /dev/null "$BASE/health/live" && die "something already listens on port $PORT (set PORT)"
# RUST_BACKTRACE would make every error answer symbolize a backtrace (and map the debug info:
# +140 MB of RSS); the server runs as in production, without it.
# One organization's capacity is measured, not its limits (bench/load.sh measures those): the
# per-organization rate, concurrency and turns are lifted.
env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE USAGE_API_ROLLUP_INTERVAL_MS=0 DATABASE_URL="$DB" \
    USAGE_API_ORG_RATE=1000000 USAGE_API_ORG_BURST=1000000 USAGE_API_ORG_CONCURRENCY=1000 \
    USAGE_API_ORG_EXECUTING=1000 \
    "$BIN" serve --bind "127.0.0.1:$PORT" --db-pool-size "$POOL" >"$WORK/server.log" 2>&1 &
server=$!
await_ready "$server" "$BASE" "$WORK/server.log"
say "usage-api serve (pid $server, pool $POOL) ready on $BASE; log: ${WORK#"$ROOT"/}/server.log"
rss_kb() { local r; r=$(ps -o rss= -p "$server" 2>/dev/null | tr -d ' ' || true); echo "${r:-0}"; }
rss_idle_kb=$(rss_kb)
echo "${rss_idle_kb:-0}" >"$WORK/rss.max"
( max=${rss_idle_kb:-0}
  while kill -0 "$server" 2>/dev/null; do
      r=$(ps -o rss= -p "$server" 2>/dev/null | tr -d ' ' || true)
      if [[ -n $r ]] && ((r > max)); then max=$r; echo "$max" >"$WORK/rss.max"; fi
      sleep 0.25
  done ) &
sampler=$!

small_token=$("$BIN" token --org "$SMALL")
reseller_token=$("$BIN" token --org reseller)

# fetch NAME TOKEN URL [curl args...]: body to $WORK/NAME.json, headers to $WORK/NAME.headers;
# prints the status code.
fetch() {
    local name=$1 token=$2 url=$3
    shift 3
    curl -s -o "$WORK/$name.json" -D "$WORK/$name.headers" -w '%{http_code}' \
        -H "Authorization: Bearer $token" "$@" "$url"
}
expect_200() {
    local code
    code=$(fetch "$@")
    [[ $code == 200 ]] || die "GET $3 answered $code: $(head -c 400 "$WORK/$1.json")"
}

step "requests"
small_url="$BASE/express/usage/month"
reseller_url="$BASE/express/usage/month"
expect_200 small "$small_token" "$small_url"
expect_200 r-p1 "$reseller_token" "$reseller_url"
[[ $(jq '._embedded.usage | length' "$WORK/small.json") == 50 ]] || die "small-org page 1 does not hold 50 rows"
[[ $(jq '._embedded.usage | length' "$WORK/r-p1.json") == 50 ]] || die "reseller page 1 does not hold 50 rows"
say "small-org page 1: $(wc -c <"$WORK/small.json") bytes; reseller page 1: $(wc -c <"$WORK/r-p1.json") bytes"

# Page 200: follow _links.next.href from page 1, 199 times, each href verbatim.
notes=()
t0=$(now)
cp "$WORK/r-p1.json" "$WORK/r-walk.json"
for i in $(seq 2 200); do
    next=$(jq -r '._links.next.href // empty' "$WORK/r-walk.json")
    [[ -n $next ]] || die "page $((i - 1)) has no _links.next"
    code=$(fetch r-walk "$reseller_token" "$next")
    [[ $code == 200 ]] || die "following next to page $i ($next) answered $code"
done
walk_s=$(calc "$(now) - $t0" %.2f)
p200_url=$next
cp "$WORK/r-walk.json" "$WORK/r-p200.json"
say "page 200 via next ($walk_s s for 199 follows; server RSS now $(calc "$(rss_kb) / 1024" %.1f) MB): $p200_url"
# check_page FILE OFFSET WHAT: the page in FILE holds the reseller's rows OFFSET+1..OFFSET+50 of
# the default order (id desc), as plain SQL reads them; otherwise a warning in the results.
check_page() {
    local want got
    want=$(psql_q "$DB" -Atc "SELECT string_agg(replace(id::text, '-', ''), ',' ORDER BY id DESC) FROM (
              SELECT id FROM usage_monthly WHERE organization_id = 'reseller'
              ORDER BY id DESC LIMIT 50 OFFSET $2) p")
    got=$(jq -r '[._embedded.usage[].id | gsub("-"; "")] | join(",")' "$1")
    if [[ $got != "$want" ]]; then
        notes+=("$3")
        say "WARNING: ${notes[-1]}"
    fi
}
check_page "$WORK/r-p200.json" 9950 \
    "page 200 reached through next does not hold rows 9,951–10,000 of the default order"

last_url=$(jq -r '._links.last.href // empty' "$WORK/r-p1.json")
[[ -n $last_url ]] || die "reseller page 1 has no _links.last"
expect_200 r-last "$reseller_token" "$last_url"
say "last page: $last_url"
check_page "$WORK/r-last.json" 719950 \
    "the last link does not lead to rows 719,951–720,000 of the default order"

etag=$(awk 'tolower($1) == "etag:" { sub(/^[^:]*:[ \t]*/, ""); sub(/\r$/, ""); print; exit }' "$WORK/small.headers")
if [[ -n $etag ]]; then
    code=$(fetch small-304 "$small_token" "$small_url" -H "If-None-Match: $etag")
    say "ETag of small-org page 1: $etag → If-None-Match answers $code"
    if [[ $code != 304 ]]; then
        notes+=("If-None-Match with the page's own ETag answered $code, not 304")
        say "WARNING: ${notes[-1]}"
    fi
else
    say "small-org page 1 carries no ETag"
fi

# --- load ---------------------------------------------------------------------------------------
bare_url="$BASE/express/usage/month?page=200"
expect_200 r-bare "$reseller_token" "$bare_url"
check_page "$WORK/r-bare.json" 9950 "?page=200 does not hold rows 9,951–10,000 of the default order"

declare -A LABEL=(
    [small]="$SMALL, page 1"
    [r-p1]="reseller, page 1"
    [r-p200]="reseller, page 200 via next"
    [r-last]="reseller, last page"
    [r-bare]="reseller, ?page=200 by number"
    [304]="$SMALL, page 1, If-None-Match"
)
declare -A RPS P50 P99 ERRS TPS PG50 PG99
# drain: waits until no query runs in the bench database, so that the server's work on requests wrk
# gave up on (or left in flight when it stopped) never overlaps the next measurement.
drain() {
    local n
    for _ in $(seq 1 1200); do
        n=$(psql_q "$DB" -Atc "SELECT count(*) FROM pg_stat_activity
                               WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'")
        [[ $n == 0 ]] && return 0
        sleep 0.1
    done
    notes+=("queries were still running 2 minutes after a load stopped")
    say "WARNING: ${notes[-1]}"
}
# run_wrk NAME URL TOKEN [extra header]. RPS counts the answers below 400 per second (an error
# answer is no throughput); wrk's percentiles cover every answer that came within WRK_TIMEOUT.
run_wrk() {
    local name=$1 url=$2 token=$3 extra=${4:-} out="$WORK/wrk-$1.txt" args
    args=(-t2 -c"$CONNECTIONS" --timeout "${WRK_TIMEOUT}s" -H "Authorization: Bearer $token")
    if [[ -n $extra ]]; then args+=(-H "$extra"); fi
    if ((WARMUP > 0)); then wrk "${args[@]}" -d"${WARMUP}s" "$url" >/dev/null; drain; fi
    local perf=""
    if [[ ${PROFILE:-0} == 1 ]]; then
        perf record -F 499 -g -p "$server" -o "$WORK/perf-$name.data" >/dev/null 2>&1 &
        perf=$!
        sleep 0.2
    fi
    wrk "${args[@]}" -d"${DURATION}s" --latency "$url" >"$out" || die "wrk failed on $url"
    if [[ -n $perf ]]; then kill -INT "$perf"; wait "$perf" || true; fi
    drain
    local total seconds bad timeouts socket p
    total=$(awk '/ requests in / { print $1; exit }' "$out")
    seconds=$(awk '/ requests in / { sub(/,$/, "", $4); print $4; exit }' "$out")
    seconds=$(calc "$(to_ms "$seconds") / 1000" %.3f)
    bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    timeouts=$(awk '/Socket errors:/ { gsub(/,/, ""); print $NF }' "$out")
    socket=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 }' "$out")
    [[ -n $total && $seconds != 0.000 ]] || die "cannot read wrk's output ($out)"
    RPS[$name]=$(calc "($total - ${bad:-0}) / $seconds" %.2f)
    for p in 50 99; do
        local v
        v=$(to_ms "$(awk -v p="$p%" '$1 == p { print $2; exit }' "$out")")
        # 0 when wrk recorded no latency at all (every answer came after the timeout, or none).
        if [[ $v == "?" ]] || awk "BEGIN { exit !($v == 0) }"; then v=""; fi
        if [[ $p == 50 ]]; then P50[$name]=$v; else P99[$name]=$v; fi
    done
    local errs=()
    if [[ $total == 0 ]]; then errs+=("no answer within the ${DURATION}s run"); fi
    if [[ -n $bad ]]; then errs+=("$bad answers ≥ 400"); fi
    if [[ -n $timeouts && $timeouts != 0 ]]; then errs+=("$timeouts over ${WRK_TIMEOUT}s"); fi
    if [[ -n $socket && $socket != 0 ]]; then errs+=("$socket socket errors"); fi
    ERRS[$name]=$(join_by ', ' "${errs[@]}")
    if [[ -n ${ERRS[$name]} ]]; then
        notes+=("${LABEL[$name]}: ${ERRS[$name]} ($total requests in all)")
        say "WARNING: ${notes[-1]}"
    fi
    say "API  $name: $(fmt_rate "${RPS[$name]}") req/s, p50 ${P50[$name]:-—} ms, p99 ${P99[$name]:-—} ms ($total requests; server RSS now $(calc "$(rss_kb) / 1024" %.1f) MB)"
}
# run_pgbench NAME ORG OFFSET: the naive SQL of a page (count + LIMIT 50 OFFSET n), prepared.
run_pgbench() {
    local name=$1 org=$2 offset=$3 dir="$WORK/pgbench-$1"
    rm -rf "$dir" && mkdir -p "$dir"
    cat >"$dir/page.sql" <<SQL
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT count(*) FROM usage_monthly WHERE organization_id = '$org';
SELECT id, account_id, product_id, aggr_product_id, month, usage_type, description, currency,
       direction, resolution, unit, price, wallet_name, number_of_units, total_amount
  FROM usage_monthly WHERE organization_id = '$org' ORDER BY id DESC LIMIT 50 OFFSET $offset;
COMMIT;
SQL
    local args=(-n -M prepared -c"$CONNECTIONS" -j2 -f "$dir/page.sql")
    ((WARMUP > 0)) && (cd "$dir" && pgbench "${args[@]}" -T"$WARMUP" "$DB" >/dev/null 2>&1)
    (cd "$dir" && pgbench "${args[@]}" -T"$DURATION" -l --log-prefix=tx "$DB" >out.txt 2>&1) \
        || { cat "$dir/out.txt" >&2; die "pgbench $name failed"; }
    TPS[$name]=$(awk '/^tps = / { printf "%.2f", $3; exit }' "$dir/out.txt")
    # Per-transaction log: client, transaction, latency in µs, ...
    cat "$dir"/tx.* | awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n >"$dir/latency.us"
    local n
    n=$(wc -l <"$dir/latency.us")
    pct() { awk -v n="$n" -v p="$1" 'BEGIN { k = int(n * p); if (k < n * p) k++; if (k < 1) k = 1 }
                                     NR == k { printf "%.2f", $1 / 1000; exit }' "$dir/latency.us"; }
    PG50[$name]=$(pct 0.50)
    PG99[$name]=$(pct 0.99)
    rm -f "$dir"/tx.*
    say "SQL  $name: $(fmt_rate "${TPS[$name]}") tps, p50 ${PG50[$name]} ms, p99 ${PG99[$name]} ms ($n transactions)"
}

step "load: wrk -t2 -c$CONNECTIONS -d${DURATION}s, pgbench -M prepared -c$CONNECTIONS -j2 -T$DURATION (warm-up ${WARMUP}s each)"
run_wrk small "$small_url" "$small_token"
run_pgbench small "$SMALL" 0
run_wrk r-p1 "$reseller_url" "$reseller_token"
run_pgbench r-p1 reseller 0
run_wrk r-p200 "$p200_url" "$reseller_token"
run_pgbench r-p200 reseller 9950
run_wrk r-last "$last_url" "$reseller_token"
run_pgbench r-last reseller 719950
run_wrk r-bare "$bare_url" "$reseller_token"
TPS[r-bare]=${TPS[r-p200]} PG50[r-bare]=${PG50[r-p200]} PG99[r-bare]=${PG99[r-p200]}
if [[ -n $etag ]]; then
    run_wrk 304 "$small_url" "$small_token" "If-None-Match: $etag"
fi
sleep 0.5
rss_max_kb=$(cat "$WORK/rss.max")
rss_mb=$(calc "$rss_max_kb / 1024" %.1f)
rss_idle_mb=$(calc "${rss_idle_kb:-0} / 1024" %.1f)
kill -0 "$server" 2>/dev/null || die "the server died during the load (log: $WORK/server.log)"
say "server RSS: $rss_mb MB peak (idle after start: $rss_idle_mb MB)"

# --- profiles -----------------------------------------------------------------------------------
# Per scenario: a flame graph, and the functions with most samples of their own (folded into
# their crate or library where that says more).
declare -A HOT
if [[ ${PROFILE:-0} == 1 ]]; then
    step "profiles"
    command -v inferno-flamegraph >/dev/null || cargo install inferno --locked >/dev/null 2>&1 \
        || die "cannot install inferno (cargo install inferno)"
    for s in small r-p1 r-p200 r-last r-bare 304; do
        [[ -s $WORK/perf-$s.data ]] || continue
        perf script -i "$WORK/perf-$s.data" 2>/dev/null | inferno-collapse-perf >"$WORK/flame-$s.folded"
        inferno-flamegraph --title "usage-api: ${LABEL[$s]}" <"$WORK/flame-$s.folded" >"$WORK/flame-$s.svg"
        HOT[$s]=$(perf report -i "$WORK/perf-$s.data" --no-children --sort dso,sym --stdio -g none \
                     --percent-limit 2 2>/dev/null | awk '/%/ && !/^#/ { sub(/^ +/, ""); print }' | head -n 12)
        say "flame graph: ${WORK#"$ROOT"/}/flame-$s.svg"
    done
fi

# --- report -------------------------------------------------------------------------------------
declare -A SQLNOTE=([small]="OFFSET 0" [r-p1]="OFFSET 0" [r-p200]="OFFSET 9950" [r-last]="OFFSET 719950"
                   [r-bare]="OFFSET 9950, r-p200's run")
scenarios=(small r-p1 r-p200 r-last r-bare 304)
rows=()   # the columns of $header
for s in "${scenarios[@]}"; do
    if [[ $s == 304 && -z $etag ]]; then
        rows+=("${LABEL[$s]}|n/a (no ETag)|—|—|—|—|—|—")
        continue
    fi
    api="$(fmt_rate "${RPS[$s]}")|${P50[$s]:-—}|${P99[$s]:-—}|${ERRS[$s]:-0}"
    if [[ -n ${TPS[$s]:-} ]]; then
        rows+=("${LABEL[$s]}|$api|$(fmt_rate "${TPS[$s]}") (${SQLNOTE[$s]})|${PG50[$s]:-—} / ${PG99[$s]:-—}|$(calc "${RPS[$s]} / ${TPS[$s]}")")
    else
        rows+=("${LABEL[$s]}|$api|—|—|×$(calc "${RPS[$s]} / ${RPS[small]}") vs the 200")
    fi
done

# verdict CONDITION SCENARIO...: PASS or MISS (awk's arithmetic); never PASS for a scenario whose
# run had errors.
verdict() {
    local cond=$1 s
    shift
    for s in "$@"; do
        if [[ -n ${ERRS[$s]:-} ]]; then echo "MISS (errors in ${LABEL[$s]})"; return; fi
    done
    if awk "BEGIN { exit !($cond) }" 2>/dev/null; then echo PASS; else echo MISS; fi
}
# goal TEXT CONDITION FIGURES... -- SCENARIOS...: appends TEXT and its verdict to the goals; MISS
# when one of FIGURES is missing (wrk recorded no latency).
has() { local x; for x in "$@"; do [[ -n $x ]] || return 1; done; }
goal() {
    local text=$1 cond=$2 vals=() scen=()
    shift 2
    while (($#)) && [[ $1 != -- ]]; do vals+=("$1"); shift; done
    (($#)) && shift
    scen=("$@")
    if ! has "${vals[@]}"; then goals+=("$text — MISS (no figure)"); return; fi
    goals+=("$text — $(verdict "$cond" "${scen[@]}")")
}
goals=()
goal "small org: API req/s ≥ 2 × pgbench tps: $(fmt_rate "${RPS[small]}") vs $(calc "2 * ${TPS[small]}" %.0f)" \
    "${RPS[small]} >= 2 * ${TPS[small]}" "${RPS[small]}" "${TPS[small]}" -- small
goal "small org: API p99 < 10 ms: ${P99[small]:-—} ms" "${P99[small]:-0} < 10" "${P99[small]}" -- small
for s in r-p1 r-p200 r-last r-bare; do
    goal "${LABEL[$s]}: p50 ≤ 3 × the small org's p50: ${P50[$s]:-—} vs $(calc "3 * ${P50[small]:-0}") ms" \
        "${P50[$s]:-0} <= 3 * ${P50[small]:-0}" "${P50[$s]}" "${P50[small]}" -- small "$s"
done
# A 200 of an unchanged page is the remembered body (one statement, like a 304): the 304 is
# held to the 200's throughput, no longer to 3 × a page read afresh.
if [[ -n $etag ]]; then
    goal "If-None-Match: ≥ 0.9 × the 200's throughput: $(fmt_rate "${RPS[304]}") vs $(calc "0.9 * ${RPS[small]}" %.0f) req/s" \
        "${RPS[304]} >= 0.9 * ${RPS[small]}" "${RPS[304]}" -- small 304
else
    goals+=("If-None-Match: ≥ 0.9 × the 200's throughput: n/a (no ETag) — MISS")
fi
goal "server RSS < 150 MB: $rss_mb MB peak" "$rss_mb < 150" "$rss_mb" --

step "results"
header="scenario|API req/s|p50 ms|p99 ms|API errors|pgbench tps|pgbench p50/p99 ms|ratio API/pgbench"
printf '%s\n' "$header" "${rows[@]}" | column -t -s'|' -o' | '
say ""
for g in "${goals[@]}"; do say "$g"; done
for n in "${notes[@]}"; do say "note: $n"; done

# Markdown, with a chart for docs/PERFORMANCE.md. xychart-beta draws several bar series on top of
# each other and has no legend, so API and pgbench alternate as labelled bars of one series.
day=$(date +%F)
if [[ -n ${RESULTS:-} ]]; then
    md=$RESULTS
else
    md=$ROOT/bench/results/read-$day.md
    k=2
    while [[ -e $md ]]; do md=$ROOT/bench/results/read-$day-$k.md; k=$((k + 1)); done
fi
mkdir -p "$(dirname "$md")"
pg_version=$(psql_q "$DB" -Atc "SHOW server_version" | awk '{ print $1 }')
labels=() values=()
declare -A SHORT=([small]="small p1" [r-p1]="reseller p1" [r-p200]="reseller p200" [r-last]="reseller last"
                  [r-bare]="reseller ?page=200" [304]="small 304")
for s in "${scenarios[@]}"; do
    if [[ -n ${P50[$s]:-} ]]; then labels+=("\"${SHORT[$s]} API\"") values+=("${P50[$s]}"); fi
    if [[ -n ${PG50[$s]:-} ]]; then labels+=("\"${SHORT[$s]} SQL\"") values+=("${PG50[$s]}"); fi
done
ymax=$(printf '%s\n' 1 "${values[@]}" | sort -g | tail -n 1)
ymax=$(calc "$ymax * 1.15 + 0.5" %.0f)
{
    say "# Read benchmark, $day"
    say ""
    say "\`DURATION=$DURATION bench/read.sh\` — binary at commit \`$commit\`; $(nproc) cores,"
    say "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), PostgreSQL $pg_version; wrk, pgbench, the server and Postgres on the same machine."
    say "wrk -t2 -c$CONNECTIONS -d${DURATION}s and pgbench -M prepared -c$CONNECTIONS -j2 -T$DURATION, one after the other, ${WARMUP}s warm-up each;"
    say "server pool $POOL. Dataset: reseller $reseller_rows monthly rows, $SMALL $small_rows, $all_rows in all ($DATASET_NOTE)."
    say "pgbench runs the naive SQL of the same page: count(*) plus LIMIT 50 OFFSET n in a repeatable-read transaction."
    say "API req/s counts answers below 400; wrk's p50/p99 cover every answer within ${WRK_TIMEOUT}s (— when there was none);"
    say "pgbench's come from its per-transaction log."
    say ""
    say "| ${header//|/ | } |"
    say "|---|---:|---:|---:|---|---:|---:|---:|"
    for r in "${rows[@]}"; do say "| ${r//|/ | } |"; done
    say ""
    say "Page 200 reached by following \`next\` 199 times from page 1 (${walk_s} s in all)."
    say ""
    say "Goals:"
    say ""
    for g in "${goals[@]}"; do say "- $g"; done
    for n in "${notes[@]}"; do say "- note: $n"; done
    say ""
    if [[ ${PROFILE:-0} == 1 ]]; then
        say "Where the server's time went (\`perf record -F 499 -g\` during each wrk run; self time by"
        say "library and function, ≥ 2 %; flame graphs in bench/out/read/flame-<scenario>.svg):"
        say ""
        for s in "${scenarios[@]}"; do
            [[ -n ${HOT[$s]:-} ]] || continue
            say "${LABEL[$s]}:"
            say ""
            say '```'
            say "${HOT[$s]}"
            say '```'
            say ""
        done
    fi
    say "p50 latency per scenario (ms), API and pgbench (SQL) side by side:"
    say ""
    say '```mermaid'
    say "xychart-beta"
    say "    title \"p50 latency (ms), lower is better\""
    say "    x-axis [$(join_by ', ' "${labels[@]}")]"
    say "    y-axis \"p50 (ms)\" 0 --> $ymax"
    say "    bar [$(join_by ', ' "${values[@]}")]"
    say '```'
} >"$md"
say ""
say "written: ${md#"$ROOT"/}"
