#!/usr/bin/env python3
"""Cost of one pick + complete through the Python binding vs the C figure.

    INFERLB_LIBRARY=build/libinferlb.so.0 python3 bindings/python/bench_overhead.py \
        --pick-bench build/bench/pick_bench [--quick]

Binding: p2c, 8 replicas, no key, one thread; ``pool.pick().complete()``
timed over N pairs, median of several runs. C: pick_bench --policy p2c
--n 8 --threads 1 --no-build --reps 3 (its own median). Prints exactly
``BENCH binding=python ns=<x> c_ns=<y>`` (c_ns=nan when pick_bench is not
found). Path of pick_bench: --pick-bench, else $INFERLB_PICK_BENCH, else
<dir of $INFERLB_LIBRARY>/bench/pick_bench.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import inferlb  # noqa: E402


def binding_ns(pairs: int, runs: int) -> float:
    with inferlb.Pool(policy="p2c") as pool:
        for i in range(8):
            pool.add_replica(f"replica-{i}")
        pick = pool.pick
        for _ in range(min(pairs, 10000)):  # warm up
            pick().complete()
        results = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            for _ in range(pairs):
                pick().complete()
            results.append((time.perf_counter_ns() - t0) / pairs)
        return statistics.median(results)


def c_ns(pick_bench: str | None, quick: bool) -> float:
    if not pick_bench or not os.access(pick_bench, os.X_OK):
        return float("nan")
    cmd = [pick_bench, "--policy", "p2c", "--n", "8", "--threads", "1",
           "--no-build", "--reps", "3"] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"^BENCH policy=p2c n=8 threads=1 ns=([0-9.]+)", out, re.M)
    if not m:
        raise SystemExit(f"bench_overhead: no BENCH line from {cmd}:\n{out}")
    return float(m.group(1))


def default_pick_bench() -> str | None:
    if os.environ.get("INFERLB_PICK_BENCH"):
        return os.environ["INFERLB_PICK_BENCH"]
    lib = os.environ.get("INFERLB_LIBRARY")
    if lib:
        return str(pathlib.Path(lib).resolve().parent / "bench" /
                   "pick_bench")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pick-bench", default=default_pick_bench())
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true",
                    help="short runs (smoke test); numbers are noisy")
    args = ap.parse_args(argv)
    pairs, runs = (5_000, 3) if args.quick else (args.pairs, args.runs)
    ns = binding_ns(pairs, runs)
    cns = c_ns(args.pick_bench, args.quick)
    print(f"BENCH binding=python ns={ns:.1f} c_ns={cns:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
