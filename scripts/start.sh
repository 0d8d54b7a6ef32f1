#!/usr/bin/env bash
# A newcomer's first command: installs what the server needs (Debian 12: `install-deps.sh server`), builds
# samplerd and samplerctl only, starts samplerd on 127.0.0.1:50051 (Prometheus metrics on 127.0.0.1:9464;
# logs in build/samplerd.log) and shows it answering with `samplerctl demo`.
# The server keeps running afterwards; stop it with: kill "$(cat build/samplerd.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
address=127.0.0.1:50051
scripts/install-deps.sh server
BUILD_TARGETS="samplerd samplerctl" scripts/build.sh -DSAMPLERD_BUILD_TESTS=OFF -DSAMPLERD_BUILD_BENCH=OFF
if [ -f build/samplerd.pid ] && kill -0 "$(cat build/samplerd.pid)" 2>/dev/null; then
  kill "$(cat build/samplerd.pid)"; sleep 1
fi
nohup build/service/samplerd --listen "$address" --metrics_listen 127.0.0.1:9464 > build/samplerd.log 2>&1 &
echo $! > build/samplerd.pid
for _ in $(seq 50); do
  build/clients/cpp/samplerctl health --target "$address" > /dev/null 2>&1 && break
  if ! kill -0 "$(cat build/samplerd.pid)" 2>/dev/null; then
    echo "samplerd exited at start; build/samplerd.log:" >&2; cat build/samplerd.log >&2; exit 1
  fi
  sleep 0.2
done
build/clients/cpp/samplerctl health --target "$address"
build/clients/cpp/samplerctl demo --target "$address" --steps 200
echo "samplerd is running (pid $(cat build/samplerd.pid)) on $address; logs in build/samplerd.log"
