/* The pick path: ilb_pick and ilb_complete. No lock, allocation or system
 * call below (the host's rand callback aside).
 * SPDX-License-Identifier: MIT */
#include <stddef.h>

#include "core/internal.h"
#include "policy/policy.h"

int ilb_request_init(ilb_request *req) {
  if (!req)
    return ILB_EINVAL;
  memset(req, 0, sizeof(*req));
  req->struct_size = sizeof(*req);
  return 0;
}

int ilb_pick_result_init(ilb_pick_result *res) {
  if (!res)
    return ILB_EINVAL;
  memset(res, 0, sizeof(*res));
  res->struct_size = sizeof(*res);
  return 0;
}

int ilb_outcome_init(ilb_outcome *out) {
  if (!out)
    return ILB_EINVAL;
  memset(out, 0, sizeof(*out));
  out->struct_size = sizeof(*out);
  out->status = ILB_OUTCOME_OK;
  return 0;
}

/* A thread's number: assigned at its first pick, lowest free first, so a
 * single-threaded host always uses stripe 0 (deterministic decisions). */
static inline uint32_t my_tid(void) {
  uint32_t t = ilb__tl_tid;
  return ILB__LIKELY(t) ? t : ilb__thread_register();
}

static inline int try_take(const struct ilb__cand *c) {
  _Atomic uint64_t *w = &c->slot->load;
  uint32_t d = atomic_load_explicit(&c->slot->down, memory_order_relaxed);
  uint32_t cap = c->capacity;
  if (ILB__UNLIKELY(d)) {
    if (d & ILB__EXCL_MASK)
      return 0;
    uint32_t lim = d >> 16; /* half-open breaker */
    if (cap == 0 || lim < cap)
      cap = lim;
  }
  if (cap == 0) {
    atomic_fetch_add_explicit(w, 1, memory_order_relaxed);
    return 1;
  }
  uint64_t v = atomic_load_explicit(w, memory_order_relaxed);
  do {
    if (ILB__INFLIGHT(v) >= cap)
      return 0;
  } while (!atomic_compare_exchange_weak_explicit(
      w, &v, v + 1, memory_order_relaxed, memory_order_relaxed));
  return 1;
}

/* May take a request over its capacity: available, not half-open. */
static inline int over_ok(const struct ilb__cand *c) {
  return atomic_load_explicit(&c->slot->down, memory_order_relaxed) == 0;
}

/* Count the request on the chosen candidate; if it is full or unavailable,
 * on one of the candidates with room drawn uniformly at random (not the
 * chosen one's neighbour, which would collect all the overflow). O(n) on
 * that path. Returns the candidate index, or UINT32_MAX with ctx->err set
 * when none has room. */
/* Is candidate k's slot among excl (slot index + 1 each)? */
static int excluded(const struct ilb__cand *c, const uint64_t *excl,
                    uint32_t n) {
  for (uint32_t i = 0; i < n; i++)
    if (excl[i] == (uint64_t)c->slot->index + 1)
      return 1;
  return 0;
}

/* A retry's earlier replicas (excl) are left out while another has room. */
static ILB__NOINLINE uint32_t take_slow(const struct ilb__snap *s, uint32_t c,
                                        struct ilb__pick_ctx *ctx,
                                        const uint64_t *excl, uint32_t n_excl) {
  uint32_t room = 0;
  for (uint32_t k = 0; k < s->n; k++)
    room += ilb__has_room(&s->cand[k], ilb__load(&s->cand[k])) &&
            !(n_excl && excluded(&s->cand[k], excl, n_excl));
  if (!room && n_excl) {
    n_excl = 0;
    for (uint32_t k = 0; k < s->n; k++)
      room += ilb__has_room(&s->cand[k], ilb__load(&s->cand[k]));
  }
  if (room) {
    /* the r-th candidate with room, then onwards if it fills meanwhile */
    uint32_t r = ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), room);
    for (uint32_t j = 0, k = 0; j < 2 * s->n;
         j++, k = k + 1 < s->n ? k + 1 : 0) {
      const struct ilb__cand *x = &s->cand[k];
      if (!ilb__has_room(x, ilb__load(x)) ||
          (n_excl && excluded(x, excl, n_excl)))
        continue;
      if (r > 0 && j < s->n) { /* second lap: any with room */
        r--;
        continue;
      }
      if (try_take(x))
        return k;
    }
  }
  /* None has room. Over capacity only on an available one: the chosen, or
   * the first available after a random point. */
  uint32_t a = c;
  if (!over_ok(&s->cand[a])) {
    uint32_t k0 = ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), s->n);
    a = UINT32_MAX;
    int any = 0;
    for (uint32_t j = 0, k = k0; j < s->n; j++, k = k + 1 < s->n ? k + 1 : 0) {
      any |= ilb__available(&s->cand[k]);
      if (over_ok(&s->cand[k])) {
        a = k;
        break;
      }
    }
    if (a == UINT32_MAX) { /* none, or only half-open ones (full) */
      ctx->err = any ? ILB_ESATURATED : ILB_ENOREPLICA;
      return UINT32_MAX;
    }
  }
  if (s->allow_over) {
    atomic_fetch_add_explicit(&s->cand[a].slot->load, 1, memory_order_relaxed);
    return a;
  }
  ctx->err = ILB_ESATURATED;
  return UINT32_MAX;
}

static ILB__INLINE uint32_t take(const struct ilb__snap *s, uint32_t c,
                                 struct ilb__pick_ctx *ctx,
                                 const uint64_t *excl, uint32_t n_excl) {
  if (ILB__LIKELY(try_take(&s->cand[c])))
    return c;
  return take_slow(s, c, ctx, excl, n_excl);
}

/* Smallest result struct we accept: up to and including the ticket. */
#define RES_MIN (offsetof(ilb_pick_result, ticket) + sizeof(uint64_t))

static void res_fill(ilb_pick_result *res, uint64_t ticket, const char *id,
                     void *host_data, uint64_t retry_after) {
  if (ILB__LIKELY(res->struct_size >= sizeof(*res))) {
    res->ticket = ticket;
    res->replica_id = id;
    res->host_data = host_data;
    res->retry_after_ns = retry_after;
    return;
  }
  ilb_pick_result v = {res->struct_size, ticket, id, host_data, retry_after};
  memcpy(res, &v, res->struct_size);
}

/* Claim a FREE entry of the thread's private block with a plain store
 * (nobody else writes a FREE entry there), ordered before the snapshot load
 * by the writers' membarrier or by our own fence. 1 if claimed. */
static inline int claim_private(struct ilb__ttab *tab, uint32_t tid,
                                struct ilb__stripe *st, uint32_t *idx_out,
                                uint32_t *seq_out) {
  uint32_t base = tab->mask + 1 + (tid - 1) * ILB__PRIV, cur = st->pcursor;
  for (uint32_t k = 0; k < ILB__PRIV; k++) {
    uint32_t i = base + ((cur + k) & (ILB__PRIV - 1));
    uint64_t s = atomic_load_explicit(&tab->e[i], memory_order_relaxed);
    if (ILB__T_KIND(s) != ILB__T_FREE)
      continue;
    uint32_t seq = ILB__T_SEQ(s) + 1;
    seq += seq == 0;
    atomic_store_explicit(&tab->e[i], ILB__T_MAKE(seq, ILB__T_PICKING, 0),
                          memory_order_relaxed);
    if (ILB__LIKELY(atomic_load_explicit(&ilb__mb_state,
                                         memory_order_relaxed) == ILB__MB_ON))
      atomic_signal_fence(memory_order_seq_cst);
    else
      atomic_thread_fence(memory_order_seq_cst);
    st->pcursor = cur + k + 1;
    *idx_out = i;
    *seq_out = seq;
    return 1;
  }
  return 0;
}

/* A retry: instead of an earlier attempt's replica, one of the others
 * with room, uniformly; c itself when there is none. O(n). */
static uint32_t avoid(const struct ilb__snap *s, struct ilb__pick_ctx *ctx,
                      const uint64_t *excl, uint32_t n_excl, uint32_t c) {
  uint32_t room = 0;
  for (uint32_t k = 0; k < s->n; k++)
    room += ilb__has_room(&s->cand[k], ilb__load(&s->cand[k])) &&
            !excluded(&s->cand[k], excl, n_excl);
  if (!room)
    return c;
  uint32_t r = ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), room);
  for (uint32_t k = 0; k < s->n; k++)
    if (ilb__has_room(&s->cand[k], ilb__load(&s->cand[k])) &&
        !excluded(&s->cand[k], excl, n_excl) && r-- == 0)
      return k;
  return c;
}

/* ilb_request of 0.3 (without priority) and of 0.4 and 0.5 (without zone) */
#define REQ_V03 offsetof(ilb_request, priority)
#define REQ_V05 offsetof(ilb_request, zone)

/* Locality (ILB_OPT_LOCALITY): the snapshot of the client's zone while that
 * zone's healthy share and load allow, else the whole pool's. O(n). */
static ILB__NOINLINE const struct ilb__snap *
zone_snap(const struct ilb__snap *s, ilb_pool *p, const char *zone) {
  uint32_t z = 0;
  while (z < s->n_zones && strcmp(s->zname[z], zone) != 0)
    z++;
  if (z == s->n_zones)
    return s;
  /* weights and requests in flight, of the zone and of the pool, counting
   * available candidates (all of the zone's for its healthy share) */
  uint64_t zw = 0, zaw = 0, zin = 0, aw = 0, ain = 0;
  for (uint32_t k = 0; k < s->n; k++) {
    const struct ilb__cand *c = &s->cand[k];
    int avail = ilb__available(c);
    uint64_t in = avail ? ILB__INFLIGHT(ilb__load(c)) : 0;
    if (s->zone_of[k] == z) {
      zw += c->weight;
      zaw += avail ? c->weight : 0;
      zin += in;
    }
    aw += avail ? c->weight : 0;
    ain += in;
  }
  uint64_t min_h = (uint64_t)atomic_load_explicit(&p->opt_loc[1],
                                                   memory_order_relaxed);
  uint64_t spill = (uint64_t)atomic_load_explicit(&p->opt_loc[2],
                                                  memory_order_relaxed);
  if (zaw == 0 || zaw * 100 < min_h * zw)
    return s;
  /* zin / zaw <= spill% * (ain + 1) / aw: the zone's load per unit of
   * weight against the pool's with this request (an idle pool keeps it
   * local whatever the zones' sizes); in doubles: the integer products
   * could pass 2^64 */
  double lhs = (double)zin * (double)aw * 100.0;
  double rhs = (double)(ain + 1) * (double)zaw * (double)spill;
  return lhs <= rhs ? s->zsub[z] : s;
}

/* Sticky sessions: is candidate k of s usable for its session? */
static int want_ok(const struct ilb__snap *s, uint32_t k, uint32_t bound_pct) {
  const struct ilb__cand *c = &s->cand[k];
  if (!ilb__available(c))
    return 0;
  if (!bound_pct)
    return 1;
  uint64_t t = 0, a = 0;
  for (uint32_t j = 0; j < s->n; j++)
    if (ilb__available(&s->cand[j])) {
      t += ILB__INFLIGHT(ilb__load(&s->cand[j]));
      a++;
    }
  /* in flight < ceil(pct * (t + 1) / (100 * a)) */
  uint64_t bound = (bound_pct * (t + 1) + 100 * a - 1) / (100 * a);
  return ILB__INFLIGHT(ilb__load(c)) < bound;
}

static ILB__INLINE int pick_impl(ilb_pick_result *res, ilb_pool *p,
                                 const ilb_request *req,
                                 struct ilb__pick_opts *o) {
  const uint64_t *excl = o ? o->excl : NULL;
  uint32_t n_excl = o ? o->n_excl : 0;
  if (ILB__UNLIKELY(!res))
    return ILB_EINVAL;
  if (ILB__UNLIKELY(res->struct_size < RES_MIN))
    return ILB_ESIZE;
  if (ILB__UNLIKELY(!p)) {
    res_fill(res, 0, NULL, NULL, 0);
    return ILB_EINVAL;
  }
  ilb_request old_req;
  if (req) {
    if (ILB__UNLIKELY(req->struct_size != sizeof(*req))) {
      if (req->struct_size == REQ_V03 || req->struct_size == REQ_V05) {
        memset(&old_req, 0, sizeof(old_req));
        memcpy(&old_req, req, req->struct_size);
        old_req.struct_size = sizeof(old_req);
        req = &old_req;
      } else {
        int rc = ilb__check_struct_in(req, req->struct_size, sizeof(*req),
                                      sizeof(*req));
        if (rc) {
          res_fill(res, 0, NULL, NULL, 0);
          return rc;
        }
      }
    }
    if (ILB__UNLIKELY((req->key_len && !req->key) ||
                      (req->n_blocks && !req->block_hashes) ||
                      (req->prompt_len && !req->prompt) ||
                      (req->n_attrs && !req->attrs) ||
                      (uint32_t)req->priority > ILB_PRIORITY_SHEDDABLE ||
                      req->reserved0)) {
      res_fill(res, 0, NULL, NULL, 0);
      return ILB_EINVAL;
    }
  }
  uint32_t tid = my_tid();
  struct ilb__stripe *st = &p->stripes[(tid - 1) & (ILB__STRIPES - 1)];
  struct ilb__ttab *tab = atomic_load_explicit(&p->tt, memory_order_acquire);
  _Atomic uint64_t *tt = tab->e;
  uint32_t idx = 0, seq = 0;

  /* Claim a ticket entry: this also registers us as a snapshot reader.
   * Threads 1..ILB__STRIPES own a private block, tried first; when it was
   * found full it is skipped for a few picks, but always rescanned before
   * reporting ILB_ETICKETS. */
  int owner = tid <= ILB__STRIPES;
  if (ILB__LIKELY(owner)) {
    if (ILB__LIKELY(st->pskip == 0)) {
      if (ILB__LIKELY(claim_private(tab, tid, st, &idx, &seq)))
        goto claimed;
      st->pskip = ILB__PRIV;
    } else {
      st->pskip--;
    }
  }
  uint32_t mask = tab->mask;
  uint32_t cur = atomic_load_explicit(&st->cursor, memory_order_relaxed);
  for (uint32_t tries = 0;; tries++) {
    if (ILB__UNLIKELY(tries > mask)) {
      if (owner && claim_private(tab, tid, st, &idx, &seq)) {
        st->pskip = 0;
        goto claimed;
      }
      res_fill(res, 0, NULL, NULL, 0);
      return ILB_ETICKETS;
    }
    idx = (cur + tries) & mask;
    uint64_t s = atomic_load_explicit(&tt[idx], memory_order_relaxed);
    if (ILB__T_KIND(s) != ILB__T_FREE)
      continue;
    seq = ILB__T_SEQ(s) + 1;
    seq += seq == 0;
    if (atomic_compare_exchange_strong(&tt[idx], &s,
                                       ILB__T_MAKE(seq, ILB__T_PICKING, 0)))
      break;
  }
  atomic_store_explicit(&st->cursor, idx + 1, memory_order_relaxed);

claimed:;
  const struct ilb__snap *snap = atomic_load(&p->snap);
  int rc = ILB_ENOREPLICA;
  uint64_t hbuf[ILB__HBUF]; /* prefix: the prompt's block hashes */
  struct ilb__pick_ctx ctx = {p, st, req, 0, 0, hbuf, 0, 0, 0};
  /* Shedding: the pool's own limit (sheddable requests stop earlier). */
  uint64_t pcount = 0;
  uint64_t pmax = (uint64_t)ilb__hopt(p, ILB_OPT_POOL_MAX_IN_FLIGHT);
  if (ILB__UNLIKELY(pmax)) {
    uint64_t lim = pmax;
    if (req && req->priority == ILB_PRIORITY_SHEDDABLE)
      lim = (pmax * (uint64_t)ilb__hopt(p, ILB_OPT_SHED_PERCENT) + 99) / 100;
    /* a refused pick never counts, even for a moment */
    uint64_t v = atomic_load_explicit(&p->pool_in_flight, memory_order_relaxed);
    do {
      if (v >= lim) {
        rc = ILB_ESHED;
        goto failed;
      }
    } while (!atomic_compare_exchange_weak_explicit(
        &p->pool_in_flight, &v, v + 1, memory_order_relaxed,
        memory_order_relaxed));
    pcount = ILB__T_POOLCNT;
  }
  if (ILB__LIKELY(snap->n)) {
    const struct ilb__snap *ps = snap; /* the one the policy chooses in */
    uint32_t c = ILB__NO_CHOICE;
    int chose = 1;
    if (o && o->want) { /* a sticky session's replica */
      uint32_t w = o->want - 1;
      uint32_t k = w < snap->n_slotmap ? snap->slotmap[w] : 0;
      if (k &&
          atomic_load_explicit(&snap->cand[k - 1].slot->gen,
                               memory_order_relaxed) == o->want_gen &&
          want_ok(snap, k - 1, o->bound_pct) &&
          try_take(&snap->cand[k - 1])) {
        c = k - 1;
        chose = 0;
        o->want_taken = 1;
      }
    }
    if (chose) {
      if (ILB__UNLIKELY(snap->n_zones) && req && req->zone)
        ps = zone_snap(snap, p, req->zone);
      for (;;) {
        c = ps->n ? ps->policy->choose(ps, &ctx) : ILB__NO_CHOICE;
        if (ILB__UNLIKELY(n_excl) && c != ILB__NO_CHOICE &&
            excluded(&ps->cand[c], excl, n_excl))
          c = avoid(ps, &ctx, excl, n_excl, c);
        if (ILB__LIKELY(c != ILB__NO_CHOICE))
          c = take(ps, c, &ctx, excl, n_excl);
        if (ILB__LIKELY(ps == snap || c != UINT32_MAX))
          break;
        ps = snap; /* no room in the zone: spill over */
        ctx.err = 0;
      }
    }
    if (ILB__LIKELY(c != UINT32_MAX && c != ILB__NO_CHOICE)) {
      if (chose && ps->policy->picked)
        ps->policy->picked(ps, &ctx, c);
      uint64_t counted = pcount;
      if (snap->policy->counts_total) {
        atomic_fetch_add_explicit(&p->hash_in_flight, 1, memory_order_relaxed);
        counted |= ILB__T_COUNTED;
      }
      uint32_t cost = ilb__req_cost(snap, req);
      if (cost) {
        atomic_fetch_add_explicit(&ps->cand[c].slot->tokens, cost,
                                  memory_order_relaxed);
        atomic_store_explicit(&tab->cost[idx], cost, memory_order_relaxed);
        counted |= ILB__T_COST;
      }
      /* Copy out of the snapshot first: leaving PICKING lets a writer free
       * it. (id points into the replica record, which lives until this
       * ticket completes.) */
      const struct ilb__cand *cd = &ps->cand[c];
      const char *id = cd->id;
      void *hd = cd->host_data;
      uint32_t slot = cd->slot->index;
      if (o) {
        o->slot_out = slot;
        o->gen_out = atomic_load_explicit(&cd->slot->gen, memory_order_relaxed);
      }
      atomic_store_explicit(&tt[idx],
                            ILB__T_MAKE(seq, ILB__T_OUT, slot) | counted,
                            memory_order_release);
      atomic_store_explicit(
          &st->picks,
          atomic_load_explicit(&st->picks, memory_order_relaxed) + 1,
          memory_order_relaxed);
      /* a pool in a router stamps its tag (traffic/traffic.h) */
      uint64_t tag = atomic_load_explicit(&p->ticket_tag, memory_order_relaxed);
      res_fill(res, ((uint64_t)seq << 32) | (tag << 25) | idx, id, hd, 0);
      return 0;
    }
    rc = ctx.err;
  }
  if (pcount)
    atomic_fetch_sub_explicit(&p->pool_in_flight, 1, memory_order_relaxed);
failed:;
  /* When to come back: computed while the snapshot is still ours. */
  uint64_t after = 0;
  if (rc == ILB_ESATURATED || rc == ILB_ESHED) {
    after = ilb__retry_after(p, snap, ilb__rand(&ctx));
    if (rc == ILB_ESHED)
      atomic_fetch_add_explicit(&p->n_shed, 1, memory_order_relaxed);
  }
  atomic_store_explicit(&tt[idx], ILB__T_MAKE(seq, ILB__T_FREE, 0),
                        memory_order_release);
  res_fill(res, 0, NULL, NULL, after);
  return rc;
}

int ilb_pick(ilb_pick_result *res, ilb_pool *p, const ilb_request *req) {
  return pick_impl(res, p, req, NULL);
}

int ilb__pick_ex(ilb_pick_result *res, ilb_pool *p, const ilb_request *req,
                 struct ilb__pick_opts *opts) {
  return pick_impl(res, p, req, opts);
}

double ilb__ewma_now(const struct ilb__slot *s, double tau_ns, uint64_t now) {
  uint64_t b = atomic_load_explicit(&s->ewma, memory_order_relaxed);
  if (!b)
    return -1.0;
  uint64_t st = atomic_load_explicit(&s->ewma_stamp, memory_order_relaxed);
  return ilb__d_from_bits(b) *
         ilb__exp_neg(now > st ? (double)(now - st) / tau_ns : 0.0);
}

/* One latency observation (Finagle's and Linkerd's peak EWMA, in continuous
 * time): the estimate decays by w = exp(-dt / tau) since the last one; a
 * latency above the decayed estimate replaces it, a lower one is blended in
 * with weight 1 - w. Lock-free: a CAS loop on the estimate; the stamp is
 * stored after it (a racing observation may decay over a slightly longer
 * interval). */
static void ewma_observe(ilb_pool *p, struct ilb__slot *sl, double rtt,
                         int penalty) {
  if (penalty) {
    double pen =
        (double)atomic_load_explicit(&p->opt_ewma_penalty_ms,
                                     memory_order_relaxed) * 1e6;
    if (pen > rtt)
      rtt = pen;
  }
  if (rtt < 1.0)
    rtt = 1.0; /* never 0, which means "no observation" */
  double tau = (double)atomic_load_explicit(&p->opt_ewma_decay_ms,
                                            memory_order_relaxed) * 1e6;
  uint64_t now = ilb__now_fast(p);
  uint64_t old = atomic_load_explicit(&sl->ewma, memory_order_relaxed), nb;
  if (!old) /* first one: a pick must not pair it with stamp 0 and decay
               it over the whole uptime */
    atomic_store_explicit(&sl->ewma_stamp, now, memory_order_relaxed);
  do {
    double next = rtt;
    if (old) {
      uint64_t st = atomic_load_explicit(&sl->ewma_stamp, memory_order_relaxed);
      double w = ilb__exp_neg(now > st ? (double)(now - st) / tau : 0.0);
      double cur = ilb__d_from_bits(old) * w;
      next = rtt > cur ? rtt : cur + rtt * (1.0 - w);
      if (next < 1.0)
        next = 1.0;
    }
    nb = ilb__d_bits(next);
  } while (!atomic_compare_exchange_weak_explicit(
      &sl->ewma, &old, nb, memory_order_relaxed, memory_order_relaxed));
  atomic_store_explicit(&sl->ewma_stamp, now, memory_order_relaxed);
}

/* A success on a replica with an error streak or a half-open breaker. */
static ILB__NOINLINE void success_slow(ilb_pool *p, struct ilb__slot *sl) {
  atomic_store_explicit(&sl->consec, 0, memory_order_relaxed);
  if (atomic_load_explicit(&sl->down, memory_order_relaxed) >> 16)
    ilb__passive_half_success(p, sl);
}

/* Any outcome but a plain success. */
static ILB__NOINLINE void outcome_slow(ilb_pool *p, struct ilb__slot *sl,
                                       int32_t status, int32_t http) {
  int cls = ilb__outcome_class(status, http);
  if (cls == ILB__CLS_SUCCESS)
    success_slow(p, sl);
  else if (cls == ILB__CLS_NEUTRAL)
    atomic_fetch_add_explicit(&sl->neutral, 1, memory_order_relaxed);
  else {
    atomic_fetch_add_explicit(&sl->errors, 1, memory_order_relaxed);
    ilb__passive_error(p, sl, cls == ILB__CLS_GATEWAY);
  }
  if (status != ILB_OUTCOME_OK && status != ILB_OUTCOME_CANCELLED)
    atomic_fetch_add_explicit(&sl->failed, 1, memory_order_relaxed);
}

static ILB__INLINE int complete_impl(ilb_pool *p, uint64_t ticket,
                                const ilb_outcome *outcome,
                                uint32_t *slot_out) {
  if (ILB__UNLIKELY(!p))
    return ILB_EINVAL;
  int32_t status = ILB_OUTCOME_OK;
  if (outcome) {
    if (ILB__UNLIKELY(outcome->struct_size != sizeof(*outcome))) {
      int rc = ilb__check_struct_in(outcome, outcome->struct_size,
                                    sizeof(*outcome), sizeof(*outcome));
      if (rc)
        return rc;
    }
    status = outcome->status;
    int32_t h = outcome->http_status;
    if (status < ILB_OUTCOME_OK || status > ILB_OUTCOME_REFUSED ||
        (h != 0 && (h < 100 || h > 599)))
      return ILB_EINVAL;
  }
  /* bits 25..31: the pool's router tag (traffic/traffic.h), or 0 for a
   * ticket issued before the pool joined its router */
  uint32_t idx = (uint32_t)ticket & 0x1ffffffu, seq = (uint32_t)(ticket >> 32);
  uint32_t tag = (uint32_t)ticket >> 25;
  if (ILB__UNLIKELY(tag && tag != atomic_load_explicit(&p->ticket_tag,
                                                       memory_order_relaxed)))
    return ILB_ESTALE;
  struct ilb__ttab *tab = atomic_load_explicit(&p->tt, memory_order_acquire);
  if (ILB__UNLIKELY(seq == 0 || idx >= tab->size))
    return ILB_ESTALE;
  _Atomic uint64_t *e = &tab->e[idx];
  uint64_t s = atomic_load_explicit(e, memory_order_acquire);
  if (ILB__UNLIKELY(ILB__T_KIND(s) != ILB__T_OUT || ILB__T_SEQ(s) != seq))
    return ILB_ESTALE;
  /* Read while the entry is ours: once freed a new pick may reuse it. */
  uint32_t cost = s & ILB__T_COST ? atomic_load_explicit(&tab->cost[idx],
                                                         memory_order_relaxed)
                                  : 0;
  /* Whoever frees the entry owns the completion; a second one fails here. */
  if (ILB__UNLIKELY(!atomic_compare_exchange_strong_explicit(
          e, &s, ILB__T_MAKE(seq, ILB__T_FREE, 0), memory_order_acq_rel,
          memory_order_relaxed)))
    return ILB_ESTALE;
  struct ilb__slot *sl = ilb__slot_at(p, ILB__T_SLOT(s));
  *slot_out = ILB__T_SLOT(s);
  /* Record before releasing the in-flight count: once it reaches zero a
   * removed replica's slot may be reused. */
  int live = (int)atomic_load_explicit(&sl->live, memory_order_acquire);
  if (s & ILB__T_COUNTED)
    atomic_fetch_sub_explicit(&p->hash_in_flight, 1, memory_order_relaxed);
  if (s & ILB__T_POOLCNT)
    atomic_fetch_sub_explicit(&p->pool_in_flight, 1, memory_order_relaxed);
  int32_t http = outcome ? outcome->http_status : 0;
  if (ILB__LIKELY(live)) {
    /* Passive health (health/passive.c): a success clears the error
     * streak and counts towards closing a half-open breaker. */
    if (ILB__LIKELY(status == ILB_OUTCOME_OK && http < 500)) {
      if (ILB__UNLIKELY(
              atomic_load_explicit(&sl->consec, memory_order_relaxed) |
              (atomic_load_explicit(&sl->down, memory_order_relaxed) >> 16)))
        success_slow(p, sl);
    } else {
      outcome_slow(p, sl, status, http);
    }
  }
  if (cost)
    atomic_fetch_sub_explicit(&sl->tokens, cost, memory_order_relaxed);
  if (live && outcome && status != ILB_OUTCOME_CANCELLED) {
    /* Failures that say "this replica is in trouble" cost a penalty; an
     * HTTP 4xx other than 429 is the client's fault. */
    int32_t h = http;
    int penalty = status == ILB_OUTCOME_CONNECT_ERROR ||
                  status == ILB_OUTCOME_TIMEOUT ||
                  status == ILB_OUTCOME_REFUSED ||
                  (status == ILB_OUTCOME_HTTP_ERROR &&
                   (h == 0 || h == 429 || h >= 500)) ||
                  (status == ILB_OUTCOME_OK && (h == 429 || h >= 500));
    if (outcome->latency_ns || penalty)
      ewma_observe(p, sl, (double)outcome->latency_ns, penalty);
  }
  /* One RMW: in_flight - 1 and completed + 1. seq_cst (the same lock xadd
   * on x86 as release) so that it and the load of `down` below pair with
   * ilb_replica_drain's store of `down` and load of the count. */
  uint64_t old = atomic_fetch_add_explicit(&sl->load, ILB__COMPLETE_ADD,
                                           memory_order_seq_cst);
  if (ILB__UNLIKELY((old >> 32) == UINT32_MAX))
    atomic_fetch_add_explicit(&sl->completed_hi, 1, memory_order_relaxed);
  if (ILB__INFLIGHT(old) == 1 && live &&
      ILB__UNLIKELY(atomic_load_explicit(&sl->down, memory_order_seq_cst) &
                    ILB_EXCLUDED_DRAINING)) {
    /* the last request of a draining replica: ILB_EVENT_DRAINED at the
     * next ilb_next_due */
    atomic_store_explicit(&sl->drained_at, ilb__now_fast(p),
                          memory_order_relaxed);
    atomic_fetch_or(&sl->pend, ILB__PEND_DRAINED);
  }
  return live ? 0 : ILB_EREMOVED;
}

int ilb_complete(ilb_pool *p, uint64_t ticket, const ilb_outcome *outcome) {
  uint32_t slot;
  return complete_impl(p, ticket, outcome, &slot);
}

int ilb__complete(ilb_pool *p, uint64_t ticket, const ilb_outcome *outcome,
                  uint32_t *slot_out) {
  return complete_impl(p, ticket, outcome, slot_out);
}
