#!/usr/bin/env bash
# End-to-end A/B in one run: two samplerd binaries (say, main's and a change's; or one binary twice with
# NEW_ARGS) serve side by side on loopback, and the same samplerctl alternates between them ROUNDS times per
# configuration, plus the raw transport (--no-compute, on the new server). Prints medians of steps/s, p50 and the
# server's core us, and the per-round ratios new/base and x/raw (steps/s; p50 as raw/x), medians over rounds.
#
#   scripts/bench-e2e-ab.sh /tmp/base/build/service/samplerd build/service/samplerd 6 "L f32 1 1000" "XL f32 1 400"
#   NEW_ARGS=--share_steps=false scripts/bench-e2e-ab.sh build/service/samplerd build/service/samplerd 6 "L f32 1 1000"
#
# A configuration is "WORKLOAD DTYPE STREAMS STEPS". Uses ${BUILD_DIR:-build}/clients/cpp/samplerctl.
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1; new=$2; rounds=${3:-4}; shift 3
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=("L f32 1 1000")
ctl=${BUILD_DIR:-build}/clients/cpp/samplerctl
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; wait 2> /dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# Runs in this shell (not in $(...)), so its pid reaches cleanup; sets started_addr once the server listens.
start() {  # start NAME BIN ARGS...
  local name=$1 bin=$2; shift 2
  "$bin" --listen 127.0.0.1:0 --allow_no_compute --metrics_listen "" --log_level warn "$@" > "$work/$name.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    addr=$(sed -n 's/^samplerd listening on \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$work/$name.out" | head -n 1)
    [ -n "$addr" ] && { started_addr=$addr; return; }
    sleep 0.1
  done
  echo "bench-e2e-ab: $name did not start" >&2; cat "$work/$name.out" >&2; exit 1
}
start base "$base"
base_addr=$started_addr
# shellcheck disable=SC2086
start new "$new" ${NEW_ARGS:-}
new_addr=$started_addr
echo "# base: $base at $base_addr; new: $new ${NEW_ARGS:-} at $new_addr; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  for config in "${configs[@]}"; do
    read -r workload dtype streams steps <<< "$config"
    for side in base new raw; do
      addr=$new_addr; extra=()
      [ "$side" = base ] && addr=$base_addr
      [ "$side" = raw ] && extra=(--no-compute)
      "$ctl" --target "$addr" bench --workload "$workload" --dtype "$dtype" --streams "$streams" --steps "$steps" \
        "${extra[@]}" --json 2> /dev/null |
        /usr/bin/python3 -c "
import json, sys
d = json.load(sys.stdin)
print('$round', '$side', '$workload/$dtype/$streams', d['steps_per_sec'], d['p50_us'], d['core_us_p50'])"
    done
  done
done | /usr/bin/python3 -c "
import collections, statistics as st, sys
v = collections.defaultdict(dict)
for line in sys.stdin:
    rnd, side, config, sps, p50, core = line.split()
    v[(config, side)][rnd] = (float(sps), float(p50), float(core))
def ratio(a, b, i, inverse=False):
    rs = [(b[r][i] / a[r][i]) if inverse else (a[r][i] / b[r][i]) for r in a if r in b]
    return st.median(rs)
for config in sorted({c for c, _ in v}):
    print(config)
    for side in ('base', 'new', 'raw'):
        x = v[(config, side)]
        med = lambda i: st.median(y[i] for y in x.values())
        line = f'  {side:5s} steps/s {med(0):8.0f}  p50 {med(1):7.0f} us  core p50 {med(2):5.0f} us'
        if side != 'raw':
            raw = v[(config, 'raw')]
            line += f'  | /raw: steps {ratio(x, raw, 0):.2f} p50 {ratio(x, raw, 1, True):.2f}'
        if side == 'new':
            b = v[(config, 'base')]
            line += f'  | new/base: steps {ratio(x, b, 0):.2f} p50 {ratio(x, b, 1, True):.2f}'
        print(line)
"
