"""Pools, options and replicas, with their error paths."""
from __future__ import annotations

import pytest

import inferlb
from inferlb import Errno, Option, Policy, ReplicaState


def test_options_as_kwargs():
    with inferlb.Pool(policy="composite", max_in_flight=1024, p2c_choices=3,
                      scan_max=4, score_gpu=0) as pool:
        assert pool.policy == "composite"
        assert pool.get_option("policy") == Policy.COMPOSITE
        assert pool.get_option("max_in_flight") == 1024
        assert pool.get_option(Option.P2C_CHOICES) == 3
        assert pool.get_option("scan_max") == 4
        assert pool.get_option("score_gpu") == 0
        pool.set_option("policy", Policy.RING)
        assert pool.policy == "ring"
        pool.set_option("tie_percent", 5)
        assert pool.get_option("tie_percent") == 5


def test_option_bounds():
    lo, hi, default = inferlb.option_bounds("p2c_choices")
    assert (lo, hi, default) == (2, 16, 2)
    assert inferlb.option_bounds(Option.POLICY)[2] == Policy.P2C


def test_bad_options():
    with inferlb.Pool() as pool:
        with pytest.raises(inferlb.OutOfRangeError) as e:
            pool.set_option("p2c_choices", 17)
        assert e.value.code == Errno.ERANGE == inferlb.ILB_ERANGE
        assert "out of range" in str(e.value)
        with pytest.raises(inferlb.UnknownError) as e:
            pool.set_option("no_such_option", 1)
        assert e.value.code == Errno.EUNKNOWN
        with pytest.raises(inferlb.InferlbError) as e:
            pool.set_option(9999, 1)  # unknown id: the library says so
        assert e.value.code == Errno.EUNKNOWN
        with pytest.raises(inferlb.UnknownError):
            pool.set_option("policy", "no_such_policy")
        with pytest.raises(inferlb.InferlbError) as e:
            pool.get_option(12345)
        assert e.value.code == Errno.EUNKNOWN
    with pytest.raises(inferlb.OutOfRangeError):
        inferlb.Pool(scan_max=-1)
    with pytest.raises(inferlb.UnknownError):
        inferlb.Pool(policy="nope")
    with pytest.raises(inferlb.UnknownError):
        inferlb.Pool(bogus=3)


def test_replicas():
    with inferlb.Pool() as pool:
        pool.add_replica("a", weight=5, capacity=10, zone="eu-1",
                         labels={"gpu": "A100", "model": "llama"},
                         host_data=("10.0.0.1", 8000))
        pool.add_replica("b")
        assert len(pool) == 2 and "a" in pool and "z" not in pool
        assert pool.ids() == ["a", "b"]
        info = pool.replica("a")
        assert (info.weight, info.capacity, info.n_labels) == (5, 10, 2)
        assert info.state == ReplicaState.ACTIVE and info.available
        assert info.host_data == ("10.0.0.1", 8000)
        assert info.in_flight == info.completed == info.failed == 0
        assert info.latency_ewma_ms is None
        pool.set_weight("a", 7)
        assert pool.replica("a").weight == 7
        pool.set_available("a", False)
        assert pool.replica("a").state == ReplicaState.UNAVAILABLE
        pool.set_available("a", True)
        assert pool.replica("a").available
        pool.remove_replica("a")
        assert len(pool) == 1 and pool.ids() == ["b"]
        assert [r.id for r in pool.replicas()] == ["b"]


def test_replica_errors():
    with inferlb.Pool() as pool:
        pool.add_replica("a")
        with pytest.raises(inferlb.NotFoundError) as e:
            pool.replica("nope")
        assert e.value.code == Errno.ENOENT
        assert isinstance(e.value, LookupError)
        for call in (lambda: pool.remove("nope"),
                     lambda: pool.set_weight("nope", 2),
                     lambda: pool.set_available("nope", True),
                     lambda: pool.telemetry("nope"),
                     lambda: pool.report("nope", kv_cache_usage=0.1)):
            with pytest.raises(inferlb.NotFoundError):
                call()
        with pytest.raises(inferlb.AlreadyExistsError) as e:
            pool.add_replica("a")
        assert e.value.code == Errno.EEXIST
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.add_replica("w0", weight=0)
        with pytest.raises(inferlb.OutOfRangeError):
            pool.add_replica("big", weight=inferlb.ILB_WEIGHT_MAX + 1)
        with pytest.raises(inferlb.TooBigError):
            pool.add_replica("x" * 256)
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.add_replica("")
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.set_weight("a", 0)
        assert pool.ids() == ["a"]  # failed adds left nothing behind


def test_batch():
    with inferlb.Pool(policy="round_robin") as pool:
        with pool.batch():
            for i in range(10):
                pool.add_replica(f"r{i}")
        assert len(pool) == 10
        seen = set()
        for _ in range(10):
            with pool.pick() as t:
                seen.add(t.replica_id)
        assert len(seen) == 10


def test_close_is_idempotent_and_final():
    pool = inferlb.Pool()
    pool.add_replica("a")
    pool.close()
    pool.close()
    with pytest.raises(inferlb.InferlbError) as e:
        pool.pick()
    assert e.value.code == Errno.EINVAL
    del pool  # __del__ after close is harmless
