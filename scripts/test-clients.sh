#!/usr/bin/env bash
# The client suites against live samplerd processes: Python (pytest, with the sdist -> wheel -> venv install), Node
# (npm test, then the packed tarball from ESM and CJS), the C++ client installed with cmake --install and used from
# a consumer project, Go (go vet, go test), then the four-client conformance run. CI calls it after building the
# server; every suite runs even if an earlier one fails, and the script fails if any did
# (scripts/lib/phases.sh).
#
# Environment: SAMPLERD_BIN (default build/service/samplerd), SAMPLERD_GOLDEN_DIR (default scripts/golden-dir.sh:
# the build's CMake setting, else tests/golden); see scripts/conformance.sh for the rest.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SAMPLERD_BIN="${SAMPLERD_BIN:-$root/build/service/samplerd}"
SAMPLERD_GOLDEN_DIR="$("$root/scripts/golden-dir.sh")"
export SAMPLERD_GOLDEN_DIR
if [[ ! -x "$SAMPLERD_BIN" ]]; then
  echo "test-clients: samplerd binary not found at $SAMPLERD_BIN (build it, or set SAMPLERD_BIN)"
  exit 1
fi

source "$root/scripts/lib/phases.sh"
phases_begin test-clients

phase python /usr/bin/python3 -m pytest -q -p no:cacheprovider "$root/clients/python/tests"
phase node bash -c 'cd "$1/clients/node" && { [[ -d node_modules ]] || npm ci --no-audit --no-fund; } && npm test --silent' _ "$root"
phase node-package "$root/clients/node/scripts/test-package.sh"
phase cpp-consumer "$root/tests/clients/consumer/run.sh" "${BUILD_DIR:-$root/build}"
phase go-vet "$root/clients/go/go.sh" vet ./...
phase go "$root/clients/go/go.sh" test -count=1 ./...
phase conformance "$root/scripts/conformance.sh"

phases_end
