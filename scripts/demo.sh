#!/usr/bin/env bash
# demo.sh - build everything and run the main job: the fleet simulator
# (bench/sim) replaying the bundled Mooncake trace on 8 mixed-GPU replicas
# (2 each of H100, A100, L4, T4) at 50%, 80% and 95% of their capacity,
# every routing policy, through the real library. Prints the comparison
# table and writes SVG charts to build/sim/. Then the failure-handling
# example (examples/failover.c): a replica dies and comes back.
#
#   ./scripts/demo.sh
#
# Installs meson, ninja, pkg-config and cmocka (so the default build
# configures) with apt-get if they are missing; builds in build/.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh meson ninja-build pkg-config libcmocka-dev gcc

if [ ! -f build/build.ninja ]; then
  meson setup build
fi
ninja -C build   # the library, examples, tests, benchmarks, the simulator
echo '==== the fleet simulator: bench/data/mooncake/synthetic_trace.jsonl'
./build/bench/sim --trace bench/data/mooncake/synthetic_trace.jsonl \
  --load 0.5,0.8,0.95 --out build/sim
echo
echo '==== failure handling: examples/failover.c'
exec ./build/examples/failover
