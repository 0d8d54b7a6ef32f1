#!/usr/bin/env bash
# Soak test of samplerd (tests/soak/soak_driver.cc): 64 concurrent Sample streams of workload S
# (vocab 32000, attention 8 x 1024) with random cancellations, against a samplerd it starts from
# ${BUILD_DIR:-build}. Passes when no unexpected error occurred, every answer came in order, and the server's
# VmRSS stayed within 10 % of its level after the warm-up.
#
#   tests/soak/run.sh            the long run: 64 x 20,000 steps, warm-up 60 s (~8 minutes on 2 cores)
#   tests/soak/run.sh --ci       CI: 64 x 4,000 steps (twice the issue's 64 x 2,000), each stream stopped after
#                                110 s at the latest, warm-up 20 s: about 1.5 minutes
#   tests/soak/run.sh --steps 200000 --warmup_seconds 120    any soak_driver flag after the mode (the last wins)
#
# A JSON summary (with the RSS samples) goes to $BUILD_DIR/soak.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD_DIR:-build}
if [ ! -x "$build/tests/soak/soak_driver" ] || [ ! -x "$build/service/samplerd" ]; then
  cmake --build "$build" -j "${JOBS:-2}" --target soak_driver samplerd
fi
args=(--streams 64 --steps 20000 --warmup_seconds 60)
if [ "${1:-}" = "--ci" ]; then
  shift
  args=(--streams 64 --steps 4000 --max_seconds 110 --warmup_seconds 20)
fi
exec "$build/tests/soak/soak_driver" "${args[@]}" --json "$build/soak.json" "$@"
