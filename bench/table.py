#!/usr/bin/env python3
"""Summarise several pick_bench runs as the README's markdown table.

    for i in 1 2 3; do build/bench/pick_bench > run$i.txt; done
    python3 bench/table.py run1.txt run2.txt run3.txt

Each run already reports, per line, the median of its repetitions; for each
(policy, n, threads) this takes the median over the runs of ns and of the
floor measured in the same run, and of the 2-thread speedup (# SCALE).
"""
import re
import statistics
import sys

bench = {}
scale = {}
for path in sys.argv[1:]:
    for line in open(path):
        m = re.match(r"BENCH policy=(\S+) n=(\d+) threads=(\d+) ns=([\d.]+) "
                     r"floor_ns=([\d.]+) ratio=([\d.]+)", line)
        if m:
            key = (m[1], int(m[2]), int(m[3]))
            bench.setdefault(key, []).append((float(m[4]), float(m[5]),
                                              float(m[6])))
        m = re.match(r"# SCALE policy=(\S+) n=(\d+) threads=2 speedup=([\d.]+) "
                     r"floor_speedup=([\d.]+)", line)
        if m:
            scale.setdefault((m[1], int(m[2])), []).append(
                (float(m[3]), float(m[4])))

med = statistics.median
print("| policy | n | 1 thread ns | floor ns | ratio | 2 threads ns/thread "
      "| floor ns | ratio | 2-thread speedup (floor's) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
seen = []
for (pol, n, t) in bench:
    if (pol, n) not in seen:
        seen.append((pol, n))
for pol, n in seen:
    cells = [pol, str(n)]
    for t in (1, 2):
        rows = bench.get((pol, n, t), [])
        if rows:
            cells += ["%.1f" % med(r[0] for r in rows),
                      "%.1f" % med(r[1] for r in rows),
                      "%.2f" % med(r[2] for r in rows)]
        else:
            cells += ["-", "-", "-"]
    s = scale.get((pol, n), [])
    cells.append("%.2f (%.2f)" % (med(x[0] for x in s), med(x[1] for x in s))
                 if s else "-")
    print("| " + " | ".join(cells) + " |")
