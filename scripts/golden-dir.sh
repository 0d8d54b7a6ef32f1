#!/usr/bin/env bash
# Prints the golden vectors' directory: $SAMPLERD_GOLDEN_DIR when set, else the CMake cache variable
# SAMPLERD_GOLDEN_DIR of the build directory BUILD_DIR (default build), else the repository's tests/golden.
# Scripts export the result as SAMPLERD_GOLDEN_DIR, which the client suites and the conformance drivers read.
#
#   export SAMPLERD_GOLDEN_DIR="$(scripts/golden-dir.sh build)"
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-${BUILD_DIR:-build}}"
[[ "$build" = /* ]] || build="$root/$build"
dir="${SAMPLERD_GOLDEN_DIR:-}"
if [[ -z "$dir" && -f "$build/CMakeCache.txt" ]]; then
  dir="$(sed -n 's/^SAMPLERD_GOLDEN_DIR:PATH=//p' "$build/CMakeCache.txt")"
fi
echo "${dir:-$root/tests/golden}"
