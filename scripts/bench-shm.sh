#!/usr/bin/env bash
# The shared-memory plane against the bytes path, in one run (docs/benchmarks.md, issue 17): one samplerd on a
# unix socket with --shm_socket, and per round and workload, back to back: core alone in this process
# (--in-process), the bytes path, the tensors in shared memory with the steps on a Sample stream, and with the
# steps on the control socket. Prints each run, then per workload the medians over rounds of: steps/s of each
# shm mode over the bytes path's, and each mode's p50 over the same round's in-process core p50.
#
#   scripts/bench-shm.sh [ROUNDS] [CONFIG...]        CONFIG = "WORKLOAD DTYPE STEPS", default "L f32 1000"
#   scripts/bench-shm.sh 4 "L f32 1000" "B f32 640" "XL f32 400"
#
# One stream throughout. Uses ${BUILD_DIR:-build}/service/samplerd and clients/cpp/samplerctl; SERVER_ARGS adds
# server flags.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
shift || true
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=("L f32 1000")
build=${BUILD_DIR:-build}
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2> /dev/null; wait 2> /dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck disable=SC2086
"$build/service/samplerd" --listen "unix:$work/grpc.sock" --shm_socket "$work/shm.sock" --metrics_listen "" \
  --log_level warn ${SERVER_ARGS:-} > "$work/server.out" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  grep -q "^samplerd listening on" "$work/server.out" && break
  sleep 0.1
done
grep -q "^samplerd listening on" "$work/server.out" || { cat "$work/server.out" >&2; exit 1; }
echo "# samplerd ${SERVER_ARGS:-} on unix:$work/grpc.sock + $work/shm.sock; load average $(cut -d' ' -f1-3 /proc/loadavg)"
ctl=("$build/clients/cpp/samplerctl" --target "unix:$work/grpc.sock" bench --json)
for round in $(seq "$rounds"); do
  for config in "${configs[@]}"; do
    read -r workload dtype steps <<< "$config"
    common=(--workload "$workload" --dtype "$dtype" --steps "$steps")
    for mode in in-process bytes shm-stream shm-control; do
      case $mode in
        in-process) extra=(--in-process) ;;
        bytes) extra=() ;;
        shm-stream) extra=(--shm "$work/shm.sock" --shm-steps stream) ;;
        shm-control) extra=(--shm "$work/shm.sock" --shm-steps control) ;;
      esac
      "${ctl[@]}" "${common[@]}" "${extra[@]}" 2> /dev/null |
        /usr/bin/python3 -c "import json, sys; d = json.load(sys.stdin); d.update(round=$round, side='$mode'); print(json.dumps(d))" |
        tee -a "$work/runs.jsonl"
    done
  done
done
/usr/bin/python3 - "$work/runs.jsonl" << 'EOF'
import collections, json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = collections.defaultdict(dict)  # (workload, dtype, round) -> side -> run
for r in runs:
    by[(r["workload"], r["dtype"], r["round"])][r["side"]] = r
ratios = collections.defaultdict(list)
for (workload, dtype, rnd), sides in sorted(by.items()):
    key = f"{workload} {dtype}"
    core = sides["in-process"]["core_us_p50"]
    for mode in ("shm-stream", "shm-control"):
        ratios[(key, f"steps/s {mode} / bytes")].append(sides[mode]["steps_per_sec"] / sides["bytes"]["steps_per_sec"])
    for mode in ("bytes", "shm-stream", "shm-control"):
        ratios[(key, f"p50 {mode} / in-process core p50")].append(sides[mode]["p50_us"] / core)
    print(f"# round {rnd} {key}: in-process core p50 {core:.1f} us; " + ", ".join(
        f"{m} {sides[m]['steps_per_sec']:.0f} steps/s p50 {sides[m]['p50_us']:.0f} us (server core p50 "
        f"{sides[m]['core_us_p50']:.0f})" for m in ("bytes", "shm-stream", "shm-control")))
for (key, what), values in ratios.items():
    print(f"{key}: {what}: median {statistics.median(values):.2f} (rounds: {', '.join(f'{v:.2f}' for v in values)})")
EOF
