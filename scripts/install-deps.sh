#!/usr/bin/env bash
# install-deps.sh - make sure the given Debian packages' tools are present,
# installing only what is missing with apt-get (apt-get update only when
# something is missing). Used by scripts/test.sh and scripts/demo.sh.
#
#   scripts/install-deps.sh meson ninja-build pkg-config libcmocka-dev ...
#
# A package counts as present when what it provides is usable (the command is
# on PATH, the pkg-config module exists, the sanitizer runtime links), so
# tools installed some other way are accepted too.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

# Links a trivial program with ThreadSanitizer under clang.
tsan_links() {
  have clang || return 1
  local tmp rc=0
  tmp=$(mktemp -d)
  printf 'int main(void) { return 0; }\n' > "$tmp/t.c"
  clang -fsanitize=thread "$tmp/t.c" -o "$tmp/t" >/dev/null 2>&1 || rc=1
  rm -rf "$tmp"
  return "$rc"
}

dpkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

present() {
  case $1 in
    meson)            have meson ;;
    ninja-build)      have ninja ;;
    pkg-config)       have pkg-config ;;
    libcmocka-dev)    have pkg-config && pkg-config --exists cmocka ;;
    abigail-tools)    have abidiff && have abidw ;;
    binutils)         have nm && have readelf ;;
    gcc)              have gcc ;;
    g++)              have g++ || have c++ ;;
    clang)            have clang && have clang++ ;;
    libclang-rt-dev)  tsan_links ;;
    golang-go)        have go ;;
    python3-pytest)   [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import pytest' >/dev/null 2>&1 ;;
    *)                dpkg_installed "$1" ;;
  esac
}

missing=()
for pkg in "$@"; do
  present "$pkg" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
if ! have apt-get; then
  echo "install-deps: missing ${missing[*]} and no apt-get; install them" \
    "by hand" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if have sudo; then
    sudo=(sudo)
  else
    echo "install-deps: missing ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
fi
# apt's output goes to a log, shown only when apt fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt() {
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" \
    > "$log" 2>&1; then
    cat "$log" >&2
    echo "install-deps: apt-get $* failed" >&2
    exit 1
  fi
}
apt update
apt install -y --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"

# Re-check: a package that installed but does not provide the tool is a
# failure here, not later in a confusing build error.
still=()
for pkg in "${missing[@]}"; do
  present "$pkg" || still+=("$pkg")
done
if [ ${#still[@]} -ne 0 ]; then
  echo "install-deps: still not usable after install: ${still[*]}" >&2
  exit 1
fi
