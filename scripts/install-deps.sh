#!/usr/bin/env bash
# Installs every Debian 12 package samplerd needs to build, test and run. Idempotent: packages already
# present are skipped by apt, so running it on a provisioned machine costs a few seconds.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libabsl-dev
  libxtensor-dev libxsimd-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  prometheus-cpp-dev libcpp-httplib-dev
  python3-numpy python3-grpcio python3-protobuf
  openssl libssl-dev curl chromium prometheus
  python3-torch python3-matplotlib python3-pil libopenblas0-pthread fortunes
  python3-pytest python3-yaml python3-setuptools python3-wheel python3-pip python3-venv nodejs
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev
  protoc-gen-go protoc-gen-go-grpc
)
# Node.js builds from nodesource bundle npm (and conflict with Debian's npm package): ask for it only if absent.
command -v npm >/dev/null 2>&1 || packages+=(npm)

# `install-deps.sh PKG...` installs just those (tools one suite needs, such as clang for the fuzzers).
if (($#)); then packages=("$@"); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # promtool ships in Debian's prometheus server package, whose install enables and starts the server on a
  # systemd host; only the tool is wanted, so a server installed just now is stopped again.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl > /dev/null 2>&1; then
    $SUDO systemctl disable --now prometheus > /dev/null 2>&1 || true
  fi
fi
