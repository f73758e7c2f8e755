#!/usr/bin/env python3
"""readme_tables.py - the simulator tables of the README, regenerated:
run from the repository root after `ninja -C build`:

    python3 bench/sim/readme_tables.py

Prints, in order: the default scenario at 80% (every policy), the
generated workloads, several gateways (with and without --kv-events for
prefix) and the faults scenario, as the README shows them."""
import subprocess, re, os
env=dict(os.environ, LD_LIBRARY_PATH='build')
def run(args):
    out=subprocess.run(['build/bench/sim']+args+['--quiet'],capture_output=True,text=True,env=env,check=True).stdout
    rows=[]
    for l in out.splitlines():
        if l.startswith('SIM '):
            d=dict(kv.split('=') for kv in l[4:].split())
            rows.append(d)
    return rows
def f(x): return f"{float(x):,.0f}"
# default table
rows=run(['--load','0.8'])
print("| policy | TTFT p50 | TTFT p99 | e2e p99 | tok/s | cache hit (ceiling %s) | max/mean in flight |"%rows[0]['hit_ceiling'])
print("|---|---:|---:|---:|---:|---:|---:|")
for d in rows:
    print(f"| {d['policy']} | {f(d['ttft_p50_ms'])} | {f(d['ttft_p99_ms'])} | {f(d['e2e_p99_ms'])} | {d['tput_tok_s']} | {d['hit_rate']} | {d['max_mean_load']} |")
print()
pols='p2c,ring,chwbl,least_tokens,composite,prefix'
print("| workload | "+" | ".join(pols.split(','))+" |")
print("|---|"+"---|"*6)
for w in ['shared-prefix','multi-turn']:
    rows=run(['--workload',w,'--load','0.8','--policy',pols])
    print(f"| {w} (ceiling {rows[0]['hit_ceiling']}) | "+" | ".join(f"{f(d['ttft_p99_ms'])} / {f(d['e2e_p99_ms'])} / {d['hit_rate']}" for d in rows)+" |")
print()
pols='p2c,least_conn,least_tokens,composite,chwbl,prefix'
res={}
for g in [1,4,16]:
    for d in run(['--load','0.8','--policy',pols,'--gateways',str(g)]):
        res.setdefault(d['policy'],[]).append(f(d['ttft_p99_ms']))
    for d in run(['--load','0.8','--policy','prefix','--gateways',str(g),'--kv-events']):
        res.setdefault('prefix --kv-events',[]).append(f(d['ttft_p99_ms']))
print("; ".join(f"{p} {' / '.join(v)}" for p,v in res.items()))
print()
rows=run(['--load','0.8','--scenario','faults','--policy','p2c,least_conn,weighted_least_request,chwbl,composite,least_tokens,prefix'])
print("; ".join(f"{d['policy']} {f(d['ttft_p99_ms'])} / {d['failed']}" for d in rows))
