#!/usr/bin/env bash
# The unit and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer: configures
# ${ASAN_BUILD_DIR:-build-asan} with -DSAMPLERD_SANITIZE=ON (Debian's uninstrumented gRPC, protobuf and absl are
# fine: ASan intercepts their allocations), builds every test and the samplerd / samplerctl they start, and runs
# ctest there. Any ASan report, UB (-fno-sanitize-recover) or leak at exit fails the test that hit it. Then
# samplerd and the service tests under ThreadSanitizer, in their own build (scripts/test-tsan.sh).
#
#   scripts/test-sanitize.sh                  clang-14 (its UBSan also checks float-to-int conversions), and
#                                             -DSAMPLERD_FUZZ=ON, so scripts/fuzz.sh can reuse the build:
#                                             FUZZ_BUILD_DIR=build-asan scripts/fuzz.sh 60
#   SANITIZE_CXX=g++ scripts/test-sanitize.sh gcc instead (then no fuzz targets)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ASAN_BUILD_DIR:-build-asan}
cxx=${SANITIZE_CXX:-clang++-14}
flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAMPLERD_SANITIZE=ON -DSAMPLERD_BUILD_BENCH=OFF)
if [[ "$cxx" == clang* ]]; then
  scripts/install-deps.sh clang-14 libclang-rt-14-dev
  export CC=clang-14 CXX=clang++-14
  flags+=(-DSAMPLERD_FUZZ=ON)
else
  export CC=gcc CXX="$cxx"
fi
cmake -S . -B "$build" -G Ninja "${flags[@]}" > /dev/null
cmake --build "$build" -j "${JOBS:-$(nproc)}"
# Inherited by every samplerd the integration tests start.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/sanitize/lsan.supp:print_suppressions=0}
# ShmControlSteps.AServerOutOfDescriptors... runs samplerd with every descriptor taken; UBSan's type checks then
# cannot open the pipe they probe memory with and abort on a false "invalid vptr". It checks CPU use, not memory,
# and runs in the main suite.
ctest --test-dir "$build" --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 900 \
  -E '^ShmControlSteps\.AServerOutOfDescriptors'
# Data races in the reactors, interceptors and workers: samplerd and the service tests built with TSan.
scripts/test-tsan.sh
