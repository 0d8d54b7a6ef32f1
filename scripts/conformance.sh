#!/usr/bin/env bash
# Client conformance: starts one samplerd, sends the shared request set (tests/conformance/requests.json: the
# golden cases under every profile plus a scripted 200-step batched generation in f32/f16/bf16) through the
# Python, Node, Go and C++ clients over TCP, then again through the Python, Go and C++ clients over the
# shared-memory plane (a unix socket and --shm_socket, docs/shm.md; Node has no SCM_RIGHTS), and compares the
# seven records, which must be byte-identical. Ends with `conformance: N/7 clients agree`; exits non-zero unless
# N is 7.
#
# Environment: SAMPLERD_BIN (default build/service/samplerd), SAMPLERD_CONFORMANCE_CPP (default
# build/tests/conformance/samplerd_conformance_cpp, built by scripts/build.sh), SAMPLERD_GOLDEN_DIR (default
# scripts/golden-dir.sh: the build's CMake setting, else tests/golden), CONFORMANCE_OUT (keep the records there instead of a temporary folder).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${SAMPLERD_BIN:-$root/build/service/samplerd}"
cpp="${SAMPLERD_CONFORMANCE_CPP:-$root/build/tests/conformance/samplerd_conformance_cpp}"
golden="$("$root/scripts/golden-dir.sh")"
requests="$root/tests/conformance/requests.json"
py=/usr/bin/python3

if [[ -n "${CONFORMANCE_OUT:-}" ]]; then
  out="$CONFORMANCE_OUT"
  mkdir -p "$out"
else
  out="$(mktemp -d -t samplerd-conformance.XXXXXX)"
fi
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  fi
  [[ -n "${CONFORMANCE_OUT:-}" ]] || rm -rf "$out"
}
trap cleanup EXIT

if [[ ! -x "$bin" ]]; then
  echo "conformance: samplerd binary not found at $bin (set SAMPLERD_BIN)"
  echo "conformance: 0/7 clients agree"
  exit 1
fi
"$bin" --listen 127.0.0.1:0 --listen "unix:$out/samplerd.sock" --shm_socket "$out/shm.sock" --log_level warn \
  >"$out/samplerd.log" 2>&1 &
server_pid=$!
target=""
unix_target=""
for _ in $(seq 1 200); do
  target="$(sed -n 's/^samplerd listening on \([^u]\)/\1/p' "$out/samplerd.log" | head -n1)"
  unix_target="$(sed -n 's/^samplerd listening on \(unix:\)/\1/p' "$out/samplerd.log" | head -n1)"
  [[ -n "$target" && -n "$unix_target" ]] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.05
done
if [[ -z "$target" || -z "$unix_target" ]]; then
  echo "conformance: samplerd did not start:"
  cat "$out/samplerd.log"
  echo "conformance: 0/7 clients agree"
  exit 1
fi
echo "conformance: samplerd at $target and $unix_target (shared memory: $out/shm.sock); records in $out"
args=(--target "$target" --requests "$requests" --golden "$golden")
shm_args=(--target "$unix_target" --shm "$out/shm.sock" --requests "$requests" --golden "$golden")

# One driver at a time (the machine is shared); a failing driver leaves no records and so does not agree.
run() {
  local name="$1"
  shift
  local t0=$SECONDS
  if "$@" >"$out/$name.stderr" 2>&1; then
    echo "$name: ran in $((SECONDS - t0)) s"
  else
    echo "$name: driver failed:"
    tail -n 20 "$out/$name.stderr" | sed 's/^/  /'
    rm -f "$out/$name.txt"
  fi
}

run python "$py" "$root/tests/conformance/driver.py" "${args[@]}" --out "$out/python.txt"

node_driver="$root/clients/node/dist/conformance/driver.js"
run node bash -c 'cd "$1" && { [[ -d node_modules ]] || npm ci --no-audit --no-fund; } && npm run --silent build && shift && node "$@"' \
  _ "$root/clients/node" "$node_driver" "${args[@]}" --out "$out/node.txt"

run go bash -c '"$1/clients/go/go.sh" build -o "$2/go-driver" ./cmd/samplerd-conformance && shift 2 && "$@"' \
  _ "$root" "$out" "$out/go-driver" "${args[@]}" --out "$out/go.txt"

if [[ -x "$cpp" ]]; then
  run cpp "$cpp" "${args[@]}" --out "$out/cpp.txt"
else
  echo "cpp: driver not built at $cpp (scripts/build.sh builds it; or set SAMPLERD_CONFORMANCE_CPP)"
fi

# The same request set over the shared-memory plane; each driver fails when no tensor went by reference.
run python-shm "$py" "$root/tests/conformance/driver.py" "${shm_args[@]}" --out "$out/python-shm.txt"
run go-shm "$out/go-driver" "${shm_args[@]}" --out "$out/go-shm.txt"
[[ -x "$cpp" ]] && run cpp-shm "$cpp" "${shm_args[@]}" --out "$out/cpp-shm.txt"

"$py" "$root/tests/conformance/compare.py" --requests "$requests" --golden "$golden" \
  python="$out/python.txt" node="$out/node.txt" go="$out/go.txt" cpp="$out/cpp.txt" \
  python-shm="$out/python-shm.txt" go-shm="$out/go-shm.txt" cpp-shm="$out/cpp-shm.txt"
