#!/usr/bin/env bash
# The reliability suite (issue 7, docs/reliability.md), as CI runs it after the main tests (scripts/test.sh):
#   1. sanitizers: every ctest test but the peak-RSS bounds, built with clang's ASan + UBSan in build-asan, then
#      samplerd and the service tests with TSan in build-tsan (scripts/test-sanitize.sh, scripts/test-tsan.sh);
#   2. fuzzing: each libFuzzer target for ${FUZZ_SECONDS:-60} s (scripts/fuzz.sh), reusing build-asan;
#   3. soak, CI mode: 64 streams of workload S for ~100 s against build/'s samplerd (tests/soak/run.sh --ci);
#   4. replay: record against one samplerd process, replay against others (RecordReplayTest in build/).
# Every phase runs even when an earlier one failed; the exit code is 1 when any failed (scripts/lib/phases.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
export BUILD_DIR=${BUILD_DIR:-build}

source scripts/lib/phases.sh
phases_begin reliability

# Phases 3 and 4 use the main Release build (scripts/test.sh has built it; build it here when run alone).
if [ ! -x "$BUILD_DIR/service/samplerd" ] || [ ! -x "$BUILD_DIR/tests/soak/soak_driver" ]; then
  scripts/build.sh
fi

# One clang build with ASan + UBSan + fuzzing instrumentation serves phases 1 and 2.
export ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
phase sanitizers scripts/test-sanitize.sh
phase fuzz env FUZZ_BUILD_DIR="$ASAN_BUILD_DIR" scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
phase soak tests/soak/run.sh --ci
phase replay ctest --test-dir "$BUILD_DIR" -R '^RecordReplayTest\.' --output-on-failure --timeout 300

phases_end
