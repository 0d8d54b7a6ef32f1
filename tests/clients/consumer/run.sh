#!/usr/bin/env bash
# The C++ client as a user gets it: the README's C++ install block (`cmake --install` of a build into a prefix,
# this folder's project built out of tree with find_package(samplerd)), run with $HOME and /tmp/consumer moved
# into a temporary folder; then the same main.cc built with pkg-config; both run against the installed samplerd.
# Each consumer must answer token 42 four times (f32, bf16, a batch of two).
#
#   tests/clients/consumer/run.sh [BUILD_DIR]      (default: build)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
work="$(mktemp -d /tmp/samplerd-consumer-XXXXXX)"
server=""
cleanup() {
  [[ -n "$server" ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

prefix="$work/.local/samplerd"
block="$(awk '/<!-- install-cpp -->/ {found = 1; next} found && /^```bash/ {inside = 1; next}
              inside && /^```/ {exit} inside {print}' "$root/README.md")"
[[ -n "$block" ]] || { echo "consumer: no install-cpp block in README.md"; exit 1; }
block="${block//\/tmp\/consumer/$work/cmake}"
block="${block//cmake --install build/cmake --install \"$build\"}"
(cd "$root" && HOME="$work" bash -euo pipefail -c "$block") > "$work/install.log" || {
  cat "$work/install.log"
  exit 1
}
for f in bin/samplerd bin/samplerctl include/samplerd/samplerd_client.h lib/cmake/samplerd/samplerdConfig.cmake \
         lib/pkgconfig/samplerd.pc lib/libsamplerd_client.a; do
  [[ -e "$prefix/$f" ]] || { echo "consumer: $f was not installed"; exit 1; }
done
# The public headers need gRPC, protobuf and Abseil only.
if grep -rhoE '#include "(xtensor|spdlog|CLI|core|service|clients)/' "$prefix/include/samplerd"; then
  echo "consumer: an installed header includes a server-side dependency"
  exit 1
fi

# shellcheck disable=SC2046  # pkg-config's output is a list of words
c++ -std=c++17 -O1 "$here/main.cc" -o "$work/consumer-pkgconfig" \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs samplerd)

socket="$work/samplerd.sock"
"$prefix/bin/samplerd" --listen "unix:$socket" --metrics_listen '' 2> "$work/samplerd.log" &
server=$!
for _ in $(seq 100); do [[ -S "$socket" ]] && break; sleep 0.1; done
"$prefix/bin/samplerctl" --target "unix:$socket" health

for consumer in "$work/cmake/consumer" "$work/consumer-pkgconfig"; do
  out="$("$consumer" "unix:$socket")"
  echo "$out"
  tokens="$(grep -c 'token 42$' <<< "$out" || true)"
  [[ "$tokens" == 4 ]] || { echo "consumer: $consumer answered $tokens of 4 steps with token 42"; exit 1; }
done
echo "consumer: find_package and pkg-config consumers passed"
