"""Many threads picking and completing at once on one pool."""
from __future__ import annotations

import threading

import inferlb

THREADS = 8
PER_THREAD = 3000


def test_threads_pick_complete():
    for policy in ("p2c", "composite", "least_conn"):
        with inferlb.Pool(policy=policy) as pool:
            for i in range(8):
                pool.add_replica(f"r{i}")
            errors = []
            start = threading.Barrier(THREADS + 1)

            def worker(n):
                try:
                    start.wait()
                    held = []
                    for i in range(PER_THREAD):
                        held.append(pool.pick())
                        if len(held) > 4:  # keep a few in flight
                            held.pop(0).complete()
                        if i % 500 == 0:
                            pool.set_weight(f"r{n % 8}", 1 + i % 3)
                    for t in held:
                        t.complete()
                except BaseException as e:  # reported below
                    errors.append(e)
            threads = [threading.Thread(target=worker, args=(n,))
                       for n in range(THREADS)]
            for t in threads:
                t.start()
            start.wait()
            for t in threads:
                t.join()
            assert not errors, errors
            infos = pool.replicas()
            assert all(i.in_flight == 0 for i in infos)
            assert sum(i.completed for i in infos) == THREADS * PER_THREAD
            assert sum(1 for i in infos if i.completed) == 8, policy
