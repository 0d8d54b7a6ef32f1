#!/usr/bin/env bash
# Soak test of samplerd (tests/soak/soak_driver.cc): 64 concurrent Sample streams x 2,000 steps of workload S
# (vocab 32000, attention 8 x 1024) with random cancellations, against a samplerd it starts from
# ${BUILD_DIR:-build}. Passes when no unexpected error occurred, every answer came in order, and the server's
# VmRSS stayed within 10 % of its level after the warm-up.
#
#   tests/soak/run.sh            the full run (about 128,000 steps; figures in docs/reliability.md)
#   tests/soak/run.sh --ci       CI: the same load, each stream stopped after 100 s (warm-up 25 s): ~2 minutes
#   tests/soak/run.sh --steps 20000 --warmup_seconds 120     any soak_driver flag after the mode
#
# A JSON summary (with the RSS samples) goes to $BUILD_DIR/soak.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD_DIR:-build}
if [ ! -x "$build/tests/soak/soak_driver" ] || [ ! -x "$build/service/samplerd" ]; then
  cmake --build "$build" -j "${JOBS:-2}" --target soak_driver samplerd
fi
args=(--streams 64 --steps 2000 --warmup_seconds 60)
if [ "${1:-}" = "--ci" ]; then
  shift
  args=(--streams 64 --steps 2000 --max_seconds 100 --warmup_seconds 25)
fi
exec "$build/tests/soak/soak_driver" "${args[@]}" --json "$build/soak.json" "$@"
