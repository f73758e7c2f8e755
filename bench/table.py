#!/usr/bin/env python3
"""Summarise several pick_bench runs as the README's markdown tables.

    for i in 1 2 3; do build/bench/pick_bench > run$i.txt; done
    python3 bench/table.py run1.txt run2.txt run3.txt
    python3 bench/table.py --policy ring,maglev,rendezvous,chwbl run*.txt
    python3 bench/table.py --only build run*.txt

Each run already reports, per line, the median of its repetitions; for each
(policy, n, threads) this takes the median over the runs of ns and of the
floor measured in the same run, and of the 2-thread speedup (# SCALE). A
policy measured with requests held in flight (inflight=K on its BENCH line,
chwbl by default) is shown as "policy (K in flight)".

The build table takes, for each (policy, n), the median over the runs of
build_ms and of bytes (bytes do not vary between runs of the same code).
"""
import argparse
import re
import statistics

PICK = re.compile(r"BENCH policy=(\S+) n=(\d+) threads=(\d+) ns=([\d.]+) "
                  r"floor_ns=([\d.]+) ratio=([\d.]+)(.*)")
BUILD = re.compile(r"BENCH policy=(\S+) n=(\d+) build_ms=([\d.]+) "
                   r"bytes=(-?\d+)")
SCALE = re.compile(r"# SCALE policy=(\S+) n=(\d+) threads=2 "
                   r"speedup=([\d.]+) floor_speedup=([\d.]+)")

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--policy", help="comma-separated policies to show "
                "(default: every policy in the runs)")
ap.add_argument("--only", choices=["pick", "build"],
                help="print only this table")
ap.add_argument("runs", nargs="+", help="pick_bench output files")
args = ap.parse_args()
wanted = set(args.policy.split(",")) if args.policy else None

bench = {}
inflight = {}
scale = {}
build = {}
for path in args.runs:
    for line in open(path):
        m = PICK.match(line)
        if m:
            key = (m[1], int(m[2]), int(m[3]))
            bench.setdefault(key, []).append((float(m[4]), float(m[5]),
                                              float(m[6])))
            k = re.search(r"\binflight=(\d+)", m[7])
            if k and int(k[1]) > 0:
                inflight[(m[1], int(m[2]))] = int(k[1])
            continue
        m = BUILD.match(line)
        if m:
            build.setdefault((m[1], int(m[2])), []).append(
                (float(m[3]), int(m[4])))
            continue
        m = SCALE.match(line)
        if m:
            scale.setdefault((m[1], int(m[2])), []).append(
                (float(m[3]), float(m[4])))

med = statistics.median


def shown(pol):
    return wanted is None or pol in wanted


def ordered(keys):
    """(policy, n) pairs in the order the runs printed them."""
    seen = []
    for key in keys:
        if key[:2] not in seen and shown(key[0]):
            seen.append(key[:2])
    return seen


printed = False
if args.only != "build" and bench:
    print("| policy | n | 1 thread ns | floor ns | ratio "
          "| 2 threads ns/thread | floor ns | ratio "
          "| 2-thread speedup (floor's) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for pol, n in ordered(bench):
        name = pol
        if (pol, n) in inflight:
            name = "%s (%d in flight)" % (pol, inflight[(pol, n)])
        cells = [name, str(n)]
        for t in (1, 2):
            rows = bench.get((pol, n, t), [])
            if rows:
                cells += ["%.1f" % med(r[0] for r in rows),
                          "%.1f" % med(r[1] for r in rows),
                          "%.2f" % med(r[2] for r in rows)]
            else:
                cells += ["-", "-", "-"]
        s = scale.get((pol, n), [])
        cells.append("%.2f (%.2f)" % (med(x[0] for x in s),
                                      med(x[1] for x in s)) if s else "-")
        print("| " + " | ".join(cells) + " |")
    printed = True

if args.only != "pick" and build:
    if printed:
        print()
    print("| policy | n | build ms | table bytes |")
    print("|---|---:|---:|---:|")
    for pol, n in ordered(build):
        rows = build[(pol, n)]
        print("| %s | %d | %.3f | %d |" % (
            pol, n, med(r[0] for r in rows), int(med(r[1] for r in rows))))
