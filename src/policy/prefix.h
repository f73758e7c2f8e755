/* The prefix index of ILB_POLICY_PREFIX: block hash -> replicas believed
 * to hold that block of KV cache. See "Prefix-cache-aware routing" in the
 * header for what it promises; this is how.
 *
 * Table: a power of two of buckets, each a lock word and 7 entries of a key
 * (the block hash mixed, never 0) and ILB_PREFIX_HOLDERS holder words. A
 * block lives only in its bucket (no probing), so the table never holds
 * more than its capacity and a lookup reads two cache lines.
 *
 * Holder word: (slot + 1) << 43 | position. Each replica slot hands out
 * positions from pfx_head; a record is live while head - position <=
 * pfx_cap, so a replica is an LRU of pfx_cap blocks without a list, and
 * forgetting a replica is one store (head jumps by ILB__PFX_JUMP, beyond
 * any capacity). Dead holders are free space; entries whose holders are
 * all dead are free entries.
 *
 * Lock word: a sequence lock. A writer takes it with one CAS from even to
 * odd (a pick that fails drops its update; KV events retry), writes with
 * relaxed stores and releases it at the next even value; a reader reads
 * with relaxed loads and keeps what it read only when the word did not
 * change (up to ILB__PFX_READ_TRIES tries). Every field is an atomic, so a
 * torn read is a wrong guess at worst, never undefined behaviour.
 * SPDX-License-Identifier: MIT */
#ifndef ILB_POLICY_PREFIX_H
#define ILB_POLICY_PREFIX_H

#include "policy/policy.h"

#define ILB__PFX_WAYS 7
#define ILB__PFX_POS_BITS 43
#define ILB__PFX_POS_MASK ((UINT64_C(1) << ILB__PFX_POS_BITS) - 1)
#define ILB__PFX_CAP_MAX (UINT32_C(1) << 24) /* blocks per replica */
#define ILB__PFX_JUMP (ILB__PFX_CAP_MAX + UINT64_C(1)) /* past any record */
#define ILB__PFX_READ_TRIES 4
_Static_assert(ILB__SLOTS_MAX < (UINT32_C(1) << (64 - ILB__PFX_POS_BITS)),
               "slot + 1 fits above the position");

struct ilb__pbucket {
  alignas(ILB__CACHELINE) _Atomic uint64_t lock;
  _Atomic uint64_t key[ILB__PFX_WAYS];
  _Atomic uint64_t hold[ILB__PFX_WAYS][ILB_PREFIX_HOLDERS];
};
_Static_assert(sizeof(struct ilb__pbucket) == 320, "documented: 320 bytes");

struct ilb__pindex {
  uint64_t mask;        /* buckets - 1 */
  uint64_t table_opt;   /* ILB_OPT_PREFIX_TABLE_BLOCKS it was built for */
  /* KV events' counts (under the pool mutex; picks count on stripes) */
  _Atomic uint64_t events, stale_events, ev_recorded, ev_evicted;
  struct ilb__pindex *retired_next;
  struct ilb__pbucket *b; /* aligned block of mask + 1 */
};
_Static_assert(sizeof(struct ilb__pindex) <= 64,
               "documented: a header of 64 bytes at most");

/* A block hash as a table key: a bijective mix (host hashes may be small
 * integers, like the Mooncake traces' ids), 0 reserved for "empty". */
static inline uint64_t ilb__pfx_key(uint64_t h) {
  uint64_t k = ilb__mix64(h);
  return k ? k : 1;
}

/* Is holder word w live? (w != 0) */
static inline int ilb__pfx_live(const struct ilb_pool *p, uint64_t w) {
  uint32_t slot = (uint32_t)(w >> ILB__PFX_POS_BITS) - 1;
  const struct ilb__slot *s = ilb__slot_at((struct ilb_pool *)(uintptr_t)p,
                                           slot);
  uint64_t head = atomic_load_explicit(&s->pfx_head, memory_order_relaxed);
  uint64_t age = (head - w) & ILB__PFX_POS_MASK;
  return age != 0 &&
         age <= atomic_load_explicit(&s->pfx_cap, memory_order_relaxed);
}

static inline uint32_t ilb__pfx_slot(uint64_t w) {
  return (uint32_t)(w >> ILB__PFX_POS_BITS) - 1;
}

/* Read block key's live holders into out (slot numbers); returns their
 * count, 0 when none or when the bucket stayed busy. */
uint32_t ilb__pfx_lookup(const struct ilb_pool *p, const struct ilb__pindex *x,
                         uint64_t key, uint32_t out[ILB_PREFIX_HOLDERS]);

/* Start loading every cache line a lookup or record of keys[0..n) will
 * touch, so that the misses of a cold table overlap instead of following
 * one another: the buckets' key lines first, then, as those arrive, the
 * holder line of the entry each block has (or would take). */
void ilb__pfx_warm(const struct ilb__pindex *x, const uint64_t *keys,
                   uint32_t n);

/* ilb__pfx_record's `how` */
#define ILB__PFX_TRY 1     /* one try per bucket (picks); else wait (events) */
#define ILB__PFX_REFRESH 2 /* only move slot's existing live records to the
                              front, never add one (EVENTS-mode picks) */

/* Owner-thread counter update (stripes, ilb_prefix_stats): approximate
 * when threads share a stripe (beyond 64) or the index is reset. */
static inline void ilb__bump(_Atomic uint64_t *c, uint64_t by) {
  atomic_store_explicit(
      c, atomic_load_explicit(c, memory_order_relaxed) + by,
      memory_order_relaxed);
}
/* Record that slot holds the blocks of keys[0..n) (ilb__pfx_key of their
 * hashes; a pick's or a STORED event's): the first block gets the newest
 * position; a record younger than cap / 4 is left as it is. Blocks from
 * `looked` on were never looked up by the pick (its walk stopped before
 * them, at a block nobody held): recorded without a check. how:
 * ILB__PFX_TRY and/or ILB__PFX_REFRESH. st NULL: a KV event's (counted on
 * the index). */
void ilb__pfx_record(struct ilb_pool *p, struct ilb__pindex *x,
                     struct ilb__stripe *st, uint32_t slot,
                     const uint64_t *keys, uint32_t n, uint32_t looked,
                     int how);

/* Forget everything slot holds (removal, restart, CLEARED): a jump of its
 * head, skipped when nothing was recorded since the last one (each jump
 * brings the 43-bit positions closer to wrapping). Pool mutex held. */
void ilb__pfx_forget(struct ilb_pool *p, uint32_t slot);

/* Writer side (pool mutex held). */
/* Called by ilb__publish for its new snapshot s: make sure the index
 * exists (and fits the options) when s's policy is prefix, drop it when
 * not; sets s->pidx. 0 or ILB_ENOMEM (nothing changed). *old_out gets an
 * index to free once no reader can hold it (or NULL). */
int ilb__pfx_prepare(struct ilb_pool *p, struct ilb__snap *s,
                     struct ilb__pindex **old_out);
void ilb__pfx_free(struct ilb_pool *p, struct ilb__pindex *x);
/* A replica was added to slot / its telemetry or the options changed its
 * capacity: recompute pfx_cap. */
void ilb__pfx_slot_cap(struct ilb_pool *p, struct ilb__slot *s);
void ilb__pfx_caps_all(struct ilb_pool *p);
/* Telemetry of r was stored (tm_val/tm_ts/tm_present): queue and capacity. */
void ilb__pfx_telemetry(struct ilb_pool *p, struct ilb__replica *r);

#endif
