"""Health and failure handling (0.4): probes, the pool's timer, drain,
panic, passive health, pool status, retries and load shedding. Time comes
from a fake host clock."""
from __future__ import annotations

import pytest

import inferlb
from inferlb import (Breaker, DueKind, Errno, EventType, Excluded, Health,
                     OutcomeStatus, Priority, ProbeResult, Reason,
                     ReplicaState, Request, RetryOn, RetryVerdict)

MS = 1_000_000
S = 1_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now


def make(n=2, **kw):
    clock = FakeClock()
    events: list[inferlb.Event] = []
    kw.setdefault("policy", "round_robin")
    kw.setdefault("probe_jitter_percent", 0)
    pool = inferlb.Pool(clock=clock, on_event=events.append, **kw)
    for i in range(n):
        pool.add_replica(f"r{i}", host_data={"n": i})
    del events[:]  # the ADDED events
    return pool, clock, events


def picks(pool, n=20):
    out = []
    for _ in range(n):
        with pool.pick() as t:
            out.append(t.replica_id)
    return out


def test_health_report_takes_out_and_back():
    pool, clock, events = make(2, health_fall=2, health_rise=2)
    with pool:
        pool.health_report("r0", ProbeResult.FAIL)
        assert pool.replica("r0").health == Health.HEALTHY and not events
        clock.now += 5 * MS
        pool.health_report("r0", ProbeResult.FAIL)  # fall 2: out
        info = pool.replica("r0")
        assert info.health == Health.UNHEALTHY
        assert info.excluded == Excluded.HEALTH
        assert info.state == ReplicaState.UNAVAILABLE and not info.available
        assert [(e.type, e.reason, e.replica_id, e.old_value, e.new_value)
                for e in events] == [
            (EventType.HEALTH, Reason.PROBE_FAILED, "r0", Health.HEALTHY,
             Health.UNHEALTHY)]
        ev = events[0]
        assert ev.host_data == {"n": 0} and ev.timestamp_ns == clock.now
        assert (ev.old_state, ev.new_state) == (ReplicaState.ACTIVE,
                                                ReplicaState.UNAVAILABLE)
        assert set(picks(pool)) == {"r1"}  # picks avoid it
        # back after rise (2) passes in a row; a bool means passed
        pool.health_report("r0", True)
        assert pool.replica("r0").health == Health.UNHEALTHY
        pool.health_report("r0", ProbeResult.PASS)
        info = pool.replica("r0")
        assert info.health == Health.HEALTHY and info.excluded == 0
        assert events[-1].reason == Reason.PROBE_PASSED
        assert set(picks(pool)) == {"r0", "r1"}
        # "not ready" (model loading) is alive: STARTING, at once from
        # UNHEALTHY
        pool.health_report("r1", False)
        pool.health_report("r1", False)
        assert pool.replica("r1").health == Health.UNHEALTHY
        pool.health_report("r1", ProbeResult.NOT_READY)
        assert pool.replica("r1").health == Health.STARTING
        assert events[-1].reason == Reason.NOT_READY
        assert set(picks(pool)) == {"r0"}
        with pytest.raises(inferlb.NotFoundError):
            pool.health_report("nope", ProbeResult.PASS)
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.health_report("r0", 7)


def test_health_initial_unknown_until_first_pass():
    pool, clock, events = make(0, health_initial=Health.UNKNOWN)
    with pool:
        pool.add_replica("a", host_data="A")
        assert pool.replica("a").health == Health.UNKNOWN
        with pytest.raises(inferlb.NoReplicaError):
            pool.pick()
        due, _ = pool.next_due()
        assert due == [("a", "A", DueKind.PROBE, Health.UNKNOWN)]
        pool.health_report("a", ProbeResult.PASS)  # one is enough
        assert pool.pick().host_data == "A"


def test_next_due_lists_probes_and_scrapes():
    pool, clock, events = make(2, probe_interval_ms=1000,
                               probe_unhealthy_interval_ms=200,
                               health_fall=1)
    with pool:
        due, nxt = pool.next_due()
        assert sorted(due) == [("r0", {"n": 0}, DueKind.PROBE,
                                Health.HEALTHY),
                               ("r1", {"n": 1}, DueKind.PROBE,
                                Health.HEALTHY)]
        assert isinstance(due[0], inferlb.Due) and due[0].kind == 1
        assert nxt == clock.now + 1000 * MS  # scheduled again, reported or not
        assert pool.next_due() == ([], nxt)
        clock.now = nxt
        due, nxt2 = pool.next_due(cap=1)  # more due than cap: call again now
        assert len(due) == 1 and nxt2 == clock.now
        due2, _ = pool.next_due(cap=1)
        assert {due[0].replica_id, due2[0].replica_id} == {"r0", "r1"}
        # an unhealthy replica is probed at the shorter interval
        pool.health_report("r0", ProbeResult.FAIL)
        _, nxt = pool.next_due()
        assert nxt == clock.now + 200 * MS
        clock.now = nxt
        due, _ = pool.next_due()
        assert due == [("r0", {"n": 0}, DueKind.PROBE, Health.UNHEALTHY)]
        # scrapes, when their interval is set
        pool.set_option("scrape_interval_ms", 500)
        pool.set_option("probe_interval_ms", 0)  # no probes at all
        due, nxt = pool.next_due()
        assert sorted(d.kind for d in due) == [DueKind.SCRAPE, DueKind.SCRAPE]
        assert nxt == clock.now + 500 * MS
        # cap 0: only the timers; a removed replica is not listed
        pool.remove("r1")
        clock.now = nxt
        assert pool.next_due(0) == ([], clock.now)
        due, _ = pool.next_due()
        assert [d.replica_id for d in due] == ["r0"]
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.next_due(-1)


def test_next_due_nothing_scheduled_is_none():
    pool, clock, events = make(1, probe_interval_ms=0)
    with pool:
        due, nxt = pool.next_due()
        # no probes, no outlier analysis (off by default): nothing
        assert due == [] and nxt is None
    with inferlb.Pool(probe_interval_ms=0) as empty:
        assert empty.next_due()[0] == []


def test_drain_then_drained_event():
    pool, clock, events = make(2)
    with pool:
        t = pool.pick()
        rid = t.replica_id
        other = "r1" if rid == "r0" else "r0"
        pool.drain(rid)
        info = pool.replica(rid)
        assert info.excluded == Excluded.DRAINING and not info.available
        assert pool.health().draining == 1
        assert set(picks(pool, 6)) == {other}
        assert not [e for e in events if e.type == EventType.DRAINED]
        clock.now += 7 * MS
        t.complete()
        # a completion's DRAINED arrives at the next next_due, with the
        # time it happened
        clock.now += 3 * MS
        pool.next_due(0)
        drained = [e for e in events if e.type == EventType.DRAINED]
        assert len(drained) == 1
        assert (drained[0].replica_id, drained[0].reason,
                drained[0].new_value) == (rid, Reason.DRAIN_DONE, 0)
        assert drained[0].host_data == {"n": int(rid[1])}
        assert drained[0].timestamp_ns == clock.now - 3 * MS
        pool.remove(rid)  # what a host does after DRAINED
        # none in flight: at once; cancelled: back in picks, no event
        events.clear()
        pool.drain(other)
        assert [(e.type, e.reason) for e in events] == [
            (EventType.DRAINED, Reason.DRAIN_DONE)]
        pool.drain(other, on=False)
        assert pool.replica(other).available and len(events) == 1
        # a deadline passes first: new_value = requests still in flight
        t = pool.pick()
        events.clear()
        pool.drain(other, timeout_ms=100)
        clock.now += 99 * MS
        pool.next_due(0)
        assert not events
        clock.now += 1 * MS
        pool.next_due(0)
        assert [(e.type, e.reason, e.new_value) for e in events] == [
            (EventType.DRAINED, Reason.DRAIN_DEADLINE, 1)]
        t.complete()
        with pytest.raises(inferlb.NotFoundError):
            pool.drain("nope")
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.drain(other, timeout_ms=-1)


def test_pool_health_status():
    pool, clock, events = make(3, health_fall=1)
    with pool:
        st = pool.health()
        assert (st.replicas, st.eligible, st.healthy, st.panic) == (3, 3, 3,
                                                                    False)
        t = pool.pick()
        pool.health_report("r2", ProbeResult.FAIL)
        pool.drain("r1")
        st = pool.health()
        assert (st.replicas, st.eligible, st.healthy, st.draining,
                st.in_flight, st.ejected, st.breakers_open) == (
            3, 1, 2, 1, 1, 0, 0)
        t.complete()
        assert pool.health().in_flight == 0


def test_panic_event_has_no_replica():
    pool, clock, events = make(2, health_fall=1, health_rise=1,
                               panic_threshold_percent=50)
    with pool:
        pool.health_report("r0", ProbeResult.FAIL)  # 1 of 2: 50%, no panic
        assert not pool.health().panic
        pool.health_report("r1", ProbeResult.FAIL)  # 0 of 2: panic
        panic = [e for e in events if e.type == EventType.PANIC]
        assert len(panic) == 1
        e = panic[0]
        assert (e.replica_id, e.host_data, e.old_state, e.new_state) == (
            None, None, None, None)
        assert (e.new_value, e.old_value, e.reason) == (
            1, 0, Reason.HEALTHY_SHARE)
        assert pool.health().panic
        # in a panic picks go to every replica (fail open)
        assert set(picks(pool)) == {"r0", "r1"}
        pool.health_report("r1", ProbeResult.PASS)
        panic = [e for e in events if e.type == EventType.PANIC]
        assert [p.new_value for p in panic] == [1, 0]
        assert set(picks(pool)) == {"r1"}


def test_passive_ejection_and_breaker():
    pool, clock, events = make(3, outlier_consecutive_gateway=2,
                               breaker_consecutive=2, panic_threshold_percent=0)
    with pool:
        for _ in range(2):
            t = pool.pick()
            while t.replica_id != "r0":
                t.complete()
                t = pool.pick()
            clock.now += MS
            t.complete(status=OutcomeStatus.REFUSED)
        info = pool.replica("r0")
        # at once, lock-free: no pick takes it
        assert info.excluded & Excluded.EJECTED
        assert info.excluded & Excluded.BREAKER
        assert info.breaker == Breaker.OPEN and info.errors == 2
        assert info.failed == 2 and info.ejections == 1
        assert "r0" not in picks(pool)
        assert not events  # delivered by the timer
        pool.next_due(0)
        kinds = {e.type: e for e in events}
        assert kinds[EventType.EJECTED].reason == Reason.CONSECUTIVE_GATEWAY
        assert kinds[EventType.EJECTED].new_value >= 30_000 * MS
        assert kinds[EventType.BREAKER].reason == \
            Reason.BREAKER_CONSECUTIVE
        assert (kinds[EventType.BREAKER].old_value,
                kinds[EventType.BREAKER].new_value) == (Breaker.CLOSED,
                                                        Breaker.OPEN)
        assert pool.health().ejected == 1
        assert pool.health().breakers_open == 1
        # both end by the timer: breaker 30 s, ejection 30 s + jitter
        events.clear()
        clock.now += 34 * S
        pool.next_due(0)
        types = [e.type for e in events]
        assert EventType.RESTORED in types and EventType.BREAKER in types
        assert pool.replica("r0").breaker == Breaker.HALF_OPEN
        assert "r0" in picks(pool, 9)


def test_slow_start_weight_percent():
    # slow start applies to the policies that use weights
    pool, clock, events = make(0, slow_start_ms=10_000,
                               policy="weighted_round_robin")
    with pool:
        pool.add_replica("a")
        assert pool.replica("a").weight_percent < 100
        clock.now += 10 * S
        pool.next_due(0)
        assert pool.replica("a").weight_percent == 100


def test_retry_moves_to_another_replica():
    pool, clock, events = make(3, policy="p2c", retry_max_attempts=3)
    with pool:
        t = pool.pick()
        state = pool.retry_state()
        assert state.attempts == 1
        d = pool.retry(state, t, OutcomeStatus.CONNECT_ERROR)
        assert d and d.verdict == RetryVerdict.YES and d.error is None
        assert t.done and state.attempts == 2
        assert d.ticket.replica_id != t.replica_id
        assert d.replica_id == d.ticket.replica_id
        assert d.host_data == {"n": int(d.replica_id[1])}
        assert 0 <= d.backoff_ns <= 25 * MS  # full jitter over 25 ms
        info = pool.replica(t.replica_id)
        assert (info.in_flight, info.failed) == (0, 1)
        assert pool.replica(d.replica_id).in_flight == 1
        # and a third replica for the third attempt
        d2 = pool.retry(state, d.ticket,
                        inferlb.Outcome(status=OutcomeStatus.TIMEOUT,
                                        latency_ns=5 * MS))
        assert d2 and d2.replica_id not in (t.replica_id, d.replica_id)
        assert 0 <= d2.backoff_ns <= 50 * MS
        d3 = pool.retry(state, d2.ticket, OutcomeStatus.REFUSED)
        assert not d3 and d3.verdict == RetryVerdict.ATTEMPTS
        assert d3.ticket is None and d3.replica_id is None
        assert pool.health().retries == 2
        assert pool.health().in_flight == 0
        with pytest.raises(inferlb.StaleTicketError):
            pool.retry(state, d2.ticket, OutcomeStatus.REFUSED)


def test_retry_avoids_earlier_attempt_with_key():
    with inferlb.Pool(policy="maglev") as pool:
        for i in range(4):
            pool.add_replica(f"r{i}", host_data=i)
        req = Request(key="session-7")
        home = pool.pick(request=req)
        home.complete()
        for _ in range(10):
            t = pool.pick(request=req)
            assert t.replica_id == home.replica_id  # the key's replica
            d = pool.retry(pool.retry_state(), t,
                           OutcomeStatus.CONNECT_ERROR, request=req)
            assert d and d.replica_id != home.replica_id
            d.ticket.complete()


def test_retry_verdicts():
    pool, clock, events = make(2, retry_on=RetryOn.ON_CONNECT_ERROR |
                               RetryOn.ON_5XX)
    with pool:
        # success and client errors are not retried; the ticket completes
        t = pool.pick()
        d = pool.retry(pool.retry_state(), t, inferlb.Outcome(http_status=200))
        assert d.verdict == RetryVerdict.NOT_RETRYABLE and not d and t.done
        t = pool.pick()
        d = pool.retry(pool.retry_state(), t, OutcomeStatus.TIMEOUT)
        assert d.verdict == RetryVerdict.NOT_RETRYABLE  # not in retry_on
        t = pool.pick()
        d = pool.retry(pool.retry_state(), t, inferlb.Outcome(
            status=OutcomeStatus.HTTP_ERROR, http_status=503))
        assert d.verdict == RetryVerdict.YES
        d.ticket.complete()
        # a bad outcome: InvalidArgumentError, the ticket stays valid
        t = pool.pick()
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.retry(pool.retry_state(), t, inferlb.Outcome(http_status=42))
        assert not t.done
        # no other replica can take it: NO_REPLICA with the pick's error
        pool.set_available("r0", False)
        pool.set_available("r1", False)
        d = pool.retry(pool.retry_state(), t, OutcomeStatus.CONNECT_ERROR)
        assert d.verdict == RetryVerdict.NO_REPLICA and t.done
        assert isinstance(d.error, inferlb.NoReplicaError)
        assert pool.health().in_flight == 0
    # the budget
    pool, clock, events = make(2, retry_budget_percent=0,
                               retry_budget_min_per_s=0)
    with pool:
        d = pool.retry(pool.retry_state(), pool.pick(),
                       OutcomeStatus.CONNECT_ERROR)
        assert d.verdict == RetryVerdict.BUDGET
        assert pool.health().retries_denied_budget == 1


def test_retry_racing_removal_picks_again():
    with inferlb.Pool(policy="round_robin") as pool:
        pool.add_replica("a", host_data="A")
        pool.add_replica("b", host_data="B")
        t = pool.pick()
        other = "b" if t.replica_id == "a" else "a"
        # as if the other replica's removal had been published meanwhile
        handle = pool._by_id[other]
        rec = pool._records.pop(handle)
        d = pool.retry(pool.retry_state(), t, OutcomeStatus.CONNECT_ERROR)
        pool._records[handle] = rec
        assert d and d.replica_id == t.replica_id and d.host_data == \
            t.host_data
        d.ticket.complete()
        info = pool.replica(other)
        assert (info.in_flight, info.failed) == (0, 0)  # given back


def test_shed_pool_max_in_flight():
    pool, clock, events = make(2, pool_max_in_flight=1)
    with pool:
        t = pool.pick()
        with pytest.raises(inferlb.ShedError) as e:
            pool.pick()
        assert e.value.code == Errno.ESHED == inferlb.ILB_ESHED
        assert e.value.name == "ESHED"
        assert e.value.retry_after_ns >= MS  # ILB_OPT_RETRY_AFTER_MS
        assert pool.health().shed == 1
        t.complete()
        pool.pick().complete()
    # sheddable requests go first, at shed_percent of the limit
    pool, clock, events = make(2, pool_max_in_flight=2, shed_percent=50)
    with pool:
        t = pool.pick()
        with pytest.raises(inferlb.ShedError):
            pool.pick(priority=Priority.SHEDDABLE)
        with pytest.raises(inferlb.ShedError):
            pool.pick(request=Request(priority=Priority.SHEDDABLE))
        t2 = pool.pick(priority=Priority.CRITICAL)
        t.complete()
        t2.complete()
        pool.pick(priority=Priority.SHEDDABLE).complete()
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.pick(priority=5)
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.pick(priority=1 << 40)


def test_refused_outcome_counts_as_error():
    pool, clock, events = make(1)
    with pool:
        pool.pick().complete(status=OutcomeStatus.REFUSED)
        info = pool.replica("r0")
        assert (info.failed, info.errors, info.in_flight) == (1, 1, 0)
        # 0.3 events carry no reason
        pool.set_weight("r0", 3)
        assert events[-1].reason == Reason.NONE
