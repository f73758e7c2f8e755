#!/usr/bin/env bash
# update-abi-baseline.sh - rebuild libinferlb.so and rewrite the committed ABI
# baseline tests/abi/libinferlb.abi. Run it on purpose, in the commit that
# changes the ABI, after checking the change is compatible:
#
#   ./tests/abi/update-abi-baseline.sh
#   git diff tests/abi/libinferlb.abi      # review what changed
#
# Uses its own build directory (build-ci/abi-baseline, default options:
# debugoptimized, so the library has DWARF). Needs meson, ninja and abidw
# (Debian: abigail-tools).
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v abidw >/dev/null || {
  echo "abidw not found; install it (apt-get install abigail-tools)" >&2
  exit 1
}

builddir=build-ci/abi-baseline
if [ -f "$builddir/build.ninja" ]; then
  meson setup --reconfigure "$builddir" -Dtests=false -Dbench=false \
    -Dexamples=false >/dev/null
else
  meson setup "$builddir" -Dtests=false -Dbench=false -Dexamples=false \
    >/dev/null
fi
ninja -C "$builddir" >/dev/null

# the file the development symlink names: an older version's file may still
# lie in the build directory
lib=$(readlink -f "$builddir/libinferlb.so" || true)
[ -n "$lib" ] || { echo "no libinferlb.so.* in $builddir" >&2; exit 1; }

out=tests/abi/libinferlb.abi
# Keep the source locations (no --no-show-locs): abidiff --headers-dir uses
# them to tell public types from private ones, and without them it filters
# out every change. --drop-private-types keeps the library's internal structs
# (the definition behind an opaque handle) out of the baseline.
abidw --headers-dir include/inferlb --no-corpus-path --no-comp-dir-path \
  --drop-private-types "$lib" > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out from $lib"
