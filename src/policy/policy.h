/* The interface every routing policy implements. A policy is a chooser over
 * the candidates of one immutable snapshot: it may precompute tables when the
 * snapshot is built (build/destroy, writer side, may allocate) and must
 * choose without lock, allocation or system call (choose, pick path).
 * SPDX-License-Identifier: MIT */
#ifndef ILB_POLICY_POLICY_H
#define ILB_POLICY_POLICY_H

#include "core/internal.h"

/* Per-pick context handed to choose(). */
struct ilb__pick_ctx {
  struct ilb_pool *pool;
  struct ilb__stripe *stripe;
  const ilb_request *req;
  int err; /* set by choose() with ILB__NO_CHOICE: a negative ILB_E* */
  /* prefix: the request's blocks as index keys, in hbuf (ILB__HBUF
   * entries on the picking thread's stack), for picked() */
  uint32_t n_blocks;
  uint64_t *hbuf;
  uint32_t choice, matched; /* prefix: choose()'s answer, its blocks matched */
  uint32_t walked;          /* prefix: blocks looked up */
};

/* Block hashes a pick can compute from a prompt (ILB_OPT_PREFIX_MAX_BLOCKS
 * is at most this). */
#define ILB__HBUF 256

/* choose() result meaning "fail the pick with ctx->err". */
#define ILB__NO_CHOICE UINT32_MAX

struct ilb__policy {
  int32_t id;
  const char *name;
  /* Optional: precompute *state for snap (snap->n >= 1). 0 or ILB_ENOMEM. */
  int (*build)(void **state, const struct ilb__snap *snap,
               const struct ilb__alloc *a);
  void (*destroy)(void *state, const struct ilb__alloc *a);
  /* Return a candidate index < snap->n (snap->n >= 1), or ILB__NO_CHOICE
   * with ctx->err set. Should prefer candidates with room (ilb__has_room);
   * the core moves on from a full or unavailable choice to a random
   * candidate with room. */
  uint32_t (*choose)(const struct ilb__snap *snap, struct ilb__pick_ctx *ctx);
  /* Optional: the pick placed the request on candidate c (which may not be
   * choose()'s: the core moves on from a full one). Pick path rules. */
  void (*picked)(const struct ilb__snap *snap, struct ilb__pick_ctx *ctx,
                 uint32_t c);
  /* Count this policy's picks in ilb_pool.hash_in_flight. */
  int counts_total;
  /* Give every pick a token cost: requests without estimates cost
   * ILB_OPT_TOKEN_DEFAULT_COST (others cost only when they have some). */
  int costs_all;
  /* Uses weights and takes slow start's effective weights (see
   * ILB_OPT_SLOW_START_MS). */
  int slow_start;
};

/* The token cost of a request (ILB_OPT_TOKEN_OUTPUT_PERCENT); 0 = none. */
static inline uint32_t ilb__req_cost(const struct ilb__snap *s,
                                     const ilb_request *req) {
  uint64_t c = 0;
  if (req && (req->prompt_tokens | req->output_tokens))
    c = req->prompt_tokens +
        (uint64_t)req->output_tokens * s->token_out_pct / 100;
  if (c == 0) /* no estimates, or output-only ones weighed 0 */
    return s->policy->costs_all ? s->token_default : 0;
  return c > UINT32_MAX ? UINT32_MAX : (uint32_t)c;
}

/* T of the load bound (chwbl, prefix): the requests in flight the policy
 * placed in the pool -- or, in a zone's snapshot (locality), on the zone's
 * replicas: O(zone replicas), so that other zones' load does not loosen
 * the zone's bound. */
static inline uint64_t ilb__bound_total(const struct ilb__snap *snap,
                                        const struct ilb_pool *pool) {
  if (ILB__LIKELY(!snap->zone_sub))
    return atomic_load_explicit(&pool->hash_in_flight, memory_order_relaxed);
  uint64_t t = 0;
  for (uint32_t k = 0; k < snap->n; k++)
    t += ILB__INFLIGHT(
        atomic_load_explicit(&snap->cand[k].slot->load, memory_order_relaxed));
  return t;
}

/* A destroy() for state that is one ilb__malloc'ed block. */
void ilb__policy_free_state(void *state, const struct ilb__alloc *a);

/* Lookup by id; NULL if unknown. */
const struct ilb__policy *ilb__policy_get(int32_t id);

/* 64 random bits from the host's generator or the thread's stream. */
static inline uint64_t ilb__rand(struct ilb__pick_ctx *ctx) {
  const ilb_host *h = &ctx->pool->host;
  if (h->rand) /* mixed: a weak host generator (a counter) still spreads */
    return ilb__mix64(h->rand(h->user_data));
  uint64_t s = atomic_load_explicit(&ctx->stripe->rng, memory_order_relaxed) +
               ILB__GOLDEN;
  atomic_store_explicit(&ctx->stripe->rng, s, memory_order_relaxed);
  return ilb__mix64(s);
}

/* k (2 <= k < n) distinct candidate indices drawn uniformly into idx. For
 * k = 2 both come from the 64-bit draw r (the second skips over the
 * first); for k > 2 Floyd's algorithm takes exactly k more draws
 * (Bentley and Floyd, CACM 1987: for j = n-k .. n-1 draw t in [0, j],
 * take t unless already taken, else j) -- its order is not uniform. */
static inline void ilb__sample_distinct(struct ilb__pick_ctx *ctx, uint64_t r,
                                        uint32_t n, uint32_t k,
                                        uint32_t *idx) {
  if (k == 2) {
    uint32_t a = ilb__range32((uint32_t)r, n);
    uint32_t b = ilb__range32((uint32_t)(r >> 32), n - 1);
    idx[0] = a;
    idx[1] = b + (b >= a);
    return;
  }
  uint32_t have = 0;
  for (uint32_t j = n - k; j < n; j++) {
    uint32_t t = ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), j + 1);
    for (uint32_t q = 0; q < have; q++)
      if (idx[q] == t) {
        t = j;
        break;
      }
    idx[have++] = t;
  }
}

static inline uint64_t ilb__load(const struct ilb__cand *c) {
  return ILB__INFLIGHT(
      atomic_load_explicit(&c->slot->load, memory_order_relaxed));
}

/* Not excluded (a half-open breaker's limit aside). */
static inline int ilb__available(const struct ilb__cand *c) {
  return (atomic_load_explicit(&c->slot->down, memory_order_relaxed) &
          ILB__EXCL_MASK) == 0;
}

/* Available and below its capacity (and a half-open breaker's limit):
 * may take one more request. */
static inline int ilb__has_room(const struct ilb__cand *c, uint64_t load) {
  uint32_t d = atomic_load_explicit(&c->slot->down, memory_order_relaxed);
  if (ILB__LIKELY(d == 0))
    return c->capacity == 0 || load < c->capacity;
  return (d & ILB__EXCL_MASK) == 0 && load < (d >> 16) &&
         (c->capacity == 0 || load < c->capacity);
}

/* Is (la+1)/wa < (lb+1)/wb? Exact integer comparison. Returns <0, 0, >0. */
static inline int ilb__cmp_wload(uint64_t la, uint32_t wa, uint64_t lb,
                                 uint32_t wb) {
  uint64_t x = (la + 1) * (uint64_t)wb, y = (lb + 1) * (uint64_t)wa;
  return (x > y) - (x < y);
}

/* Full scan for the least-loaded candidate with room; weighted compares
 * (load+1)/weight, unweighted compares load. Ties are broken uniformly at
 * random. Returns a random candidate when none has room. Shared by
 * least_conn, weighted_least_request and p2c (k >= n). */
uint32_t ilb__scan_least(const struct ilb__snap *snap,
                         struct ilb__pick_ctx *ctx, int weighted);

extern const struct ilb__policy ilb__policy_round_robin;
extern const struct ilb__policy ilb__policy_weighted_round_robin;
extern const struct ilb__policy ilb__policy_random;
extern const struct ilb__policy ilb__policy_weighted_random;
extern const struct ilb__policy ilb__policy_least_conn;
extern const struct ilb__policy ilb__policy_weighted_least_request;
extern const struct ilb__policy ilb__policy_p2c;
extern const struct ilb__policy ilb__policy_ring;
extern const struct ilb__policy ilb__policy_maglev;
extern const struct ilb__policy ilb__policy_rendezvous;
extern const struct ilb__policy ilb__policy_chwbl;
extern const struct ilb__policy ilb__policy_composite;
extern const struct ilb__policy ilb__policy_peak_ewma;
extern const struct ilb__policy ilb__policy_least_tokens;
extern const struct ilb__policy ilb__policy_prefix;

#endif
