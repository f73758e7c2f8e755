#!/usr/bin/env bash
# check-symbols.sh - the exported symbols of libinferlb.so are exactly the
# committed list, which is exactly the ILB_API functions of the public header
# and exactly the symbols of the version script.
#
#   check-symbols.sh LIBINFERLB.so SYMBOLS.txt HEADER.h VERSION_SCRIPT.sym
#   check-symbols.sh --header-symbols HEADER.h   # print the header's list
#
# Regenerate the committed list after adding a function on purpose:
#   tests/abi/check-symbols.sh --header-symbols include/inferlb/inferlb.h \
#     > tests/abi/symbols.txt
# and list the new symbol in a new node of src/inferlb.sym.
set -euo pipefail
export LC_ALL=C

# Function names declared with ILB_API, comments and preprocessor lines
# stripped, declarations joined across lines.
header_symbols() {
  perl -0777 -ne '
    s{/\*.*?\*/}{ }gs;                 # block comments
    s{//[^\n]*}{ }g;                   # line comments
    s{^[ \t]*#(?:[^\n]*\\\n)*[^\n]*}{ }mg;  # preprocessor lines
    while (/\bILB_API\b([^;{]*?)\(/g) {
      my $decl = $1;
      $decl =~ /([A-Za-z_][A-Za-z0-9_]*)\s*$/ or die "cannot parse: ILB_API$decl\n";
      print "$1\n";
    }' "$1" | sort -u
}

if [ "${1:-}" = "--header-symbols" ]; then
  [ $# -eq 2 ] || { echo "usage: $0 --header-symbols HEADER.h" >&2; exit 2; }
  header_symbols "$2"
  exit 0
fi

if [ $# -ne 4 ]; then
  echo "usage: $0 LIB.so SYMBOLS.txt HEADER.h VERSION_SCRIPT.sym" >&2
  exit 2
fi
lib=$1 expected=$2 header=$3 symfile=$4

command -v nm >/dev/null || { echo "FAIL: nm not found (install binutils)" >&2; exit 1; }
for f in "$lib" "$expected" "$header"; do
  [ -f "$f" ] || { echo "FAIL: no such file: $f" >&2; exit 1; }
done
if [ ! -f "$symfile" ]; then
  echo "FAIL: version script $symfile does not exist" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

# The committed list must be sorted and free of duplicates.
if ! sort -u -c "$expected" 2>/dev/null; then
  echo "FAIL: $expected is not sorted and unique (sort -u it)" >&2
  status=1
fi

# 1. Dynamic symbols defined by the library. Skip the version-node
#    definitions (type A); strip @VERSION / @@VERSION suffixes.
nm -D --defined-only "$lib" > "$tmp/nm.txt"
awk '$2 != "A" { print $3 }' "$tmp/nm.txt" | sed 's/@.*//' | sort -u \
  > "$tmp/exported.txt"

bad_prefix=$(grep -v '^ilb_' "$tmp/exported.txt" || true)
if [ -n "$bad_prefix" ]; then
  echo "FAIL: exported symbols without the ilb_ prefix:" >&2
  echo "$bad_prefix" | sed 's/^/  /' >&2
  status=1
fi
internal=$(grep '^ilb__' "$tmp/exported.txt" || true)
if [ -n "$internal" ]; then
  echo "FAIL: internal ilb__ symbols are exported:" >&2
  echo "$internal" | sed 's/^/  /' >&2
  status=1
fi

if ! diff -u "$expected" "$tmp/exported.txt" > "$tmp/diff.txt"; then
  echo "FAIL: exported symbols of $lib differ from $expected" >&2
  echo "(- committed list, + exported by the library)" >&2
  cat "$tmp/diff.txt" >&2
  status=1
fi

# The only other dynamic symbols are the version nodes themselves (type A),
# named ILB_<version> so that everything nm -D lists carries the prefix.
badnode=$(awk '$2 == "A" && $3 !~ /^ILB_[0-9]/ { print $3 }' "$tmp/nm.txt")
if [ -n "$badnode" ]; then
  echo "FAIL: version nodes not named ILB_<version>:" >&2
  echo "$badnode" | sed 's/^/  /' >&2
  status=1
fi

# Every exported ilb_ symbol carries a version from the version script.
unversioned=$(awk '$2 != "A" && $3 ~ /^ilb_/ && $3 !~ /@@?ILB_[0-9]/ { print $3 }' \
  "$tmp/nm.txt")
if [ -n "$unversioned" ]; then
  echo "FAIL: exported symbols without an ILB_<version> node" \
    "(is the version script linked?):" >&2
  echo "$unversioned" | sed 's/^/  /' >&2
  status=1
fi

# 2. The header's ILB_API functions.
header_symbols "$header" > "$tmp/header.txt"
if ! diff -u "$expected" "$tmp/header.txt" > "$tmp/diff.txt"; then
  echo "FAIL: ILB_API functions of $header differ from $expected" >&2
  echo "(- committed list, + declared ILB_API in the header)" >&2
  cat "$tmp/diff.txt" >&2
  status=1
fi

# 3. The version script lists every symbol explicitly: no wildcard in a
#    global: section, and the listed names equal the committed list.
perl -0777 -ne '
  s{/\*.*?\*/}{ }gs; s{#[^\n]*}{ }g; s{//[^\n]*}{ }g;
  while (/global\s*:(.*?)(?:local\s*:|\})/gs) {
    for my $s (split /;/, $1) {
      $s =~ s/^\s+|\s+$//g;
      next if $s eq "";
      print "$s\n";
    }
  }' "$symfile" | sort > "$tmp/symfile-all.txt"
if grep -q '[*?[]' "$tmp/symfile-all.txt"; then
  echo "FAIL: $symfile uses a wildcard in a global: section;" \
    "list each symbol explicitly:" >&2
  grep '[*?[]' "$tmp/symfile-all.txt" | sed 's/^/  /' >&2
  status=1
fi
dups=$(uniq -d "$tmp/symfile-all.txt")
if [ -n "$dups" ]; then
  echo "FAIL: $symfile lists a symbol more than once:" >&2
  echo "$dups" | sed 's/^/  /' >&2
  status=1
fi
sort -u "$tmp/symfile-all.txt" > "$tmp/symfile.txt"
if ! diff -u "$expected" "$tmp/symfile.txt" > "$tmp/diff.txt"; then
  echo "FAIL: global symbols of $symfile differ from $expected" >&2
  echo "(- committed list, + listed in the version script)" >&2
  cat "$tmp/diff.txt" >&2
  status=1
fi

if [ "$status" -eq 0 ]; then
  echo "ok: $(wc -l < "$expected") symbols exported, declared ILB_API and" \
    "versioned, as committed"
fi
exit "$status"
