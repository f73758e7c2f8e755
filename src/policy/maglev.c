/* maglev: Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and
 * Reliable Software Network Load Balancer", NSDI 2016), weighted. The table
 * of ILB_OPT_MAGLEV_TABLE_SIZE entries is built with the snapshot
 * (consistent.c); a pick is one hash of the key and one table load. A full or
 * unavailable home replica sends the key on in its own probe order
 * (consistent.h). O(1). SPDX-License-Identifier: MIT */
#include "policy/consistent.h"

static uint32_t maglev_choose(const struct ilb__snap *snap,
                              struct ilb__pick_ctx *ctx) {
  uint64_t h;
  uint32_t fallback;
  if (ILB__UNLIKELY(!ilb__key_hash(snap, ctx, &h, &fallback)))
    return fallback;
  const struct ilb__maglev_state *s = snap->pstate;
  uint32_t c = ilb__maglev_lookup(&s->table, h);
  const struct ilb__cand *cd = &snap->cand[c];
  if (ILB__LIKELY(ilb__has_room(cd, ilb__load(cd))))
    return c;
  uint32_t next = ilb__horder_next(&s->order, snap, c, h);
  return next != UINT32_MAX ? next : c;
}

const struct ilb__policy ilb__policy_maglev = {
    .id = ILB_POLICY_MAGLEV,
    .name = "maglev",
    .build = ilb__maglev_state_build,
    .destroy = ilb__maglev_state_destroy,
    .choose = maglev_choose,
};
