#!/usr/bin/env bash
# check.sh SIM TRACE - the simulator's end-to-end check (suite sim): every
# policy at one load on a trace, twice with the same seed: the output must
# be byte-identical and hold one SIM line per policy with no failure.
set -euo pipefail
sim=$1 trace=$2
out1=$("$sim" --trace "$trace" --load 0.8 --seed 7)
out2=$("$sim" --trace "$trace" --load 0.8 --seed 7)
if [ "$out1" != "$out2" ]; then
  echo "sim: two runs with the same seed differ" >&2
  diff <(echo "$out1") <(echo "$out2") | head -20 >&2
  exit 1
fi
n=$(grep -c '^SIM policy=' <<<"$out1")
if [ "$n" -ne 15 ]; then
  echo "sim: $n SIM lines, expected 15 (one per policy)" >&2
  exit 1
fi
# every line has every field
if grep '^SIM ' <<<"$out1" | grep -v -E 'ttft_p50_ms=[0-9.]+ ttft_p99_ms=[0-9.]+ e2e_p99_ms=[0-9.]+ tput_tok_s=[0-9]+ hit_rate=[0-9.]+ hit_ceiling=[0-9.]+ max_mean_load=[0-9.]+ shed=[0-9]+ failed=[0-9]+$' >&2; then
  echo "sim: malformed SIM line(s) above" >&2
  exit 1
fi
echo "$out1" | grep '^SIM ' | head -3
echo "ok: deterministic, 15 policies"
