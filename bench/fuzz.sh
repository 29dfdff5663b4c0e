#!/usr/bin/env bash
# Fuzzing: every `cargo fuzz` target of fuzz/ (the filter parser, `order_by`, position tokens,
# NDJSON and CSV event lines, the usage records' query parameters), each for a bounded number
# of executions and time, one libFuzzer process with one worker at a time.
#
#   bench/fuzz.sh                                  # RUNS=2000000 MAX_TIME=200 per target
#   TARGETS="filter cursor" MAX_TIME=60 bench/fuzz.sh
#   UPDATE_CORPUS=1 bench/fuzz.sh                  # then merge what raised coverage into fuzz/corpus
#
# Installs cargo-fuzz (`cargo install --locked cargo-fuzz`) when missing, and runs it on the
# stable toolchain with RUSTC_BOOTSTRAP=1 (DESIGN §6). Builds with CARGO_BUILD_JOBS=1 unless
# set; SANITIZER=none by default (the parsers are safe Rust; `address` is slower), debug
# assertions and overflow checks on. Each target starts from its committed corpus
# (fuzz/corpus/<target>/, read only) and writes what it finds to bench/out/fuzz/<target>/;
# crashes land in fuzz/artifacts/<target>/. A plain `cargo test` replays fuzz/corpus
# (tests/fuzz_corpus.rs) without any of this.
#
# Prints the executions of each target and in all; exits non-zero when a target crashed (a
# panic, a timeout of TIMEOUT s on one input, or more than RSS_MB of memory). Writes
# bench/results/fuzz-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh

ALL_TARGETS="filter order_by cursor events_ndjson events_csv records_params"
TARGETS=${TARGETS:-$ALL_TARGETS}
RUNS=${RUNS:-2000000}
MAX_TIME=${MAX_TIME:-200}
MAX_LEN=${MAX_LEN:-4096}
TIMEOUT=${TIMEOUT:-10}
RSS_MB=${RSS_MB:-2048}
SANITIZER=${SANITIZER:-none}
UPDATE_CORPUS=${UPDATE_CORPUS:-0}
WORK=$ROOT/bench/out/fuzz
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

if ! cargo fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz (cargo install --locked cargo-fuzz)"
    cargo install --locked cargo-fuzz || die "could not install cargo-fuzz"
fi
say "$(cargo fuzz --version), $(rustc --version)"

BUILD=(-O -a -s "$SANITIZER")
step "building the targets (cargo fuzz build ${BUILD[*]})"
(cd fuzz && cargo fuzz build "${BUILD[@]}") || die "the fuzz targets do not build"
# The binaries are run directly, not through `cargo fuzz run`, which would rebuild them first
# whenever a file of the tree changed meanwhile.
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BINS=$ROOT/fuzz/target/$TRIPLE/release

mkdir -p "$WORK" bench/results
declare -A EXECS SECONDS_OF RESULT
total=0
crashed=()
started=$(now)
for target in $TARGETS; do
    [[ " $ALL_TARGETS " == *" $target "* ]] || die "no fuzz target '$target' (one of: $ALL_TARGETS)"
    step "$target: at most $RUNS executions or $MAX_TIME s"
    mkdir -p "$WORK/$target" "fuzz/artifacts/$target"
    log=$WORK/$target.log
    t0=$(now)
    status=0
    "$BINS/$target" "$WORK/$target" "fuzz/corpus/$target" -artifact_prefix="fuzz/artifacts/$target/" \
        -runs="$RUNS" -max_total_time="$MAX_TIME" -max_len="$MAX_LEN" -timeout="$TIMEOUT" \
        -rss_limit_mb="$RSS_MB" -print_final_stats=1 >"$log" 2>&1 \
        || status=$?
    seconds=$(calc "$(now) - $t0" %.0f)
    execs=$(awk -F: '/stat::number_of_executed_units/ { n = $2 + 0 } END { print n + 0 }' "$log")
    if ((execs == 0)); then
        # A crash ends libFuzzer before its final stats: take its last status line.
        execs=$(grep -Eo '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
        execs=${execs:-0}
    fi
    if ((status != 0)); then
        crashed+=("$target")
        RESULT[$target]="CRASH (exit $status; see $log and fuzz/artifacts/$target/)"
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to' "$log" | head -8 || true
    else
        RESULT[$target]="no crash"
    fi
    EXECS[$target]=$execs
    SECONDS_OF[$target]=$seconds
    total=$((total + execs))
    say "$target: $execs executions in $seconds s ($(calc "$execs / ($seconds > 0 ? $seconds : 1)" %.0f)/s), ${RESULT[$target]}"
done
elapsed=$(calc "$(now) - $started" %.0f)

if [[ $UPDATE_CORPUS == 1 ]]; then
    for target in $TARGETS; do
        step "$target: merging inputs that raise coverage into fuzz/corpus/$target"
        before=$(find "fuzz/corpus/$target" -type f | wc -l)
        "$BINS/$target" "fuzz/corpus/$target" "$WORK/$target" -merge=1 -max_len="$MAX_LEN" \
            -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" >"$WORK/$target.merge.log" 2>&1 \
            || die "$target: the merge failed (see $WORK/$target.merge.log)"
        say "$target: $before -> $(find "fuzz/corpus/$target" -type f | wc -l) inputs"
    done
fi

results=bench/results/fuzz-$(date +%F).md
{
    echo "# Fuzzing, $(date -u +%FT%TZ)"
    echo
    echo "\`RUNS=$RUNS MAX_TIME=$MAX_TIME bench/fuzz.sh\` ($(cargo fuzz --version), $(rustc --version)," \
        "sanitizer $SANITIZER, debug assertions on, one worker; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo
    echo "| target | executions | seconds | executions/s | committed corpus | result |"
    echo "|---|---:|---:|---:|---:|---|"
    for target in $TARGETS; do
        s=${SECONDS_OF[$target]}
        echo "| \`$target\` | ${EXECS[$target]} | $s | $(calc "${EXECS[$target]} / ($s > 0 ? $s : 1)" %.0f) |" \
            "$(find "fuzz/corpus/$target" -type f | wc -l) | ${RESULT[$target]} |"
    done
    echo "| all | $total | $elapsed | $(calc "$total / ($elapsed > 0 ? $elapsed : 1)" %.0f) | | ${#crashed[@]} crashed |"
} >"$results"

step "total"
cat "$results"
say "written to $results"
if ((${#crashed[@]})); then
    die "crashed: ${crashed[*]}"
fi
