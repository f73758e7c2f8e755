/* Shared by the scoring policies (composite, peak_ewma, least_tokens): which
 * candidates are compared (all of them, or k sampled), and the running best
 * with random tie-breaking among near-equal scores.
 * SPDX-License-Identifier: MIT */
#ifndef ILB_POLICY_SCORE_H
#define ILB_POLICY_SCORE_H

#include "policy/policy.h"

/* The most samples ILB_OPT_P2C_CHOICES allows (options.c). */
#define ILB__SAMPLE_MAX 16

/* Which candidates a pick compares: every one when the pool has at most
 * ILB_OPT_SCAN_MAX, else p2c_k distinct ones drawn uniformly (Floyd's
 * algorithm: k draws for k samples). Returns the count; idx is filled only
 * when sampling (*full = 0). */
static inline uint32_t ilb__compared(const struct ilb__snap *snap,
                                     struct ilb__pick_ctx *ctx, uint32_t *idx,
                                     int *full) {
  uint32_t n = snap->n, k = snap->p2c_k;
  if (n <= snap->scan_max || k >= n) {
    *full = 1;
    return n;
  }
  *full = 0;
  if (k > ILB__SAMPLE_MAX)
    k = ILB__SAMPLE_MAX;
  ilb__sample_distinct(ctx, k == 2 ? ilb__rand(ctx) : 0, n, k, idx);
  return k;
}

/* What the scoring policies read of a candidate, precomputed per snapshot
 * (their build()): the slot and a per-replica factor -- 1 / weight, or
 * for composite QUEUE / 1000 / weight -- so the scan multiplies instead of
 * dividing. */
struct ilb__sc {
  struct ilb__slot *slot;
  double k;
  uint32_t capacity; /* 0 = unlimited */
  uint32_t weight;
};

/* build() of peak_ewma and least_tokens (k = 1 / weight) and composite
 * (k = ILB_OPT_SCORE_QUEUE / 1000 / weight); destroy is
 * ilb__policy_free_state. */
int ilb__score_build_inv(void **state, const struct ilb__snap *snap,
                         const struct ilb__alloc *a);
int ilb__score_build_queue(void **state, const struct ilb__snap *snap,
                           const struct ilb__alloc *a);

/* Available and below its capacity (ilb__has_room on the compact record). */
/* As ilb__has_room: available, below its capacity and below a half-open
 * breaker's limit. */
static inline int ilb__sc_room(const struct ilb__sc *c, uint64_t load) {
  uint32_t d = atomic_load_explicit(&c->slot->down, memory_order_relaxed);
  if (ILB__LIKELY(d == 0))
    return c->capacity == 0 || load < c->capacity;
  return (d & ILB__EXCL_MASK) == 0 && load < (d >> 16) &&
         (c->capacity == 0 || load < c->capacity);
}

static inline uint64_t ilb__sc_load(const struct ilb__sc *c) {
  return ILB__INFLIGHT(
      atomic_load_explicit(&c->slot->load, memory_order_relaxed));
}

/* The candidates within the tie window of the lowest score: every score
 * s with s - min <= tol * s (that is s <= min / (1 - tol)), kept with
 * their scores so that when a lower minimum comes in, those now outside
 * its window are dropped. At the end one of them is drawn uniformly. Up to
 * ILB__TIES_MAX are kept; beyond that, new ties replace kept ones by
 * reservoir sampling (uniform over the ties seen, but a later lower
 * minimum may leave fewer than it could). */
#define ILB__TIES_MAX 32
struct ilb__best {
  uint32_t n;    /* kept ties */
  uint32_t seen; /* ties offered since the minimum last changed */
  double min;    /* lowest score (valid when n > 0) */
  double lim;    /* min / (1 - tol): the window's top */
  uint32_t idx[ILB__TIES_MAX];
  double score[ILB__TIES_MAX];
};

static inline void ilb__best_init(struct ilb__best *b) {
  b->n = 0;
  b->seen = 0;
  b->min = 0;
  b->lim = -1;
}

static inline double ilb__tie_top(double min, double tol) {
  return tol < 1.0 ? min / (1.0 - tol) : 1e308;
}

static inline void ilb__best_offer(struct ilb__best *b, uint32_t i,
                                   double score, double tol,
                                   struct ilb__pick_ctx *ctx) {
  if (b->n == 0 || score < b->min) {
    double lim = ilb__tie_top(score, tol);
    uint32_t k = 0;
    for (uint32_t j = 0; j < b->n; j++) /* keep those still in the window */
      if (b->score[j] <= lim) {
        b->idx[k] = b->idx[j];
        b->score[k++] = b->score[j];
      }
    b->n = k;
    b->seen = k;
    b->min = score;
    b->lim = lim;
  } else if (score > b->lim) {
    return;
  }
  b->seen++;
  if (b->n < ILB__TIES_MAX) {
    b->idx[b->n] = i;
    b->score[b->n++] = score;
    return;
  }
  uint32_t r = ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), b->seen);
  if (r < ILB__TIES_MAX) {
    b->idx[r] = i;
    b->score[r] = score;
  }
}

/* One of the kept ties, uniformly; ILB__NO_CHOICE when empty. */
static inline uint32_t ilb__best_pick(const struct ilb__best *b,
                                      struct ilb__pick_ctx *ctx) {
  if (b->n == 0)
    return ILB__NO_CHOICE;
  if (b->n == 1)
    return b->idx[0];
  return b->idx[ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), b->n)];
}

/* A score per candidate: lower is better. */
typedef double (*ilb__score_fn)(const struct ilb__snap *snap,
                                const struct ilb__sc *c, uint64_t load,
                                const void *arg);

/* The generic scoring pick: the best-scoring compared candidate with room
 * (near ties at random); when no sampled candidate has room, the best of
 * the whole pool; when none at all has room, candidate 0 (the core then
 * fails the pick, or goes over capacity if allowed). Inlined into each
 * policy so the score function is too. */
static inline uint32_t ilb__score_choose(const struct ilb__snap *snap,
                                         struct ilb__pick_ctx *ctx,
                                         ilb__score_fn fn, const void *arg) {
  const struct ilb__sc *sc = snap->pstate;
  uint32_t idx[ILB__SAMPLE_MAX];
  int full;
  uint32_t m = ilb__compared(snap, ctx, idx, &full);
  struct ilb__best best;
  for (;;) {
    ilb__best_init(&best);
    for (uint32_t j = 0; j < m; j++) {
      uint32_t i = full ? j : idx[j];
#if defined(__GNUC__)
      if (full && j + 4 < m) /* a scan: the slot four ahead */
        __builtin_prefetch(sc[j + 4].slot);
#endif
      uint64_t load = ilb__sc_load(&sc[i]);
      if (ilb__sc_room(&sc[i], load))
        ilb__best_offer(&best, i, fn(snap, &sc[i], load, arg), snap->tie,
                        ctx);
    }
    if (best.n || full)
      break;
    full = 1; /* no sampled candidate has room: look at all of them */
    m = snap->n;
  }
  uint32_t c = ilb__best_pick(&best, ctx);
  return c != ILB__NO_CHOICE ? c : 0; /* none has room: the core decides */
}

#endif
