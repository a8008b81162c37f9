#!/usr/bin/env bash
# Builds the package and its tests with AddressSanitizer (debug, into .build-asan so the
# normal .build is untouched) and runs the suites that read untrusted bytes: crafted and
# truncated files, wire messages. Any test failure or sanitizer report exits non-zero.
#
#   scripts/test-asan.sh            # all suites below
#   scripts/test-asan.sh WireTests  # only the suites named
#
# The system libraries (OpenBLAS, libzmq) are not instrumented; only our code is. Leak
# detection is off: the Swift runtime keeps caches alive until exit, which LeakSanitizer
# reports as leaks. Override with ASAN_OPTIONS.
set -euo pipefail

# Suites run under ASan (Swift Testing suite names, matched by --filter).
SUITES=(
    HostileSafetensorsTests
    HostileGGUFTests
    HostileTokenizerTests
    ConfigValidationTests
    StrictWeightTests
    GGUFMetadataValidationTests
    TokenIDValidationTests
    WireTests
    HostileTaskTests
    BadResultTests
    BF16ConversionTests
    BF16MatmulTests
    BF16PassTests
    DistillationGoldenTests
    ReconstructionTests
    GGUFExportTests
    HostilePeerTests
    OverflowingResultTests
    OutlierShardTests
    CheckpointTests
)

cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then SUITES=("$@"); fi
filter=$(IFS='|'; echo "${SUITES[*]}")
flags=(--scratch-path .build-asan -c debug --sanitize=address)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=1:strict_string_checks=1}"
# ASan prints the stack itself; the Swift runtime's backtracer, started on the abort, outlives
# the test process holding its output pipe open, and `swift test` then never returns.
export SWIFT_BACKTRACE="${SWIFT_BACKTRACE:-enable=no}"

start=$SECONDS
echo "== building with AddressSanitizer into .build-asan"
swift build --build-tests "${flags[@]}"
echo "== running: ${SUITES[*]}"
mkdir -p .build-asan
log=.build-asan/test-asan.log
set +e
swift test --skip-build "${flags[@]}" --filter "$filter" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "== summary"
grep -E "^(✔|✘) Test run with|Executed [1-9][0-9]* tests|ERROR: AddressSanitizer|SUMMARY: AddressSanitizer" "$log" || true
if grep -q "ERROR: AddressSanitizer" "$log"; then status=${status/#0/1}; fi
# A filter that matched nothing is a failure, not a pass.
if ! grep -qE "Test run with [1-9][0-9]* tests? in" "$log"; then echo "no test ran"; status=${status/#0/1}; fi
echo "== $(basename "$0"): exit $status after $((SECONDS - start)) s"
exit "$status"
