package inferlb

/*
#include "shim.h"
*/
import "C"

import "unsafe"

// Prefix-cache-aware routing (since 0.5). PolicyPrefix sends a request where
// the KV cache of its prompt's longest prefix probably is -- given as
// Request.BlockHashes, or Request.Prompt (and Model) for the library to cut
// and hash -- unless that replica is too busy for the saving to pay. The
// pool's prefix index learns from its own picks (PrefixRouted) and from the
// servers' KV-cache events the host feeds with KVEvent.

// KVEvent is one KV-cache event of a replica (ilb_kv_event), for
// Pool.KVEvent.
type KVEvent struct {
	Type KVEventType
	// KVStored and KVRemoved: the blocks, in the prompt's order, hashed as
	// Request.BlockHashes are. Read during the call only.
	BlockHashes []uint64
	// The publisher's sequence number (vLLM: the event batch's); events of
	// one batch share it. 0 = unordered: always applied. Otherwise an event
	// with Seq below the last one applied for the replica is stale.
	Seq uint64
	// The publisher restarted (ILB_KV_RESTART): forget what the index knows
	// of this replica first, and take Seq as the new baseline even if lower.
	Restart bool
}

// kvRestart is ILB_KV_RESTART, the ilb_kv_event.flags bit of Restart.
const kvRestart = 1

// KVEvent applies a KV-cache event of replica id to the pool's prefix index
// (ilb_replica_kv_event), under PolicyPrefix in either OptPrefixMode.
// Errors: ErrStale (Seq below the last one applied and not Restart: nothing
// changes), ErrNotFound, ErrInvalid (unknown Type; the pool's policy is not
// prefix: it has no index), ErrDeadlock (from an event or log callback).
// Serialised with the pool's other writers.
func (p *Pool) KVEvent(id string, ev KVEvent) error {
	if p.ptr == nil {
		return errPoolClosed
	}
	var blocks unsafe.Pointer
	if len(ev.BlockHashes) > 0 {
		blocks = unsafe.Pointer(&ev.BlockHashes[0])
	}
	var flags C.uint32_t
	if ev.Restart {
		flags = kvRestart
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	err := ret(C.ilbgo_replica_kv_event(p.ptr, cid, C.int32_t(ev.Type), flags, C.uint64_t(ev.Seq),
		blocks, C.size_t(len(ev.BlockHashes))))
	return p.noIndex(err)
}

// PrefixStats is what the prefix index holds and has done
// (ilb_prefix_stats). Counters count since the policy was chosen or the
// index was emptied (OptPrefixTableBlocks changed).
type PrefixStats struct {
	Entries       uint64 // block entries with at least one holder
	Capacity      uint64 // entries the index can hold
	MemoryBytes   uint64 // bytes allocated for the index
	Lookups       uint64 // picks that carried blocks
	Blocks        uint64 // blocks those picks looked up
	MatchedBlocks uint64 // of them, in the matched prefix of the replica picked
	Recorded      uint64 // (block, replica) records written
	Evicted       uint64 // entries evicted by the global cap
	Dropped       uint64 // updates skipped: bucket busy
	Events        uint64 // KV events applied
	StaleEvents   uint64 // KV events refused as stale
}

// HitRate is MatchedBlocks / Blocks, the index's predicted cache hit rate
// (0 before any lookup).
func (s PrefixStats) HitRate() float64 {
	if s.Blocks == 0 {
		return 0
	}
	return float64(s.MatchedBlocks) / float64(s.Blocks)
}

// PrefixStats reports the pool's prefix index (ilb_pool_prefix_stats).
// ErrInvalid when the pool's policy is not prefix. It takes the pool's
// lock (ErrDeadlock from an event or log callback) and costs
// O(OptPrefixTableBlocks).
func (p *Pool) PrefixStats() (PrefixStats, error) {
	if p.ptr == nil {
		return PrefixStats{}, errPoolClosed
	}
	var st C.ilb_prefix_stats
	st.struct_size = C.size_t(unsafe.Sizeof(st))
	if err := ret(C.ilbgo_pool_prefix_stats(&st, p.ptr)); err != nil {
		return PrefixStats{}, p.noIndex(err)
	}
	return PrefixStats{
		Entries: uint64(st.entries), Capacity: uint64(st.capacity), MemoryBytes: uint64(st.memory_bytes),
		Lookups: uint64(st.lookups), Blocks: uint64(st.blocks), MatchedBlocks: uint64(st.matched_blocks),
		Recorded: uint64(st.recorded), Evicted: uint64(st.evicted), Dropped: uint64(st.dropped),
		Events: uint64(st.events), StaleEvents: uint64(st.stale_events),
	}, nil
}

// noIndex gives an ErrInvalid of the prefix calls its likely cause when the
// pool's policy is not prefix (errors.Is(err, ErrInvalid) still holds).
func (p *Pool) noIndex(err error) error {
	if err != ErrInvalid {
		return err
	}
	if pol, oerr := p.Option(OptPolicy); oerr == nil && Policy(pol) != PolicyPrefix {
		return &Error{Code: EINVAL, Name: "EINVAL",
			Message: ErrInvalid.Message + ": policy " + Policy(pol).String() + " has no prefix index"}
	}
	return err
}
