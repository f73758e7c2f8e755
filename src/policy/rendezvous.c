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

#include <float.h>

/* Scores must be the same bits on every machine: no contraction of a * b + c
 * into a fused multiply-add (the build passes -ffp-contract=off; GCC ignores
 * the FP_CONTRACT pragma), no excess precision, no fast-math. */
#if defined(__FAST_MATH__) || !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "rendezvous.c needs IEEE double arithmetic without excess precision"
#endif

/* ln on the pick path: x = m * 2^e, m in [1, 2); the top LN_BITS bits of
 * m pick c = 1 + (j + 1/2) / 2^LN_BITS with 1/c and ln c from a table, and
 * ln m = ln c + ln(1 + r), r = m / c - 1 (|r| < 2^-(LN_BITS+1)), five terms
 * of the series: absolute error below 1e-14, no division. */
#define LN_BITS 7
#define LN_N (1u << LN_BITS)

struct rdv_entry {
  uint64_t idh; /* XXH64(id, seed 4) */
  double inv_w; /* 1 / weight */
};

struct rdv_state {
  int equal_weights;
  double ln_c[LN_N], inv_c[LN_N];
  struct rdv_entry e[];
};

/* Natural logarithm of x > 0 (normal), from + - * / only (same bits on every
 * IEEE-754 machine; the build disables floating-point contraction): x =
 * m * 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1),
 * |s| < 0.172, series to s^15: relative error below 1e-12. Builds the
 * table. */
static double ln_slow(double x) {
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

static int rdv_build(void **state, const struct ilb__snap *snap,
                     const struct ilb__alloc *a) {
  struct rdv_state *s =
      ilb__malloc(a, sizeof(*s) + sizeof(struct rdv_entry) * (size_t)snap->n);
  if (!s)
    return ILB_ENOMEM;
  s->equal_weights = 1;
  for (uint32_t i = 0; i < snap->n; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    s->e[i].idh = ilb__xxh64(c->id, strlen(c->id), 4);
    s->e[i].inv_w = 1.0 / (double)c->weight;
    if (c->weight != snap->cand[0].weight)
      s->equal_weights = 0;
  }
  for (uint32_t j = 0; j < LN_N; j++) {
    double c = 1.0 + ((double)j + 0.5) / LN_N;
    s->ln_c[j] = ln_slow(c);
    s->inv_c[j] = 1.0 / c;
  }
  *state = s;
  return 0;
}

/* ln x for x in (0, 1), normal. */
static inline double ln_fast(const struct rdv_state *s, double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof(bits));
  int e = (int)((bits >> 52) & 0x7ff) - 1023;
  uint32_t j = (uint32_t)(bits >> (52 - LN_BITS)) & (LN_N - 1);
  bits = (bits & UINT64_C(0x000fffffffffffff)) | UINT64_C(0x3ff0000000000000);
  double m;
  memcpy(&m, &bits, sizeof(m));
  double r = m * s->inv_c[j] - 1.0;
  double p = 1.0 / 5;
  p = p * r - 1.0 / 4;
  p = p * r + 1.0 / 3;
  p = p * r - 1.0 / 2;
  p = p * r + 1.0;
  return (double)e * 0.6931471805599453 + s->ln_c[j] + r * p;
}

/* Score to minimise: -ln(u) / w, u = x mapped into (0, 1). */
static inline double rdv_cost(const struct rdv_state *s, uint64_t x,
                              double inv_w) {
  double u = ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  return -ln_fast(s, u) * inv_w;
}

static int id_less(const struct ilb__cand *a, const struct ilb__cand *b) {
  return strcmp(a->id, b->id) < 0; /* ids are NUL-free: byte order */
}

/* The winner among all candidates (room 0) or among those with room
 * (room 1; UINT32_MAX when none has). Equal weights compare the raw
 * scores, higher wins; otherwise the lowest -ln(u) / w wins. */
static inline uint32_t rdv_best(const struct ilb__snap *snap,
                                const struct rdv_state *s, uint64_t h,
                                int room) {
  uint32_t b = UINT32_MAX;
  uint64_t bx = 0;
  double bc = 0;
  for (uint32_t i = 0; i < snap->n; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    if (room && !ilb__has_room(c, ilb__load(c)))
      continue;
    uint64_t x = ilb__mix64(h ^ s->e[i].idh);
    int better;
    if (s->equal_weights) {
      better =
          b == UINT32_MAX || x > bx || (x == bx && id_less(c, &snap->cand[b]));
      if (better)
        bx = x;
    } else {
      double cost = rdv_cost(s, x, s->e[i].inv_w);
      better = b == UINT32_MAX || cost < bc ||
               (cost == bc && id_less(c, &snap->cand[b]));
      if (better)
        bc = cost;
    }
    if (better)
      b = i;
  }
  return b;
}

/* The key's winner when it has room (one pass, no replica state read but
 * the winner's); else the best with room, scanning again; else the winner
 * (the core then applies ILB_OPT_ALLOW_OVER_CAPACITY). */
static uint32_t rdv_choose(const struct ilb__snap *snap,
                           struct ilb__pick_ctx *ctx) {
  uint64_t h;
  uint32_t fallback;
  if (ILB__UNLIKELY(!ilb__key_hash(snap, ctx, &h, &fallback)))
    return fallback;
  const struct rdv_state *s = snap->pstate;
  uint32_t w = rdv_best(snap, s, h, 0);
  const struct ilb__cand *c = &snap->cand[w];
  if (ILB__LIKELY(ilb__has_room(c, ilb__load(c))))
    return w;
  uint32_t r = rdv_best(snap, s, h, 1);
  return r != UINT32_MAX ? r : w;
}

const struct ilb__policy ilb__policy_rendezvous = {
    .id = ILB_POLICY_RENDEZVOUS,
    .name = "rendezvous",
    .build = rdv_build,
    .destroy = ilb__policy_free_state,
    .choose = rdv_choose,
};
