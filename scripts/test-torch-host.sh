#!/usr/bin/env bash
# The torch model host end to end (issue 8): starts its own samplerd from $SAMPLERD_BIN (default
# build/service/samplerd) on a free loopback port, then runs tests/torch_host: a tiny byte-level transformer
# trained for a few seconds on Debian's fortunes generates through samplerd with the entropix, fixed and greedy
# profiles; tokens, regimes, attention shapes, log-probabilities, pictures and the evaluation command are
# checked; finally samplerd must exit 0 on SIGTERM. Then the reduced addition evaluation (issue 18,
# tests/torch_host/test_addition.py): a model trained for 150 steps, profiles calibrated by $SAMPLERCTL_BIN
# (default: samplerctl next to samplerd's build tree) and the Python client, 60 problems, one seed. A few minutes
# on 2 cores. Needs the Debian packages of scripts/install-deps.sh (python3-torch, python3-matplotlib, fortunes, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLERD_BIN="${SAMPLERD_BIN:-build/service/samplerd}"
SAMPLERCTL_BIN="${SAMPLERCTL_BIN:-$(dirname "$SAMPLERD_BIN")/../clients/cpp/samplerctl}"
export SAMPLERD_BIN SAMPLERCTL_BIN
PYTHON=/usr/bin/python3   # Debian's interpreter: torch, matplotlib, grpcio come from apt
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1

if [ ! -x "$SAMPLERD_BIN" ]; then
  echo "test-torch-host: no samplerd binary at $SAMPLERD_BIN (build it first or set SAMPLERD_BIN)" >&2
  exit 1
fi
if [ ! -x "$SAMPLERCTL_BIN" ]; then
  echo "test-torch-host: no samplerctl binary at $SAMPLERCTL_BIN (build it first or set SAMPLERCTL_BIN)" >&2
  exit 1
fi
for pkg in python3-torch python3-matplotlib python3-grpcio python3-protobuf fortunes; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || {
    echo "test-torch-host: Debian package $pkg is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
done

log="$(mktemp)"
"$SAMPLERD_BIN" --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
cleanup() {
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$log"
}
trap cleanup EXIT

addr=""
for _ in $(seq 200); do
  addr="$(sed -n 's/.*samplerd listening on \([^ ]*\).*/\1/p' "$log" | head -n1)"
  [ -n "$addr" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "test-torch-host: samplerd exited before listening:" >&2; cat "$log" >&2; exit 1
  fi
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "test-torch-host: samplerd did not report its address in 20 s:" >&2; cat "$log" >&2; exit 1
fi
echo "test-torch-host: samplerd (pid $pid) on $addr"

status=0
SAMPLERD_TARGET="$addr" timeout 900 "$PYTHON" -m unittest discover -s tests/torch_host -t tests/torch_host -v \
  || status=$?

kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
if [ "$rc" -ne 0 ]; then
  echo "test-torch-host: samplerd exited $rc on SIGTERM (expected 0); its log:" >&2; cat "$log" >&2
  [ "$status" -ne 0 ] || status=1
fi
if [ "$status" -ne 0 ]; then
  echo "test-torch-host: FAILED" >&2
else
  echo "test-torch-host: passed"
fi
exit "$status"
