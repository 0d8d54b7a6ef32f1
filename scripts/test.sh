#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds, runs every ctest test (unit,
# golden, integration against a real samplerd process), then the client suites when present.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every suite talks to its own servers on loopback: a proxy in the environment (http_proxy, grpc_proxy, as behind
# a corporate proxy) must not take those calls. gRPC, curl, Python, Node and Go all honour no_proxy; apt and npm
# still reach their registries through the proxy.
no_proxy="${no_proxy:-${NO_PROXY:-}}"
no_proxy="${no_proxy:+$no_proxy,}localhost,127.0.0.1,::1"
export no_proxy NO_PROXY="$no_proxy"
scripts/install-deps.sh
# Formatting first: seconds, and a red format check should not wait for the suites.
scripts/check-format.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
passed=1
export SAMPLERD_BIN="$PWD/build/service/samplerd"
# Clients in four languages and their conformance, the PyTorch model host, deployment and scale-out, the live
# page, dashboard and alert rules, a benchmark smoke run, then sanitizers, fuzzing, soak and replay.
for suite in scripts/test-clients.sh scripts/test-torch-host.sh scripts/test-deploy.sh scripts/test-observability.sh \
    scripts/bench-smoke.sh scripts/test-reliability.sh; do
  if [ -x "$suite" ]; then
    echo "== $suite"
    "$suite"
    passed=$((passed + 1))
  fi
done
# Each suite exits non-zero on its first failure (set -e), so reaching here means all of them passed.
echo "suites: $passed passed, 0 failed"
