#!/usr/bin/env bash
# check-abi.sh - compare the ABI of the built libinferlb.so with the committed
# baseline (abidw output). Any change fails: an added function as much as a
# changed struct, so the baseline only moves on purpose, with
# tests/abi/update-abi-baseline.sh, in the commit that changes the ABI.
#
#   check-abi.sh BASELINE.abi LIBINFERLB.so PUBLIC_HEADERS_DIR
#
# Needs abidiff (Debian: abigail-tools). Missing tools fail the test: a check
# that cannot run has not passed.
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 BASELINE.abi LIB.so PUBLIC_HEADERS_DIR" >&2
  exit 2
fi
baseline=$1 lib=$2 headers=$3

if ! command -v abidiff >/dev/null; then
  echo "FAIL: abidiff not found; install it (apt-get install abigail-tools)" >&2
  exit 1
fi
for f in "$baseline" "$lib"; do
  [ -f "$f" ] || { echo "FAIL: no such file: $f" >&2; exit 1; }
done
[ -d "$headers" ] || { echo "FAIL: no such directory: $headers" >&2; exit 1; }

# A baseline without source locations makes --headers-dir treat every type
# as private and hide every change: refuse it rather than pass blindly.
if ! grep -q "filepath='[^']*inferlb\.h'" "$baseline"; then
  echo "FAIL: $baseline has no source locations for the public header" >&2
  echo "(made with --no-show-locs?); regenerate it with" \
    "tests/abi/update-abi-baseline.sh" >&2
  exit 1
fi

set +e
abidiff --fail-no-debug-info \
  --headers-dir1 "$headers" --headers-dir2 "$headers" \
  "$baseline" "$lib"
rc=$?
set -e

# Exit code bits (man abidiff): 1 error, 2 usage error, 4 ABI change,
# 8 incompatible ABI change.
if [ "$rc" -eq 0 ]; then
  echo "ok: ABI of $(basename "$lib") equals the baseline $(basename "$baseline")"
  exit 0
fi
if [ $((rc & 3)) -ne 0 ]; then
  echo "FAIL: abidiff could not compare (exit $rc: tool or usage error)" >&2
  exit 1
fi
if [ $((rc & 8)) -ne 0 ]; then
  echo "FAIL: INCOMPATIBLE ABI change against the baseline (abidiff exit $rc)." >&2
  echo "An incompatible change needs a new SONAME; never do it in a release" \
    "series. Undo it (add a new function or struct field instead)." >&2
else
  echo "FAIL: ABI changed against the baseline (abidiff exit $rc)." >&2
  echo "If the change is intended and compatible (e.g. a new function in a new" \
    "version node), regenerate the baseline in the same commit:" >&2
  echo "  ./tests/abi/update-abi-baseline.sh" >&2
fi
exit 1
