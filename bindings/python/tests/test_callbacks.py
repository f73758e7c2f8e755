"""Host callbacks: clock, events, log; exceptions never reach C."""
from __future__ import annotations

import gc
import logging

import inferlb
from inferlb import EventType, LogLevel, ReplicaState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


def test_fake_clock_drives_staleness():
    clock = FakeClock()
    with inferlb.Pool(policy="composite", clock=clock,
                      telemetry_max_age_ms=10_000) as pool:
        pool.add_replica("a")
        pool.report("a", requests_waiting=3, kv_cache_usage=0.5)
        t = pool.telemetry("a")
        assert t.timestamp_ns == clock.now
        assert dict(t) == {"requests_waiting": 3.0, "kv_cache_usage": 0.5}
        assert t.stale == frozenset()
        clock.now += 9_999_000_000
        assert pool.telemetry("a").stale == frozenset()
        pool.report("a", kv_cache_usage=0.25)  # refreshed at 'now'
        clock.now += 1_000_000
        t = pool.telemetry("a")
        assert t.stale == {"requests_waiting"}
        assert t.fresh() == {"kv_cache_usage": 0.25}
        clock.now += 10_000_000_000
        assert pool.telemetry("a").stale == {"requests_waiting",
                                             "kv_cache_usage"}
        # a report time in the future of the host clock is refused
        try:
            pool.report("a", kv_cache_usage=0.1,
                        timestamp_ns=clock.now + 10**9)
        except inferlb.OutOfRangeError:
            pass
        else:
            raise AssertionError("future timestamp accepted")


def test_events_received_with_host_data():
    events = []
    with inferlb.Pool(on_event=events.append) as pool:
        obj = object()
        pool.add_replica("a", weight=2, host_data=obj)
        pool.set_weight("a", 4)
        pool.set_weight("a", 4)  # no change, no event
        pool.set_available("a", False)
        pool.remove("a")
    assert [e.type for e in events] == [
        EventType.REPLICA_ADDED, EventType.REPLICA_WEIGHT,
        EventType.REPLICA_STATE, EventType.REPLICA_REMOVED]
    assert all(e.replica_id == "a" and e.host_data is obj for e in events)
    assert (events[1].old_value, events[1].new_value) == (2, 4)
    assert events[0].old_state is None
    assert events[2].new_state == ReplicaState.UNAVAILABLE
    assert events[3].new_state == ReplicaState.REMOVED


def test_writer_from_callback_is_edeadlk():
    seen = []

    def on_event(ev):
        try:
            pool2.add_replica(ev.replica_id + "-nested")
        except inferlb.DeadlockError as e:
            seen.append(e.code)
    pool2 = inferlb.Pool(on_event=on_event)
    pool2.add_replica("a")
    assert seen == [inferlb.Errno.EDEADLK]
    assert pool2.ids() == ["a"]
    pool2.close()


def test_log_callback():
    logs = []
    with inferlb.Pool(log=lambda lv, msg: logs.append((lv, msg)),
                      log_level=LogLevel.DEBUG) as pool:
        pool.add_replica("a")
        try:
            pool.report("a", kv_cache_usage=2.0)  # out of range: logged
        except inferlb.OutOfRangeError:
            pass
    assert logs, "no log message at DEBUG"
    assert all(isinstance(m, str) and isinstance(lv, int) for lv, m in logs)
    assert any("kv_cache_usage" in m for _, m in logs)


def test_callback_exceptions_are_caught(caplog):
    def boom(*a):
        raise RuntimeError("callback bug")
    ticks = iter([5, 6])

    def clock():
        return next(ticks)  # raises StopIteration after two calls
    with caplog.at_level(logging.ERROR, logger="inferlb"):
        with inferlb.Pool(on_event=boom, log=boom, clock=clock,
                          log_level=LogLevel.DEBUG) as pool:
            pool.add_replica("a")
            pool.add_replica("b")
            for _ in range(5):
                with pool.pick():
                    pass
            pool.report("a", requests_waiting=1)
            assert pool.telemetry("a").timestamp_ns == 6  # the last good tick
    text = caplog.text
    assert "on_event callback raised" in text
    assert "clock callback raised" in text


def test_callbacks_live_as_long_as_the_pool():
    events = []

    def make():
        return inferlb.Pool(on_event=lambda e: events.append(e.type),
                            clock=lambda: 123)
    pool = make()
    gc.collect()
    pool.add_replica("a")
    pool.report("a", requests_waiting=1)
    assert pool.telemetry("a").timestamp_ns == 123
    assert events == [EventType.REPLICA_ADDED]
    pool.close()
