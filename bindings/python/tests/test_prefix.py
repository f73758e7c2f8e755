"""Prefix-cache-aware routing (since 0.5): requests with block hashes or a
prompt, KV-cache events, the index's stats, and their error paths."""
from __future__ import annotations

import array
import ctypes
import dataclasses

import pytest

import inferlb
from inferlb import Errno, KVEventType, OutcomeStatus, Policy, PrefixMode
from inferlb import _ffi

# A small index (1024 entries, ~48 KiB) instead of the default 20 MiB.
SMALL = dict(prefix_table_blocks=1024)


def prefix_pool(n=4, **kw):
    opts = dict(SMALL)
    opts.update(kw)
    pool = inferlb.Pool(policy="prefix", seed=7, **opts)
    for i in range(n):
        pool.add_replica(f"r{i}", host_data=i)
    return pool


def chain(model: str, text: bytes, block_bytes: int = 256) -> list[int]:
    """The documented prompt hashing: h[0] = XXH64(block 0, seed
    XXH64(model)), h[i] = XXH64(block i, seed h[i-1]); full blocks only."""
    h = inferlb.hash64(model.encode())
    out = []
    for i in range(len(text) // block_bytes):
        h = inferlb.hash64(text[i * block_bytes:(i + 1) * block_bytes], h)
        out.append(h)
    return out


# --- constants -------------------------------------------------------------

def test_constants_present():
    assert Policy.PREFIX == inferlb.ILB_POLICY_PREFIX == 15
    assert inferlb.policy_name(Policy.PREFIX) == "prefix"
    assert inferlb.policy_id("prefix") == Policy.PREFIX
    assert PrefixMode.ROUTED == 0 and PrefixMode.EVENTS == 1
    assert (KVEventType.STORED, KVEventType.REMOVED,
            KVEventType.CLEARED) == (1, 2, 3)
    assert inferlb.ILB_KV_STORED == KVEventType.STORED
    assert inferlb.ILB_PREFIX_HOLDERS == 4
    assert inferlb.ILB_KV_RESTART == 1
    names = [o.name for o in inferlb.Option if o.name.startswith("PREFIX_")]
    assert len(names) == 10
    for name in names:  # every one is known to the library
        lo, hi, default = inferlb.option_bounds(name.lower())
        assert lo <= default <= hi, name
    assert inferlb.option_bounds("prefix_mode") == (0, 1, PrefixMode.ROUTED)
    assert inferlb.option_bounds("prefix_max_blocks")[1] == 256


def test_options_by_name():
    with prefix_pool(1, prefix_mode=PrefixMode.EVENTS, prefix_block_bytes=64,
                     prefix_block_tokens=16, prefix_bound_min=0) as pool:
        assert pool.policy == "prefix"
        assert pool.get_option("prefix_mode") == PrefixMode.EVENTS
        assert pool.get_option("prefix_block_bytes") == 64
        assert pool.get_option(inferlb.Option.PREFIX_BLOCK_TOKENS) == 16
        with pytest.raises(inferlb.OutOfRangeError):
            pool.set_option("prefix_block_bytes", 15)


# --- routing -----------------------------------------------------------------

def test_shared_prefix_sticks_to_holder():
    with prefix_pool() as pool:
        prefix = list(range(1000, 1016))  # 16 shared blocks
        with pool.pick(block_hashes=prefix + [1]) as t:
            holder = t.replica_id
        before = pool.prefix_stats()
        assert before.lookups == 1 and before.blocks == 17
        assert before.matched_blocks == 0 and before.entries == 17
        for i in range(2, 22):  # same prefix, a new last block each time
            with pool.pick(block_hashes=prefix + [i]) as t:
                assert t.replica_id == holder
                assert t.host_data == int(holder[1:])
        st = pool.prefix_stats()
        assert st.lookups == 21
        assert st.blocks == 17 * 21
        assert st.matched_blocks == 16 * 20  # the shared prefix every time
        assert 0.8 < st.hit_rate < 1.0


def test_unrelated_prompts_spread_by_load():
    with prefix_pool() as pool:
        # held open: no prefix in common, so the least loaded takes each
        tickets = [pool.pick(block_hashes=[i * 100, i * 100 + 1])
                   for i in range(1, 9)]
        assert {t.replica_id for t in tickets} == {"r0", "r1", "r2", "r3"}
        assert pool.prefix_stats().matched_blocks == 0
        for t in tickets:
            t.complete()


def test_hot_prefix_spreads_over_the_bound():
    with prefix_pool(prefix_bound_min=1) as pool:
        tickets = [pool.pick(block_hashes=[5, 6, 7]) for _ in range(16)]
        counts: dict[str, int] = {}
        for t in tickets:
            counts[t.replica_id] = counts.get(t.replica_id, 0) + 1
        assert len(counts) > 1, counts  # never all piled on the holder
        for t in tickets:
            t.complete()
        assert pool.health().in_flight == 0


def test_prompt_str_and_bytes_hash_alike():
    text = "système: " + "x" * 1100  # 4 full blocks of 256 bytes in UTF-8
    with prefix_pool() as pool:
        with pool.pick(prompt=text, model="llama-3") as t:
            holder = t.replica_id
        st = pool.prefix_stats()
        assert (st.lookups, st.blocks) == (1, len(text.encode()) // 256)
        with pool.pick(prompt=text.encode(), model="llama-3") as t:
            assert t.replica_id == holder
        with pool.pick(prompt=bytearray(text.encode()),
                       attrs={"model": "llama-3"}) as t:
            assert t.replica_id == holder
        st = pool.prefix_stats()
        assert st.matched_blocks == 2 * st.blocks // 3


def test_prompt_hashing_matches_documented_chain():
    text = bytes(range(256)) * 3 + b"tail"
    with prefix_pool() as pool:
        with pool.pick(prompt=text, model="m") as t:
            holder = t.replica_id
        # the host's own hashes of the same prompt find the same blocks
        with pool.pick(block_hashes=chain("m", text)) as t:
            assert t.replica_id == holder
        assert pool.prefix_stats().matched_blocks == 3
        # without the model ("" seeds the chain) nothing matches
        with pool.pick(block_hashes=chain("", text) + [1]):
            pass
        assert pool.prefix_stats().matched_blocks == 3


def test_model_seeds_the_hashing():
    text = "y" * 512
    with prefix_pool() as pool:
        pool.pick(prompt=text, model="a").complete()
        pool.pick(prompt=text, model="b").complete()
        pool.pick(prompt=text).complete()  # attribute absent: model ""
        st = pool.prefix_stats()
        assert (st.lookups, st.matched_blocks, st.entries) == (3, 0, 6)
        pool.pick(prompt=text, attrs={"model": "b", "user": "u1"}).complete()
        assert pool.prefix_stats().matched_blocks == 2


def test_short_prompt_and_no_blocks_look_up_nothing():
    with prefix_pool() as pool:
        pool.pick(prompt="short").complete()  # < one block of 256 bytes
        pool.pick(block_hashes=[]).complete()
        pool.pick().complete()
        pool.pick(key="k", model="m").complete()
        assert pool.prefix_stats().lookups == 0


def test_block_hashes_forms():
    big = (1 << 64) - 1
    with prefix_pool() as pool:
        with pool.pick(block_hashes=array.array("Q", [big, 0, 3])) as t:
            holder = t.replica_id
        for form in ((big, 0, 3, 9), iter([big, 0, 3, 9]), [big, 0, 3, 9],
                     array.array("L", [big, 0, 3])):
            with pool.pick(block_hashes=form) as t:
                assert t.replica_id == holder
        pool.pick(block_hashes=range(0)).complete()  # no blocks: no lookup
        assert pool.prefix_stats().lookups == 5
        with pool.pick(request=inferlb.Request(block_hashes=[big, 0])) as t:
            assert t.replica_id == holder
        # a long prompt counts up to prefix_max_blocks blocks
        pool.set_option("prefix_max_blocks", 8)
        before = pool.prefix_stats().blocks
        pool.pick(block_hashes=range(1, 301)).complete()
        assert pool.prefix_stats().blocks == before + 8


def test_block_hashes_ignored_by_other_policies():
    with inferlb.Pool(policy="least_conn") as pool:
        pool.add_replica("a")
        pool.pick(block_hashes=[1, 2], prompt="p" * 600, model="m").complete()


def test_retry_carries_the_blocks():
    with prefix_pool() as pool:
        req = inferlb.Request(block_hashes=[11, 12, 13])
        with pool.pick(request=req):
            pass
        t = pool.pick(request=req)
        holder = t.replica_id
        assert pool.prefix_stats().matched_blocks == 3
        d = pool.retry(pool.retry_state(), t, OutcomeStatus.REFUSED,
                       request=req)
        assert d, d
        assert d.replica_id != holder  # never the attempt that failed
        st = pool.prefix_stats()
        assert (st.lookups, st.blocks) == (3, 9)
        d.ticket.complete()


# --- KV events ---------------------------------------------------------------

def test_kv_events_drive_routing():
    with prefix_pool(prefix_mode=PrefixMode.EVENTS) as pool:
        blocks = [21, 22, 23, 24]
        pool.pick(block_hashes=blocks).complete()  # EVENTS: picks learn nothing
        assert pool.prefix_stats().entries == 0
        pool.kv_event("r2", KVEventType.STORED, blocks, seq=1)
        for _ in range(5):
            with pool.pick(block_hashes=blocks + [99]) as t:
                assert t.replica_id == "r2"
        st = pool.prefix_stats()
        assert (st.events, st.entries, st.matched_blocks) == (1, 4, 20)
        # evicting the tail leaves the head held
        pool.kv_event("r2", KVEventType.REMOVED, [23, 24], seq=2)
        before = pool.prefix_stats().matched_blocks
        with pool.pick(block_hashes=blocks) as t:
            assert t.replica_id == "r2"
        assert pool.prefix_stats().matched_blocks == before + 2
        pool.kv_event("r2", KVEventType.CLEARED, seq=3)
        st = pool.prefix_stats()
        assert (st.events, st.entries) == (3, 0)


def test_kv_event_stale_and_restart():
    with prefix_pool(prefix_mode=PrefixMode.EVENTS) as pool:
        pool.kv_event("r1", KVEventType.STORED, [1, 2], seq=10)
        pool.kv_event("r1", KVEventType.STORED, [3], seq=10)  # same batch
        with pytest.raises(inferlb.StaleTicketError) as e:
            pool.kv_event("r1", KVEventType.STORED, [4], seq=9)
        assert e.value.code == Errno.ESTALE == inferlb.ILB_ESTALE
        assert "stale" in str(e.value)
        st = pool.prefix_stats()
        assert (st.events, st.stale_events, st.entries) == (2, 1, 3)
        # seq 0: unordered, always applied
        pool.kv_event("r1", KVEventType.STORED, [5])
        # restart: forget r1's blocks, seq 1 is the new baseline
        pool.kv_event("r1", KVEventType.STORED, [6], seq=1, restart=True)
        st = pool.prefix_stats()
        assert (st.events, st.stale_events, st.entries) == (4, 1, 1)
        pool.kv_event("r1", KVEventType.REMOVED, [6], seq=2)
        assert pool.prefix_stats().entries == 0
        # other replicas keep their own sequence
        pool.kv_event("r0", KVEventType.STORED, [7], seq=1)


def test_kv_event_block_hash_forms():
    with prefix_pool(prefix_mode=PrefixMode.EVENTS,
                     prefix_table_blocks=16384) as pool:
        pool.kv_event("r0", int(KVEventType.STORED), array.array("Q", [1, 2]))
        pool.kv_event("r0", KVEventType.STORED, (3, (1 << 64) - 1))
        pool.kv_event("r0", KVEventType.STORED, range(10, 300))  # > 256
        assert pool.prefix_stats().entries == 4 + 290


def test_kv_event_errors():
    with prefix_pool() as pool:
        with pytest.raises(inferlb.NotFoundError):
            pool.kv_event("nope", KVEventType.STORED, [1])
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.kv_event("r0", 4, [1])  # no such type
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.kv_event("r0", 0)
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.kv_event("r0", 1 << 40)  # not even an int32
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.kv_event("r0", KVEventType.STORED, [-1])
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.kv_event("r0", KVEventType.STORED, [1 << 64])
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.kv_event("r0", KVEventType.STORED, [1], seq=-1)
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.kv_event("r0", KVEventType.STORED, [1], seq=1 << 64)
        with pytest.raises(TypeError):
            pool.kv_event("r0", KVEventType.STORED, ["1"])
        with pytest.raises(TypeError):
            pool.kv_event("r0", KVEventType.STORED, b"\x01\x02")
        with pytest.raises(TypeError):
            pool.kv_event("r0", KVEventType.STORED, [1.0])
        with pytest.raises(TypeError):
            pool.kv_event("r0", KVEventType.STORED, [1], seq=1.5)
        st = pool.prefix_stats()
        assert (st.events, st.entries) == (0, 0)  # nothing was applied


# --- stats -------------------------------------------------------------------

def test_prefix_stats_fields():
    fields = [f.name for f in dataclasses.fields(inferlb.PrefixStats)]
    assert tuple(fields) == _ffi.PREFIX_STATS_FIELDS
    assert [f for f, _ in _ffi.ilb_prefix_stats._fields_] == \
        ["struct_size"] + fields
    with prefix_pool() as pool:
        st = pool.prefix_stats()
        for f in fields:
            assert isinstance(getattr(st, f), int), f
        # 1024 entries: 147 buckets of 7 rounded up to 256, 320 bytes each
        assert st.capacity == 256 * 7
        assert 256 * 320 <= st.memory_bytes < 256 * 320 + 4096
        assert (st.entries, st.lookups, st.blocks, st.matched_blocks,
                st.recorded, st.evicted, st.dropped, st.events,
                st.stale_events) == (0,) * 9
        assert st.hit_rate == 0.0
        pool.pick(block_hashes=[1, 2, 3]).complete()
        st = pool.prefix_stats()
        assert (st.entries, st.lookups, st.blocks, st.recorded) == (3, 1, 3, 3)
        # changing the table size empties the index and its counters
        pool.set_option("prefix_table_blocks", 2048)
        st = pool.prefix_stats()
        assert (st.entries, st.lookups, st.capacity) == (0, 0, 512 * 7)


def test_prefix_stats_struct_size_matches_library():
    with prefix_pool(1) as pool:
        buf = (ctypes.c_char * 4096)()
        ctypes.c_size_t.from_buffer(buf).value = 4096
        assert _ffi.lib.ilb_pool_prefix_stats(
            ctypes.cast(buf, ctypes.POINTER(_ffi.ilb_prefix_stats)),
            pool._h) == 0
        assert ctypes.c_size_t.from_buffer(buf).value == \
            ctypes.sizeof(_ffi.ilb_prefix_stats)


def test_non_prefix_pool_is_einval():
    with inferlb.Pool(policy="p2c") as pool:
        pool.add_replica("a")
        with pytest.raises(inferlb.InvalidArgumentError) as e:
            pool.prefix_stats()
        assert e.value.code == Errno.EINVAL
        assert "no prefix index" in str(e.value)
        with pytest.raises(inferlb.InvalidArgumentError) as e:
            pool.kv_event("a", KVEventType.STORED, [1])
        assert "no prefix index" in str(e.value)
        with pytest.raises(inferlb.NotFoundError):  # the id is checked first
            pool.kv_event("b", KVEventType.STORED, [1])
        # switching to prefix builds the index; switching away drops it
        pool.set_option("prefix_table_blocks", 1024)
        pool.set_option("policy", "prefix")
        pool.kv_event("a", KVEventType.STORED, [1])
        assert pool.prefix_stats().entries == 1
        pool.set_option("policy", "p2c")
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.prefix_stats()


def test_closed_pool():
    pool = prefix_pool(1)
    pool.close()
    with pytest.raises(inferlb.InvalidArgumentError):
        pool.prefix_stats()
    with pytest.raises(inferlb.InvalidArgumentError):
        pool.kv_event("r0", KVEventType.CLEARED)


# --- bad request input -------------------------------------------------------

def test_bad_request_input():
    with prefix_pool(1) as pool:
        for bad in ([-1], [1 << 64], [1, -5, 2]):
            with pytest.raises(inferlb.InvalidArgumentError) as e:
                pool.pick(block_hashes=bad)
            assert e.value.code == Errno.EINVAL
        for bad in ("abc", b"abc", [1.5], ["1"], [None], 5):
            with pytest.raises(TypeError):
                pool.pick(block_hashes=bad)
        with pytest.raises(TypeError):
            pool.pick(prompt=123)
        with pytest.raises(TypeError):
            pool.pick(prompt="p", model=b"bytes")
        with pytest.raises(TypeError):
            pool.pick(attrs={"model": 3})
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.pick(prompt="p", model="a\0b")  # C would read "a"
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.pick(attrs={"k\0": "v"})
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.pick(model="a", attrs={"model": "b"})
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.pick(request=inferlb.Request(block_hashes=[-3]))
        with pytest.raises(inferlb.InvalidArgumentError):
            pool.retry(pool.retry_state(), pool.pick(), OutcomeStatus.REFUSED,
                       request=inferlb.Request(block_hashes=[-3]))
        info = pool.replica("r0")  # the retry's ticket stayed valid
        assert info.in_flight == 1
        assert pool.prefix_stats().lookups == 0
