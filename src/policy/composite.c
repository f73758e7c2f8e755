/* composite: GPU-aware scoring. A candidate's score is its local load term
 * QUEUE * (in_flight + 1) / weight plus the telemetry terms precomputed at
 * report time (telemetry/report.c: waiting queue per unit of weight, GPU
 * utilisation, KV-cache usage, TTFT, GPU memory used). Lowest wins, near
 * ties at random.
 *
 * Staleness: a candidate whose telemetry is stale or absent is scored with
 * the mean telemetry terms of the fresh candidates compared with it, so it
 * is neither idle (the GAIE's stale-idle hot spot) nor shunned; when none
 * is fresh every candidate is compared on local load alone (fail open), or,
 * with ILB_ALL_STALE_SATURATED and no fresh telemetry on any available
 * replica, the pick fails with ILB_ESATURATED (O(1) when every replica's
 * telemetry has expired, else a scan of the pool to make sure).
 *
 * Deep health: fresh candidates flagged saturated (KV cache or free GPU
 * memory past their thresholds, model not ready) lose to every other; when
 * all sampled ones are saturated or full the whole pool is scanned, and
 * when every candidate is saturated, a sheddable request is shed
 * (ILB_ESHED) and any other gets the best of them (fail
 * open).
 * SPDX-License-Identifier: MIT */
#include "policy/score.h"

struct scan {
  struct ilb__best fresh; /* fresh telemetry, not saturated: q + t */
  struct ilb__best stale; /* stale or no telemetry: q */
  struct ilb__best sat;   /* fresh and saturated: q + t */
  double tsum;            /* telemetry terms of the fresh ones */
  uint32_t tcount;
  int have_now;
  uint64_t now;
};

enum { NO_ROOM, FRESH, SATURATED, STALE };

/* What candidate i is, with its local load term q and, when fresh, its
 * telemetry terms t. */
static inline int classify(const struct ilb__snap *snap,
                           struct ilb__pick_ctx *ctx, struct scan *sc,
                           uint32_t i, double *q, double *t) {
  const struct ilb__sc *c = &((const struct ilb__sc *)snap->pstate)[i];
  uint64_t load = ilb__sc_load(c);
  if (!ilb__sc_room(c, load))
    return NO_ROOM;
  *q = (double)(load + 1) * c->k; /* k = QUEUE / 1000 / weight */
  uint64_t u = atomic_load_explicit(&c->slot->tm0.until, memory_order_relaxed);
  if (!u)
    return STALE;
  if (!sc->have_now) {
    sc->now = ilb__now_fast(ctx->pool);
    sc->have_now = 1;
  }
  float f;
  int saturated;
  if (!ilb__tm_read_from(c->slot, u, sc->now, &f, &saturated))
    return STALE;
  *t = f;
  return saturated ? SATURATED : FRESH;
}

/* One pass over the compared candidates (idx NULL: all of them). */
static void scan(const struct ilb__snap *snap, struct ilb__pick_ctx *ctx,
                 struct scan *sc, const uint32_t *idx, uint32_t m) {
  ilb__best_init(&sc->fresh);
  ilb__best_init(&sc->stale);
  ilb__best_init(&sc->sat);
  sc->tsum = 0;
  sc->tcount = 0;
  const struct ilb__sc *all = snap->pstate;
  for (uint32_t j = 0; j < m; j++) {
    uint32_t i = idx ? idx[j] : j;
#if defined(__GNUC__)
    if (!idx && j + 4 < m) /* a scan: the slot four ahead */
      __builtin_prefetch(all[j + 4].slot);
#endif
    double q = 0, t = 0;
    int kind = classify(snap, ctx, sc, i, &q, &t);
    if (kind == STALE) {
      ilb__best_offer(&sc->stale, i, q, snap->tie, ctx);
    } else if (kind != NO_ROOM) {
      sc->tsum += t;
      sc->tcount++;
      ilb__best_offer(kind == FRESH ? &sc->fresh : &sc->sat, i, q + t,
                      snap->tie, ctx);
    }
  }
}

/* Does any available replica have fresh telemetry? O(1) when none has
 * (the latest expiry of all of them has passed), else a scan. */
static int any_fresh(const struct ilb__snap *snap, struct ilb__pick_ctx *ctx,
                     struct scan *sc) {
  if (!sc->have_now) {
    sc->now = ilb__now_fast(ctx->pool);
    sc->have_now = 1;
  }
  if (atomic_load_explicit(&ctx->pool->tm_until_max, memory_order_relaxed) <=
      sc->now)
    return 0;
  const struct ilb__sc *all = snap->pstate;
  for (uint32_t i = 0; i < snap->n; i++) {
    float t;
    int saturated;
    if ((atomic_load_explicit(&all[i].slot->down, memory_order_relaxed) &
         ILB__EXCL_MASK) == 0 &&
        ilb__tm_read(all[i].slot, sc->now, &t, &saturated))
      return 1;
  }
  return 0;
}

/* Two sampled candidates, both with room and neither saturated (the usual
 * case in a large pool): the same rules as the scan, without its
 * bookkeeping. ILB__NO_CHOICE when the general path must decide. */
static inline uint32_t choose_two(const struct ilb__snap *snap,
                                  struct ilb__pick_ctx *ctx, struct scan *sc,
                                  const uint32_t *idx) {
  double qa = 0, ta = 0, qb = 0, tb = 0;
  int ka = classify(snap, ctx, sc, idx[0], &qa, &ta);
  if (ka != FRESH && ka != STALE)
    return ILB__NO_CHOICE;
  int kb = classify(snap, ctx, sc, idx[1], &qb, &tb);
  if (kb != FRESH && kb != STALE)
    return ILB__NO_CHOICE;
  if (ka == STALE && kb == STALE) {
    if (snap->all_stale == ILB_ALL_STALE_SATURATED)
      return ILB__NO_CHOICE;
  } else { /* a stale one takes the other's (the fresh mean's) terms */
    ta = ka == FRESH ? ta : tb;
    tb = kb == FRESH ? tb : ta;
  }
  double sa = qa + ta, sb = qb + tb;
  double lo = sa < sb ? sa : sb, hi = sa < sb ? sb : sa;
  if (hi > ilb__tie_top(lo, snap->tie))
    return sa <= sb ? idx[0] : idx[1];
  /* a tie: either, at random */
  return (ilb__rand(ctx) >> 63) ? idx[1] : idx[0];
}

static uint32_t composite_choose(const struct ilb__snap *snap,
                                 struct ilb__pick_ctx *ctx) {
  uint32_t sample[ILB__SAMPLE_MAX];
  int full;
  uint32_t m = ilb__compared(snap, ctx, sample, &full);
  const uint32_t *idx = full ? NULL : sample;
  struct scan sc;
  sc.have_now = 0;
  sc.now = 0;
  if (m == 2 && idx) {
    uint32_t c = choose_two(snap, ctx, &sc, idx);
    if (c != ILB__NO_CHOICE)
      return c;
  }
  scan(snap, ctx, &sc, idx, m);
  if (!sc.tcount && snap->all_stale == ILB_ALL_STALE_SATURATED &&
      !any_fresh(snap, ctx, &sc)) {
    ctx->err = ILB_ESATURATED;
    return ILB__NO_CHOICE;
  }
  if (idx && !sc.fresh.n && !sc.stale.n) {
    /* Every sampled candidate is saturated or full: look at all. */
    idx = NULL;
    m = snap->n;
    scan(snap, ctx, &sc, idx, m);
  }
  if (sc.fresh.n && sc.stale.n) {
    /* Both kinds: the stale ones compete with the mean telemetry terms of
     * the fresh ones compared, in the same tie window. */
    double tavg = sc.tsum / sc.tcount;
    for (uint32_t j = 0; j < m; j++) {
      uint32_t i = idx ? idx[j] : j;
      double q = 0, t = 0;
      if (classify(snap, ctx, &sc, i, &q, &t) == STALE)
        ilb__best_offer(&sc.fresh, i, q + tavg, snap->tie, ctx);
    }
  }
  if (!sc.fresh.n && !sc.stale.n && sc.sat.n && ctx->req &&
      ctx->req->priority == ILB_PRIORITY_SHEDDABLE) {
    /* every candidate with room is saturated: shed what may be shed, fail
     * open for the rest */
    ctx->err = ILB_ESHED;
    return ILB__NO_CHOICE;
  }
  const struct ilb__best *win = sc.fresh.n   ? &sc.fresh
                                : sc.stale.n ? &sc.stale
                                             : &sc.sat; /* fail open */
  uint32_t c = ilb__best_pick(win, ctx);
  return c != ILB__NO_CHOICE ? c : 0; /* none has room: the core decides */
}

const struct ilb__policy ilb__policy_composite = {
    .id = ILB_POLICY_COMPOSITE,
    .name = "composite",
    .build = ilb__score_build_queue,
    .destroy = ilb__policy_free_state,
    .choose = composite_choose,
    .slow_start = 1,
};
