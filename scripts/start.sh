#!/usr/bin/env bash
# A newcomer's first command: installs what is missing (Debian 12), builds, starts samplerd on
# localhost:50051 (logs in build/samplerd.log) and shows it answering with `samplerctl demo`.
# The server keeps running afterwards; stop it with: kill "$(cat build/samplerd.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
if [ -f build/samplerd.pid ] && kill -0 "$(cat build/samplerd.pid)" 2>/dev/null; then
  kill "$(cat build/samplerd.pid)"; sleep 1
fi
nohup build/service/samplerd --listen 0.0.0.0:50051 > build/samplerd.log 2>&1 &
echo $! > build/samplerd.pid
for _ in $(seq 50); do
  build/clients/cpp/samplerctl health --target localhost:50051 > /dev/null 2>&1 && break
  sleep 0.2
done
build/clients/cpp/samplerctl health --target localhost:50051
build/clients/cpp/samplerctl demo --target localhost:50051 --steps 200
echo "samplerd is running (pid $(cat build/samplerd.pid)) on localhost:50051; logs in build/samplerd.log"
