#!/usr/bin/env bash
# Fuzzes the config loader, the certificate identity parser, the bearer-token check, the
# HTTP/2 frame follower, the unix-socket header-block rewriter and the textfile collector's
# parser.
#
#   scripts/fuzz.sh            # short run: 20 s per target (the test script's)
#   scripts/fuzz.sh 3600       # long run: an hour per target
#   FUZZ_TARGETS="identity" scripts/fuzz.sh 60
#   FUZZ_KEEP_SCRATCH=1 scripts/fuzz.sh 3600   # resume from the last run's finds
#
# First the inputs in fuzz/regressions/<target>/ (ones that once failed) are replayed; then
# each target starts from its committed corpus (fuzz/corpus/<target>/, read only here);
# new interesting inputs go to fuzz/scratch/<target>/ (git-ignored, emptied at the start of
# each run unless FUZZ_KEEP_SCRATCH=1; merge them into the corpus as the README says). A crash, a failed
# property assertion, a leak, a timeout or running out of memory fails the script: it
# prints the artifact path, its base64, and the command that reproduces it.
#
# Needs the nightly toolchain (libFuzzer's sanitizer flags); installs cargo-fuzz if missing.
# The fuzz crate is its own workspace with its own target dir (fuzz/target), so it never
# waits on the main crate's build lock.
set -euo pipefail

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target]" >&2
    exit 64
fi
targets=(${FUZZ_TARGETS:-config_parse identity auth_bearer frames authority textfile})

cd "$(dirname "$0")/.."

# 1. Tools: nightly and cargo-fuzz, each only when missing.
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi

# 2. One build of every target: release, debug assertions (so integer overflow panics),
#    AddressSanitizer. `run` below reuses it.
build=(cargo +nightly fuzz build --debug-assertions)
start=$(date +%s)
"${build[@]}"
echo "fuzz: build took $(( $(date +%s) - start )) s"

# 3. Replay the inputs that once failed (fuzz/regressions/<target>/): each must pass now.
host=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin="fuzz/target/$host/release"
mkdir -p fuzz/scratch
failed=0
for target in "${targets[@]}"; do
    for input in fuzz/regressions/"$target"/*; do
        [ -f "$input" ] || continue
        if ! "$bin/$target" -rss_limit_mb=2048 -timeout=10 "$input" >"fuzz/scratch/replay.log" 2>&1; then
            failed=1
            echo "fuzz: $target: regression $input still fails:" >&2
            grep -m1 -A1 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)|out-of-memory" fuzz/scratch/replay.log >&2 || true
        fi
    done
done

dictionary() {
    case "$1" in
        config_parse) echo "-dict=fuzz/dict/config.dict" ;;
        auth_bearer) echo "-dict=fuzz/dict/auth.dict" ;;
    esac
}

# 4. Run each target; a failure does not stop the others, so one run shows them all.
summary=()
for target in "${targets[@]}"; do
    scratch="fuzz/scratch/$target"
    # A fresh scratch each run, so a run starts from the committed corpus and does not
    # spend its time reloading everything earlier runs found; FUZZ_KEEP_SCRATCH=1 resumes.
    [ "${FUZZ_KEEP_SCRATCH:-0}" = 1 ] || rm -rf "$scratch"
    mkdir -p "$scratch" "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="fuzz/scratch/$target.log"
    started=$(date +%s)
    # shellcheck disable=SC2046 # the dictionary is one word or none
    if cargo +nightly fuzz run --debug-assertions "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        $(dictionary "$target") >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed=1
    fi
    took=$(( $(date +%s) - started ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    [ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)
    # A target that fails before its first status line has no corpus figure (`|| true`, or
    # the pipeline's failure would end the script before it says what failed).
    corpus=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2 || true)
    line=$(printf '%-14s %5ss %10s execs  corpus %-11s %s' \
        "$target" "$took" "${execs:-?}" "${corpus:-?}" "$result")
    summary+=("$line")
    echo "fuzz: $line"
    if [ "$result" = FAILED ]; then
        # The panic or sanitizer report, then what reproduces it.
        grep -m1 -A8 -E "panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)" "$log" >&2 || tail -40 "$log" >&2
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        if [ -n "$artifact" ] && [ -f "$artifact" ]; then
            echo "fuzz: $target: artifact $artifact" >&2
            echo "fuzz: $target: input (base64): $(base64 -w0 "$artifact")" >&2
            echo "fuzz: $target: reproduce: cargo +nightly fuzz run --debug-assertions $target $artifact" >&2
        fi
        echo "fuzz: $target: full log in $log" >&2
    fi
done

echo "fuzz: summary (target, seconds run, executions, corpus files/bytes, result)"
printf '  %s\n' "${summary[@]}"
exit "$failed"
