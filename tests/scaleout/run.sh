#!/usr/bin/env bash
# Scale-out test: 3 samplerd replicas on loopback, 16 concurrent sequences x 300 steps through one client
# channel with round_robin over the three; during the run one replica gets SIGKILL and another SIGTERM.
# Every sequence must finish with no step lost or answered twice, and every token sequence must equal the one
# a single replica gives for the same seeds (the client owns the seeds and recent_tokens, so a step retried
# on another replica draws the same token). Also checked: the SIGTERMed replica drains and exits 0 on its own,
# the survivor still answers SERVING and exits 0 on SIGTERM.
#
#   tests/scaleout/run.sh            (SAMPLERD_BIN=path/to/samplerd to test another binary)
#
# Last line: scaleout: sequences=16 steps=4800 failovers=F lost=0 duplicated=0 mismatches=0
# Exit status non-zero on any failure. The client is tests/scaleout/driver.py (Debian's python3-grpcio).
set -euo pipefail
cd "$(dirname "$0")/../.."

samplerd=${SAMPLERD_BIN:-build/service/samplerd}
py=/usr/bin/python3
driver=tests/scaleout/driver.py
sequences=16
steps=300
drain_seconds=1   # the SIGTERMed replica cancels its remaining streams after this; clients fail over
kill_at=0.30      # share of all steps done when replica A gets SIGKILL
term_at=0.55      # ... and replica B gets SIGTERM
pace_ms=8         # per-step sleep in the client (the model's forward pass), so both events land mid-run

[ -x "$samplerd" ] || { echo "scaleout: $samplerd not built" >&2; exit 1; }
# Replicas share one host: where samplerd serves metrics, give each its own free port (the default 9464 would
# be taken by the first).
extra=()
"$samplerd" --help | grep -q -- '--metrics_listen' && extra=(--metrics_listen 127.0.0.1:0)
work=$(mktemp -d "${TMPDIR:-/tmp}/samplerd-scaleout.XXXXXX")
declare -A pid port
cleanup() {
  local name
  for name in "${!pid[@]}"; do kill -KILL "${pid[$name]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a replica on 127.0.0.1:0 and reads the port it printed.
start_replica() {
  local name=$1
  "$samplerd" --listen 127.0.0.1:0 --drain_seconds "$drain_seconds" --log_level warn "${extra[@]}" \
    > "$work/$name.out" 2> "$work/$name.err" &
  pid[$name]=$!
  for _ in $(seq 100); do
    port[$name]=$(awk '/^samplerd listening on 127\.0\.0\.1:/ { n = split($NF, a, ":"); print a[n]; exit }' \
      "$work/$name.out" || true)
    [ -n "${port[$name]}" ] && break
    kill -0 "${pid[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "${port[$name]}" ]; then
    echo "scaleout: replica $name did not start" >&2; cat "$work/$name.err" >&2; exit 1
  fi
  "$py" "$driver" health --target "127.0.0.1:${port[$name]}" --wait 10 > /dev/null
}

# Waits up to $2 seconds for replica $1 to exit; sets `status` to its exit status (or "running"). Not for
# $(...): only this shell can `wait` for its children.
wait_exit() {
  local name=$1 limit=$2
  for _ in $(seq $((limit * 10))); do
    kill -0 "${pid[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${pid[$name]}" 2>/dev/null; then status=running; return; fi
  status=0
  { wait "${pid[$name]}"; } 2> /dev/null || status=$?   # (no "Killed" job notice on stderr)
  unset "pid[$name]"
}

failures=()

# 1. The reference: one replica, no failure, same seeds.
start_replica ref
"$py" "$driver" run --target "ipv4:127.0.0.1:${port[ref]}" --sequences "$sequences" --steps "$steps" \
  --out "$work/reference.json" > "$work/reference.log" 2>&1 || {
  cat "$work/reference.log" >&2; echo "scaleout: the single-replica reference run failed" >&2; exit 1; }
echo "reference: $(grep '^driver:' "$work/reference.log")"
kill -TERM "${pid[ref]}"
wait_exit ref $((drain_seconds + 10))
[ "$status" = 0 ] || failures+=("reference replica: expected exit 0 on SIGTERM, got $status")

# 2. Three replicas behind one round_robin target; A is SIGKILLed, B SIGTERMed mid-run.
for r in a b c; do start_replica "$r"; done
target="ipv4:127.0.0.1:${port[a]},127.0.0.1:${port[b]},127.0.0.1:${port[c]}"
echo "replicas: a=${port[a]} (SIGKILL at ${kill_at}) b=${port[b]} (SIGTERM at ${term_at}) c=${port[c]}"
started=$SECONDS
driver_status=0
"$py" "$driver" run --target "$target" --sequences "$sequences" --steps "$steps" --pace-ms "$pace_ms" \
  --reference "$work/reference.json" --out "$work/scaleout.json" \
  --event "$kill_at:${pid[a]}:KILL" --event "$term_at:${pid[b]}:TERM" > "$work/scaleout.log" 2>&1 \
  || driver_status=$?
grep -v '^scaleout:' "$work/scaleout.log" || true
summary=$(grep '^scaleout:' "$work/scaleout.log" || echo "scaleout: the driver printed no summary")
echo "scale-out run took $((SECONDS - started)) s"
((driver_status == 0)) || failures+=("driver exit status $driver_status")
# Failovers after each event show that the replica stopped there was carrying traffic (round_robin spread it).
for phase in 1 2; do
  n=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["failovers_by_phase"].get(sys.argv[2], 0))' \
    "$work/scaleout.json" "$phase" 2>/dev/null || echo 0)
  ((n > 0)) || failures+=("no call failed over after event $phase: that replica served nothing")
done

# 3. What became of each replica.
wait_exit a 5
[ "$status" = 137 ] || failures+=("replica a: expected death by SIGKILL (137), got $status")
wait_exit b $((drain_seconds + 10))
[ "$status" = 0 ] || failures+=("replica b: expected exit 0 after its drain, got $status; stderr: $(tail -3 "$work/b.err")")
if "$py" "$driver" health --target "127.0.0.1:${port[c]}" > /dev/null 2>&1; then
  kill -TERM "${pid[c]}"
  wait_exit c $((drain_seconds + 10))
  [ "$status" = 0 ] || failures+=("replica c: expected exit 0 on SIGTERM, got $status")
else
  failures+=("replica c (never signalled) is not SERVING after the run")
fi

for f in "${failures[@]}"; do echo "FAIL: $f" >&2; done
echo "$summary"
((${#failures[@]} == 0))
