/* p2c: "power of k choices" least request. Sample k distinct candidates
 * uniformly (ILB_OPT_P2C_CHOICES, default 2) and take the one with the
 * smallest (in_flight + 1) / weight; candidates without room lose. The first
 * sample wins ties; as samples come in random order, that is a uniform
 * tie-break. With k >= n it is a full scan (weighted_least_request). O(k).
 * SPDX-License-Identifier: MIT */
#include "policy/policy.h"

/* Is b a better choice than a? */
static inline int better(const struct ilb__cand *a, uint64_t la,
                         const struct ilb__cand *b, uint64_t lb) {
  int ra = ilb__has_room(a, la), rb = ilb__has_room(b, lb);
  if (ra != rb)
    return rb;
  return ilb__cmp_wload(lb, b->weight, la, a->weight) < 0;
}

/* The most choices ILB_OPT_P2C_CHOICES allows (options.c). */
#define P2C_MAX 16

static uint32_t p2c_choose(const struct ilb__snap *snap,
                           struct ilb__pick_ctx *ctx) {
  uint32_t n = snap->n, k = snap->p2c_k;
  if (k >= n)
    return ilb__scan_least(snap, ctx, 1);
  uint64_t r = ilb__rand(ctx);
  uint32_t idx[P2C_MAX];
  ilb__sample_distinct(ctx, r, n, k, idx);
  if (k == 2) {
    /* the first sample is uniform, so "first wins ties" is a fair toss */
    const struct ilb__cand *ca = &snap->cand[idx[0]], *cb = &snap->cand[idx[1]];
    return better(ca, ilb__load(ca), cb, ilb__load(cb)) ? idx[1] : idx[0];
  }
  /* Floyd's order is not uniform, so ties are broken by reservoir sampling
   * instead of "first wins". */
  uint32_t best = UINT32_MAX, ties = 0;
  uint64_t bl = 0;
  for (uint32_t j = 0; j < k; j++) {
    uint32_t t = idx[j];
    const struct ilb__cand *ct = &snap->cand[t];
    uint64_t lt = ilb__load(ct);
    if (best == UINT32_MAX || better(&snap->cand[best], bl, ct, lt)) {
      best = t, bl = lt, ties = 1;
    } else if (!better(ct, lt, &snap->cand[best], bl)) {
      /* the ties-th equal sample replaces the choice with probability
       * 1/ties */
      ties++;
      if (ilb__range32((uint32_t)ilb__mix64(r + ties), ties) == 0)
        best = t, bl = lt;
    }
  }
  return best;
}

_Static_assert(P2C_MAX >= 2, "p2c needs at least two choices");

const struct ilb__policy ilb__policy_p2c = {
    .id = ILB_POLICY_P2C,
    .name = "p2c",
    .choose = p2c_choose,
    .slow_start = 1,
};
