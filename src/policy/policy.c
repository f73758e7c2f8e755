/* The policy table and helpers shared by several policies.
 * SPDX-License-Identifier: MIT */
#include "policy/policy.h"

static const struct ilb__policy *const policies[] = {
    &ilb__policy_round_robin,   &ilb__policy_weighted_round_robin,
    &ilb__policy_random,        &ilb__policy_weighted_random,
    &ilb__policy_least_conn,    &ilb__policy_weighted_least_request,
    &ilb__policy_p2c,
};
#define N_POLICIES (sizeof(policies) / sizeof(policies[0]))

const struct ilb__policy *ilb__policy_get(int32_t id) {
  for (size_t i = 0; i < N_POLICIES; i++)
    if (policies[i]->id == id)
      return policies[i];
  return NULL;
}

const char *ilb_policy_name(int32_t policy) {
  const struct ilb__policy *p = ilb__policy_get(policy);
  return p ? p->name : NULL;
}

int ilb_policy_from_name(int32_t *policy_out, const char *name) {
  if (!policy_out || !name)
    return ILB_EINVAL;
  for (size_t i = 0; i < N_POLICIES; i++)
    if (strcmp(policies[i]->name, name) == 0) {
      *policy_out = policies[i]->id;
      return 0;
    }
  return ILB_EUNKNOWN;
}

/* One pass over [from, to): keep the first strictly better candidate. */
static inline void scan_range(const struct ilb__snap *snap, uint32_t from,
                              uint32_t to, int weighted, uint32_t *best,
                              uint64_t *bl, uint32_t *bw) {
  for (uint32_t i = from; i < to; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    uint64_t l = ilb__load(c);
    if (!ilb__has_room(c, l))
      continue;
    int better = *best == UINT32_MAX ||
                 (weighted ? ilb__cmp_wload(l, c->weight, *bl, *bw) < 0
                           : l < *bl);
    if (better)
      *best = i, *bl = l, *bw = c->weight;
  }
}

/* The scan starts at a uniformly random candidate and wraps around, keeping
 * the first least-loaded one it meets: when all candidates tie (an idle
 * pool) every one is equally likely, and the scan costs one random draw, not
 * one per tie. */
uint32_t ilb__scan_least(const struct ilb__snap *snap,
                         struct ilb__pick_ctx *ctx, int weighted) {
  uint32_t origin = ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), snap->n);
  uint32_t best = UINT32_MAX, bw = 1;
  uint64_t bl = 0;
  scan_range(snap, origin, snap->n, weighted, &best, &bl, &bw);
  scan_range(snap, 0, origin, weighted, &best, &bl, &bw);
  return best == UINT32_MAX ? origin : best;
}
