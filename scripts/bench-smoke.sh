#!/usr/bin/env bash
# CI smoke run of the benchmarks (issue 3): every benchmark binary runs briefly and `samplerctl bench` runs once
# against a live samplerd (computed and --no-compute) and once in process, and their JSON carries the keys
# docs/benchmarks.md reads. Nothing here asserts a speed: CI machines are shared and noisy; the figures come from
# the commands in docs/benchmarks.md.
#
#   scripts/bench-smoke.sh            # uses ${BUILD_DIR:-build}; builds only llama.cpp's side (build-llama)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
SAMPLERD=${SAMPLERD_BIN:-$BUILD_DIR/service/samplerd}
SAMPLERCTL=$BUILD_DIR/clients/cpp/samplerctl
for binary in "$BUILD_DIR/bench/core_benchmark" "$BUILD_DIR/bench/service_benchmark" "$SAMPLERD" "$SAMPLERCTL"; do
  [ -x "$binary" ] || { echo "bench-smoke: $binary is missing (build first: scripts/build.sh)" >&2; exit 1; }
done

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null || true; wait "$server_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# check_json FILE KEY...: FILE holds JSON with every KEY (google-benchmark output: every benchmark named).
check_json() {
  /usr/bin/python3 - "$@" << 'PY'
import json, sys
path, keys = sys.argv[1], sys.argv[2:]
data = json.load(open(path))
if "benchmarks" in data:
    names = {b["name"] for b in data["benchmarks"]}
    missing = [k for k in keys if not any(n == k or n.startswith(k + "/") for n in names)]
else:
    missing = [k for k in keys if k not in data]
if missing:
    sys.exit(f"bench-smoke: {path}: missing {missing}")
PY
}

echo "== core_benchmark (tiny --benchmark_min_time)"
"$BUILD_DIR/bench/core_benchmark" --benchmark_min_time=0.01 --benchmark_format=json > "$work/core.json"
check_json "$work/core.json" BM_Step/0 BM_Step/1 BM_Step/2 BM_StepBf16/0 BM_StepBf16/1 BM_StepBf16/2

echo "== service_benchmark (tiny --benchmark_min_time)"
"$BUILD_DIR/bench/service_benchmark" --benchmark_min_time=0.01 --benchmark_format=json > "$work/service.json"
check_json "$work/service.json" BM_Request BM_PoolHop BM_ParseRequest BM_SerializeRequest

echo "== samplerctl bench against a live samplerd"
"$SAMPLERD" --listen 127.0.0.1:0 --allow_no_compute --metrics_listen "" --log_level warn > "$work/samplerd.out" 2>&1 &
server_pid=$!
target=""
for _ in $(seq 1 200); do
  target=$(sed -n 's/^samplerd listening on \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$work/samplerd.out" | head -n 1)
  [ -n "$target" ] && break
  kill -0 "$server_pid" 2> /dev/null || { cat "$work/samplerd.out" >&2; exit 1; }
  sleep 0.1
done
[ -n "$target" ] || { echo "bench-smoke: samplerd did not start" >&2; cat "$work/samplerd.out" >&2; exit 1; }

keys=(workload dtype streams steps steps_per_sec p50_us p99_us core_us_p50)
"$SAMPLERCTL" --target "$target" bench --workload S --streams 2 --steps 40 --json > "$work/grpc.json"
check_json "$work/grpc.json" "${keys[@]}"
"$SAMPLERCTL" --target "$target" bench --workload S --steps 40 --no-compute --json > "$work/nocompute.json"
check_json "$work/nocompute.json" "${keys[@]}"
"$SAMPLERCTL" bench --in-process --workload S --dtype bf16 --steps 20 --json > "$work/inprocess.json"
check_json "$work/inprocess.json" "${keys[@]}"
cat "$work/grpc.json" "$work/nocompute.json" "$work/inprocess.json"

# Issue 21's reference: llama.cpp's chain beside the step (fetched from the npm registry and built in
# build-llama, a few minutes); the script fails unless both sides of every workload ran.
echo "== scripts/bench-llama-chain.sh (one round, tiny min time)"
MIN_TIME=0.01 scripts/bench-llama-chain.sh 1
echo "bench-smoke: ok"
