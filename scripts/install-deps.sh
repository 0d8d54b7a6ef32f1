#!/usr/bin/env bash
# Installs the Debian 12 packages samplerd needs. Idempotent: packages already present are skipped by apt, so
# running it on a provisioned machine costs a few seconds.
#
#   scripts/install-deps.sh           everything the whole suite needs (scripts/test.sh)
#   scripts/install-deps.sh server    only what builds and runs samplerd and samplerctl (scripts/start.sh)
#   scripts/install-deps.sh python    what README's Python client block needs (the venv, Debian's grpcio, protobuf,
#                                     numpy, and protoc + grpc_python_plugin, which generate the stubs at install)
#   scripts/install-deps.sh node      what README's Node client block needs (Node.js and npm)
#   scripts/install-deps.sh go        what README's Go client block needs (Go and the Debian sources go.sh builds with)
#   scripts/install-deps.sh PKG...    just those packages (tools one suite needs, such as clang for the fuzzers)
set -euo pipefail

# The server and samplerctl. deploy/docker/build-packages.sh reads this list for the image's build stage.
packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libabsl-dev
  libxtensor-dev libxsimd-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  prometheus-cpp-dev libcpp-httplib-dev
  libssl-dev
)
# The client groups: what each client's install block in README.md runs. No server group: samplerd comes from
# scripts/start.sh.
python_packages=(
  python3 python3-venv python3-setuptools python3-wheel python3-grpcio python3-protobuf python3-numpy
  protobuf-compiler protobuf-compiler-grpc
)
node_packages=(nodejs)
go_packages=(
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev golang-golang-x-sys-dev
)
# The rest of the suite: tests and benchmarks, the Python, Node and Go clients, the PyTorch model host.
suite_packages=(
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  python3-numpy python3-grpcio python3-protobuf
  openssl curl chromium prometheus
  python3-torch python3-matplotlib python3-pil libopenblas0-pthread fortunes
  python3-pytest python3-yaml python3-setuptools python3-wheel python3-pip python3-venv nodejs
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev golang-golang-x-sys-dev
  protoc-gen-go protoc-gen-go-grpc
  clang-format black
)

# Node.js builds from nodesource bundle npm (and conflict with Debian's npm package): ask for it only if absent.
command -v npm >/dev/null 2>&1 || node_packages+=(npm)

case "${1:-}" in
  server) ;;
  python) packages=("${python_packages[@]}") ;;
  node) packages=("${node_packages[@]}") ;;
  go) packages=("${go_packages[@]}") ;;
  "")
    packages+=("${suite_packages[@]}")
    command -v npm >/dev/null 2>&1 || packages+=(npm)
    ;;
  *) packages=("$@") ;;
esac

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
