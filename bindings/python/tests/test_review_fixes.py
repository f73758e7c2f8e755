"""Regression tests: removed replicas' host_data during batches and racing
picks, Ticket.__exit__ never masking the block's exception, outcome
measurements clamped instead of wrapped, batch() commit failures."""
from __future__ import annotations

import logging
import threading

import pytest

import inferlb
from inferlb import Errno, OutcomeStatus
from inferlb import pool as pool_mod
from inferlb._ffi import lib


# --- 1. removed replicas keep their record while picks can return them ---

def test_pick_in_batch_after_remove_keeps_host_data():
    with inferlb.Pool(policy="round_robin") as pool:
        pool.add_replica("a", host_data="A")
        with pool.batch():
            pool.remove("a")
            with pool.batch():  # nested: only the outermost commit publishes
                pass
            t = pool.pick()  # still the previous snapshot
            assert (t.replica_id, t.host_data) == ("a", "A")
        with pytest.raises(inferlb.ReplicaRemovedError):
            t.complete()
        assert not pool._records  # dropped at the outermost commit
        with pytest.raises(inferlb.NoReplicaError):
            pool.pick()


def test_pick_racing_removal_picks_again(monkeypatch):
    """The removal is published and returns between the C pick and the
    record lookup (what another thread's remove() can do)."""
    with inferlb.Pool(policy="round_robin") as pool:
        pool.add_replica("a", host_data="A")
        pool.add_replica("b", host_data="B")
        real = pool_mod._ilb_pick
        calls = []

        def racing_pick(res_p, h, req):
            rc = real(res_p, h, req)
            calls.append(res_p._obj.replica_id.decode())
            if len(calls) == 1:
                pool.remove(calls[0])
            return rc
        monkeypatch.setattr(pool_mod, "_ilb_pick", racing_pick)
        t = pool.pick()
        assert len(calls) == 2 and t.replica_id != calls[0]
        assert t.host_data == t.replica_id.upper()
        t.complete()
        assert pool.replica(t.replica_id).in_flight == 0


def test_pick_without_record_raises_instead_of_none():
    with inferlb.Pool() as pool:
        pool.add_replica("a", host_data="A")
        pool._records.clear()  # as if "a" were always being removed
        with pytest.raises(inferlb.NoReplicaError):
            pool.pick()
        info = pool.replica("a")
        assert info.in_flight == 0  # every such ticket was given back
        assert info.failed == 0     # ... as CANCELLED


def test_picks_never_see_host_data_none_under_churn():
    with inferlb.Pool(policy="round_robin") as pool:
        pool.add_replica("stable", host_data="stable")
        stop = threading.Event()
        bad: list[object] = []

        def picker():
            while not stop.is_set():
                with pool.pick() as t:
                    if t.host_data != t.replica_id:
                        bad.append(t)
        threads = [threading.Thread(target=picker) for _ in range(3)]
        for th in threads:
            th.start()
        try:
            for i in range(300):
                pool.add_replica(f"r{i}", host_data=f"r{i}")
                pool.remove(f"r{i}")
        finally:
            stop.set()
            for th in threads:
                th.join()
        assert not bad
        assert pool.replica("stable").in_flight == 0


# --- 2. Ticket.__exit__ never raises over the block's exception ----------

def test_exit_with_rejected_outcome_does_not_mask_exception():
    with inferlb.Pool() as pool:
        pool.add_replica("b", capacity=1)

        class Bad(Exception):
            http_status = 999  # ilb_complete: EINVAL

        with pytest.raises(Bad):
            with pool.pick() as t:
                raise Bad()
        assert t.done
        info = pool.replica("b")
        assert (info.in_flight, info.completed, info.failed) == (0, 1, 1)

        class BadStatus(Exception):
            inferlb_status = 77  # not an ilb_outcome_status

        with pytest.raises(BadStatus):
            with pool.pick() as t:
                raise BadStatus()
        assert t.done and pool.replica("b").in_flight == 0

        class Weird(Exception):
            http_status = "not a number"

        with pytest.raises(Weird):
            with pool.pick() as t:
                raise Weird()
        assert t.done and pool.replica("b").in_flight == 0
        pool.pick().complete()  # capacity 1: nothing left in flight


# --- 3. measurements are clamped, never wrapped -------------------------

def test_complete_clamps_measurements(monkeypatch):
    seen = []
    real = pool_mod._ilb_complete

    def spy(h, ticket, outcome):
        if outcome is None:
            return real(h, ticket, outcome)
        o = outcome._obj
        seen.append((o.status, o.http_status, o.latency_ns, o.ttft_ns,
                     o.prompt_tokens, o.output_tokens))
        return real(h, ticket, outcome)
    with inferlb.Pool() as pool:
        pool.add_replica("x")
        monkeypatch.setattr(pool_mod, "_ilb_complete", spy)
        pool.pick().complete(latency_ns=-5, ttft_ns=-1, prompt_tokens=-3,
                             output_tokens=7)
        pool.pick().complete(latency_ns=1 << 70, ttft_ns=5,
                             prompt_tokens=1 << 40, output_tokens=-1)
        assert seen == [(0, 0, 0, 0, 0, 7),
                        (0, 0, (1 << 64) - 1, 5, (1 << 32) - 1, 0)]
        t = pool.pick()
        with pytest.raises(inferlb.InvalidArgumentError):
            t.complete(status=OutcomeStatus.HTTP_ERROR,
                       http_status=(1 << 32) + 503)  # not wrapped to 503
        with pytest.raises(ValueError):
            t.complete(status=-(1 << 40))
        assert not t.done
        t.complete()
        assert pool.replica("x").in_flight == 0


# --- 4. batch() commit failures ------------------------------------------

def _failing_commit(monkeypatch, times):
    real = lib.ilb_pool_batch_commit
    left = [times]

    def commit(h):
        if left[0] > 0:
            left[0] -= 1
            return Errno.ENOMEM
        return real(h)
    monkeypatch.setattr(lib, "ilb_pool_batch_commit", commit)


def test_batch_failed_commit_does_not_mask_block_exception(monkeypatch,
                                                           caplog):
    with inferlb.Pool() as pool:
        _failing_commit(monkeypatch, 1)
        with caplog.at_level(logging.ERROR, logger="inferlb"):
            with pytest.raises(KeyError):
                with pool.batch():
                    pool.add_replica("a")
                    raise KeyError("boom")
        assert "batch commit failed" in caplog.text
        with pytest.raises(inferlb.NoReplicaError):
            pool.pick()  # the batch is still open: "a" not published
        pool.batch_commit()
        pool.pick().complete()


def test_batch_commit_failure_raises_and_batch_stays_open(monkeypatch):
    with inferlb.Pool(policy="round_robin") as pool:
        pool.add_replica("a", host_data="A")
        pool.add_replica("b", host_data="B")
        _failing_commit(monkeypatch, 1)
        with pytest.raises(inferlb.NoMemoryError):
            with pool.batch():
                pool.remove("a")
        # still open: picks see the old snapshot, "a" keeps its host_data
        got = {}
        for _ in range(4):
            with pool.pick() as t:
                got[t.replica_id] = t.host_data
        assert got == {"a": "A", "b": "B"}
        pool.batch_commit()  # the retry publishes
        for _ in range(4):
            with pool.pick() as t:
                assert t.replica_id == "b"
        assert len(pool._records) == 1
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.batch_commit()  # no batch open any more


# --- 5. a RetryState shared by threads: ilb_retry calls are serialised ----

def test_retry_state_shared_by_threads_serialises_c_calls(monkeypatch):
    import time
    real = lib.ilb_retry
    guard = threading.Lock()
    inside, peak = [0], [0]

    def slow_retry(*args):
        with guard:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            time.sleep(0.02)  # widen the window two callers could share
            return real(*args)
        finally:
            with guard:
                inside[0] -= 1
    max_attempts = 8
    with inferlb.Pool(policy="round_robin", retry_max_attempts=max_attempts,
                      retry_budget_min_per_s=1000000) as pool:
        for i in range(4):
            pool.add_replica(f"r{i}")
        monkeypatch.setattr(lib, "ilb_retry", slow_retry)
        state = pool.retry_state()
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def worker():
            try:
                t = pool.pick()
                barrier.wait()
                while True:
                    d = pool.retry(state, t, OutcomeStatus.CONNECT_ERROR)
                    if not d:
                        return
                    t = d.ticket
            except BaseException as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert peak[0] == 1  # never two ilb_retry calls on one state
        assert state.attempts <= max_attempts
        assert pool.health().in_flight == 0


# --- 6. Ticket.__exit__: a refused connection is REFUSED -------------------

def test_exit_connection_refused_is_refused(monkeypatch):
    assert pool_mod._status_of(ConnectionRefusedError()) == \
        OutcomeStatus.REFUSED
    assert pool_mod._status_of(ConnectionResetError()) == \
        OutcomeStatus.CONNECT_ERROR
    seen = []
    real = pool_mod._ilb_complete

    def spy(h, ticket, outcome):
        seen.append(None if outcome is None else outcome._obj.status)
        return real(h, ticket, outcome)
    with inferlb.Pool() as pool:
        pool.add_replica("x")
        monkeypatch.setattr(pool_mod, "_ilb_complete", spy)
        with pytest.raises(ConnectionRefusedError):
            with pool.pick():
                raise ConnectionRefusedError(111, "refused")
        assert seen == [OutcomeStatus.REFUSED]
        info = pool.replica("x")
        assert (info.in_flight, info.failed) == (0, 1)


# --- 7. drain timeouts are never wrapped ----------------------------------

def test_drain_timeout_out_of_range():
    with inferlb.Pool() as pool:
        pool.add_replica("a")
        for ms in ((1 << 64) + 5, (1 << 64) - 1, (1 << 32) + 1):
            with pytest.raises(inferlb.OutOfRangeError):
                pool.drain("a", timeout_ms=ms)
            assert not pool.replica("a").excluded  # nothing changed
        with pytest.raises(ValueError):  # OutOfRangeError is a ValueError
            pool.drain("a", timeout_ms=1 << 70)
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.drain("a", timeout_ms=-1)
        pool.drain("a", timeout_ms=1 << 32)  # the largest accepted
        assert pool.replica("a").excluded == inferlb.Excluded.DRAINING
        pool.drain("a", on=False)
