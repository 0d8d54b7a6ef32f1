#!/usr/bin/env bash
# Runs the go tool on the Go client in GOPATH mode, offline, against Debian's Go packages
# (golang-google-grpc-dev, golang-google-protobuf-dev, golang-github-golang-protobuf-1-5-dev under
# /usr/share/gocode). First (re)generates the stubs of proto/samplerd/v1 into gen/ with protoc-gen-go and
# protoc-gen-go-grpc when a .proto is newer than them. Examples:
#   clients/go/go.sh test ./...                   # the client's tests (need a samplerd binary: $SAMPLERD_BIN)
#   clients/go/go.sh build -o /tmp/conformance samplerd/cmd/samplerd-conformance
#   clients/go/go.sh gen                          # only the stubs
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
proto_dir="${SAMPLERD_PROTO_DIR:-$here/../../proto}"
out="$here/gen/samplerd/v1"

stale=0
for f in sampler.pb.go sampler_grpc.pb.go profile.pb.go; do
  [[ -f "$out/$f" ]] || stale=1
done
if ((stale == 0)); then
  for p in "$proto_dir"/samplerd/v1/*.proto; do
    [[ "$p" -nt "$out/sampler.pb.go" ]] && stale=1
  done
fi
if ((stale)); then
  mkdir -p "$out"
  protoc -I "$proto_dir" --go_out="$here" --go_opt=module=samplerd \
    --go-grpc_out="$here" --go-grpc_opt=module=samplerd \
    samplerd/v1/profile.proto samplerd/v1/sampler.proto
fi
[[ "${1:-}" == gen ]] && exit 0

# GOPATH mode: the import path "samplerd" is this folder, through a link in a private GOPATH.
gopath="$here/.gopath"
mkdir -p "$gopath/src"
[[ -L "$gopath/src/samplerd" ]] || ln -sfn ../.. "$gopath/src/samplerd"
export GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOFLAGS= GOPROXY=off
export GOCACHE="${GOCACHE:-$here/.gopath/cache}"
cd "$gopath/src/samplerd"
exec go "$@"
