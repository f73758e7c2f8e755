#!/usr/bin/env bash
# test.sh - every check the project makes, in the order a change can break
# them. This is the command the README and CI run:
#
#   ./scripts/test.sh
#
# On Debian 12 as root it first installs what is missing (meson, ninja,
# cmocka, abigail-tools, pkg-config, g++, clang). Then:
#   1. normal build with --werror; suites core (with hash, telemetry,
#      health, prefix, traffic), abi, examples and sim (the fleet simulator)
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build; suites core and
#      examples
#   3. ThreadSanitizer build (clang); suite core (which includes stress)
#   4. meson install --destdir, then examples/minimal.c compiled against the
#      installed pkg-config file, shared and static, and run
#   5. bench smoke run (pick_bench, parse_bench, prefix_bench, router_bench
#      --quick; no timing is
#      asserted)
#   6. the Python binding's pytest suite and the Go binding's go vet and
#      go test -race, against the library of step 1; their overhead
#      benchmarks in quick mode
# Build directories live under build-ci/ and are rebuilt from scratch.
# Stops at the first failure (printing the test log); the last lines say
# ALL CHECKS PASSED and how many checks ran.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
ci=$root/build-ci
start=$(date +%s)
passed=0
step_name="setup"

elapsed() {
  local s=$(($(date +%s) - start))
  printf '%dm%02ds' $((s / 60)) $((s % 60))
}

step() {
  step_name=$*
  printf '\n==== [%s] %s\n' "$(elapsed)" "$*"
}

on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '\nCHECKS FAILED in step "%s" after %s (exit %d)\n' \
      "$step_name" "$(elapsed)" "$rc"
    echo "checks: $passed passed, 1 failed"
  fi
}
trap on_exit EXIT

# Count the tests of the last `meson test` run in a build directory; every
# suite asked for must have run at least one test.
count_tests() {
  local dir=$1 log=$1/meson-logs/testlog.json n=0 suite
  shift
  [ -f "$log" ] && n=$(grep -c '"result": "OK"' "$log" || true)
  if [ "$n" -eq 0 ]; then
    echo "no test ran in $dir" >&2
    return 1
  fi
  for suite in "$@"; do
    # test names read "project:suite1+suite2 / name"
    if ! grep -Eq "\"name\": \"[^\"/]*[:+]$suite[+ ]" "$log"; then
      echo "suite '$suite' ran no test in $dir" >&2
      return 1
    fi
  done
  passed=$((passed + n))
}

# run_tests DIR SUITE...: meson test of those suites, printing the whole test
# log when anything fails. A command
# in the array test_prefix, if any, runs meson test (and so every test).
test_prefix=()
run_tests() {
  local dir=$1
  shift
  rm -f "$dir/meson-logs/testlog.json" # "no suitable tests" leaves the old one
  local args=() suites=() suite
  for suite in "$@"; do
    args+=(--suite "$suite")
    suites+=("$suite")
  done
  if ! "${test_prefix[@]}" meson test -C "$dir" \
    "${args[@]}"; then
    echo "---- $dir/meson-logs/testlog.txt ----"
    cat "$dir/meson-logs/testlog.txt" || true
    return 1
  fi
  count_tests "$dir" "${suites[@]}"
}

fresh_setup() {
  local dir=$1
  shift
  rm -rf "$dir"
  meson setup "$dir" "$@"
}

# ---------------------------------------------------------------------------
step "0. dependencies"
./scripts/install-deps.sh meson ninja-build pkg-config libcmocka-dev \
  abigail-tools binutils gcc g++ clang libclang-rt-dev golang-go \
  python3-pytest python3-pip python3-setuptools
mkdir -p "$ci"
echo "meson $(meson --version), ninja $(ninja --version)," \
  "$(gcc --version | head -n1), $(clang --version | head -n1)"

# ---------------------------------------------------------------------------
step "1. normal build (--werror): suites core (with hash, telemetry, health, prefix, traffic), abi, examples, sim"
fresh_setup "$ci/normal" --werror -Dbuildtype=debugoptimized
ninja -C "$ci/normal"
run_tests "$ci/normal" core hash telemetry health prefix traffic abi examples sim

# ---------------------------------------------------------------------------
step "2. ASan + UBSan build: suites core, examples"
fresh_setup "$ci/asan" -Dbuildtype=debugoptimized \
  -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false \
  -Dc_args=-fno-omit-frame-pointer
ninja -C "$ci/asan"
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:strict_string_checks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  run_tests "$ci/asan" core examples

# ---------------------------------------------------------------------------
step "3. TSan build (clang): suite core (includes stress)"
CC=clang CXX=clang++ fresh_setup "$ci/tsan" -Dbuildtype=debugoptimized \
  -Db_sanitize=thread -Db_lundef=false -Dbench=false -Dexamples=false
ninja -C "$ci/tsan"
# TSan maps its shadow memory at fixed addresses; with high ASLR entropy
# (vm.mmap_rnd_bits > 28) older runtimes fail to start. Without ASLR they
# always do, and it changes nothing else for a test.
if setarch "$(uname -m)" -R true 2>/dev/null; then
  test_prefix=(setarch "$(uname -m)" -R)
fi
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  run_tests "$ci/tsan" core stress health
test_prefix=()

# ---------------------------------------------------------------------------
step "4. install into a DESTDIR; build examples/minimal.c against it"
dest=$ci/destdir
rm -rf "$dest" "$ci/install-check"
mkdir -p "$ci/install-check"
meson install -C "$ci/normal" --no-rebuild --destdir "$dest"
pc=$(find "$dest" -name inferlb.pc -print -quit)
[ -n "$pc" ] || { echo "no inferlb.pc installed under $dest" >&2; exit 1; }
# Only the installed tree: the sysroot prefixes every -I and -L with $dest.
export PKG_CONFIG_LIBDIR=$(dirname "$pc")
export PKG_CONFIG_SYSROOT_DIR=$dest
cflags=$(pkg-config --cflags inferlb)
libs=$(pkg-config --libs inferlb)
# pkgconf prefixes --variable output with the sysroot, pkg-config 0.29 not.
pc_path() {
  local v
  v=$(pkg-config --variable="$1" inferlb)
  case $v in "$dest"/*) echo "$v" ;; *) echo "$dest$v" ;; esac
}
libdir=$(pc_path libdir)
echo "pkg-config: $cflags $libs"
[ -f "$(pc_path includedir)/inferlb/inferlb.h" ] || {
  echo "inferlb/inferlb.h is not installed" >&2; exit 1; }
[ -e "$libdir/libinferlb.so.0" ] || {
  echo "libinferlb.so.0 (SONAME link) is not installed" >&2; exit 1; }
# shellcheck disable=SC2086 # word splitting of pkg-config output is wanted
cc -std=c99 -pedantic -Wall -Wextra -Werror examples/minimal.c $cflags $libs \
  -Wl,-rpath,"$libdir" -o "$ci/install-check/minimal-shared"
resolved=$(ldd "$ci/install-check/minimal-shared" | grep libinferlb)
echo "resolves: $resolved"
case $resolved in
  *"$dest"*) ;;
  *) echo "minimal-shared does not use the installed library" >&2; exit 1 ;;
esac
"$ci/install-check/minimal-shared"
# shellcheck disable=SC2086
cc -std=c99 -pedantic -Wall -Wextra -Werror examples/minimal.c $cflags \
  -Wl,-Bstatic -linferlb -Wl,-Bdynamic \
  $(pkg-config --static --libs-only-L --libs-only-other inferlb) \
  $(pkg-config --static --libs-only-l inferlb | sed 's/-linferlb//') \
  -o "$ci/install-check/minimal-static"
if ldd "$ci/install-check/minimal-static" | grep -q libinferlb; then
  echo "minimal-static links libinferlb dynamically" >&2
  exit 1
fi
"$ci/install-check/minimal-static"
unset PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR
passed=$((passed + 1))

# ---------------------------------------------------------------------------
step "5. bench smoke run"
# Full output in build-ci/bench-quick.txt; only its end here.
"$ci/normal/bench/pick_bench" --quick > "$ci/bench-quick.txt"
"$ci/normal/bench/parse_bench" --quick >> "$ci/bench-quick.txt"
"$ci/normal/bench/prefix_bench" --quick >> "$ci/bench-quick.txt"
"$ci/normal/bench/router_bench" --quick >> "$ci/bench-quick.txt"
tail -n 4 "$ci/bench-quick.txt"
passed=$((passed + 1))

# ---------------------------------------------------------------------------
step "6. bindings: Python (ctypes, pytest) and Go (cgo, go vet, go test -race)"
# Both load the library of the normal build; neither needs the network.
lib=$ci/normal
INFERLB_LIBRARY=$lib/libinferlb.so.0 /usr/bin/python3 -m pytest -q \
  -p no:cacheprovider bindings/python/tests
passed=$((passed + 1))
export CGO_LDFLAGS="-L$lib -Wl,-rpath,$lib" GOPROXY=off GOFLAGS=-mod=mod \
  GOCACHE=$ci/go-cache GOPATH=$ci/go-path
(cd bindings/go && go vet ./... && go test -race -count=1 ./...)
passed=$((passed + 1))
INFERLB_LIBRARY=$lib/libinferlb.so.0 /usr/bin/python3 \
  bindings/python/bench_overhead.py --quick --pick-bench "$lib/bench/pick_bench"
(cd bindings/go && INFERLB_PICK_BENCH=$lib/bench/pick_bench \
  go run ./cmd/overhead --quick)

# ---------------------------------------------------------------------------
printf '\n==== [%s] done\n' "$(elapsed)"
echo "ALL CHECKS PASSED in $(elapsed)"
echo "checks: $passed passed, 0 failed"
