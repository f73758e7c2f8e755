#!/usr/bin/env bash
# demo.sh - build the library and run the policy demo (examples/demo.c):
# the routing policies on one simulated, deterministic workload; then the
# failure-handling demo (examples/failover.c): a replica dies and returns.
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
ninja -C build   # the library, examples, tests and benchmarks
./build/examples/demo
echo
echo '==== failure handling: examples/failover.c'
exec ./build/examples/failover
