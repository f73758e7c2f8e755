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

/* xorshift64 step for the cheap per-tie draws of one scan; seeded from one
 * draw of the pick's generator. */
static inline uint64_t xs64(uint64_t *x) {
  uint64_t v = *x;
  v ^= v << 13;
  v ^= v >> 7;
  v ^= v << 17;
  return *x = v;
}

uint32_t ilb__scan_least(const struct ilb__snap *snap,
                         struct ilb__pick_ctx *ctx, int weighted) {
  uint64_t rs = ilb__rand(ctx) | 1;
  uint32_t best = UINT32_MAX, ties = 0;
  uint64_t bl = 0;
  uint32_t bw = 1;
  for (uint32_t i = 0; i < snap->n; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    uint64_t l = ilb__load(c);
    if (!ilb__has_room(c, l))
      continue;
    int cmp;
    if (best == UINT32_MAX)
      cmp = -1;
    else if (weighted)
      cmp = ilb__cmp_wload(l, c->weight, bl, bw);
    else
      cmp = (l > bl) - (l < bl);
    if (cmp < 0) {
      best = i, bl = l, bw = c->weight, ties = 1;
    } else if (cmp == 0) {
      /* Reservoir: the k-th tie replaces the choice with probability 1/k. */
      ties++;
      if (ilb__range32((uint32_t)(xs64(&rs) >> 32), ties) == 0)
        best = i, bl = l, bw = c->weight;
    }
  }
  if (best == UINT32_MAX)
    best = ilb__range32((uint32_t)(rs >> 32), snap->n);
  return best;
}
