/* rendezvous: highest random weight hashing (Thaler and Ravishankar, 1998),
 * weighted. Every candidate scores x = mix(key hash ^ id hash); with equal
 * weights the highest x wins, otherwise the lowest -ln(u) / w with u = x
 * mapped into (0, 1) -- the weighted rendezvous rule, which makes a
 * replica's share its weight over the total and moves only the keys of a
 * replica that changes. Among candidates with room; when none has room, the
 * best of all (the core then applies ILB_OPT_ALLOW_OVER_CAPACITY). Equal
 * scores order by id, so every gateway agrees. O(replicas), no tables: for
 * small pools.
 * SPDX-License-Identifier: MIT */
#include "policy/consistent.h"

struct rdv_state {
  int equal_weights;
  uint64_t idh[];  /* XXH64(id, seed 4) per candidate */
};

static int rdv_build(void **state, const struct ilb__snap *snap,
                     const struct ilb__alloc *a) {
  struct rdv_state *s =
      ilb__malloc(a, sizeof(*s) + sizeof(uint64_t) * (size_t)snap->n);
  if (!s)
    return ILB_ENOMEM;
  s->equal_weights = 1;
  for (uint32_t i = 0; i < snap->n; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    s->idh[i] = ilb__xxh64(c->id, c->id_len, 4);
    if (c->weight != snap->cand[0].weight)
      s->equal_weights = 0;
  }
  *state = s;
  return 0;
}

/* Natural logarithm of x in (0, 1], from + - * / only (same bits on every
 * IEEE-754 machine; the build disables floating-point contraction): x =
 * m * 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1),
 * |s| < 0.172, series to s^15: relative error below 1e-12. */
static double ln01(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof(bits));
  int e = (int)((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & UINT64_C(0x000fffffffffffff)) | UINT64_C(0x3ff0000000000000);
  double m;
  memcpy(&m, &bits, sizeof(m));
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e++;
  }
  double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double t = 1.0 / 15;
  t = t * s2 + 1.0 / 13;
  t = t * s2 + 1.0 / 11;
  t = t * s2 + 1.0 / 9;
  t = t * s2 + 1.0 / 7;
  t = t * s2 + 1.0 / 5;
  t = t * s2 + 1.0 / 3;
  t = t * s2 + 1.0;
  return (double)e * 0.6931471805599453 + 2.0 * s * t;
}

/* Score to minimise: lower is better. */
static inline double rdv_cost(uint64_t x, uint32_t w) {
  double u = ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  return -ln01(u) / (double)w;
}

static int id_less(const struct ilb__cand *a, const struct ilb__cand *b) {
  uint32_t l = a->id_len < b->id_len ? a->id_len : b->id_len;
  int c = memcmp(a->id, b->id, l);
  return c < 0 || (c == 0 && a->id_len < b->id_len);
}

static uint32_t rdv_choose(const struct ilb__snap *snap,
                           struct ilb__pick_ctx *ctx) {
  uint64_t h;
  uint32_t fallback;
  if (ILB__UNLIKELY(!ilb__key_hash(snap, ctx, &h, &fallback)))
    return fallback;
  const struct rdv_state *s = snap->pstate;
  /* best among those with room (r*), and of all (a*) */
  uint32_t rb = UINT32_MAX, ab = 0;
  if (s->equal_weights) {
    uint64_t rx = 0, ax = 0;
    for (uint32_t i = 0; i < snap->n; i++) {
      const struct ilb__cand *c = &snap->cand[i];
      uint64_t x = ilb__mix64(h ^ s->idh[i]);
      if (i == 0 || x > ax || (x == ax && id_less(c, &snap->cand[ab])))
        ab = i, ax = x;
      if (ilb__has_room(c, ilb__load(c)) &&
          (rb == UINT32_MAX || x > rx ||
           (x == rx && id_less(c, &snap->cand[rb]))))
        rb = i, rx = x;
    }
  } else {
    double rx = 0, ax = 0;
    for (uint32_t i = 0; i < snap->n; i++) {
      const struct ilb__cand *c = &snap->cand[i];
      double x = rdv_cost(ilb__mix64(h ^ s->idh[i]), c->weight);
      if (i == 0 || x < ax || (x == ax && id_less(c, &snap->cand[ab])))
        ab = i, ax = x;
      if (ilb__has_room(c, ilb__load(c)) &&
          (rb == UINT32_MAX || x < rx ||
           (x == rx && id_less(c, &snap->cand[rb]))))
        rb = i, rx = x;
    }
  }
  return rb != UINT32_MAX ? rb : ab;
}

const struct ilb__policy ilb__policy_rendezvous = {
    .id = ILB_POLICY_RENDEZVOUS,
    .name = "rendezvous",
    .build = rdv_build,
    .destroy = ilb__policy_free_state,
    .choose = rdv_choose,
};
