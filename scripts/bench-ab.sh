#!/usr/bin/env bash
# Core A/B in one run: alternates two core_benchmark binaries (say, main's and a change's) ROUNDS times on one
# pinned CPU and prints, per benchmark, each side's median CPU time and the median of the per-round ratios
# (base / new, > 1 means the change is faster). Alternating puts a shared machine's noise on both sides.
# MIN_TIME (seconds per benchmark and round, default 0.3) trades rounds for run length. CPU=all runs unpinned, for
# the two-thread benchmarks; those named .../real_time are compared on real time, the others on CPU time.
#
#   git worktree add /tmp/base main && cmake -S /tmp/base -B /tmp/base/build -G Ninja \
#     && ninja -C /tmp/base/build bench/core_benchmark
#   scripts/bench-ab.sh /tmp/base/build/bench/core_benchmark build/bench/core_benchmark 'BM_Step' 8
set -euo pipefail
base=$1; new=$2; filter=${3:-BM_Step}; rounds=${4:-6}
for _ in $(seq "$rounds"); do
  for which in base new; do
    bin=$base; [ "$which" = new ] && bin=$new
    pin=(taskset -c "${CPU:-1}")
    [ "${CPU:-1}" = all ] && pin=()
    "${pin[@]}" "$bin" --benchmark_filter="$filter" --benchmark_min_time="${MIN_TIME:-0.3}" --benchmark_format=json 2> /dev/null |
      /usr/bin/python3 -c "
import json, sys
for b in json.load(sys.stdin)['benchmarks']:
    print('$which', b['name'], b['real_time' if b['name'].endswith('real_time') else 'cpu_time'])"
  done
done | /usr/bin/python3 -c "
import collections, statistics, sys
v = collections.defaultdict(list)
for line in sys.stdin:
    which, name, t = line.split()
    v[(name, which)].append(float(t))
for name in sorted({n for n, _ in v}):
    b, x = v[(name, 'base')], v[(name, 'new')]
    if not b or not x:  # a benchmark only one side has
        print(f'{name:36s} only in', 'new' if x else 'base')
        continue
    ratio = statistics.median(bb / xx for bb, xx in zip(b, x))
    print(f'{name:36s} base {statistics.median(b):8.1f} us  new {statistics.median(x):8.1f} us  base/new {ratio:.3f}')
"
