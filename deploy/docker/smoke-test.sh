#!/usr/bin/env bash
# Smoke test of the samplerd image (build it first with deploy/docker/build-image.sh): runs the container the
# way Kubernetes will (read-only root filesystem with no tmpfs, non-root, the base profiles ConfigMap mounted
# at /etc/samplerd) and checks, each a failure if wrong:
#   - the image metadata: user 10001, ports 50051 and 9464 exposed;
#   - health SERVING from inside the container (samplerctl, when the image has it) and from the host;
#   - ListProfiles shows the profiles of deploy/k8s/base/profiles.json; SampleOnce returns a token;
#     a run of 4 sequences x 50 steps completes and, when a host build is at $SAMPLERD_BIN (default
#     build/service/samplerd), draws exactly the tokens that build draws (portable Release build: same
#     numbers in and out of the image);
#   - `podman stop` (SIGTERM) ends the container with exit code 0.
#
#   deploy/docker/smoke-test.sh [--tag samplerd:dev]
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=samplerd:dev
[ "${1:-}" = "--tag" ] && tag=$2
podman=(podman --runtime runc --cgroup-manager cgroupfs)
py=/usr/bin/python3
driver=tests/scaleout/driver.py
name="samplerd-smoke-$$"
failures=()
check() { # check DESCRIPTION COMMAND...: runs COMMAND, records DESCRIPTION as a failure if it fails
  local what=$1; shift
  if "$@"; then echo "smoke: ok: $what"; else failures+=("$what"); echo "smoke: FAIL: $what" >&2; fi
}

"${podman[@]}" image exists "$tag" || { echo "smoke: no image $tag; run deploy/docker/build-image.sh" >&2; exit 1; }
user=$("${podman[@]}" image inspect --format '{{.Config.User}}' "$tag")
ports=$("${podman[@]}" image inspect --format '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' "$tag")
check "image runs as 10001:10001 (is '$user')" test "$user" = "10001:10001"
check "image exposes 50051/tcp and 9464/tcp (has '$ports')" \
  bash -c '[[ " $1 " == *" 50051/tcp "* && " $1 " == *" 9464/tcp "* ]]' _ "$ports"

ref_pid=""
# Metrics, where this build serves them (--metrics_listen): on a free port, checked below.
metrics=()
"${podman[@]}" run --rm --pull=never --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$tag" --help \
  | grep -- '--metrics_listen' > /dev/null && metrics=(--metrics_listen 127.0.0.1:0)
cleanup() {
  "${podman[@]}" rm -f -t 0 "$name" > /dev/null 2>&1 || true
  [ -n "$ref_pid" ] && kill -KILL "$ref_pid" 2>/dev/null || true
}
trap cleanup EXIT
# Host network (these machines have no other); port 0 = a free port, read back from the log.
"${podman[@]}" run -d --name "$name" --pull=never --network host \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  --read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges \
  -v "$PWD/deploy/k8s/base/profiles.json:/etc/samplerd/profiles.json:ro" \
  "$tag" --listen 127.0.0.1:0 --config /etc/samplerd/profiles.json --drain_seconds 2 "${metrics[@]}" > /dev/null
port=""
for _ in $(seq 100); do
  port=$("${podman[@]}" logs "$name" 2>/dev/null \
    | awk '/^samplerd listening on 127\.0\.0\.1:/ { n = split($NF, a, ":"); print a[n]; exit }' || true)
  [ -n "$port" ] && break
  [ "$("${podman[@]}" inspect --format '{{.State.Running}}' "$name")" = true ] || break
  sleep 0.1
done
if [ -z "$port" ]; then
  "${podman[@]}" logs "$name" >&2 || true
  echo "smoke: FAIL: the container did not start listening" >&2
  exit 1
fi
echo "smoke: container $name listening on 127.0.0.1:$port"

check "process inside runs as uid 10001" test "$("${podman[@]}" exec "$name" id -u)" = 10001
if "${podman[@]}" exec "$name" test -x /usr/local/bin/samplerctl; then
  check "samplerctl health inside the container" "${podman[@]}" exec "$name" samplerctl health --target "127.0.0.1:$port"
else
  echo "smoke: note: this image has no samplerctl (clients/cpp not built); health checked from the host only"
fi
check "health SERVING from the host" "$py" "$driver" health --target "127.0.0.1:$port" --wait 10
profiles=$("$py" "$driver" profiles --target "127.0.0.1:$port" || true)
check "ListProfiles has the ConfigMap's profiles (got: $(echo $profiles))" \
  bash -c 'grep -qx entropix-cautious <<< "$1" && grep -qx greedy <<< "$1" && grep -qx entropix <<< "$1"' _ "$profiles"
check "SampleOnce returns a token" "$py" "$driver" once --target "127.0.0.1:$port"
if ((${#metrics[@]})); then
  mport=$("${podman[@]}" logs "$name" 2>/dev/null \
    | awk '/^samplerd metrics on / { n = split($NF, a, ":"); print a[n]; exit }' || true)
  check "Prometheus /metrics on port ${mport:-?} has samplerd_ series" \
    bash -c 'curl -sf "http://127.0.0.1:$1/metrics" | grep -q "^samplerd_"' _ "$mport"
else
  echo "smoke: note: this build has no --metrics_listen; metrics not checked"
fi
reference=()
host_bin=${SAMPLERD_BIN:-build/service/samplerd}
if [ -x "$host_bin" ]; then
  ref_dir=$(mktemp -d)
  host_extra=()
  "$host_bin" --help | grep -- '--metrics_listen' > /dev/null && host_extra=(--metrics_listen 127.0.0.1:0)
  "$host_bin" --listen 127.0.0.1:0 --log_level warn "${host_extra[@]}" > "$ref_dir/out" 2>&1 &
  ref_pid=$!
  ref_port=""
  for _ in $(seq 50); do
    ref_port=$(awk '/^samplerd listening on 127\.0\.0\.1:/ { n = split($NF, a, ":"); print a[n]; exit }' "$ref_dir/out" || true)
    [ -n "$ref_port" ] && break
    sleep 0.1
  done
  if [ -n "$ref_port" ] && "$py" "$driver" run --target "127.0.0.1:$ref_port" --sequences 4 --steps 50 \
       --out "$ref_dir/ref.json" > /dev/null; then
    reference=(--reference "$ref_dir/ref.json")
  else
    failures+=("reference run against the host build $host_bin")
  fi
  kill -TERM "$ref_pid" 2>/dev/null || true
  wait "$ref_pid" 2>/dev/null || true
  ref_pid=""
else
  echo "smoke: note: no host build at $host_bin; the container's tokens are not compared with it"
fi
what="4 sequences x 50 steps over Sample/SampleOnce"
((${#reference[@]})) && what="$what, tokens equal to those of the host build"
check "$what" \
  "$py" "$driver" run --target "127.0.0.1:$port" --sequences 4 --steps 50 --max-seconds 60 "${reference[@]}"
[ -n "${ref_dir:-}" ] && rm -rf "$ref_dir"

"${podman[@]}" stop -t 15 "$name" > /dev/null
code=$("${podman[@]}" inspect --format '{{.State.ExitCode}}' "$name")
check "SIGTERM (podman stop) exits 0 (exit code $code)" test "$code" = 0

if ((${#failures[@]})); then
  echo "smoke: ${#failures[@]} check(s) failed" >&2
  exit 1
fi
echo "smoke: all checks passed"
