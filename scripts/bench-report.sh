#!/usr/bin/env bash
# The figures of docs/benchmarks.md: issue 3's workloads through samplerd end to end (1 and 4 streams, f32 and
# bf16) beside the raw transport (--no-compute) and core alone (--in-process), in alternating rounds so that
# the noise of a shared machine falls on every configuration alike; prints the machine, a Markdown table of
# medians over the rounds and the target ratios (each computed within a round, then the median). Two rates per
# ratio: steps/s over the whole run (the mean, which a preempted request drags down) and the typical rate,
# steps per request x streams / p50 latency (ping-pong: each stream completes one request per latency), which
# a few descheduled requests on a shared machine do not move.
#
#   scripts/bench-report.sh [ROUNDS=3]          # uses ${BUILD_DIR:-build}; builds nothing
#   TARGET=unix scripts/bench-report.sh         # over a unix socket instead of TCP loopback
#
# Raw JSON lines (one per run, with a "round" key) are kept in ${OUT:-/tmp/samplerd-bench}.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
BUILD_DIR=${BUILD_DIR:-build}
OUT=${OUT:-/tmp/samplerd-bench}
SAMPLERD=${SAMPLERD_BIN:-$BUILD_DIR/service/samplerd}
SAMPLERCTL=$BUILD_DIR/clients/cpp/samplerctl
work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null || true; wait "$server_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

socket="$work/samplerd.sock"
"$SAMPLERD" --listen 127.0.0.1:0 --listen "unix:$socket" --allow_no_compute --metrics_listen "" --log_level warn \
  > "$work/samplerd.out" 2>&1 &
server_pid=$!
target=""
for _ in $(seq 1 200); do
  target=$(sed -n 's/^samplerd listening on \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$work/samplerd.out" | head -n 1)
  [ -n "$target" ] && break
  sleep 0.1
done
[ -n "$target" ] || { echo "bench-report: samplerd did not start" >&2; cat "$work/samplerd.out" >&2; exit 1; }
[ "${TARGET:-tcp}" = unix ] && target="unix:$socket"

echo "# machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $(uname -r)"
echo "# SIMD dispatch: ${SAMPLERD_SIMD:-auto}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# samplerd $("$SAMPLERD" --version 2>/dev/null || true) at $target, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# Steps per run: a few seconds each at the rates of the reference machine.
steps_for() {
  case $1 in S) echo 3000 ;; L) echo 1000 ;; XL) echo 400 ;; B) echo 640 ;; esac
}
: > "$OUT.jsonl"
for round in $(seq 1 "$ROUNDS"); do
  for workload in S L XL B; do
    for dtype in f32 bf16; do
      for streams in 1 4; do
        steps=$(( $(steps_for "$workload") * streams ))
        for mode in in-process grpc-no-compute grpc; do
          case $mode in
            in-process) args=(bench --in-process) ;;
            grpc-no-compute) args=(--target "$target" bench --no-compute) ;;
            grpc) args=(--target "$target" bench) ;;
          esac
          "$SAMPLERCTL" "${args[@]}" --workload "$workload" --dtype "$dtype" --streams "$streams" --steps "$steps" \
            --json | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); d['round']=$round; print(json.dumps(d))" \
            >> "$OUT.jsonl"
        done
      done
    done
  done
  echo "# round $round done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done

/usr/bin/python3 - "$OUT.jsonl" << 'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
def key(r): return (r["workload"], r["dtype"], r["streams"], r["mode"])
by = {}
for r in runs: by.setdefault(key(r), []).append(r)
med = lambda xs: statistics.median(xs) if xs else float("nan")
def rate(w, d, s, m, rnd=None):
    rs = [r for r in by.get((w, d, s, m), []) if rnd is None or r["round"] == rnd]
    return med([r["steps_per_sec"] for r in rs])
rounds = sorted({r["round"] for r in runs})
print()
print("| workload | dtype | streams | in-process steps/s | raw transport (--no-compute) steps/s | samplerd end to end steps/s | end to end / raw | p50 / p99 us (end to end) | core us p50 (server) |")
print("|---|---|---|---|---|---|---|---|---|")
for w in ["S", "L", "XL", "B"]:
    for d in ["f32", "bf16"]:
        for s in [1, 4]:
            e2e = by.get((w, d, s, "grpc"), [])
            ratio = med([rate(w, d, s, "grpc", n) / rate(w, d, s, "grpc-no-compute", n) for n in rounds])
            print(f"| {w} | {d} | {s} | {rate(w, d, s, 'in-process'):.0f} | {rate(w, d, s, 'grpc-no-compute'):.0f} | "
                  f"{rate(w, d, s, 'grpc'):.0f} | {100 * ratio:.0f} % | "
                  f"{med([r['p50_us'] for r in e2e]):.0f} / {med([r['p99_us'] for r in e2e]):.0f} | "
                  f"{med([r['core_us_p50'] for r in e2e]):.0f} |")
print()
def per_round(f): return med([f(n) for n in rounds])
def typical(w, d, s, m, rnd):
    rs = [r for r in by.get((w, d, s, m), []) if r["round"] == rnd]
    return med([r["steps_per_request"] * r["streams"] * 1e6 / r["p50_us"] for r in rs])
def both(label, target, f):
    mean = per_round(lambda n: f(rate, n))
    typ = per_round(lambda n: f(typical, n))
    print(f"  {label}: {mean:.2f} by steps/s, {typ:.2f} by p50 ({target})")
print("targets (ratio per round, median over %d rounds):" % len(rounds))
both("L f32 1 stream, end to end / raw transport", "target >= 0.90",
     lambda r, n: r("L", "f32", 1, "grpc", n) / r("L", "f32", 1, "grpc-no-compute", n))
both("S f32 1 stream, end to end / raw transport", "for reference",
     lambda r, n: r("S", "f32", 1, "grpc", n) / r("S", "f32", 1, "grpc-no-compute", n))
both("L 1 stream, bf16 / f32 end to end", "target >= 1.7",
     lambda r, n: r("L", "bf16", 1, "grpc", n) / r("L", "f32", 1, "grpc", n))
both("L 1 stream, bf16 / f32 raw transport", "the transport's own gain",
     lambda r, n: r("L", "bf16", 1, "grpc-no-compute", n) / r("L", "f32", 1, "grpc-no-compute", n))
both("B f32, 4 streams / 1 stream end to end", "target >= 2",
     lambda r, n: r("B", "f32", 4, "grpc", n) / r("B", "f32", 1, "grpc", n))
both("B bf16, 4 streams / 1 stream end to end", "for reference",
     lambda r, n: r("B", "bf16", 4, "grpc", n) / r("B", "bf16", 1, "grpc", n))
both("B f32, 4 streams / 1 stream in process", "core alone on this machine",
     lambda r, n: r("B", "f32", 4, "in-process", n) / r("B", "f32", 1, "in-process", n))
PY
