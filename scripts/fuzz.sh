#!/usr/bin/env bash
# Fuzzes samplerd: builds the libFuzzer targets of tests/fuzz with clang-14 (ASan + UBSan + coverage) into
# ${FUZZ_BUILD_DIR:-build-fuzz}, cuts the seed corpora from the golden vectors
# (scripts/golden-dir.sh: $SAMPLERD_GOLDEN_DIR, else the build's CMake setting, else tests/golden), and runs every target for SECONDS
# (default 60) each, one after the other (shm_control, a small surface, for half of that).
#
#   scripts/fuzz.sh [SECONDS]          e.g. scripts/fuzz.sh 600 for a longer session
#
# Targets (tests/fuzz/fuzz_targets.h): request_fuzzer (SampleRequest bytes -> the service's per-request path)
# kernels_fuzzer (float arrays of 0..1e6 elements -> the metric kernels) and shm_control_fuzzer (a control
# socket packet and its descriptors -> ShmControlServer::HandlePacket). Inputs that grow coverage are
# kept in build-fuzz/fuzz/corpus/<target> and reused by the next run. A crash or a broken invariant stops that
# target and leaves its input in build-fuzz/fuzz/crashes/<target>/; copy it into tests/fuzz/regressions/<target>/
# (fuzz_regression_test replays it) and fix the code. Exit code: 0 when no target crashed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=${JOBS:-2}

# clang and its runtimes (libFuzzer, ASan, UBSan) are needed only here, not by the main build.
scripts/install-deps.sh clang-14 libclang-rt-14-dev

echo "== fuzz: building $build (clang-14, -DSAMPLERD_FUZZ=ON)"
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSAMPLERD_FUZZ=ON -DSAMPLERD_BUILD_BENCH=OFF > /dev/null
cmake --build "$build" -j "$jobs" --target request_fuzzer kernels_fuzzer shm_control_fuzzer make_fuzz_seeds

work="$build/fuzz"
mkdir -p "$work"
"$build/tests/fuzz/make_fuzz_seeds" "$(scripts/golden-dir.sh "$build")" "$work/seeds"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for target in request kernels shm_control; do
  corpus="$work/corpus/$target"
  crashes="$work/crashes/$target"
  mkdir -p "$corpus" "$crashes"
  # request: seeds are up to ~70 KiB (a 4-step batch); kernels: a recipe of a few bytes describes 1e6 floats.
  max_len=131072
  [ "$target" = kernels ] && max_len=65536
  target_seconds=$seconds
  [ "$target" = shm_control ] && target_seconds=$(((seconds + 1) / 2))
  echo "== fuzz: ${target}_fuzzer for ${target_seconds} s"
  log="$work/$target.log"
  set +e
  "$build/tests/fuzz/${target}_fuzzer" -max_total_time="$target_seconds" -timeout=30 -rss_limit_mb=4096 \
    -max_len="$max_len" -print_final_stats=1 -artifact_prefix="$crashes/" \
    "$corpus" "$work/seeds/$target" "tests/fuzz/regressions/$target" > "$log" 2>&1
  rc=$?
  set -e
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|INFO: seed corpus)' "$log" || true
  if [ $rc -ne 0 ]; then
    echo "fuzz: ${target}_fuzzer FAILED (exit $rc); log $log, input(s):"
    ls -1 "$crashes"
    grep -m1 -E 'invariant broken|ERROR: AddressSanitizer|runtime error|ERROR: libFuzzer' "$log" || tail -20 "$log"
    failed+=("$target")
  else
    echo "fuzz: ${target}_fuzzer: no crash in ${target_seconds} s ($(ls "$corpus" | wc -l) inputs in its corpus)"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: crashes in: ${failed[*]}"
  exit 1
fi
echo "fuzz: every target ran ${seconds} s without a crash"
