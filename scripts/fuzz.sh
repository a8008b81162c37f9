#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder of untrusted bytes (libFuzzer + AddressSanitizer).
#   scripts/fuzz.sh TARGET SECONDS     one target (wire, delta, gguf, safetensors, tokenizer,
#                                      config, jsonl, checkpoint, recipe)
#   scripts/fuzz.sh all SECONDS        every target, two at a time (the CI smoke: all 30)
#   scripts/fuzz.sh --seeds            rewrite the seed corpora Fuzz/seeds/ from ptl's encoders
# The fuzzer's binary is built in its own scratch directory (.build-fuzz; PTL_FUZZ=1 adds it to
# the package). The growing corpus and any finding go to out/fuzz/TARGET/ (not committed). A
# finding is a crash, a sanitizer report, an input that takes over 10 s, or one that makes the
# process use over 2 GB (or ask for 1 GB at once): fix it, then keep its input as
# Fuzz/regressions/TARGET/rejected-NAME (or accepted-NAME), which swift test replays.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(wire delta gguf safetensors tokenizer config jsonl checkpoint recipe)
BIN=.build-fuzz/debug/ptl-fuzz

build() {
    echo "building the fuzzer (.build-fuzz)…" >&2
    # SwiftPM passes -sanitize=fuzzer and -sanitize=address to swiftc as two flags, and the
    # last one wins (in set order): the Swift modules got ASan or coverage, not both. The
    # combined flag, passed last, gives both (its --sanitize flags still link libFuzzer and
    # instrument the C targets).
    PTL_FUZZ=1 swift build --scratch-path .build-fuzz --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer,address \
        --product ptl-fuzz 2>&1 | grep -E "error|warning: var|Build" >&2 || true
    [[ -x $BIN ]] || { echo "fuzz.sh: the build failed" >&2; exit 1; }
}

fuzz_one() {   # TARGET SECONDS: prints one summary line; exit 1 on a finding
    local t=$1 secs=$2 dir=out/fuzz/$1
    mkdir -p "$dir/corpus" "$dir/artifacts"
    local log=$dir/last.log
    local status=0
    PTL_FUZZ_TARGET=$t SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 "$BIN" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus" "Fuzz/seeds/$t" >"$log" 2>&1 || status=$?
    local execs cov ft units
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    units=$(ls "$dir/corpus" | wc -l)
    if [[ $status -ne 0 ]]; then
        echo "$t: FINDING after $secs s (exit $status; $execs runs) — see $log and $dir/artifacts/:"
        grep -E "ERROR:|Fatal error|SUMMARY|panic|Test unit written" "$log" | head -8 | sed 's/^/    /'
        return 1
    fi
    printf '%-12s %6s s  %10s runs  %8s runs/s  coverage %5s edges, %6s features  corpus %5s inputs\n' \
        "$t" "$secs" "$execs" "$(( execs / (secs > 0 ? secs : 1) ))" "$cov" "$ft" "$units"
}

regressions() {   # the committed findings, once each, under the fuzzer's sanitizers
    local failed=0
    for t in "${TARGETS[@]}"; do
        local files=(Fuzz/regressions/$t/*)
        [[ -e ${files[0]} ]] || continue
        if ! PTL_FUZZ_TARGET=$t SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 "$BIN" -timeout=10 -rss_limit_mb=2048 \
                -malloc_limit_mb=1024 "${files[@]}" >out/fuzz/regressions-$t.log 2>&1; then
            echo "$t: a fixed finding fails again — out/fuzz/regressions-$t.log"; failed=1
        fi
    done
    return $failed
}

case "${1:-}" in
    --seeds)
        build
        rm -rf Fuzz/seeds
        PTL_FUZZ_WRITE_SEEDS=Fuzz/seeds "$BIN"
        find Fuzz/seeds -type f | sort ;;
    all)
        secs=${2:?"usage: scripts/fuzz.sh all SECONDS"}
        build
        mkdir -p out/fuzz
        regressions
        export -f fuzz_one; export BIN
        printf '%s\n' "${TARGETS[@]}" | xargs -P 2 -I{} bash -c "fuzz_one {} $secs" ;;
    ""|-h|--help)
        sed -n 2,12p "$0" | sed 's/^# \{0,1\}//' ;;
    *)
        t=$1 secs=${2:?"usage: scripts/fuzz.sh TARGET SECONDS"}
        [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (${TARGETS[*]})" >&2; exit 2; }
        build
        mkdir -p out/fuzz
        fuzz_one "$t" "$secs" ;;
esac
