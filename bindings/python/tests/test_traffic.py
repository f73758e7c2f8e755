"""Since 0.6, around the router: locality (the request's zone), the
autoscaling signal (Pool.autoscale) and the Prometheus stats export
(stats_prometheus)."""
from __future__ import annotations

import collections
import ctypes

import pytest

import inferlb
from inferlb import Backend, Route, Router, _ffi
from inferlb import router as router_mod


# --- locality ----------------------------------------------------------------

def zoned_pool(**kw):
    """Replicas a0, a1 in zone eu, b0, b1 in us."""
    pool = inferlb.Pool(**kw)
    for rid, zone in (("a0", "eu"), ("a1", "eu"), ("b0", "us"),
                      ("b1", "us")):
        pool.add_replica(rid, zone=zone)
    return pool


def test_locality_options():
    for name, bounds in (("locality", (0, 1, 1)),
                         ("locality_min_healthy_percent", (0, 100, 70)),
                         ("locality_spill_percent", (100, 100000, 150))):
        assert inferlb.option_bounds(name) == bounds
    with zoned_pool(locality=0) as pool:
        assert pool.get_option("locality") == 0


def test_pick_in_the_requests_zone():
    with zoned_pool(policy="round_robin") as pool:
        for zone, prefix in (("eu", "a"), ("us", "b")):
            for _ in range(20):
                with pool.pick(zone=zone) as t:
                    assert t.replica_id.startswith(prefix)
        seen = set()
        for _ in range(40):  # no zone, or an unknown one: all replicas
            with pool.pick(zone="ap" if len(seen) % 2 else None) as t:
                seen.add(t.replica_id)
        assert seen == {"a0", "a1", "b0", "b1"}
        # a request object carries it too, also through retry()
        req = inferlb.Request(zone="us")
        t = pool.pick(request=req)
        assert t.replica_id.startswith("b")
        t.complete()
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.pick(zone="e\0u")
        with pytest.raises(TypeError):
            pool.pick(zone=b"eu")


def test_zone_spills_when_unhealthy():
    with zoned_pool(policy="round_robin") as pool:
        pool.set_available("a0", False)  # eu keeps 50% < 70%: spill
        got = collections.Counter()
        for _ in range(60):
            with pool.pick(zone="eu") as t:
                got[t.replica_id[0]] += 1
        assert got["b"] > 0 and "a0" not in got
        pool.set_option("locality", 0)  # off: every replica, always
        pool.set_available("a0", True)
        seen = set()
        for _ in range(40):
            with pool.pick(zone="eu") as t:
                seen.add(t.replica_id)
        assert seen == {"a0", "a1", "b0", "b1"}


def test_router_pick_in_zone():
    with zoned_pool(policy="round_robin") as pool, Router() as router:
        router.add_pool(pool, "m")
        for _ in range(20):
            with router.pick(model="m", zone="us") as r:
                assert r.replica_id.startswith("b")


# --- autoscaling signal ------------------------------------------------------

def test_autoscale():
    now = [10**12]
    with inferlb.Pool(clock=lambda: now[0], scale_target_in_flight=2) as pool:
        for i in range(4):
            pool.add_replica(f"r{i}")
        a = pool.autoscale()
        assert isinstance(a, inferlb.Autoscale)
        assert (a.current, a.ready, a.in_flight, a.waiting) == (4, 4, 0, 0)
        assert (a.desired, a.recommended) == (1, 1)  # scale_min_replicas
        assert a.arrival_per_s == 0.0 and not a.overloaded
        tickets = [pool.pick() for _ in range(10)]
        now[0] += 10**9
        a = pool.autoscale()
        assert a.in_flight == 10 and a.desired == 5  # ceil(10 / 2)
        assert a.arrival_per_s == pytest.approx(10.0)
        assert a.recommended == 1  # the up window (60 s) holds a 1
        now[0] += 61 * 10**9
        assert pool.autoscale().recommended == 5
        for t in tickets:
            t.complete(latency_ns=100_000_000)
        pool.set_available("r0", False)
        now[0] += 10**9
        a = pool.autoscale()
        assert (a.ready, a.in_flight, a.desired) == (3, 0, 1)
        assert a.service_per_s > 0 and a.utilization >= 0.0
        assert a.recommended == 5  # the down window (5 min) holds a 5
        now[0] += 301 * 10**9
        assert pool.autoscale().recommended == 1
        pool.set_option("scale_min_replicas", 2)
        assert pool.autoscale().recommended == 2
        pool.report("r1", requests_waiting=40)  # 40 / 5 per replica
        assert pool.autoscale().desired == 8
        pool.set_option("scale_max_replicas", 3)
        assert pool.autoscale().desired == 3
    with pytest.raises(inferlb.InvalidArgumentError, match="closed"):
        pool.autoscale()


def test_autoscale_struct_size():
    with inferlb.Pool() as pool:
        buf = (ctypes.c_char * 4096)()
        ctypes.c_size_t.from_buffer(buf).value = 4096
        assert _ffi.lib.ilb_pool_autoscale(
            ctypes.cast(buf, ctypes.POINTER(_ffi.ilb_autoscale)),
            pool._h) == 0
        assert (ctypes.c_size_t.from_buffer(buf).value
                == ctypes.sizeof(_ffi.ilb_autoscale))


def test_autoscale_from_callback_is_deadlock():
    errors = []
    pool = inferlb.Pool()

    def on_event(ev):
        try:
            pool.autoscale()
        except inferlb.DeadlockError as e:
            errors.append(e)
    pool.close()
    pool = inferlb.Pool(on_event=on_event)
    pool.add_replica("r0")
    assert errors and errors[0].code == inferlb.Errno.EDEADLK
    pool.close()


# --- stats export ------------------------------------------------------------

def test_stats_of_a_pool():
    with inferlb.Pool() as pool:
        pool.add_replica("r0")
        pool.add_replica('we"ird\\id\nx')
        with pool.pick() as t:
            pass
        text = inferlb.stats_prometheus(pool=pool)
        assert isinstance(text, str) and text.endswith("\n")
        assert "# TYPE inferlb_picks_total counter" in text
        esc = (t.replica_id.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n"))
        assert (f'inferlb_picks_total{{model="",version="",'
                f'replica="{esc}"}} 1') in text
        assert 'replica="we\\"ird\\\\id\\nx"' in text  # escaped
        assert "inferlb_shed_total" in text
        assert "inferlb_no_model_total" not in text  # a router's only


def test_stats_of_a_router():
    v1, v2 = inferlb.Pool(), inferlb.Pool()
    v1.add_replica("a")
    v2.add_replica("b")
    with Router() as router:
        router.add_pool(v1, "llama", "v1")
        router.add_pool(v2, "llama", "v2")
        router.set_routes([Route("split", backends=[
            Backend("llama", "v1", 1), Backend("llama", "v2", 1)])])
        for _ in range(10):
            router.pick().complete()
        router.set_routes([])
        with pytest.raises(inferlb.NoModelError):
            router.pick(model="other")
        text = inferlb.stats_prometheus(router=router)
        assert 'model="llama",version="v1",replica="a"' in text
        assert 'model="llama",version="v2",replica="b"' in text
        assert "inferlb_no_model_total 1" in text
        for name in ("inferlb_sticky_hits_total", "inferlb_mirrored_total",
                     "inferlb_sticky_moves_total"):
            assert name in text
        picks = sum(int(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                    if ln.startswith("inferlb_picks_total{"))
        assert picks == 10
    v1.close()
    v2.close()


def test_stats_buffer_grows(monkeypatch):
    monkeypatch.setattr(router_mod, "_STATS_SIZE", [16])
    with inferlb.Pool() as pool:
        for i in range(300):
            pool.add_replica(f"replica-{i:04d}")
        text = inferlb.stats_prometheus(pool=pool)
        assert text.count("inferlb_picks_total{") == 300
        assert router_mod._STATS_SIZE[0] > len(text)  # remembered
    # the library says ENOSPC and the size needed
    with inferlb.Pool() as pool:
        pool.add_replica("r0")
        n = ctypes.c_size_t()
        assert _ffi.lib.ilb_stats_prometheus(None, 0, ctypes.byref(n), None,
                                             pool._h) == inferlb.Errno.ENOSPC
        assert n.value == len(inferlb.stats_prometheus(pool=pool).encode())


def test_stats_arguments():
    with inferlb.Pool() as pool, Router() as router:
        with pytest.raises(inferlb.InvalidArgumentError):
            inferlb.stats_prometheus()
        with pytest.raises(inferlb.InvalidArgumentError):
            inferlb.stats_prometheus(router=router, pool=pool)
    with pytest.raises(inferlb.InvalidArgumentError, match="closed"):
        inferlb.stats_prometheus(pool=pool)
