#!/usr/bin/env bash
# Issue 21's reference, measured on this machine: llama.cpp's sampler chain (top-k 40 -> top-p 0.95 -> min-p 0.05
# -> temp 0.8 -> dist) beside the samplerd step (`entropix`, six metrics) over the same 16 rotating inputs, in one
# process, ROUNDS times; prints per workload each side's median and the median of the per-round ratios step / chain.
# Issue 21's targets as ratios to the chain: S <= 0.25, L <= 0.5 on one thread; XL <= 1.0 on both cores.
# One thread is pinned to CPU ${CPU:-1}; the two-thread XL step runs unpinned, with the chain in the same process.
# floor/chain is BM_RotatingFloor's (each tensor read once, one exponential per entry, nothing else) over the chain.
#
# llama.cpp is not a dependency of samplerd. Its source comes from the npm registry (the node-llama-cpp package
# ships llama.cpp's git tree as a bundle, release NODE_LLAMA_CPP's llama/llama.cpp.info.json names), built once
# the way llama.cpp builds by default, with -march=native for ggml (GGML_NATIVE; the issue's reference was built
# with -march=native), and installed under LLAMA_DIR. The sampler chain is libllama's code, outside GGML_NATIVE;
# -march=native for the whole build made the chain slower here (docs/benchmarks.md), so the faster build is the
# reference.
#
#   scripts/bench-llama-chain.sh [ROUNDS]     # default 8; MIN_TIME seconds per benchmark and round (0.3);
#                                             # samplerd builds in ${LLAMA_BUILD_DIR:-build-llama}
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-8}
NODE_LLAMA_CPP=${NODE_LLAMA_CPP:-3.22.1}
LLAMA_DIR=${LLAMA_DIR:-/var/tmp/samplerd-llama.cpp-$NODE_LLAMA_CPP}
LLAMA_BUILD_DIR=${LLAMA_BUILD_DIR:-build-llama}

if [ ! -f "$LLAMA_DIR/install/lib/cmake/llama/llama-config.cmake" ]; then  # a finished install
  command -v npm > /dev/null || { echo "bench-llama-chain: npm is missing (scripts/install-deps.sh node)" >&2; exit 1; }
  rm -rf "$LLAMA_DIR" && mkdir -p "$LLAMA_DIR/npm"
  (cd "$LLAMA_DIR/npm" && npm pack --silent "node-llama-cpp@$NODE_LLAMA_CPP" > /dev/null &&
    tar xzf "node-llama-cpp-$NODE_LLAMA_CPP.tgz" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json)
  git clone -q "$LLAMA_DIR/npm/package/llama/gitRelease.bundle" "$LLAMA_DIR/src" 2> /dev/null
  cmake -S "$LLAMA_DIR/src" -B "$LLAMA_DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
    -DCMAKE_INSTALL_PREFIX="$LLAMA_DIR/install" > "$LLAMA_DIR/cmake.log" 2>&1 ||
    { tail -20 "$LLAMA_DIR/cmake.log" >&2; exit 1; }
  ninja -C "$LLAMA_DIR/build" install > "$LLAMA_DIR/build.log" 2>&1 || { tail -20 "$LLAMA_DIR/build.log" >&2; exit 1; }
fi
echo "llama.cpp $(cat "$LLAMA_DIR/npm/package/llama/llama.cpp.info.json" | tr -d ' \n') from node-llama-cpp@$NODE_LLAMA_CPP"

rm -f "$LLAMA_BUILD_DIR/CMakeCache.txt"  # it remembers the llama.cpp found before, perhaps another LLAMA_DIR
cmake -S . -B "$LLAMA_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMPLERD_BUILD_TESTS=OFF -DSAMPLERD_BUILD_BENCH=ON \
  -DSAMPLERD_BENCH_LLAMA_CPP=ON -Dllama_DIR="$LLAMA_DIR/install/lib/cmake/llama" > /dev/null
ninja -C "$LLAMA_BUILD_DIR" bench/core_benchmark_llama > /dev/null
binary=$LLAMA_BUILD_DIR/bench/core_benchmark_llama

for round in $(seq "$rounds"); do
  for threads in 1 2; do
    if [ "$threads" = 1 ]; then
      pin=(taskset -c "${CPU:-1}") filter='BM_StepRotating/[012]/1/1/|BM_LlamaChainRotating|BM_RotatingFloor'
    else
      pin=() filter='BM_StepRotating/2/2/1/|BM_LlamaChainRotating/2/'
    fi
    "${pin[@]}" "$binary" --benchmark_filter="$filter" --benchmark_min_time="${MIN_TIME:-0.3}" \
      --benchmark_format=json 2> /dev/null |
      /usr/bin/python3 -c '
import json, sys
for b in json.load(sys.stdin)["benchmarks"]:
    print(sys.argv[1], sys.argv[2], b["name"], b["real_time"])' "$round" "$threads"
  done
done | /usr/bin/python3 -c '
import collections, statistics, sys
t = collections.defaultdict(dict)  # (round, run) -> name -> us
for line in sys.stdin:
    r, run, name, us = line.split()
    t[(r, run)][name.split("/real_time")[0]] = float(us)
rows = [("S, one thread", "1", "BM_StepRotating/0/1/1", "BM_LlamaChainRotating/0", "BM_RotatingFloor/0", 0.25),
        ("L, one thread", "1", "BM_StepRotating/1/1/1", "BM_LlamaChainRotating/1", "BM_RotatingFloor/1", 0.5),
        ("XL, one thread", "1", "BM_StepRotating/2/1/1", "BM_LlamaChainRotating/2", "BM_RotatingFloor/2", None),
        ("XL, two threads", "2", "BM_StepRotating/2/2/1", "BM_LlamaChainRotating/2", None, 1.0)]
print("{:16s} {:>9s} {:>9s} {:>10s} {:>13s} {:>11s}  target".format(
    "workload", "step us", "chain us", "step/chain", "(min-max)", "floor/chain"))
for label, run, step, chain, floor, target in rows:
    got = [v for (r, rn), v in t.items() if rn == run and step in v and chain in v]
    if not got:
        sys.exit("bench-llama-chain: no figures for " + label)
    ratios = [v[step] / v[chain] for v in got]
    with_floor = [v[floor] / v[chain] for v in got if floor in v]
    floors = "{:11.3f}".format(statistics.median(with_floor)) if with_floor else "{:>11s}".format("-")
    print(f"{label:16s} {statistics.median(v[step] for v in got):9.1f} {statistics.median(v[chain] for v in got):9.1f}"
          f" {statistics.median(ratios):10.3f} {min(ratios):6.3f}-{max(ratios):.3f} {floors}  "
          + (f"<= {target}" if target else ""))
'
