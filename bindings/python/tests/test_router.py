"""The router (since 0.6): pools by model and version, routes and their
matches, splits and mirrors, prefill/decode pairs, sticky sessions and
pins, rate limits, options, errors and lifetimes."""
from __future__ import annotations

import collections
import threading

import pytest

import inferlb
from inferlb import (Backend, Errno, Match, MatchKind, Outcome, OutcomeStatus,
                     PoolRole, RateLimit, Route, Router)


def pool_of(prefix, n=2, **kw):
    pool = inferlb.Pool(**kw)
    for i in range(n):
        pool.add_replica(f"{prefix}{i}", host_data=(prefix, i))
    return pool


@pytest.fixture
def two_versions():
    """A router with llama v1 (replicas a0, a1) and v2 (b0, b1)."""
    v1, v2 = pool_of("a"), pool_of("b")
    router = Router(seed=3)
    router.add_pool(v1, "llama", "v1")
    router.add_pool(v2, "llama", "v2")
    yield router, v1, v2
    router.close()
    v1.close()
    v2.close()


def done(router, **kw):
    """Pick and complete; the result."""
    with router.pick(**kw) as r:
        pass
    return r


# --- constants ---------------------------------------------------------------

def test_constants():
    assert (PoolRole.BOTH, PoolRole.PREFILL, PoolRole.DECODE) == (0, 1, 2)
    assert [int(k) for k in MatchKind] == [1, 2, 3, 4]
    assert inferlb.ILB_MATCH_PREFIX == MatchKind.PREFIX
    assert inferlb.ILB_ROLE_DECODE == PoolRole.DECODE
    assert (Errno.ENOMODEL, Errno.ERATELIMIT, Errno.ENOSPC) == (-19, -20, -21)
    assert inferlb.ERRORS[Errno.ENOMODEL] is inferlb.NoModelError
    assert issubclass(inferlb.NoModelError, LookupError)
    assert inferlb.ERRORS[Errno.ERATELIMIT] is inferlb.RateLimitError
    assert inferlb.ERRORS[Errno.ENOSPC] is inferlb.NoSpaceError
    assert inferlb.ILB_ROUTER_POOLS_MAX == 126
    assert inferlb.ILB_ROUTES_MAX == 1024
    assert (inferlb.ILB_ROUTE_BACKENDS_MAX, inferlb.ILB_ROUTE_MATCHES_MAX,
            inferlb.ILB_RATE_LIMITS_MAX) == (16, 16, 16)
    assert inferlb.option_bounds("router_sticky_entries") == (0, 16777216,
                                                              65536)
    assert inferlb.option_bounds("router_pairs_max")[0] == 64


# --- model routing -----------------------------------------------------------

def test_model_routing(two_versions):
    router, v1, v2 = two_versions
    r = router.pick(model="llama")
    assert isinstance(r, inferlb.RouteResult)
    assert r.model == "llama" and r.version in ("v1", "v2")
    assert r.pool is (v1 if r.version == "v1" else v2)
    assert r.host_data == (r.replica_id[0], int(r.replica_id[1]))
    assert (r.route, r.backend) == (-1, -1)  # routed by model
    assert not r.is_pair and r.mirror is None and r.mirror_ticket == 0
    assert not r.sticky
    assert r.pool.replica(r.replica_id).in_flight == 1
    r.complete(http_status=200, latency_ns=1_000_000)
    assert r.done
    info = r.pool.replica(r.replica_id)
    assert (info.in_flight, info.completed) == (0, 1)
    with pytest.raises(inferlb.StaleTicketError):
        r.complete()


def test_model_weights():
    v1, v2, v3 = pool_of("a"), pool_of("b"), pool_of("c")
    with Router(seed=1) as router:
        router.add_pool(v1, "m", "v1", weight=3)
        router.add_pool(v2, "m", "v2", weight=1)
        router.add_pool(v3, "m", "v3", weight=0)  # only through routes
        n = collections.Counter(done(router, model="m").version
                                for _ in range(4000))
        assert n["v3"] == 0
        assert 0.70 < n["v1"] / 4000 < 0.80, n
        # a route still reaches the weight-0 pool
        router.set_routes([Route("canary", matches=[Match("x-c", "1")],
                                 backends=[Backend("m", "v3")])])
        r = done(router, model="m", attrs={"x-c": "1"})
        assert (r.version, r.route, r.backend) == ("v3", 0, 0)


def test_no_model(two_versions):
    router, v1, _ = two_versions
    with pytest.raises(inferlb.NoModelError) as e:
        router.pick(model="mistral")
    assert e.value.code == Errno.ENOMODEL
    with pytest.raises(inferlb.NoModelError):
        router.pick()  # no model, no route: never a random pool
    router.remove_pool("llama", "v2")
    for _ in range(20):
        assert done(router, model="llama").version == "v1"
    with pytest.raises(inferlb.NotFoundError):
        router.remove_pool("llama", "v2")
    router.remove_pool("llama", "v1")
    with pytest.raises(inferlb.NoModelError):
        router.pick(model="llama")
    # the same pool comes back under its name
    router.add_pool(v1, "llama", "v1")
    assert done(router, model="llama").pool is v1
    assert [(m, v) for m, v, _ in router.pools()] == [("llama", "v1"),
                                                      ("llama", "v2")]


def test_removed_pool_tickets_still_complete(two_versions):
    router, _, _ = two_versions
    r = router.pick(model="llama")
    router.remove_pool("llama", r.version)
    r.complete()
    assert r.pool.replica(r.replica_id).in_flight == 0


# --- routes ------------------------------------------------------------------

def test_match_kinds(two_versions):
    router, _, _ = two_versions
    router.set_routes([
        Route("exact", matches=[Match("x-version", "2")],
              backends=[Backend("llama", "v2")]),
        Route("prefix", matches=[Match(":path", "/beta/", MatchKind.PREFIX)],
              backends=[Backend("llama", "v2")]),
        Route("both", matches=[Match("x-a", kind=MatchKind.PRESENT),
                               Match("x-b", kind=MatchKind.ABSENT)],
              backends=[Backend("llama", "v2")]),
        Route("default", backends=[Backend("llama", "v1")]),
    ])
    cases = [({"x-version": "2"}, 0), ({"x-version": "22"}, 3),
             ({":path": "/beta/chat"}, 1), ({":path": "/v1/chat"}, 3),
             ({"x-a": ""}, 2), ({"x-a": "1", "x-b": "1"}, 3), ({}, 3)]
    for attrs, route in cases:
        r = done(router, attrs=attrs)
        assert r.route == route, attrs
        assert r.version == ("v1" if route == 3 else "v2"), attrs
        assert r.backend == 0
    # no request at all: only a default route can match
    assert done(router).route == 3


def test_first_matching_route_wins(two_versions):
    router, _, _ = two_versions
    router.set_routes([
        Route("a", matches=[Match("x", "1")], backends=[Backend("llama",
                                                                "v1")]),
        Route("b", matches=[Match("x", "1")], backends=[Backend("llama",
                                                                "v2")])])
    assert {done(router, attrs={"x": "1"}).version
            for _ in range(20)} == {"v1"}
    router.set_routes([])  # model routing only
    assert done(router, model="llama").route == -1
    with pytest.raises(inferlb.NoModelError):
        router.pick(attrs={"x": "1"})


def test_backend_of_the_requests_model():
    pools = {(m, v): pool_of(m + v, 1) for m in ("a", "b")
             for v in ("", "v2")}
    with Router() as router:
        for (m, v), p in pools.items():  # v2: only through the route
            router.add_pool(p, m, v, weight=0 if v else 1)
        router.set_routes([Route("v2", matches=[Match("x-v2", "1")],
                                 backends=[Backend(None, "v2")])])
        for m in ("a", "b"):
            r = done(router, model=m, attrs={"x-v2": "1"})
            assert (r.model, r.version, r.route) == (m, "v2", 0)
            r = done(router, model=m)
            assert (r.model, r.version, r.route) == (m, "", -1)
        # a route's backend with the request's model and none given
        with pytest.raises(inferlb.NoModelError):
            router.pick(attrs={"x-v2": "1"})
    for p in pools.values():
        p.close()


def test_split_is_stable_per_key(two_versions):
    router, _, _ = two_versions
    router.set_routes([Route("ab", backends=[Backend("llama", "v1", 50),
                                             Backend("llama", "v2", 50)])])
    first = {k: done(router, key=f"user-{k}").version for k in range(200)}
    assert set(first.values()) == {"v1", "v2"}
    for k in range(200):
        assert done(router, key=f"user-{k}").version == first[k]
    # moving weight from v1 to v2 only moves keys from v1 to v2
    router.set_weights("ab", [20, 80])
    for k in range(200):
        v = done(router, key=f"user-{k}").version
        if first[k] == "v2":
            assert v == "v2"
    router.set_weights("ab", [100, 0])
    assert {done(router, key=f"user-{k}").version
            for k in range(50)} == {"v1"}
    assert {done(router).backend for _ in range(50)} == {0}
    with pytest.raises(inferlb.NotFoundError):
        router.set_weights("nope", [1, 1])
    with pytest.raises(inferlb.InvalidArgumentError):
        router.set_weights("ab", [1])  # one per backend
    with pytest.raises(inferlb.InvalidArgumentError):
        router.set_weights("ab", [0, 0])
    with pytest.raises(inferlb.OutOfRangeError):
        router.set_weights("ab", [1 << 32, 1])  # not wrapped to 0
    with pytest.raises(inferlb.OutOfRangeError):
        router.set_weights("ab", [-1, 1])


def test_split_without_key_by_odds(two_versions):
    router, _, _ = two_versions
    router.set_routes([Route("ab", backends=[Backend("llama", "v1", 9),
                                             Backend("llama", "v2", 1)])])
    n = collections.Counter(done(router).backend for _ in range(3000))
    assert 0.85 < n[0] / 3000 < 0.95, n


def test_mirror(two_versions):
    router, v1, _ = two_versions
    shadow = pool_of("s", 1)
    router.add_pool(shadow, "shadow")
    router.set_routes([Route("m", backends=[Backend("llama", "v1")],
                             mirror_model="shadow", mirror_percent=100)])
    r = router.pick()
    m = r.mirror
    assert isinstance(m, inferlb.RouteTicket)
    assert m.pool is shadow and m.replica_id == "s0"
    assert m.host_data == ("s", 0)
    assert (r.mirror_ticket, r.mirror_replica_id, r.mirror_host_data,
            r.mirror_pool) == (m.ticket, "s0", ("s", 0), shadow)
    assert shadow.replica("s0").in_flight == 1
    r.complete()  # the mirror is completed on its own
    assert shadow.replica("s0").in_flight == 1
    with m:
        pass
    assert shadow.replica("s0").in_flight == 0
    router.set_routes([Route("m", backends=[Backend("llama", "v1")],
                             mirror_model="shadow", mirror_percent=0)])
    assert done(router).mirror is None
    # a mirror pool that cannot pick never fails the request
    router.set_routes([Route("m", backends=[Backend("llama", "v1")],
                             mirror_model="gone", mirror_percent=100)])
    assert done(router).mirror is None
    shadow.close()


def test_routes_as_dicts(two_versions):
    router, _, _ = two_versions
    router.set_routes([{"name": "d", "matches": [{"key": "x", "value": "1"}],
                        "backends": [{"model": "llama", "version": "v2"}]},
                       {"name": "all", "backends": {"model": "llama",
                                                    "version": "v1"}}])
    assert done(router, attrs={"x": "1"}).version == "v2"
    assert done(router).version == "v1"
    with pytest.raises(TypeError):
        router.set_routes([{"name": "d", "backends": ["llama"]}])


def test_route_errors_keep_old_table(two_versions):
    router, _, _ = two_versions
    router.set_routes([Route("ok", backends=[Backend("llama", "v2")])])
    B = [Backend("llama", "v1")]
    bad = [
        (inferlb.InvalidArgumentError, [Route("", backends=B)]),
        (inferlb.InvalidArgumentError, [Route("r", backends=[])]),
        (inferlb.InvalidArgumentError,
         [Route("r", backends=[Backend("llama", "v1", 0)])]),
        (inferlb.InvalidArgumentError,
         [Route("r", backends=B, mirror_model="x", mirror_percent=101)]),
        (inferlb.InvalidArgumentError,  # not wrapped to 50
         [Route("r", backends=B, mirror_model="x",
                mirror_percent=(1 << 32) + 50)]),
        (inferlb.InvalidArgumentError,
         [Route("r", backends=B, mirror_version="v1")]),
        (inferlb.InvalidArgumentError,
         [Route("r", backends=B, matches=[Match("x")])]),  # EXACT: a value
        (inferlb.InvalidArgumentError,
         [Route("r", backends=B, matches=[Match("x", "1",
                                                MatchKind.PRESENT)])]),
        (inferlb.InvalidArgumentError,
         [Route("r", backends=B, matches=[Match("x", "1", 9)])]),
        (inferlb.InvalidArgumentError,
         [Route("r", backends=B, matches=[Match("", "1")])]),
        (inferlb.InvalidArgumentError, [Route("a\0b", backends=B)]),
        (inferlb.OutOfRangeError,
         [Route("r", backends=[Backend("llama", "v1",
                                       inferlb.ILB_WEIGHT_MAX + 1)])]),
        (inferlb.OutOfRangeError,
         [Route("r", backends=[Backend("llama", "v1", 1 << 32)])]),
        (inferlb.AlreadyExistsError, [Route("r", backends=B),
                                      Route("r", backends=B)]),
        (inferlb.TooBigError, [Route("r", backends=B * 17)]),
        (inferlb.TooBigError, [Route("r", backends=B,
                                     matches=[Match("x", "1")] * 17)]),
        (inferlb.TooBigError, [Route("x" * 256, backends=B)]),
        (inferlb.TooBigError, [Route(f"r{i}", backends=B)
                               for i in range(inferlb.ILB_ROUTES_MAX + 1)]),
    ]
    for cls, routes in bad:
        with pytest.raises(cls):
            router.set_routes(routes)
        r = done(router)
        assert (r.route, r.version) == (0, "v2"), routes[:1]


# --- prefill / decode --------------------------------------------------------

def test_prefill_decode_pairs():
    pre, dec = pool_of("p", 2), pool_of("d", 2, policy="least_tokens")
    with Router() as router:
        router.add_pool(pre, "m", role=PoolRole.PREFILL)
        router.add_pool(dec, "m", role=PoolRole.DECODE)
        r = router.pick(model="m", prompt_tokens=100, output_tokens=10)
        assert r.is_pair
        assert r.pool is dec and r.replica_id.startswith("d")
        assert r.prefill_pool is pre and r.prefill_replica_id.startswith("p")
        assert r.prefill_host_data == ("p", int(r.prefill_replica_id[1]))
        assert pre.replica(r.prefill_replica_id).in_flight == 1
        assert dec.replica(r.replica_id).in_flight == 1
        r.complete()  # both halves
        assert pre.replica(r.prefill_replica_id).in_flight == 0
        assert dec.replica(r.replica_id).in_flight == 0
        with pytest.raises(inferlb.StaleTicketError):
            r.complete()
        # one outcome per half: the prefill replica is charged alone
        r = router.pick(model="m")
        with pytest.raises(inferlb.InvalidArgumentError):  # still valid
            r.complete_pair(prefill=Outcome(http_status=42))
        assert not r.done
        r.complete_pair(prefill=Outcome(OutcomeStatus.CONNECT_ERROR),
                        decode=None)
        assert r.done
        assert pre.replica(r.prefill_replica_id).failed == 1
        assert dec.replica(r.replica_id).failed == 0
        r = router.pick(model="m")
        r.complete_pair(OutcomeStatus.OK, OutcomeStatus.TIMEOUT)
        assert dec.replica(r.replica_id).failed == 1
        with pytest.raises(inferlb.StaleTicketError):
            r.complete_pair()
        # a route naming (m, "") reaches the DECODE pool, as a pair (the
        # PREFILL pool of that name is never a target itself)
        router.set_routes([Route("all", backends=[Backend("m")])])
        for _ in range(10):
            with router.pick() as r:
                assert r.is_pair and r.pool is dec and r.route == 0
    pre.close()
    dec.close()


def test_pair_needs_its_prefill_pool():
    pre, dec = pool_of("p", 1), pool_of("d", 1)
    with Router() as router:
        router.add_pool(dec, "m", "v1", role=PoolRole.DECODE)
        with pytest.raises(inferlb.NoModelError):
            router.pick(model="m")
        router.add_pool(pre, "m", "v0", role=PoolRole.PREFILL)  # other version
        with pytest.raises(inferlb.NoModelError):
            router.pick(model="m")
    with Router() as router:
        only_prefill = pool_of("q", 1)
        router.add_pool(only_prefill, "m", role=PoolRole.PREFILL)
        with pytest.raises(inferlb.NoModelError):
            router.pick(model="m")
        only_prefill.close()
    pre.close()
    dec.close()


def test_complete_pair_of_a_plain_ticket(two_versions):
    router, _, _ = two_versions
    r = router.pick(model="llama")
    with pytest.raises(inferlb.InvalidArgumentError):
        r.complete_pair()
    assert not r.done
    r.complete()


# --- sticky sessions ---------------------------------------------------------

def test_sticky_sessions():
    now = [10**12]
    pool = pool_of("r", 8, policy="random", seed=5)
    with Router(clock=lambda: now[0], router_sticky_ttl_ms=1000) as router:
        router.add_pool(pool, "m")
        first = done(router, model="m", key="s1")
        assert not first.sticky
        for _ in range(20):
            r = done(router, model="m", key="s1")
            assert r.sticky and r.replica_id == first.replica_id
        now[0] += 2 * 10**9  # the session expired
        assert not done(router, model="m", key="s1").sticky
        # pins: this session goes to r7
        router.pin("s2", "m", "r7", ttl_ms=60_000)
        for _ in range(10):
            r = done(router, model="m", key=b"s2")
            assert r.sticky and r.replica_id == "r7"
        router.unpin("s2", "m")
        with pytest.raises(inferlb.NotFoundError):
            router.pin("s2", "m", "nope")
        with pytest.raises(inferlb.NoModelError):
            router.pin("s2", "other", "r1")
        with pytest.raises(inferlb.InvalidArgumentError):
            router.pin("", "m", "r1")
        with pytest.raises(inferlb.InvalidArgumentError):
            router.pin("s2", "m", "r1", ttl_ms=-1)
        with pytest.raises(inferlb.OutOfRangeError):
            router.pin("s2", "m", "r1", ttl_ms=604_800_001)
        with pytest.raises(inferlb.OutOfRangeError):
            router.pin("s2", "m", "r1", ttl_ms=1 << 64)
        # sticky sessions off
        router.set_option("router_sticky_entries", 0)
        assert router.get_option("router_sticky_entries") == 0
        assert not any(done(router, model="m", key="s1").sticky
                       for _ in range(10))
        with pytest.raises(inferlb.InvalidArgumentError):
            router.pin("s2", "m", "r1")
    pool.close()


def test_sticky_replica_gone_moves(two_versions):
    router, v1, _ = two_versions
    router.set_routes([Route("v1", backends=[Backend("llama", "v1")])])
    first = done(router, key="s")
    v1.set_available(first.replica_id, False)
    r = done(router, key="s")
    assert r.replica_id != first.replica_id and not r.sticky
    assert done(router, key="s").sticky


# --- rate limits -------------------------------------------------------------

def test_rate_limits(two_versions):
    now = [5 * 10**12]
    pool = pool_of("r", 2)
    with Router(clock=lambda: now[0]) as router:
        router.add_pool(pool, "m")
        router.set_rate_limits([RateLimit("per-key", rate=2, period_ms=1000,
                                          burst=2, key_attr="x-api-key")])
        k1, k2 = {"x-api-key": "k1"}, {"x-api-key": "k2"}
        done(router, model="m", attrs=k1)
        done(router, model="m", attrs=k1)
        with pytest.raises(inferlb.RateLimitError) as e:
            router.pick(model="m", attrs=k1)
        assert e.value.code == Errno.ERATELIMIT
        assert 0 < e.value.retry_after_ns <= 500_000_000
        done(router, model="m", attrs=k2)  # its own bucket
        done(router, model="m")  # no key: not limited by this limit
        now[0] += 500_000_000  # one token back
        done(router, model="m", attrs=k1)
        with pytest.raises(inferlb.RateLimitError):
            router.pick(model="m", attrs=k1)
        # a global limit (key_attr ""), as a dict; the old buckets stay
        router.set_rate_limits([
            RateLimit("per-key", rate=2, period_ms=1000, burst=2,
                      key_attr="x-api-key"),
            {"name": "global", "rate": 1, "period_ms": 60_000,
             "key_attr": ""}])
        with pytest.raises(inferlb.RateLimitError):
            router.pick(model="m", attrs=k1)  # per-key still empty
        done(router, model="m", attrs=k2)
        with pytest.raises(inferlb.RateLimitError) as e:
            router.pick(model="m")
        assert e.value.retry_after_ns > 50 * 10**9
        # the affinity key (key_attr None)
        router.set_rate_limits([RateLimit("session", rate=1, period_ms=1000)])
        done(router, model="m", key="a")
        with pytest.raises(inferlb.RateLimitError):
            router.pick(model="m", key="a")
        done(router, model="m", key="b")
        router.set_rate_limits([])
        for _ in range(5):
            done(router, model="m", key="a")
        # the picks a limit refused took nothing in flight
        assert all(pool.replica(i).in_flight == 0 for i in pool.ids())
        for bad in ([RateLimit("x", rate=0)],
                    [RateLimit("x", rate=1, period_ms=0)],
                    [RateLimit("x", rate=1, burst=0)],
                    [RateLimit("x", rate=-1)],
                    [RateLimit("x", rate=1 << 64)],
                    [RateLimit("", rate=1)]):
            with pytest.raises(inferlb.InvalidArgumentError):
                router.set_rate_limits(bad)
        with pytest.raises(inferlb.AlreadyExistsError):
            router.set_rate_limits([RateLimit("x", 1), RateLimit("x", 2)])
        with pytest.raises(inferlb.TooBigError):
            router.set_rate_limits([RateLimit(f"x{i}", 1) for i in range(17)])
    pool.close()


# --- options, errors, lifetimes ----------------------------------------------

def test_options():
    with Router(router_sticky_ttl_ms=5000, router_rate_keys=128) as router:
        assert router.get_option("router_sticky_ttl_ms") == 5000
        assert router.get_option(inferlb.Option.ROUTER_RATE_KEYS) == 128
        assert router.get_option("router_sticky_bound_percent") == 200
        router.set_option("router_sticky_bound_percent", 300)
        assert router.get_option("router_sticky_bound_percent") == 300
        with pytest.raises(inferlb.OutOfRangeError):
            router.set_option("router_sticky_ttl_ms", 0)
        with pytest.raises(inferlb.OutOfRangeError):
            router.set_option("router_sticky_ttl_ms", 1 << 70)
        with pytest.raises(inferlb.UnknownError):
            router.set_option("scan_max", 4)  # a pool option
        with pytest.raises(inferlb.UnknownError):
            router.get_option("policy")
        with pytest.raises(inferlb.UnknownError):
            router.set_option("no_such_option", 1)
    with pytest.raises(inferlb.OutOfRangeError):
        Router(router_pairs_max=1)
    with inferlb.Pool() as pool:
        with pytest.raises(inferlb.UnknownError):
            pool.set_option("router_sticky_entries", 0)
        with pytest.raises(inferlb.UnknownError):
            pool.get_option("router_sticky_entries")


def test_add_pool_errors():
    a, b = pool_of("a", 1), pool_of("b", 1)
    with Router() as router:
        router.add_pool(a, "m", labels={"team": "x", "gpu": "a100"})
        with pytest.raises(inferlb.AlreadyExistsError):
            router.add_pool(b, "m")
        with pytest.raises(inferlb.InvalidArgumentError):
            router.add_pool(b, "")
        with pytest.raises(inferlb.InvalidArgumentError):
            router.add_pool(b, "m", "v2", role=7)
        with pytest.raises(inferlb.OutOfRangeError):
            router.add_pool(b, "m", "v2", weight=inferlb.ILB_WEIGHT_MAX + 1)
        with pytest.raises(inferlb.OutOfRangeError):
            router.add_pool(b, "m", "v2", weight=-1)
        with pytest.raises(inferlb.TooBigError):
            router.add_pool(b, "m" * 256)
        with pytest.raises(inferlb.InvalidArgumentError):
            router.add_pool(b, "m", labels={"": "x"})
        with pytest.raises(inferlb.InvalidArgumentError):
            router.add_pool(b, "m\0x")
        with pytest.raises(inferlb.BusyError):  # under another name
            router.add_pool(a, "m", "v9")
        with Router() as other:  # a pool joins one router in its life
            with pytest.raises(inferlb.BusyError):
                other.add_pool(a, "m")
        router.add_pool(b, "m", "v2")
        assert done(router, model="m").pool in (a, b)
    c = pool_of("c", 1)
    c.close()
    with Router() as router:
        with pytest.raises(inferlb.InvalidArgumentError, match="closed"):
            router.add_pool(c, "m")
    a.close()
    b.close()


def test_pool_closed_first_lives_in_the_router():
    events = []
    pool = inferlb.Pool(on_event=events.append, clock=lambda: 10**9)
    pool.add_replica("r0", host_data="data")
    router = Router()
    router.add_pool(pool, "m")
    pool.close()  # the host's reference only
    with pytest.raises(inferlb.InvalidArgumentError):
        pool.pick()
    r = router.pick(model="m")  # the pool's clock callback still runs
    assert (r.replica_id, r.host_data, r.pool) == ("r0", "data", pool)
    r.complete(latency_ns=5)
    assert "inferlb_picks_total" in inferlb.stats_prometheus(router=router)
    router.close()  # frees the pool now
    with pytest.raises(inferlb.InvalidArgumentError, match="router is closed"):
        router.pick(model="m")
    router.close()  # twice: a no-op


def test_router_closed_first():
    pool = pool_of("r", 1)
    router = Router()
    router.add_pool(pool, "m")
    r = router.pick(model="m")
    router.close()
    with pytest.raises(inferlb.InvalidArgumentError, match="router is closed"):
        r.complete()
    assert not r.done
    with pool.pick() as t:  # the pool is the host's still
        assert t.replica_id == "r0"
    pool.close()


def test_pick_racing_removal_is_retried():
    """A pick whose replica's record is gone (removed between the C pick
    and the binding's lookup) is given back and picked again."""
    pool = pool_of("r", 2, policy="round_robin")
    with Router() as router:
        router.add_pool(pool, "m")
        pool._records.pop(pool._by_id["r0"])  # as a racing removal does
        for _ in range(20):
            assert done(router, model="m").replica_id == "r1"
        info = pool.replica("r0")
        assert info.in_flight == 0 and info.completed > 0  # given back
        pool._records.pop(pool._by_id["r1"])
        with pytest.raises(inferlb.NoReplicaError, match="removed"):
            router.pick(model="m")
        assert pool.replica("r1").in_flight == 0
    pool.close()


def test_pool_errors_pass_through(two_versions):
    router, v1, v2 = two_versions
    for p in (v1, v2):
        for i in p.ids():
            p.set_available(i, False)
    with pytest.raises(inferlb.NoReplicaError):
        router.pick(model="llama")
    with pytest.raises(inferlb.InvalidArgumentError):
        router.pick(model="llama", priority=9)
    with pytest.raises(inferlb.InvalidArgumentError):
        router.pick(model="llama", attrs={"x": "a\0b"})


def test_request_object(two_versions):
    router, _, _ = two_versions
    req = inferlb.Request(key="s", model="llama", attrs={"x-v": "2"},
                          zone="eu")
    router.set_routes([Route("v2", matches=[Match("x-v", "2")],
                             backends=[Backend(None, "v2")])])
    r = router.pick(request=req)
    assert (r.version, r.route) == ("v2", 0)
    r.complete()


def test_threads(two_versions):
    router, v1, v2 = two_versions
    router.set_routes([Route("ab", backends=[Backend("llama", "v1", 1),
                                             Backend("llama", "v2", 1)])])
    errors = []

    def work(t):
        try:
            for i in range(300):
                with router.pick(key=f"{t}-{i % 7}") as r:
                    assert r.model == "llama"
        except BaseException as e:  # pragma: no cover
            errors.append(e)
    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for p in (v1, v2):
        assert all(p.replica(i).in_flight == 0 for i in p.ids())
