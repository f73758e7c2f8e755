"""pick / complete, the Ticket context manager, and the outcomes."""
from __future__ import annotations

import pytest

import inferlb
from inferlb import Errno, OutcomeStatus


def make_pool(n=3, **kw):
    pool = inferlb.Pool(**kw)
    for i in range(n):
        pool.add_replica(f"r{i}", host_data={"n": i})
    return pool


def test_pick_complete():
    with make_pool() as pool:
        t = pool.pick()
        assert t.replica_id in {"r0", "r1", "r2"}
        assert t.host_data == {"n": int(t.replica_id[1])}
        assert t.ticket != 0
        assert pool.replica(t.replica_id).in_flight == 1
        t.complete(status=OutcomeStatus.OK, http_status=200,
                   latency_ns=5_000_000)
        info = pool.replica(t.replica_id)
        assert (info.in_flight, info.completed, info.failed) == (0, 1, 0)
        assert t.done


def test_double_complete_is_estale():
    with make_pool() as pool:
        t = pool.pick()
        t.complete()
        with pytest.raises(inferlb.StaleTicketError) as e:
            t.complete()
        assert e.value.code == Errno.ESTALE
        # and the library says the same for a replayed ticket number
        rc = inferlb._ffi.lib.ilb_complete(pool._h, t.ticket, None)
        assert rc == Errno.ESTALE


def test_bad_outcome_keeps_ticket():
    with make_pool() as pool:
        t = pool.pick()
        with pytest.raises(inferlb.InvalidArgumentError):
            t.complete(http_status=42)
        assert not t.done
        t.complete(status=OutcomeStatus.HTTP_ERROR, http_status=503)
        assert pool.replica(t.replica_id).failed == 1


def test_ticket_context_manager():
    with make_pool() as pool:
        with pool.pick() as t:
            assert pool.replica(t.replica_id).in_flight == 1
        info = pool.replica(t.replica_id)
        assert (info.in_flight, info.completed, info.failed) == (0, 1, 0)
        assert info.latency_ewma_ms is not None  # latency was recorded


def test_ticket_context_manager_on_exception():
    with make_pool(1) as pool:
        with pytest.raises(ConnectionError):
            with pool.pick():
                raise ConnectionError("reset")
        info = pool.replica("r0")
        assert (info.in_flight, info.completed, info.failed) == (0, 1, 1)

        class Cancelled(Exception):
            inferlb_status = OutcomeStatus.CANCELLED
        with pytest.raises(Cancelled):
            with pool.pick():
                raise Cancelled()
        info = pool.replica("r0")  # CANCELLED is not the replica's fault
        assert (info.in_flight, info.completed, info.failed) == (0, 2, 1)
        with pytest.raises(TimeoutError):
            with pool.pick():
                raise TimeoutError()
        assert pool.replica("r0").failed == 2
        # completed explicitly inside the block: exit does nothing more
        with pool.pick() as t:
            t.complete(status=OutcomeStatus.HTTP_ERROR, http_status=500)
        assert pool.replica("r0").completed == 4


def test_pick_errors():
    with inferlb.Pool() as pool:
        with pytest.raises(inferlb.NoReplicaError) as e:
            pool.pick()
        assert e.value.code == Errno.ENOREPLICA
        pool.add_replica("a", capacity=1)
        t = pool.pick()
        with pytest.raises(inferlb.SaturatedError) as e:
            pool.pick()
        assert e.value.code == Errno.ESATURATED
        t.complete()
        pool.set_available("a", False)
        with pytest.raises(inferlb.NoReplicaError):
            pool.pick()
    with inferlb.Pool(policy="ring", hash_no_key=inferlb.NoKey.ERROR) as pool:
        pool.add_replica("a")
        with pytest.raises(inferlb.NoKeyError):
            pool.pick()
        pool.pick(key="user-1").complete()


def test_removed_replica_ticket():
    with make_pool(2) as pool:
        t = pool.pick()
        pool.remove(t.replica_id)
        with pytest.raises(inferlb.ReplicaRemovedError):
            t.complete()
        assert t.done
        with pool.pick() as t2:  # the context manager swallows EREMOVED
            pool.remove(t2.replica_id)
        with pytest.raises(inferlb.NoReplicaError):
            pool.pick()


def test_key_affinity_is_stable():
    with make_pool(8, policy="maglev") as pool:
        first = {}
        for k in range(50):
            with pool.pick(key=f"session-{k}") as t:
                first[k] = t.replica_id
        for k in range(50):
            with pool.pick(key=f"session-{k}".encode()) as t:
                assert t.replica_id == first[k]
        assert len(set(first.values())) > 1


def test_token_estimates():
    with make_pool(1, policy="least_tokens") as pool:
        t = pool.pick(prompt_tokens=100, output_tokens=20)
        assert pool.replica("r0").tokens_in_flight == 120
        t.complete()
        assert pool.replica("r0").tokens_in_flight == 0


def test_seed_makes_decisions_repeatable():
    def run():
        with make_pool(8, policy="random", seed=42) as pool:
            out = []
            for _ in range(20):
                with pool.pick() as t:
                    out.append(t.replica_id)
            return out
    assert run() == run()
