/* chwbl: consistent hashing with bounded loads (Mirrokni, Thorup and
 * Zadimoghaddam, "Consistent Hashing with Bounded Loads", SODA 2018).
 *
 * A key's home is its maglev entry (consistent.c). A replica of weight w has
 * room while in_flight < ceil(c * (T + 1) * w / W): T is every request in
 * flight that chwbl placed (ilb_pool.hash_in_flight; the + 1 counts the request
 * being placed, which some implementations forget), W the total weight of
 * the available replicas, c = ILB_OPT_HASH_BALANCE_FACTOR / 100. The sum of
 * the bounds is at least c * (T + 1) > T, so some replica always has room
 * unless replica capacities bind. When the home is full the key probes the
 * other replicas in its own key-seeded order (consistent.h) -- not the home's
 * neighbour, which would collect the overflow of every hot key homed there
 * -- and takes the first with room; when none has room, the least loaded
 * by (in_flight + 1) / weight.
 *
 * The bound is exact for one picking thread; picks racing on other threads
 * may each see the other's replica as having room, so with P concurrent
 * picks a replica can exceed it by up to P - 1.
 * SPDX-License-Identifier: MIT */
#include "policy/consistent.h"

/* The bound: room while load < ceil(x * w / d), i.e. load * d < x * w.
 * x = c% * (T + 1) < 2^14 * 2^26, w <= 2^20: x * w < 2^60. load < 2^25, so
 * load * d fits when d < 2^38 (total weight below 2^31, which is every
 * practical pool); beyond, compare through the ceiling (a division). */
static inline uint64_t bound(uint64_t x, uint32_t w, uint64_t d) {
  return (x * w + d - 1) / d;
}

static inline int below(uint64_t load, uint64_t x, uint32_t w, uint64_t d) {
  if (ILB__LIKELY(d < (UINT64_C(1) << 38)))
    return load * d < x * w;
  return load < bound(x, w, d);
}

static uint32_t chwbl_choose(const struct ilb__snap *snap,
                             struct ilb__pick_ctx *ctx) {
  uint64_t h;
  uint32_t fallback;
  if (ILB__UNLIKELY(!ilb__key_hash(snap, ctx, &h, &fallback)))
    return fallback;
  const struct ilb__maglev_state *s = snap->pstate;
  uint32_t home = ilb__maglev_lookup(&s->table, h);
  uint64_t W = atomic_load_explicit(&snap->avail_weight, memory_order_relaxed);
  if (ILB__UNLIKELY(W == 0))
    return home; /* none available: the core reports it */
  uint64_t T = ilb__bound_total(snap, ctx->pool);
  uint64_t x = (uint64_t)snap->balance_pct * (T + 1), d = 100 * W;
  const struct ilb__cand *c = &snap->cand[home];
  uint64_t l = ilb__load(c);
  if (ILB__LIKELY(ilb__has_room(c, l) && below(l, x, c->weight, d)))
    return home;
  struct ilb__probe pr;
  ilb__probe_init(&pr, &s->order, home, h);
  uint32_t least = UINT32_MAX;
  uint64_t ll = 0;
  for (uint32_t k; (k = ilb__probe_next(&pr, &s->order)) != UINT32_MAX;) {
    c = &snap->cand[k];
    l = ilb__load(c);
    if (!ilb__has_room(c, l))
      continue;
    if (below(l, x, c->weight, d))
      return k;
    if (least == UINT32_MAX ||
        ilb__cmp_wload(l, c->weight, ll, snap->cand[least].weight) < 0)
      least = k, ll = l;
  }
  if (least != UINT32_MAX) {
    c = &snap->cand[home];
    l = ilb__load(c);
    if (!ilb__has_room(c, l) ||
        ilb__cmp_wload(ll, snap->cand[least].weight, l, c->weight) < 0)
      return least; /* home wins a tie */
  }
  return home;
}

const struct ilb__policy ilb__policy_chwbl = {
    .id = ILB_POLICY_CHWBL,
    .name = "chwbl",
    .build = ilb__maglev_state_build,
    .destroy = ilb__maglev_state_destroy,
    .choose = chwbl_choose,
    .counts_total = 1,
};
