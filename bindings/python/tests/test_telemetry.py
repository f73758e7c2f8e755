"""Scraping /metrics pages, reporting telemetry, composite routing."""
from __future__ import annotations

import pytest

import inferlb
from inferlb import Dialect, Errno
from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "metrics"


def test_parse_vllm_fixture_and_report():
    page = (FIXTURES / "vllm.txt").read_text()
    with inferlb.Scrape() as s:
        assert s.dialect == Dialect.AUTO
        t = s.parse(page)
        assert s.dialect == Dialect.VLLM
        assert s.error is None
    assert t["requests_waiting"] == 4.0  # 3 + 1 over two engines
    assert t["requests_running"] == 21.0
    assert t["kv_cache_usage"] == 0.5   # averaged
    assert "gpu_utilization" not in t and t.gpu_utilization is None
    assert t.timestamp_ns == 0
    with inferlb.Pool(policy="composite") as pool:
        pool.add_replica("vllm-0")
        pool.report("vllm-0", t)
        got = pool.telemetry("vllm-0")
        assert dict(got) == dict(t)
        assert got.timestamp_ns > 0 and not got.stale


def test_feed_in_pieces_and_rates():
    page = (FIXTURES / "vllm.txt").read_bytes()
    with inferlb.Scrape("vllm") as s:
        for i in range(0, len(page), 7):
            s.feed(page[i:i + 7])
        first = s.finish(timestamp_ns=1_000_000_000)
        assert first.timestamp_ns == 1_000_000_000
        assert dict(first) == dict(inferlb.Scrape().parse(page))
        # the second page gives rates (same counters: zero throughput)
        second = s.parse(page, timestamp_ns=2_000_000_000)
        assert second["gen_tokens_per_s"] == 0.0


def test_every_fixture_detects_its_dialect():
    for name, dialect in [("vllm", Dialect.VLLM), ("sglang", Dialect.SGLANG),
                          ("llamacpp", Dialect.LLAMACPP),
                          ("triton", Dialect.TRITON), ("tgi", Dialect.TGI)]:
        with inferlb.Scrape() as s:
            t = s.parse((FIXTURES / f"{name}.txt").read_text())
            assert s.dialect == dialect, name
            assert len(t) > 0, name


def test_parse_errors():
    with inferlb.Scrape() as s:
        with pytest.raises(inferlb.ParseError) as e:
            s.parse('vllm:num_requests_waiting 1\nbad{x="\\q"} 1\n')
        assert e.value.code == Errno.EPARSE
        assert "line 2" in str(e.value)
        line, what = s.error
        assert line == 2 and what
        # the scrape is ready for the next page
        assert s.parse("vllm:num_requests_waiting 2\n")["requests_waiting"] == 2
        with pytest.raises(inferlb.NotFoundError):
            s.parse("some_other_metric 1\n")
    with pytest.raises(inferlb.InvalidArgumentError):
        inferlb.Scrape("nope")
    with pytest.raises(inferlb.OutOfRangeError):
        inferlb.Scrape(line_max=10)


def test_label_filter():
    page = ('vllm:num_requests_waiting{model_name="a"} 5\n'
            'vllm:num_requests_waiting{model_name="b"} 7\n')
    assert inferlb.Scrape(label_value="b").parse(page)["requests_waiting"] == 7
    assert inferlb.Scrape().parse(page)["requests_waiting"] == 12


def test_report_errors():
    with inferlb.Pool() as pool:
        pool.add_replica("a")
        with pytest.raises(inferlb.OutOfRangeError):
            pool.report("a", kv_cache_usage=1.5)
        with pytest.raises(inferlb.OutOfRangeError):
            pool.report("a", requests_waiting=float("nan"))
        with pytest.raises(inferlb.UnknownError):
            pool.report("a", no_such_signal=1)
        assert len(pool.telemetry("a")) == 0  # all-or-nothing


def test_composite_prefers_the_idle_replica():
    with inferlb.Pool(policy="composite") as pool:
        for r in ("busy", "idle", "medium"):
            pool.add_replica(r)
        pool.report("busy", requests_waiting=40, kv_cache_usage=0.9,
                    gpu_utilization=0.95, ttft_s=2.0)
        pool.report("medium", requests_waiting=10, kv_cache_usage=0.5,
                    gpu_utilization=0.6, ttft_s=0.5)
        pool.report("idle", requests_waiting=0, kv_cache_usage=0.05,
                    gpu_utilization=0.1, ttft_s=0.05)
        for _ in range(100):
            with pool.pick() as t:
                assert t.replica_id == "idle"
        # once idle's KV cache is full (deep health) it is avoided
        pool.report("idle", kv_cache_usage=1.0)
        with pool.pick() as t:
            assert t.replica_id != "idle"


def test_composite_weight_is_capacity():
    with inferlb.Pool(policy="composite") as pool:
        pool.add_replica("a100", weight=5)
        pool.add_replica("t4", weight=2)
        for r in ("a100", "t4"):
            pool.report(r, requests_waiting=6)
        with pool.pick() as t:
            assert t.replica_id == "a100"  # 7/5 beats 7/2
