#!/usr/bin/env bash
# Runs the go tool on the Go client module (samplerd.dev/samplerd) offline, against the Go sources Debian's
# golang-*-dev packages install under /usr/share/gocode (there is no module proxy here; golang.org/x/sys/unix, which
# the shared-memory plane uses, comes from golang-golang-x-sys-dev). The published go.mod is
# left alone: this script writes a copy, .gopath/go.test.mod, that replaces every module of the requirement
# graph with its Debian source folder (or, for a module Debian does not ship and nothing here imports, with an
# empty module), and runs go with -modfile pointing at it, -mod=mod and GOPROXY=off. Examples:
#   clients/go/go.sh test ./...                   # the client's tests (need a samplerd binary: $SAMPLERD_BIN)
#   clients/go/go.sh vet ./...
#   clients/go/go.sh build -o /tmp/conformance ./cmd/samplerd-conformance
#   clients/go/go.sh gen                          # regenerate gen/ (committed) from proto/
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="$(sed -n 's/^module //p' "$here/go.mod")"
gocode=/usr/share/gocode/src

if [[ "${1:-}" == gen ]]; then
  proto_dir="${SAMPLERD_PROTO_DIR:-$here/../../proto}"
  protoc -I "$proto_dir" --go_out="$here" --go_opt=module="$module" \
    --go-grpc_out="$here" --go-grpc_opt=module="$module" \
    samplerd/v1/profile.proto samplerd/v1/sampler.proto
  exit 0
fi

work="$here/.gopath"
mkdir -p "$work/empty"
modfile="$work/go.test.mod"
cp "$here/go.mod" "$modfile"
# Breadth-first over the requirements of go.mod and of every replacement's go.mod.
declare -A seen=()
queue=($(awk '/^require \(/ {r = 1; next} r && /^\)/ {r = 0} r && NF >= 2 {print $1} /^require [^(]/ {print $2}' \
  "$here/go.mod"))
while ((${#queue[@]})); do
  path="${queue[0]}"
  queue=("${queue[@]:1}")
  [[ -n "${seen[$path]:-}" ]] && continue
  seen[$path]=1
  if [[ -f "$gocode/$path/go.mod" ]]; then
    dir="$gocode/$path"
  else
    # Debian ships it without a go.mod (its folder linked in), or not at all (an empty module: the build then
    # fails by name if a package of it is ever imported).
    dir="$work/empty/$path"
    mkdir -p "$dir"
    printf 'module %s\n' "$path" > "$dir/go.mod"
    if [[ -d "$gocode/$path" ]]; then
      for entry in "$gocode/$path"/*; do ln -sfn "$entry" "$dir/$(basename "$entry")"; done
    fi
  fi
  echo "replace $path => \"$dir\"" >> "$modfile"
  queue+=($(awk '/^require \(/ {r = 1; next} r && /^\)/ {r = 0} r && NF >= 2 && $1 !~ /^\/\// {print $1}
                 /^require [^(]/ {print $2}' "$dir/go.mod"))
done
rm -f "$work/go.test.sum"

export SAMPLERD_GO_MODFILE="$modfile" GOPROXY=off GOSUMDB=off GONOSUMDB='*' GOTOOLCHAIN=local GO111MODULE=on
export GOCACHE="${GOCACHE:-$work/cache}" GOPATH="$work/gopath"
cd "$here"
# The module flags go on the command line, not in GOFLAGS: go splits GOFLAGS at spaces, and the checkout's path may
# have one.
case "${1:-}" in
  build | test | vet | run | list | install)
    command="$1"
    shift
    exec go "$command" -mod=mod "-modfile=$modfile" "$@"
    ;;
  *) exec go "$@" ;;
esac
