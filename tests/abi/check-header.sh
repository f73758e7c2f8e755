#!/usr/bin/env bash
# check-header.sh - compile a file that includes the public header with the
# strictest flags of its language; any warning fails.
#
#   check-header.sh c   SOURCE INCLUDE_DIR -- COMPILER [ARGS...]
#   check-header.sh c++ SOURCE INCLUDE_DIR -- COMPILER [ARGS...]
#
# The compiler comes from meson (compiler.cmd_array()). An empty compiler is a
# failure, not a skip: the header promise covers C++.
set -euo pipefail

if [ $# -lt 4 ] || [ "$4" != "--" ]; then
  echo "usage: $0 c|c++ SOURCE INCLUDE_DIR -- COMPILER [ARGS...]" >&2
  exit 2
fi
lang=$1 src=$2 incdir=$3
shift 4
if [ $# -eq 0 ]; then
  echo "FAIL: no $lang compiler configured (Debian: apt-get install g++)" >&2
  exit 1
fi

case $lang in
  c)   flags=(-x c -std=c99 -pedantic -Werror -Wall -Wextra
              -Wstrict-prototypes -Wmissing-prototypes -Wundef -Wshadow) ;;
  c++) flags=(-x c++ -std=c++11 -pedantic -Werror -Wall -Wextra
              -Wundef -Wshadow -Wold-style-cast -Wzero-as-null-pointer-constant) ;;
  *)   echo "unknown language: $lang" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "+ $* ${flags[*]} -I$incdir -c $src"
"$@" "${flags[@]}" -I"$incdir" -c "$src" -o "$tmp/out.o"
echo "ok: public header compiles as $lang (${flags[2]} -pedantic -Werror)"
