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

static uint32_t p2c_choose(const struct ilb__snap *snap,
                           struct ilb__pick_ctx *ctx) {
  uint32_t n = snap->n, k = snap->p2c_k;
  if (k >= n)
    return ilb__scan_least(snap, ctx, 1);
  uint64_t r = ilb__rand(ctx);
  uint32_t a = ilb__range32((uint32_t)r, n);
  uint32_t b = ilb__range32((uint32_t)(r >> 32), n - 1);
  b += b >= a;
  uint32_t seen[16];
  seen[0] = a;
  seen[1] = b;
  const struct ilb__cand *ca = &snap->cand[a], *cb = &snap->cand[b];
  uint64_t la = ilb__load(ca), lb = ilb__load(cb);
  if (better(ca, la, cb, lb))
    a = b, ca = cb, la = lb;
  if (k == 2)
    return a;
  /* k > 2: further distinct samples by rejection (k <= 16 < n). */
  uint32_t have = 2;
  uint64_t pool = 0;
  int bits = 0;
  while (have < k) {
    if (bits == 0) {
      pool = ilb__rand(ctx);
      bits = 2;
    }
    uint32_t x = ilb__range32((uint32_t)pool, n);
    pool >>= 32;
    bits--;
    uint32_t j = 0;
    while (j < have && seen[j] != x)
      j++;
    if (j < have)
      continue;
    seen[have++] = x;
    const struct ilb__cand *cx = &snap->cand[x];
    uint64_t lx = ilb__load(cx);
    if (better(ca, la, cx, lx))
      a = x, ca = cx, la = lx;
  }
  return a;
}

const struct ilb__policy ilb__policy_p2c = {ILB_POLICY_P2C, "p2c", NULL, NULL,
                                            p2c_choose};
