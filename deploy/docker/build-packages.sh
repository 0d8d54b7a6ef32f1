#!/bin/sh
# Prints, one a line, the Debian packages the image's build stage installs: taken from the `packages=(...)`
# list of scripts/install-deps.sh (so the image compiles against the same packages as CI), keeping what
# compiles the C++ server and dropping what only tests, benchmarks or other clients need (Python, Go,
# Node.js, torch, GoogleTest, Google Benchmark), which would triple the build stage's download.
#
#   deploy/docker/build-packages.sh [path/to/install-deps.sh]
set -eu
deps=${1:-scripts/install-deps.sh}
awk '/^packages=\(/ { on = 1; sub(/^packages=\(/, "") }
     on { sub(/#.*/, ""); if (sub(/\).*/, "")) { print; on = 0; next } print }' "$deps" \
  | tr -s ' \t' '\n\n' | sed '/^$/d' \
  | awk '
      # toolchain and code generators
      /^(build-essential|cmake|ninja-build|pkg-config|ca-certificates|protobuf-compiler|protobuf-compiler-grpc)$/ { print; next }
      # test and benchmark frameworks
      /^(libgtest-dev|libgmock-dev|googletest|libbenchmark-dev)$/ { next }
      # Go modules packaged as -dev
      /^golang-/ { next }
      # C and C++ libraries
      /-dev$/ { print }'
