# The helpers every bench script shares, sourced after `set -euo pipefail`.

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
die() { printf 'bench/%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }
now() { date +%s.%N; }
# calc EXPR [FORMAT]: awk arithmetic, printed with FORMAT (default %.2f).
calc() { awk "BEGIN { printf \"${2:-%.2f}\", $1 }"; }
# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# to_ms VALUE: wrk's "812.00us" / "4.21ms" / "1.02s" / "2.00m" in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        else if (u == "h") n *= 3600000; else if (u != "ms") { print "?"; exit }
        printf "%.2f", n }'
}

# psql without ~/.psqlrc, quiet, stopping at the first error.
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# bench_args ARG…: the script's arguments; there are none but -h/--help, which prints the
# script's header comment (settings are environment variables).
bench_args() {
    local arg
    for arg in "$@"; do
        case $arg in
            -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown argument '$arg' (settings are environment variables; see --help)" ;;
        esac
    done
}

# release_binary: BIN made absolute when given, else the release build of this checkout
# (cargo build --release; ROOT is the checkout).
release_binary() {
    if [[ -n ${BIN:-} ]]; then
        [[ -x $BIN ]] || die "BIN=$BIN is not an executable"
        BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
    else
        step "build (cargo build --release)"
        cargo build --release --quiet
        BIN=$ROOT/target/release/usage-api
    fi
}

# need_tools COMMAND…: installs the Debian packages of the missing ones (apt-get).
need_tools() {
    local missing=() tool package
    for tool in "$@"; do
        command -v "$tool" >/dev/null && continue
        case $tool in
            psql | pgbench) package=postgresql-client ;;
            *) package=$tool ;;
        esac
        [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]} (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
        || die "could not install ${missing[*]}; install them and run again"
}

# await_ready PID BASE LOG: waits (30 s at most) until the server PID answers BASE/health/ready;
# dies with the end of its LOG when it exits first or is not ready by then.
await_ready() {
    local pid=$1 base=$2 log=$3
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null "$base/health/ready" && return 0
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "the server exited at startup (log: $log)"; }
        sleep 0.1
    done
    tail -n 20 "$log" >&2
    die "the server is not ready after 30 s (log: $log)"
}

# start_server DB PORT POOL LOG: `$BIN serve` on 127.0.0.1:PORT against DB (no rollup worker, no
# backtraces, the per-organization limits lifted: capacity is measured here, the limits by
# bench/load.sh), stopped when the script exits; waits until it is ready. Sets $server (its pid).
start_server() {
    local db=$1 port=$2 pool=$3 log=$4
    server=""
    trap 'if [[ -n $server ]]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi' EXIT
    env -u RUST_BACKTRACE USAGE_API_ROLLUP_INTERVAL_MS=0 DATABASE_URL="$db" \
        USAGE_API_ORG_RATE=1000000 USAGE_API_ORG_BURST=1000000 USAGE_API_ORG_CONCURRENCY=1000 \
        USAGE_API_ORG_EXECUTING=1000 \
        "$BIN" serve --bind "127.0.0.1:$port" --db-pool-size "$pool" >"$log" 2>&1 &
    server=$!
    await_ready "$server" "http://127.0.0.1:$port" "$log"
}

# wrk_p50 NAME URL TOKEN: a 2 s warm-up, then wrk -t2 -c$CONNECTIONS -d$DURATION s with a bearer
# token; any non-2xx answer stops the script. Sets WRK_P50 (ms) and WRK_RPS; keeps wrk's output
# in $WORK/wrk-NAME.txt.
wrk_p50() {
    local name=$1 url=$2 token=$3 out="$WORK/wrk-$1.txt"
    wrk -t2 -c"$CONNECTIONS" -d2s -H "Authorization: Bearer $token" "$url" >/dev/null
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $token" "$url" >"$out"
    ! grep -q "Non-2xx" "$out" || die "errors under load: $out"
    WRK_P50=$(to_ms "$(awk '$1 == "50%" { print $2; exit }' "$out")")
    WRK_RPS=$(awk '/Requests\/sec/ { print $2 }' "$out")
}

# reseller_files DB EVENTS ACCOUNTS ACCOUNTS_CSV EVENTS_CSV: the accounts of one reseller
# organization ("acc-1"…, org "reseller") and EVENTS deterministic events over them, 24 months,
# 15 products, exact decimal prices and quantities, as the CSV files `usage-api accounts import`
# and `usage-api ingest` read (psql's COPY writes them; DB is only used to run it).
reseller_files() {
    local db=$1 events=$2 accounts=$3 accounts_csv=$4 events_csv=$5
    psql "$db" -qc "\copy (SELECT 'acc-' || a, 'reseller', 'Account ' || a FROM generate_series(1, $accounts) a) TO '$accounts_csv' CSV"
    sed -i '1i id,organization_id,name' "$accounts_csv"
    psql "$db" -qc "\copy (
      SELECT 'ev-' || g, 'acc-' || (1 + g % $accounts), 'P-' || (g % 15), 'AP-' || (g % 3),
             (ARRAY['CALL','MESSAGE','NUMBER','API_REQUEST','OTHER'])[1 + g % 5], 'Usage ' || (g % 15),
             (ARRAY['MINUTES','SEGMENTS','NUMBERS','REQUESTS','GB'])[1 + g % 5],
             (ARRAY['INBOUND','OUTBOUND',NULL])[1 + g % 3], NULL, 'main',
             to_char(timestamptz '2023-01-01 00:00:00+00' + (g % 24) * interval '1 month'
                     + (g % 2400000) * interval '1 second', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
             ((g * 7919) % 100000) / 1000.0, (ARRAY[0.0085, 0.014, 1, 0.0001, 19.99])[1 + g % 5], 'USD'
      FROM generate_series(1::bigint, $events) g
    ) TO '$events_csv' CSV"
    sed -i '1i event_id,account_id,product_id,aggr_product_id,type,description,unit,direction,resolution,wallet_name,occurred_at,quantity,unit_price,currency' "$events_csv"
}
