#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers (fuzz/, cargo-fuzz + libFuzzer): builds every
# target, then runs each for SECONDS (default 60). Exits non-zero if any target finds
# a crash, a failed property or a slow input, and says where its reproducer is.
#
#   scripts/fuzz.sh [SECONDS]     build, then run every target for SECONDS each
#   scripts/fuzz.sh --list        the targets
#
# Environment: FUZZ_TARGETS="params xml" runs only those; FUZZ_TIMEOUT (seconds, 10)
# is how long one input may take before it counts as a failure; FUZZ_JOBS (1) how
# many targets run at once; FUZZ_SANITIZER (none) is cargo-fuzz's --sanitizer.
#
# No sanitizer by default: the code under test is safe Rust, where bounds checks,
# overflow checks and debug assertions (all on) catch a parser's errors;
# AddressSanitizer would add checks of the unsafe code inside dependencies only, and
# without it the targets run 2 to 6 times as many inputs and build with ~40% less CPU.
# FUZZ_SANITIZER=address builds (once, into its own directory) and runs with it.
#
# Installs cargo-fuzz when it is missing. Uses the nightly toolchain when there is
# one, else stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly-only flags).
# Each run starts from fuzz/corpus/<target>/: the committed seeds (seed-*) and what
# earlier local runs found there (ignored by git), with fuzz/dicts/<target>.dict if
# there is one. Logs go to fuzz/target/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

targets() {
    awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 }
         bin && /^name = / { gsub(/"/, "", $3); print $3 }' fuzz/Cargo.toml
}

if [[ "${1:-}" == "--list" ]]; then
    targets
    exit 0
fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "usage: scripts/fuzz.sh [SECONDS] | --list" >&2
    exit 2
fi
timeout="${FUZZ_TIMEOUT:-10}"
jobs="${FUZZ_JOBS:-1}"
selected="${FUZZ_TARGETS:-$(targets | tr '\n' ' ')}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# The toolchain: nightly if installed, else stable told to accept nightly flags.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    echo "== no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

sanitizer="${FUZZ_SANITIZER:-none}"
build=(--sanitizer "$sanitizer" --codegen-units 16 --target-dir "fuzz/target/$sanitizer")

echo "== building the fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
"${fuzz[@]}" build "${build[@]}"
echo "   built in $((SECONDS - start)) s"

mkdir -p fuzz/target/logs
failed=()

run_one() {
    local t="$1" log="fuzz/target/logs/$1.log" dict=()
    if [[ -f "fuzz/dicts/$t.dict" ]]; then
        dict=(-dict="$PWD/fuzz/dicts/$t.dict")
    fi
    "${fuzz[@]}" run "${build[@]}" "$t" -- \
        -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 "${dict[@]}" \
        >"$log" 2>&1
}

report() {
    local t="$1" status="$2" log="fuzz/target/logs/$1.log"
    local runs cov
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    if [[ "$status" == 0 ]]; then
        printf '   %-20s ok   %s runs in %s s, %s\n' "$t" "${runs:-?}" "$seconds" "${cov:-cov: ?}"
        return 0
    fi
    printf '   %-20s FAILED (exit %s)\n' "$t" "$status"
    { grep -A3 "panicked at" "$log" | grep -v "^stack backtrace" | head -4
      grep -E "ERROR: libFuzzer" "$log" | head -1; } | cut -c1-300 | sed 's/^/      /'
    local unit
    unit=$(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log" | tail -1)
    if [[ -n "$unit" ]]; then
        echo "      reproducer: $unit"
        echo "      replay:     ${fuzz[*]} run ${build[*]} $t $unit"
        echo "      minimize:   ${fuzz[*]} tmin ${build[*]} $t $unit"
    fi
    echo "      full log:   $log"
    return 1
}

echo "== fuzzing each target for $seconds s"
pending=()
for t in $selected; do
    if ! targets | grep -qx "$t"; then
        echo "unknown target $t (scripts/fuzz.sh --list)" >&2
        exit 2
    fi
    run_one "$t" &
    pending+=("$t:$!")
    if ((${#pending[@]} >= jobs)); then
        entry="${pending[0]}"
        pending=("${pending[@]:1}")
        status=0
        wait "${entry#*:}" || status=$?
        report "${entry%%:*}" "$status" || failed+=("${entry%%:*}")
    fi
done
for entry in "${pending[@]}"; do
    status=0
    wait "${entry#*:}" || status=$?
    report "${entry%%:*}" "$status" || failed+=("${entry%%:*}")
done

if ((${#failed[@]})); then
    echo "== fuzzing FAILED: ${failed[*]}"
    exit 1
fi
echo "== fuzzing: no failures in $((SECONDS - start)) s"
