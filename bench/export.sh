#!/usr/bin/env bash
# Raw-records benchmark (issue 11): the CSV export of 1,000,000 raw events of one organization
# against psql's `\copy (SELECT …) TO STDOUT CSV` of the same columns in the same order, gzip off
# and on; time to first byte; the server's peak RSS; and raw-records page 1 and the page reached
# through 200 `next` links for an organization of 2,000 accounts against one of 5.
#
#   bench/export.sh                                 # DURATION=10 CONNECTIONS=16
#   BIN=/path/to/usage-api bench/export.sh          # measure this binary (else: cargo build --release)
#
# Dataset (database usage_api_bench_export, built once by SQL straight into usage_events and
# reused while its version row matches this script's generator; the export and the pages read
# only usage_events, usage_voids and accounts):
#   - organization `big`: 2,000 accounts, 1,000,000 events over 12 months of 2024;
#   - organization `small`: 5 accounts, 25,000 events over the same months;
#   descriptions with commas, quotes and unicode; exact decimals; 1 in 1,000 events voided.
#
# Export runs, one at a time: psql `\copy` to /dev/null (the baseline), then
# `curl …/express/usage/events?format=csv` to /dev/null without and with `Accept-Encoding: gzip`
# (total time from curl; the first byte of the body timed apart, the client then hanging up),
# each RUNS times; medians. Peak RSS is the server's
# VmHWM after the exports (it starts fresh before them).
# Pages: wrk -t2 -cCONNECTIONS -dDURATION s on page 1 and on the `next` href found by following
# 199 `next` links from page 1 (per_page 100), for big and small; p50 ratio.
# Writes bench/results/export-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
RUNS=${RUNS:-3}
PORT=${PORT:-18092}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
DBNAME=usage_api_bench_export
DB="${SERVER%/*}/$DBNAME"
ADMIN_DB="${SERVER%/*}/postgres"
BASE="http://127.0.0.1:$PORT"
WORK=$ROOT/bench/out/export
RESULTS=${RESULTS:-$ROOT/bench/results/export-$(date -u +%Y-%m-%d).md}
export OAUTH_DEV_SECRET=bench-secret-bench-secret-bench-secret
export PGAPPNAME=bench-export

source "$ROOT/bench/lib.sh"
q() { psql -X -q -v ON_ERROR_STOP=1 "$DB" "$@"; }

need_tools wrk psql jq curl
if [[ -z ${BIN:-} ]]; then
    cargo build --release --quiet
    BIN=$ROOT/target/release/usage-api
fi
[[ -x $BIN ]] || die "BIN=$BIN is not an executable"
mkdir -p "$WORK"

# --- dataset ------------------------------------------------------------------------------------
DATASET_SQL=$(cat <<'SQL'
INSERT INTO organizations (id) VALUES ('big'), ('small');
INSERT INTO accounts (id, organization_id, name)
SELECT 'big-' || lpad(a::text, 4, '0'), 'big', 'Big ' || a FROM generate_series(1, 2000) a
UNION ALL
SELECT 'small-' || a, 'small', 'Small ' || a FROM generate_series(1, 5) a;
SELECT usage_events_ensure_partition(make_date(2024, m, 1)) FROM generate_series(1, 12) m;
INSERT INTO usage_events (event_id, account_id, organization_id, product_id, aggr_product_id,
       usage_type, description, currency, direction, resolution, unit, unit_price, wallet_name,
       quantity, occurred_at, category)
SELECT org || '-' || n,
       CASE WHEN org = 'big' THEN 'big-' || lpad((1 + n % 2000)::text, 4, '0')
            ELSE 'small-' || (1 + n % 5) END,
       org, 'TD-USG-P' || (n % 15), 'TD-AGG-' || (n % 3),
       (ARRAY['CALL', 'MESSAGE', 'NUMBER', 'API_REQUEST'])[1 + n % 4],
       (ARRAY['Inbound call', 'say "hi", twice', 'unicode ✓ 日本語', 'plain'])[1 + n % 4],
       'USD', (ARRAY['INBOUND', 'OUTBOUND', NULL])[1 + n % 3],
       CASE WHEN n % 5 = 0 THEN 'ANSWERED' END,
       (ARRAY['MINUTES', 'SEGMENTS', 'NUMBERS', 'REQUESTS'])[1 + n % 4],
       (ARRAY[0.0085, 0.014, 1, 0.000001])[1 + n % 4], 'main',
       ((n::bigint * 7919) % 100000) / 1000.0,
       timestamptz '2024-01-01' + (n * 31.4)::float8 * interval '1 second',
       CASE WHEN n % 7 = 0 THEN 'calls-sip' END
FROM (SELECT 'big' AS org, n FROM generate_series(1, 1000000) n
      UNION ALL
      SELECT 'small', n * 40 FROM generate_series(1, 25000) n) src;
INSERT INTO usage_voids (organization_id, event_id, voided_event_id, account_id, month)
SELECT organization_id, 'void-' || event_id, event_id, account_id,
       date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date
FROM usage_events WHERE organization_id = 'big' AND seq % 1000 = 0;
SQL
)
DATASET_VERSION="v1-$(printf '%s' "$DATASET_SQL" | sha1sum | cut -c1-12)"

have=""
if [[ -n $(psql -X -q "$ADMIN_DB" -Atc "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'") ]]; then
    have=$(q -Atc "SELECT version FROM bench.dataset" 2>/dev/null || true)
fi
if [[ $have != "$DATASET_VERSION" ]]; then
    say "building $DBNAME ($DATASET_VERSION)"
    psql -X -q "$ADMIN_DB" -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" -c "CREATE DATABASE $DBNAME"
    DATABASE_URL=$DB "$BIN" migrate >/dev/null
    q -c "$DATASET_SQL" >/dev/null
    q -c "VACUUM ANALYZE"
    q -c "CREATE SCHEMA bench; CREATE TABLE bench.dataset (version text PRIMARY KEY);
          INSERT INTO bench.dataset VALUES ('$DATASET_VERSION')"
else
    DATABASE_URL=$DB "$BIN" migrate >/dev/null
    say "reusing $DBNAME ($DATASET_VERSION)"
fi
counts=$(q -Atc "SELECT string_agg(organization_id || ' ' || n, ', ' ORDER BY organization_id)
                 FROM (SELECT organization_id, count(*) n FROM usage_events GROUP BY 1) c")
say "events: $counts"

# --- server -------------------------------------------------------------------------------------
start_server "$DB" "$PORT" "$CONNECTIONS" "$WORK/server.log"
rss_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$server/status"; }
say "server RSS before the exports: $(awk '/^VmRSS/ { print $2 }' "/proc/$server/status") kB"

# --- export against \copy ----------------------------------------------------------------------
COPY_SQL="\\copy (SELECT e.event_id, e.account_id,
       coalesce(e.category, usage_default_category(e.usage_type, e.direction)),
       e.product_id, e.aggr_product_id, e.usage_type, e.description, e.direction, e.resolution,
       e.unit, trim_scale(e.quantity), trim_scale(e.unit_price),
       trim_scale(e.quantity * e.unit_price), e.currency, e.wallet_name, e.occurred_at,
       e.ingested_at, v.event_id
  FROM usage_events e
  LEFT JOIN usage_voids v ON v.organization_id = e.organization_id AND v.voided_event_id = e.event_id
  WHERE e.organization_id = 'big' AND v.event_id IS NULL
  ORDER BY e.occurred_at DESC, e.event_id COLLATE \"C\" DESC) TO STDOUT WITH (FORMAT csv, HEADER)"
COPY_SQL=$(printf '%s' "$COPY_SQL" | tr '\n' ' ')  # a backslash command is one line
token=$("$BIN" token --org big)
# first_byte CODING: seconds from the request to the first byte of the body (not the headers,
# which go out before the database is asked); the client then hangs up.
first_byte() {
    local t0
    t0=$(date +%s.%N)
    curl -sN -H "Authorization: Bearer $token" -H "Accept-Encoding: $1" \
        "$BASE/express/usage/events?format=csv" | head -c 1 >/dev/null || true
    calc "$(date +%s.%N) - $t0" %.3f
}
declare -a COPY_T PLAIN_T PLAIN_TTFB GZIP_T GZIP_TTFB
plain_bytes=0
gzip_bytes=0
for run in $(seq 1 "$RUNS"); do
    t0=$(date +%s.%N)
    rows=$(psql -X -q "$DB" -c "$COPY_SQL" | wc -l)
    COPY_T+=("$(calc "$(date +%s.%N) - $t0" %.3f)")
    read -r total plain_bytes < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' \
        -H "Authorization: Bearer $token" "$BASE/express/usage/events?format=csv")
    PLAIN_T+=("$total")
    PLAIN_TTFB+=("$(first_byte identity)")
    read -r total gzip_bytes < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' \
        -H "Authorization: Bearer $token" -H "Accept-Encoding: gzip" "$BASE/express/usage/events?format=csv")
    GZIP_T+=("$total")
    GZIP_TTFB+=("$(first_byte gzip)")
    say "run $run: \\copy ${COPY_T[-1]} s ($rows lines); export ${PLAIN_T[-1]} s (first byte ${PLAIN_TTFB[-1]} s, $plain_bytes B); gzip ${GZIP_T[-1]} s (first byte ${GZIP_TTFB[-1]} s, $gzip_bytes B)"
done
check=$(curl -s -H "Authorization: Bearer $token" "$BASE/express/usage/events?format=csv" | wc -l)
[[ $check == "$rows" ]] || die "the export has $check lines, \\copy $rows"
peak_mb=$(calc "$(rss_kb) / 1024" %.1f)
copy_s=$(printf '%s\n' "${COPY_T[@]}" | median)
plain_s=$(printf '%s\n' "${PLAIN_T[@]}" | median)
plain_ttfb=$(printf '%s\n' "${PLAIN_TTFB[@]}" | median)
gzip_s=$(printf '%s\n' "${GZIP_T[@]}" | median)
gzip_ttfb=$(printf '%s\n' "${GZIP_TTFB[@]}" | median)
plain_ratio=$(calc "$copy_s / $plain_s")
gzip_ratio=$(calc "$copy_s / $gzip_s")

# --- pages --------------------------------------------------------------------------------------
declare -A P50 RPS
for org in big small; do
    token=$("$BIN" token --org "$org")
    first="$BASE/express/usage/events?per_page=100"
    href=$first
    for _ in $(seq 1 199); do
        href=$(curl -sf -H "Authorization: Bearer $token" "$href" | jq -r '._links.next.href')
        [[ $href != null ]] || die "$org has fewer than 200 pages"
    done
    for page in 1 200; do
        url=$first
        [[ $page == 200 ]] && url=$href
        wrk_p50 "$org-$page" "$url" "$token"
        P50[$org-$page]=$WRK_P50
        RPS[$org-$page]=$WRK_RPS
        say "$org page $page: ${RPS[$org-$page]} req/s, p50 ${P50[$org-$page]} ms"
    done
done

verdict() { awk "BEGIN { print ($1) ? \"PASS\" : \"MISS\" }"; }
commit=${COMMIT:-$(git -C "$(dirname "$BIN")" rev-parse --short HEAD 2>/dev/null || echo unknown)}
{
    say "# Raw-records benchmark, $(date -u +%Y-%m-%d)"
    say
    say "\`RUNS=$RUNS DURATION=$DURATION CONNECTIONS=$CONNECTIONS bench/export.sh\`, binary at commit \`$commit\`; 2 shared cores."
    say "Events: $counts; $((rows - 1)) rows exported for \`big\` (voided ones left out)."
    say
    say "| export of big (CSV) | median s | rows/s | vs \\copy | first byte | goal |"
    say "|---|---:|---:|---:|---:|---|"
    say "| psql \\copy, same columns and order | $copy_s | $(calc "($rows - 1) / $copy_s" %.0f) | 1.00 | — | — |"
    say "| export, identity ($plain_bytes B) | $plain_s | $(calc "($rows - 1) / $plain_s" %.0f) | $plain_ratio | $(calc "$plain_ttfb * 1000" %.0f) ms | $(verdict "$plain_ratio >= 0.5 && $plain_ttfb < 0.2") |"
    say "| export, gzip ($gzip_bytes B) | $gzip_s | $(calc "($rows - 1) / $gzip_s" %.0f) | $gzip_ratio | $(calc "$gzip_ttfb * 1000" %.0f) ms | $(verdict "$gzip_ratio >= 0.5 && $gzip_ttfb < 0.2") |"
    say
    say "Server peak RSS (VmHWM) after $((RUNS * 2 + 1)) exports: $peak_mb MB (goal < 150 MB: $(verdict "$peak_mb < 150"))."
    say
    say "| page (per_page 100) | big req/s | big p50 ms | small req/s | small p50 ms | p50 ratio | goal ≤ 3× |"
    say "|---|---:|---:|---:|---:|---:|---|"
    for page in 1 200; do
        ratio=$(calc "${P50[big-$page]} / ${P50[small-$page]}")
        say "| $page | ${RPS[big-$page]} | ${P50[big-$page]} | ${RPS[small-$page]} | ${P50[small-$page]} | $ratio | $(verdict "$ratio <= 3") |"
    done
} | tee "$RESULTS"
say
say "written: $RESULTS"
