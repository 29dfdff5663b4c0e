#!/usr/bin/env bash
# Usage-records benchmark: organization-wide Yearly, Monthly and AllTime records of a reseller of
# 2,000 accounts against the same requests for an organization of 5 accounts, and the full
# rollup that fills the daily aggregates they read.
#
#   bench/records.sh                          # DURATION=10 CONNECTIONS=16
#   BIN=/path/to/usage-api bench/records.sh   # measure this binary (else: cargo build --release)
#
# Dataset: bench/read.sh's (database usage_api_bench_read: reseller 2,000 accounts × 15 products ×
# 24 months of 2023–2024, small organizations of 5 accounts × 5 products; 1,920,000 events).
# Run bench/read.sh once first to build it. This script applies the binary's migrations and, when
# marks are pending (migration 5 marks every group), runs `usage-api rollup --full`, timed.
#
# Scenarios (wrk -t2, CONNECTIONS connections, DURATION s each, one after the other):
#   GET /2010-04-01/Accounts/{org}/Usage/Records/{Yearly|Monthly|AllTime}.json
#       ?StartDate=2023-01-01&EndDate=2024-12-31   for org = reseller and small-0042;
#   GET …/Records/Daily.json?…&PageSize=50&Page=100 for the reseller, Page=0 for small-0042.
# Goal (issue 10): the reseller's p50 ≤ 3 × the small organization's, for each subresource.
# Writes bench/results/records-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
PORT=${PORT:-18091}
SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
DB="${SERVER%/*}/usage_api_bench_read"
BASE="http://127.0.0.1:$PORT"
SMALL=small-0042
WORK=$ROOT/bench/out/records
RESULTS=${RESULTS:-$ROOT/bench/results/records-$(date -u +%Y-%m-%d).md}
export OAUTH_DEV_SECRET=bench-secret-bench-secret-bench-secret
export PGAPPNAME=bench-records

source "$ROOT/bench/lib.sh"
need_tools wrk psql jq curl
if [[ -z ${BIN:-} ]]; then
    cargo build --release --quiet
    BIN=$ROOT/target/release/usage-api
fi
[[ -x $BIN ]] || die "BIN=$BIN is not an executable"
psql -X -q "$DB" -Atc "SELECT 1 FROM bench.dataset" >/dev/null 2>&1 \
    || die "no dataset in usage_api_bench_read: run bench/read.sh once first"
mkdir -p "$WORK"

DATABASE_URL=$DB "$BIN" migrate >/dev/null
marks=$(psql -X -q "$DB" -Atc "SELECT count(*) FROM rollup_dirty")
rollup_note="no marks pending: the daily aggregates were already filled"
if [[ $marks != 0 ]]; then
    say "$marks dirty marks pending: usage-api rollup --full"
    t0=$(now)
    out=$(DATABASE_URL=$DB "$BIN" rollup --full)
    rollup_s=$(calc "$(now) - $t0" %.1f)
    psql -X -q "$DB" -c "VACUUM ANALYZE"
    rollup_note="rollup --full over 1,920,000 events (monthly and daily aggregates): ${rollup_s} s ($out)"
    say "$rollup_note"
fi
days=$(psql -X -q "$DB" -Atc "SELECT (SELECT count(*) FROM usage_daily) || ' daily rows, ' ||
    (SELECT count(*) FROM usage_daily_totals WHERE organization_id = 'reseller') || ' reseller total rows, ' ||
    (SELECT count(*) FROM usage_daily_totals WHERE organization_id = '$SMALL') || ' $SMALL total rows; ' ||
    (SELECT count(*) FROM usage_monthly_totals WHERE organization_id = 'reseller') || ' reseller month rows, ' ||
    (SELECT count(*) FROM usage_monthly_totals WHERE organization_id = '$SMALL') || ' $SMALL month rows'")
say "$days"

start_server "$DB" "$PORT" "$CONNECTIONS" "$WORK/server.log"

declare -A P50 RPS COUNT
rows=()
for sub in Yearly Monthly AllTime; do
    for org in reseller "$SMALL"; do
        token=$("$BIN" token --org "$org")
        url="$BASE/2010-04-01/Accounts/$org/Usage/Records/$sub.json?StartDate=2023-01-01&EndDate=2024-12-31"
        code=$(curl -s -o "$WORK/$org-$sub.json" -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
        [[ $code == 200 ]] || die "GET $url answered $code: $(head -c 300 "$WORK/$org-$sub.json")"
        COUNT[$org-$sub]=$(jq '.usage_records | length' "$WORK/$org-$sub.json")
        wrk_p50 "$org-$sub" "$url" "$token"
        P50[$org-$sub]=$WRK_P50
        RPS[$org-$sub]=$WRK_RPS
        say "$sub $org: ${RPS[$org-$sub]} req/s, p50 ${P50[$org-$sub]} ms (${COUNT[$org-$sub]} records on the page)"
    done
    ratio=$(calc "${P50[reseller-$sub]} / ${P50[$SMALL-$sub]}" %.2f)
    verdict=$(awk "BEGIN { print ($ratio <= 3) ? \"PASS\" : \"MISS\" }")
    rows+=("| $sub | ${RPS[reseller-$sub]} | ${P50[reseller-$sub]} | ${RPS[$SMALL-$sub]} | ${P50[$SMALL-$sub]} | $ratio | $verdict |")
done

# A deep page by its number: the reseller's Daily records (series × 731 days) at Page=100 against
# the small organization's first page. The route reads the whole range once per data version and
# remembers it, so page 100 should cost what page 0 does (issue 15, item 4).
declare -A DEEP=([reseller]=100 [$SMALL]=0)
for org in reseller "$SMALL"; do
    token=$("$BIN" token --org "$org")
    url="$BASE/2010-04-01/Accounts/$org/Usage/Records/Daily.json?StartDate=2023-01-01&EndDate=2024-12-31&PageSize=50&Page=${DEEP[$org]}"
    code=$(curl -s -o "$WORK/$org-daily.json" -w '%{http_code}' -H "Authorization: Bearer $token" "$url")
    [[ $code == 200 ]] || die "GET $url answered $code: $(head -c 300 "$WORK/$org-daily.json")"
    COUNT[$org-daily]=$(jq '.usage_records | length' "$WORK/$org-daily.json")
    [[ ${COUNT[$org-daily]} == 50 ]] || die "$url holds ${COUNT[$org-daily]} records, not 50"
    wrk_p50 "$org-daily" "$url" "$token"
    P50[$org-daily]=$WRK_P50
    RPS[$org-daily]=$WRK_RPS
    say "Daily $org Page=${DEEP[$org]}: ${RPS[$org-daily]} req/s, p50 ${P50[$org-daily]} ms"
done
ratio=$(calc "${P50[reseller-daily]} / ${P50[$SMALL-daily]}" %.2f)
verdict=$(awk "BEGIN { print ($ratio <= 3) ? \"PASS\" : \"MISS\" }")
rows+=("| Daily, reseller Page=100 vs $SMALL Page=0 (PageSize=50) | ${RPS[reseller-daily]} | ${P50[reseller-daily]} | ${RPS[$SMALL-daily]} | ${P50[$SMALL-daily]} | $ratio | $verdict |")

commit=${COMMIT:-$(git -C "$(dirname "$BIN")" rev-parse --short HEAD 2>/dev/null || echo unknown)}
{
    say "# Usage-records benchmark, $(date -u +%Y-%m-%d)"
    say
    say "\`DURATION=$DURATION CONNECTIONS=$CONNECTIONS bench/records.sh\`, binary at commit \`$commit\`; 2 shared cores;"
    say "wrk -t2 -c$CONNECTIONS -d${DURATION}s after a 2 s warm-up; range 2023-01-01..2024-12-31, organization-wide."
    say
    say "- $rollup_note"
    say "- $days"
    say
    say "| subresource | reseller req/s | reseller p50 ms | $SMALL req/s | $SMALL p50 ms | p50 ratio | goal ≤ 3× |"
    say "|---|---:|---:|---:|---:|---:|---|"
    for row in "${rows[@]}"; do say "$row"; done
} | tee "$RESULTS"
say
say "written: $RESULTS"
