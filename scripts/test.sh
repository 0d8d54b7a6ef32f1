#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds, runs every ctest test (unit,
# golden, integration against a real samplerd process), then the client suites when present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
if [ -x scripts/test-clients.sh ]; then
  SAMPLERD_BIN="$PWD/build/service/samplerd" scripts/test-clients.sh
fi
