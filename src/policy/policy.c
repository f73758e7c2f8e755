/* The policy table and helpers shared by several policies.
 * SPDX-License-Identifier: MIT */
#include "policy/policy.h"

static const struct ilb__policy *const policies[] = {
    &ilb__policy_round_robin, &ilb__policy_weighted_round_robin,
    &ilb__policy_random,      &ilb__policy_weighted_random,
    &ilb__policy_least_conn,  &ilb__policy_weighted_least_request,
    &ilb__policy_p2c,         &ilb__policy_ring,
    &ilb__policy_maglev,      &ilb__policy_rendezvous,
    &ilb__policy_chwbl,       &ilb__policy_composite,
    &ilb__policy_peak_ewma,   &ilb__policy_least_tokens,
    &ilb__policy_prefix,
};
#define N_POLICIES (sizeof(policies) / sizeof(policies[0]))

void ilb__policy_free_state(void *state, const struct ilb__alloc *a) {
  ilb__free(a, state);
}

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

static inline int cmp_load(int weighted, uint64_t l, uint32_t w, uint64_t bl,
                           uint32_t bw) {
  return weighted ? ilb__cmp_wload(l, w, bl, bw) : (l > bl) - (l < bl);
}

/* Pass 1 finds the least load among candidates with room and counts the
 * candidates at that load; one random draw then names which of them wins,
 * and pass 2 walks to it. Uniform among ties at one draw per pick (a
 * reservoir would need one per tie; a random starting point favours the tie
 * after the longest run of busier replicas). If loads change between the
 * passes so the named tie is gone, the first one found wins. */
uint32_t ilb__scan_least(const struct ilb__snap *snap,
                         struct ilb__pick_ctx *ctx, int weighted) {
  uint32_t best = UINT32_MAX, bw = 1, ties = 0;
  uint64_t bl = 0;
  for (uint32_t i = 0; i < snap->n; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    uint64_t l = ilb__load(c);
    if (!ilb__has_room(c, l))
      continue;
    int cmp =
        best == UINT32_MAX ? -1 : cmp_load(weighted, l, c->weight, bl, bw);
    if (cmp < 0)
      best = i, bl = l, bw = c->weight, ties = 1;
    else if (cmp == 0)
      ties++;
  }
  uint64_t r = ilb__rand(ctx);
  if (best == UINT32_MAX)
    return ilb__range32((uint32_t)(r >> 32), snap->n);
  uint32_t k = ties > 1 ? ilb__range32((uint32_t)(r >> 32), ties) : 0;
  for (uint32_t i = best + 1; k > 0 && i < snap->n; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    uint64_t l = ilb__load(c);
    if (ilb__has_room(c, l) && cmp_load(weighted, l, c->weight, bl, bw) == 0 &&
        --k == 0)
      return i;
  }
  return best;
}
