#!/bin/sh
# check-imports.sh LIB - the library must not import libc functions whose
# result depends on the process locale or that would read numbers for it
# (strtod reads "0.5" as 0 under LC_NUMERIC=de_DE): the /metrics parser has
# its own decimal reader. Logging through vsnprintf is allowed.
# SPDX-License-Identifier: MIT
set -eu
lib=$1
command -v nm >/dev/null 2>&1 || { echo "nm not found (binutils)" >&2; exit 1; }
imports=$(nm -D --undefined-only "$lib" | awk '{print $NF}' | sed 's/@.*//')
[ -n "$imports" ] || { echo "no imports read from $lib" >&2; exit 1; }
bad=$(printf '%s\n' "$imports" | grep -E \
  '^(strto(d|f|ld|l|ll|ul|ull|imax|umax)|ato(f|i|l|ll)|sscanf|__isoc99_sscanf|setlocale|localeconv|nl_langinfo|newlocale|uselocale)$' \
  || true)
if [ -n "$bad" ]; then
  echo "$lib imports locale-dependent functions:" >&2
  printf '  %s\n' $bad >&2
  exit 1
fi
echo "no locale-dependent imports among $(printf '%s\n' "$imports" | wc -l) imports"
