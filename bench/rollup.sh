#!/usr/bin/env bash
# Rollup benchmark: `usage-api rollup` (the first run after a bulk load) and `usage-api rollup
# --full` (from empty aggregates, and with nothing to change) against a hand-written
# `INSERT … SELECT … GROUP BY` that produces the same rows into tables with the same indexes,
# measured in the same run, on bench/read.sh's dataset (1,920,000 events, one per group).
#
#   bench/rollup.sh                                   # measure BIN (else: cargo build --release)
#   GROUP_EVENTS=50 bench/rollup.sh                  # ~50 events per group instead of one:
#       # database usage_api_bench_rollup50 (built here when missing, through `accounts import`
#       # and `ingest`): 2,400,000 events of 16,000 accounts, 48,000 groups of exactly 50 events
#   MONTHLY_BIN=/path/to/old/usage-api bench/rollup.sh
#       # also measure a binary whose rollup writes monthly aggregates only (e.g. 599009d, the
#       # last commit before the daily aggregates) against the monthly-only baseline, for the
#       # "do not let the ratio grow" comparison of issue 10
#
# Dataset: database usage_api_bench_read (DATASET_ONLY=1 bench/read.sh builds it). This script
# applies BIN's migrations, then for each scenario empties the aggregates (TRUNCATE) and, for the
# incremental run, marks every (organization, account, month) with events dirty, as a bulk load
# leaves them. It leaves the dataset rolled up, as it found it.
#
# Baseline (schema bench_base, tables created LIKE the product's, INCLUDING ALL: the same primary
# keys, indexes and checks): one transaction of INSERT … SELECT … GROUP BY over usage_events for
# usage_monthly (the same key, id and sums as rollup.sql) and usage_daily (the same default
# category), then the organizations' days and months summed from those. The monthly-only
# baseline is its first statement alone.
#
# Each timing is the wall clock of one command; CHECKPOINT before each. Writes
# bench/results/rollup-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SERVER=${DATABASE_URL:-postgres://root@127.0.0.1:5432/usage_api}
GROUP_EVENTS=${GROUP_EVENTS:-1}
case $GROUP_EVENTS in
    1) DB="${SERVER%/*}/usage_api_bench_read" SHAPE="bench/read.sh's dataset, one event per group" ;;
    50) DB="${SERVER%/*}/usage_api_bench_rollup50" SHAPE="50 events per group" ;;
    *) echo "GROUP_EVENTS is 1 or 50" >&2; exit 2 ;;
esac
SUFFIX=$([[ $GROUP_EVENTS == 1 ]] || echo "-$GROUP_EVENTS-per-group")
RESULTS=${RESULTS:-$ROOT/bench/results/rollup-$(date -u +%Y-%m-%d)$SUFFIX.md}
export PGAPPNAME=bench-rollup

source "$ROOT/bench/lib.sh"
q() { psql -X -q -v ON_ERROR_STOP=1 "$DB" "$@"; }

need_tools psql
if [[ -z ${BIN:-} ]]; then
    cargo build --release --quiet
    BIN=$ROOT/target/release/usage-api
fi
[[ -x $BIN ]] || die "BIN=$BIN is not an executable"
# The 50-per-group dataset: reseller_files' groups repeat every lcm(accounts, 120) events.
build_rollup50() {
    local work=$ROOT/bench/out/rollup50 out
    mkdir -p "$work"
    say "building usage_api_bench_rollup50 (2,400,000 events, 48,000 groups)"
    psql -X -q "${SERVER%/*}/postgres" -c "DROP DATABASE IF EXISTS usage_api_bench_rollup50 WITH (FORCE)" \
        -c "CREATE DATABASE usage_api_bench_rollup50"
    DATABASE_URL=$DB "$BIN" migrate >/dev/null
    reseller_files "$DB" 2400000 16000 "$work/accounts.csv" "$work/events.csv"
    out=$(DATABASE_URL=$DB "$BIN" accounts import "$work/accounts.csv" --format csv)
    say "accounts import: $out"
    out=$(DATABASE_URL=$DB "$BIN" ingest "$work/events.csv" --format csv)
    say "ingest: $out"
    [[ $out == "accepted: 2400000, duplicate: 0, rejected: 0" ]] || die "the ingest did not take every event"
    DATABASE_URL=$DB "$BIN" rollup --full >/dev/null
    [[ $(q -Atc "SELECT count(*) || ' ' || min(event_count) || ' ' || max(event_count) FROM usage_monthly") \
        == "48000 50 50" ]] || die "the dataset does not hold 48,000 groups of 50 events"
    q -c "CREATE SCHEMA bench; CREATE TABLE bench.dataset (version text PRIMARY KEY);
          INSERT INTO bench.dataset VALUES ('rollup50-v1')"
    q -c "VACUUM ANALYZE"
    rm -f "$work/events.csv"
}
if [[ $GROUP_EVENTS == 50 ]] && ! q -Atc "SELECT 1 FROM bench.dataset" >/dev/null 2>&1; then
    build_rollup50
fi
q -Atc "SELECT 1 FROM bench.dataset" >/dev/null 2>&1 \
    || die "no dataset in usage_api_bench_read: run DATASET_ONLY=1 bench/read.sh first"
DATABASE_URL=$DB "$BIN" migrate >/dev/null
events=$(q -Atc "SELECT count(*) FROM usage_events")

AGGREGATES="usage_monthly, usage_daily, usage_daily_totals, usage_monthly_totals"
empty() { q -c "TRUNCATE $AGGREGATES, rollup_dirty"; }
mark_all() {
    q -c "INSERT INTO rollup_dirty (organization_id, account_id, month)
          SELECT DISTINCT organization_id, account_id,
                 date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date
          FROM usage_events"
}
# timed NAME COMMAND…: runs it after a CHECKPOINT, prints and records its seconds.
declare -A T
timed() {
    local name=$1 t0
    shift
    q -c "CHECKPOINT"
    t0=$(now)
    "$@" >/dev/null
    T[$name]=$(calc "$(now) - $t0" %.1f)
    say "$name: ${T[$name]} s"
}
rows() {
    q -Atc "SELECT (SELECT count(*) FROM usage_monthly) || ' monthly, ' ||
                   (SELECT count(*) FROM usage_daily) || ' daily, ' ||
                   (SELECT count(*) FROM usage_daily_totals) || ' daily totals, ' ||
                   (SELECT count(*) FROM usage_monthly_totals) || ' monthly totals'"
}

BASELINE_MONTHLY=$(cat <<'SQL'
INSERT INTO bench_base.usage_monthly (
    id, organization_id, account_id, product_id, aggr_product_id, month, usage_type,
    description, currency, direction, resolution, unit, price, wallet_name,
    number_of_units, total_amount, event_count)
SELECT md5(jsonb_build_array(
           account_id, product_id, aggr_product_id,
           to_char(date_trunc('month', occurred_at AT TIME ZONE 'UTC'), 'YYYY-MM'),
           usage_type, description, currency, direction, resolution, unit,
           trim_scale(unit_price)::text, wallet_name)::text)::uuid,
       organization_id, account_id, product_id, aggr_product_id,
       date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date, usage_type, description,
       currency, direction, resolution, unit, trim_scale(unit_price), wallet_name,
       trim_scale(sum(quantity)), trim_scale(sum(quantity * unit_price)), count(*)
FROM usage_events
GROUP BY organization_id, account_id, product_id, aggr_product_id,
         date_trunc('month', occurred_at AT TIME ZONE 'UTC'), usage_type, description,
         currency, direction, resolution, unit, trim_scale(unit_price), wallet_name;
SQL
)
BASELINE_DAILY=$(cat <<'SQL'
INSERT INTO bench_base.usage_daily (
    organization_id, account_id, day, category, currency, unit, event_count, quantity, amount)
SELECT organization_id, account_id, (occurred_at AT TIME ZONE 'UTC')::date,
       coalesce(category, usage_default_category(usage_type, direction)), currency, unit,
       count(*), trim_scale(sum(quantity)), trim_scale(sum(quantity * unit_price))
FROM usage_events
GROUP BY organization_id, account_id, (occurred_at AT TIME ZONE 'UTC')::date,
         coalesce(category, usage_default_category(usage_type, direction)), currency, unit;
INSERT INTO bench_base.usage_daily_totals (
    organization_id, day, category, currency, unit, event_count, quantity, amount)
SELECT organization_id, day, category, currency, unit,
       sum(event_count), trim_scale(sum(quantity)), trim_scale(sum(amount))
FROM bench_base.usage_daily
GROUP BY organization_id, day, category, currency, unit;
INSERT INTO bench_base.usage_monthly_totals (
    organization_id, month, category, currency, unit, event_count, quantity, amount)
SELECT organization_id, date_trunc('month', day)::date, category, currency, unit,
       sum(event_count), trim_scale(sum(quantity)), trim_scale(sum(amount))
FROM bench_base.usage_daily_totals
GROUP BY organization_id, date_trunc('month', day)::date, category, currency, unit;
SQL
)
base_tables() {
    q -c "DROP SCHEMA IF EXISTS bench_base CASCADE; CREATE SCHEMA bench_base;
          CREATE TABLE bench_base.usage_monthly (LIKE public.usage_monthly INCLUDING ALL);
          CREATE TABLE bench_base.usage_daily (LIKE public.usage_daily INCLUDING ALL);
          CREATE TABLE bench_base.usage_daily_totals (LIKE public.usage_daily_totals INCLUDING ALL);
          CREATE TABLE bench_base.usage_monthly_totals (LIKE public.usage_monthly_totals INCLUDING ALL)"
}
baseline_all() { q -c "BEGIN; $BASELINE_MONTHLY $BASELINE_DAILY COMMIT;"; }
baseline_monthly() { q -c "BEGIN; $BASELINE_MONTHLY COMMIT;"; }

say "$events events; BIN=$BIN"
base_tables
timed baseline baseline_all
base_rows=$(q -Atc "SELECT (SELECT count(*) FROM bench_base.usage_monthly) || ' monthly, ' ||
                           (SELECT count(*) FROM bench_base.usage_daily) || ' daily'")
say "baseline rows: $base_rows"
base_tables
timed baseline_monthly baseline_monthly
q -c "DROP SCHEMA bench_base CASCADE"

empty && mark_all
timed first_rollup env DATABASE_URL="$DB" "$BIN" rollup
say "rows: $(rows)"
empty
timed full_fill env DATABASE_URL="$DB" "$BIN" rollup --full
timed full_unchanged env DATABASE_URL="$DB" "$BIN" rollup --full

if [[ -n ${MONTHLY_BIN:-} ]]; then
    [[ -x $MONTHLY_BIN ]] || die "MONTHLY_BIN=$MONTHLY_BIN is not an executable"
    # Its rollup only knows usage_monthly; the new tables stay empty meanwhile.
    empty && mark_all
    timed monthly_first_rollup env DATABASE_URL="$DB" "$MONTHLY_BIN" rollup
    q -c "TRUNCATE usage_monthly"
    timed monthly_full_fill env DATABASE_URL="$DB" "$MONTHLY_BIN" rollup --full
    timed monthly_full_unchanged env DATABASE_URL="$DB" "$MONTHLY_BIN" rollup --full
    # Leave the dataset whole for the other benchmarks.
    empty
    DATABASE_URL=$DB "$BIN" rollup --full >/dev/null
fi
q -c "VACUUM ANALYZE"

ratio() { calc "${T[$1]} / ${T[$2]}"; }
{
    say "# Rollup benchmark, $(date -u +%Y-%m-%d)"
    say
    say "\`GROUP_EVENTS=$GROUP_EVENTS bench/rollup.sh\` — $events events ($SHAPE)," \
        "BIN=$(basename "$BIN")${MONTHLY_BIN:+, MONTHLY_BIN=$(basename "$MONTHLY_BIN")}."
    say "Baseline rows: $base_rows. Product rows: $(rows)."
    say
    say "| run | seconds | baseline | ratio |"
    say "|---|---:|---|---:|"
    say "| hand-written GROUP BY, monthly + daily + totals | ${T[baseline]} | — | — |"
    say "| hand-written GROUP BY, monthly only | ${T[baseline_monthly]} | — | — |"
    say "| first \`rollup\` after the load | ${T[first_rollup]} | monthly + daily | $(ratio first_rollup baseline)× |"
    say "| \`rollup --full\` from empty | ${T[full_fill]} | monthly + daily | $(ratio full_fill baseline)× |"
    say "| \`rollup --full\`, nothing to change | ${T[full_unchanged]} | monthly + daily | $(ratio full_unchanged baseline)× |"
    if [[ -n ${MONTHLY_BIN:-} ]]; then
        say "| monthly only: first \`rollup\` | ${T[monthly_first_rollup]} | monthly only | $(ratio monthly_first_rollup baseline_monthly)× |"
        say "| monthly only: \`rollup --full\` from empty | ${T[monthly_full_fill]} | monthly only | $(ratio monthly_full_fill baseline_monthly)× |"
        say "| monthly only: \`rollup --full\`, nothing to change | ${T[monthly_full_unchanged]} | monthly only | $(ratio monthly_full_unchanged baseline_monthly)× |"
    fi
} | tee "$RESULTS"
say "written to $RESULTS"
