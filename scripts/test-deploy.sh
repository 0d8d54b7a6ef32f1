#!/usr/bin/env bash
# Deployment tests, as CI runs them (issue 6), each timed:
#   1. k8s:      render every overlay of deploy/k8s and validate it (deploy/k8s/render.sh)
#   2. scaleout: 3 replicas, 16 sequences x 300 steps, SIGKILL + SIGTERM mid-run (tests/scaleout/run.sh)
#   3. image:    build the container image with podman and smoke-test it (deploy/docker/build-image.sh,
#                deploy/docker/smoke-test.sh)
# Needs a built samplerd (builds it with scripts/build.sh when missing) and root for apt (podman, buildah,
# debootstrap are installed by build-image.sh). SKIP_IMAGE=1 leaves out part 3; IMAGE_GIT=HEAD builds the image
# from that commit instead of the work tree (for a work tree with others' unfinished edits; CI's clone is clean).
#
#   scripts/test-deploy.sh
set -uo pipefail
cd "$(dirname "$0")/.."

export SAMPLERD_BIN=${SAMPLERD_BIN:-$PWD/build/service/samplerd}
if [ ! -x "$SAMPLERD_BIN" ]; then
  scripts/install-deps.sh && scripts/build.sh || { echo "test-deploy: build failed" >&2; exit 1; }
fi

source scripts/lib/phases.sh
phases_begin test-deploy

phase k8s deploy/k8s/render.sh
phase scaleout tests/scaleout/run.sh
if [ "${SKIP_IMAGE:-0}" = 1 ]; then
  echo "=== test-deploy: image: skipped (SKIP_IMAGE=1)"
else
  phase image-build deploy/docker/build-image.sh --tag samplerd:ci ${IMAGE_GIT:+--git "$IMAGE_GIT"}
  phase image-smoke deploy/docker/smoke-test.sh --tag samplerd:ci
fi

phases_end
