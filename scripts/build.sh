#!/usr/bin/env bash
# Configures and builds samplerd (Release, portable) into ${BUILD_DIR:-build}. Extra arguments go to CMake;
# the tests and benchmarks are on unless an argument turns them off. BUILD_TARGETS="a b" builds only those
# targets (scripts/start.sh: samplerd samplerctl).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMPLERD_BUILD_TESTS=ON -DSAMPLERD_BUILD_BENCH=ON \
  "$@" > /dev/null
read -r -a targets <<< "${BUILD_TARGETS:-}"
cmake --build "$BUILD_DIR" -j "$(nproc)" ${targets[@]:+--target "${targets[@]}"}
