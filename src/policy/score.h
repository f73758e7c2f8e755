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
static inline int ilb__sc_room(const struct ilb__sc *c, uint64_t load) {
  return (c->capacity == 0 || load < c->capacity) &&
         atomic_load_explicit(&c->slot->down, memory_order_relaxed) == 0;
}

static inline uint64_t ilb__sc_load(const struct ilb__sc *c) {
  return ILB__INFLIGHT(
      atomic_load_explicit(&c->slot->load, memory_order_relaxed));
}

/* The lowest score seen so far; scores within a relative tolerance t of it
 * (|s - best| <= t * max(s, best)) are ties, of which each is kept with
 * equal probability (reservoir sampling). `score` stays the lowest of the
 * tied ones, so the window does not drift upwards. lo and hi bound the
 * window: below lo is better, above hi worse (two compares a candidate). */
struct ilb__best {
  uint32_t idx; /* ILB__NO_CHOICE while empty */
  uint32_t ties;
  double score, lo, hi;
};

static inline void ilb__best_init(struct ilb__best *b) {
  b->idx = ILB__NO_CHOICE;
  b->ties = 0;
  b->score = 0;
  b->lo = 0;
  b->hi = -1; /* nothing is a tie of nothing */
}

static inline void ilb__best_set(struct ilb__best *b, double score,
                                 double tol) {
  b->score = score;
  b->lo = score * (1.0 - tol);
  b->hi = tol < 1.0 ? score / (1.0 - tol) : 1e308;
}

static inline void ilb__best_offer(struct ilb__best *b, uint32_t i,
                                   double score, double tol,
                                   struct ilb__pick_ctx *ctx) {
  if (score < b->lo || b->idx == ILB__NO_CHOICE) {
    b->idx = i;
    b->ties = 1;
    ilb__best_set(b, score, tol);
  } else if (score <= b->hi) {
    b->ties++;
    if (ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), b->ties) == 0)
      b->idx = i;
    if (score < b->score)
      ilb__best_set(b, score, tol);
  }
}

/* A score per candidate: lower is better. */
typedef double (*ilb__score_fn)(const struct ilb__snap *snap,
                                const struct ilb__sc *c, uint64_t load,
                                const void *arg);

/* The generic scoring pick: the best-scoring compared candidate with room;
 * when none of them has room, the first compared one (the core then looks
 * for a candidate with room at random, or fails). Inlined into each policy
 * so the score function is too. */
static inline uint32_t ilb__score_choose(const struct ilb__snap *snap,
                                         struct ilb__pick_ctx *ctx,
                                         ilb__score_fn fn, const void *arg) {
  const struct ilb__sc *sc = snap->pstate;
  uint32_t idx[ILB__SAMPLE_MAX];
  int full;
  uint32_t m = ilb__compared(snap, ctx, idx, &full);
  struct ilb__best best;
  ilb__best_init(&best);
  for (uint32_t j = 0; j < m; j++) {
    uint32_t i = full ? j : idx[j];
    uint64_t load = ilb__sc_load(&sc[i]);
    if (ilb__sc_room(&sc[i], load))
      ilb__best_offer(&best, i, fn(snap, &sc[i], load, arg), snap->tie, ctx);
  }
  if (best.idx != ILB__NO_CHOICE)
    return best.idx;
  return full ? 0 : idx[0];
}

#endif
