#!/usr/bin/env bash
# Observability tests, as CI runs them (issue 20), each timed:
#   1. live page:  a real samplerd, steps of two profiles, the page in headless Chromium, the screenshot's dots
#                  and the data endpoint's counts (tests/observability/live_page_test.py)
#   2. dashboard:  deploy/observability's rules and dashboard against a live server's /metrics and promtool
#                  (tests/observability/deploy_observability_test.py)
#   3. operator:   the ServiceMonitor / PrometheusRule component against the Prometheus Operator's schemas
#                  (deploy/observability/validate, npm @kubernetes-models/prometheus-operator), as files and as
#                  rendered by `kubectl kustomize` (kustomize v4+, KUBECTL=path) into the overlay
#                  deploy/k8s/overlays/standalone-monitored: the ServiceMonitor selects the rendered Service and
#                  its metrics port, and the rest of the render equals the standalone overlay's
# Needs a built samplerd (SAMPLERD_BIN, default build/service/samplerd) and scripts/install-deps.sh's packages
# (chromium, prometheus for promtool, python3-pil, python3-yaml, nodejs/npm).
#
#   scripts/test-observability.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export SAMPLERD_BIN=${SAMPLERD_BIN:-$PWD/build/service/samplerd}

source scripts/lib/phases.sh
phases_begin test-observability

operator() {
  local tools=deploy/observability/validate stamp=deploy/observability/validate/node_modules/.samplerd-lock
  if ! cmp -s "$tools/package-lock.json" "$stamp" 2>/dev/null; then
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error > /dev/null) || return 1
    cp "$tools/package-lock.json" "$stamp"
  fi
  node "$tools/validate.mjs" deploy/observability/prometheus-operator || return 1
  local kubectl=${KUBECTL:-kubectl} out=${OBSERVABILITY_BUILD_DIR:-build-observability}
  command -v "$kubectl" > /dev/null || { echo "operator: FAIL: kubectl not found (KUBECTL=$kubectl)" >&2; return 1; }
  mkdir -p "$out"
  "$kubectl" kustomize deploy/k8s/overlays/standalone-monitored > "$out/standalone-monitored.yaml" || return 1
  "$kubectl" kustomize deploy/k8s/overlays/standalone > "$out/standalone.yaml" || return 1
  node "$tools/validate.mjs" deploy/observability/prometheus-operator \
    --render "$out/standalone-monitored.yaml" --base "$out/standalone.yaml"
}

pytest=(/usr/bin/python3 -m pytest -q -p no:cacheprovider)
phase live-page "${pytest[@]}" tests/observability/live_page_test.py
phase dashboard "${pytest[@]}" tests/observability/deploy_observability_test.py
phase operator operator

phases_end
