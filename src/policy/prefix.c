/* prefix: prefix-cache-aware routing with a cost model and bounded load.
 * The index is prefix_index.c's; this file matches a request against it,
 * costs the candidates and records the pick (see "Prefix-cache-aware
 * routing" in the header).
 *
 * What the open routers get wrong and this does not: a cache miss goes to
 * the least-loaded candidate with room, never to "the replica with the
 * smallest cache" whatever its load (SGLang PR #14305); affinity is never
 * switched off wholesale when the pool is imbalanced (SGLang PR #32195):
 * only the replicas over the bound lose it; the index's memory is fixed
 * (GAIE #2878, AIBrix #892).
 * SPDX-License-Identifier: MIT */
#include "policy/prefix.h"
#include "policy/score.h"

/* Distinct holders a pick keeps track of along the chain. */
#define SEEN_MAX 16

struct pstate {
  uint32_t n_map;   /* slots mapped */
  uint32_t *cand1;  /* slot -> candidate index + 1, 0 = not a candidate */
  struct ilb__sc sc[]; /* per candidate: slot, 1 / weight, capacity */
};

static int prefix_build(void **state, const struct ilb__snap *snap,
                        const struct ilb__alloc *a) {
  uint32_t n_map = 0;
  for (uint32_t i = 0; i < snap->n; i++)
    if (snap->cand[i].slot->index + 1 > n_map)
      n_map = snap->cand[i].slot->index + 1;
  struct pstate *ps = ilb__malloc(
      a, sizeof(*ps) + sizeof(struct ilb__sc) * snap->n +
             sizeof(uint32_t) * (size_t)n_map);
  if (!ps)
    return ILB_ENOMEM;
  ps->n_map = n_map;
  ps->cand1 = (uint32_t *)(void *)(ps->sc + snap->n);
  memset(ps->cand1, 0, sizeof(uint32_t) * (size_t)n_map);
  for (uint32_t i = 0; i < snap->n; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    ps->sc[i].slot = c->slot;
    ps->sc[i].k = 1.0 / (double)c->weight;
    ps->sc[i].capacity = c->capacity;
    ps->sc[i].weight = c->weight;
    ps->cand1[c->slot->index] = i + 1;
  }
  *state = ps;
  return 0;
}

/* The request's blocks as index keys in ctx->hbuf: of the host's hashes,
 * or of the prompt cut and hashed. */
static uint32_t request_blocks(const struct ilb__snap *snap,
                               struct ilb__pick_ctx *ctx) {
  const ilb_request *req = ctx->req;
  if (!req)
    return 0;
  if (req->n_blocks) {
    uint32_t nb = req->n_blocks < snap->pfx_max_blocks
                      ? (uint32_t)req->n_blocks
                      : snap->pfx_max_blocks;
    for (uint32_t i = 0; i < nb; i++)
      ctx->hbuf[i] = ilb__pfx_key(req->block_hashes[i]);
    return nb;
  }
  size_t bb = snap->pfx_block_bytes;
  size_t nb = req->prompt_len / bb;
  if (!nb)
    return 0;
  if (nb > snap->pfx_max_blocks)
    nb = snap->pfx_max_blocks;
  const char *model = "";
  for (size_t i = 0; i < req->n_attrs; i++)
    if (req->attrs[i].key && req->attrs[i].value &&
        strcmp(req->attrs[i].key, "model") == 0) {
      model = req->attrs[i].value;
      break;
    }
  uint64_t h = ilb__xxh64(model, strlen(model), 0);
  for (size_t i = 0; i < nb; i++) {
    h = ilb__xxh64(req->prompt + i * bb, bb, h);
    ctx->hbuf[i] = ilb__pfx_key(h);
  }
  return (uint32_t)nb;
}

#define AHEAD 8 /* EVENTS mode: blocks warmed ahead of the walk */

struct seen {
  uint32_t cand;  /* candidate index */
  uint32_t depth; /* blocks matched: its deepest held block + 1 */
};

/* Walk the chain: each block's live holders that are candidates get their
 * depth raised; stop at the first block nobody holds. Returns how many
 * holders were found (at most SEEN_MAX). */
static uint32_t match(const struct ilb__snap *snap, const struct pstate *ps,
                      const uint64_t *keys, uint32_t nb, struct seen *seen,
                      uint32_t *walked) {
  uint32_t ns = 0, i;
  /* ROUTED: every block's lines at once (a cold prompt is recorded whole
   * after); EVENTS: a window ahead of the walk (it records nothing new) */
  int all = snap->pfx_mode == ILB_PREFIX_ROUTED;
  ilb__pfx_warm(snap->pidx, keys, all || nb < AHEAD ? nb : AHEAD);
  for (i = 0; i < nb; i++) {
    if (!all && i % AHEAD == 0 && i + AHEAD < nb)
      ilb__pfx_warm(snap->pidx, keys + i + AHEAD,
                    nb - i - AHEAD < AHEAD ? nb - i - AHEAD : AHEAD);
    uint32_t h[ILB_PREFIX_HOLDERS];
    uint32_t nh = ilb__pfx_lookup(snap->pool, snap->pidx, keys[i], h);
    uint32_t any = 0;
    for (uint32_t j = 0; j < nh; j++) {
      if (h[j] >= ps->n_map || !ps->cand1[h[j]])
        continue; /* removed since */
      uint32_t c = ps->cand1[h[j]] - 1, k = 0;
      any = 1;
      while (k < ns && seen[k].cand != c)
        k++;
      if (k < ns)
        seen[k].depth = i + 1;
      else if (ns < SEEN_MAX)
        seen[ns++] = (struct seen){c, i + 1};
    }
    if (!any)
      break;
  }
  *walked = i + (i < nb); /* the blocks looked up */
  return ns;
}

/* chwbl's bound (chwbl.c): room while load * d < x * w. */
static inline int below(uint64_t load, uint64_t x, uint32_t w, uint64_t d) {
  if (ILB__LIKELY(d < (UINT64_C(1) << 38)))
    return load * d < x * w;
  return load < (x * w + d - 1) / d;
}

struct costing {
  double prompt;     /* prompt tokens */
  double per_block;  /* tokens a matched block saves */
  double wp, wl, wq; /* weights, in tokens (percent / 100) */
  double qcost;      /* tokens a waiting request stands for */
  uint64_t x, d;     /* the bound; d = 0: none */
  uint64_t now;
  int have_now;
  struct ilb__best in;  /* within the bound */
  struct ilb__best out; /* over it, with room: used only if none within */
};

static void offer(const struct ilb__snap *snap, struct ilb__pick_ctx *ctx,
                  struct costing *co, const struct ilb__sc *sc, uint32_t i,
                  uint32_t depth) {
  const struct ilb__sc *c = &sc[i];
  uint64_t load = ilb__sc_load(c);
  if (!ilb__sc_room(c, load))
    return;
  double un = co->prompt - co->per_block * depth;
  if (un < 0)
    un = 0;
  double tok =
      (double)atomic_load_explicit(&c->slot->tokens, memory_order_relaxed);
  double cost = co->wp * un + co->wl * tok;
  uint64_t qu =
      atomic_load_explicit(&c->slot->pfx_q_until, memory_order_relaxed);
  if (qu && co->wq > 0) {
    if (!co->have_now) {
      co->now = ilb__now_fast(ctx->pool);
      co->have_now = 1;
    }
    if (co->now < qu)
      cost += co->wq * co->qcost *
              atomic_load_explicit(&c->slot->pfx_queue, memory_order_relaxed);
  }
  cost *= c->k;
  if (!co->d || load < snap->pfx_bound_min ||
      below(load, co->x, c->weight, co->d))
    ilb__best_offer(&co->in, i, cost, snap->tie, ctx);
  else
    ilb__best_offer(&co->out, i, cost, snap->tie, ctx);
}

static uint32_t prefix_choose(const struct ilb__snap *snap,
                              struct ilb__pick_ctx *ctx) {
  const struct pstate *ps = snap->pstate;
  uint32_t nb = request_blocks(snap, ctx);
  const uint64_t *keys = ctx->hbuf;
  ctx->n_blocks = nb;
  struct seen seen[SEEN_MAX];
  uint32_t walked = 0;
  uint32_t ns =
      nb && snap->pidx ? match(snap, ps, keys, nb, seen, &walked) : 0;
  ctx->walked = walked;

  struct costing co;
  const ilb_request *req = ctx->req;
  co.per_block = snap->pfx_block_tokens;
  co.prompt = req && req->prompt_tokens ? (double)req->prompt_tokens
                                        : co.per_block * nb;
  co.wp = (double)snap->pfx_w_prefill / 100.0;
  co.wl = (double)snap->pfx_w_load / 100.0;
  co.wq = (double)snap->pfx_w_queue / 100.0;
  co.qcost = snap->token_default;
  co.have_now = 0;
  co.now = 0;
  uint64_t W = atomic_load_explicit(&snap->avail_weight, memory_order_relaxed);
  uint64_t T = ilb__bound_total(snap, ctx->pool);
  co.x = (uint64_t)snap->balance_pct * (T + 1);
  co.d = 100 * W;
  ilb__best_init(&co.in);
  ilb__best_init(&co.out);

  uint64_t mask = 0; /* bit cand % 64 of each holder: skips most searches */
  for (uint32_t k = 0; k < ns; k++) {
    offer(snap, ctx, &co, ps->sc, seen[k].cand, seen[k].depth);
    mask |= UINT64_C(1) << (seen[k].cand % 64);
  }
  uint32_t idx[ILB__SAMPLE_MAX];
  int full;
  uint32_t m = ilb__compared(snap, ctx, idx, &full);
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t j = 0; j < m; j++) {
      uint32_t i = full ? j : idx[j], k = ns;
      if (mask >> (i % 64) & 1)
        for (k = 0; k < ns && seen[k].cand != i;)
          k++;
      if (k == ns) /* holders were offered with their depth */
        offer(snap, ctx, &co, ps->sc, i, 0);
    }
    if (co.in.n || co.out.n || full)
      break;
    full = 1; /* no sampled candidate has room: look at all of them */
    m = snap->n;
  }
  uint32_t c = ilb__best_pick(co.in.n ? &co.in : &co.out, ctx);
  if (c == ILB__NO_CHOICE)
    c = 0; /* none has room: the core decides */
  ctx->choice = c;
  ctx->matched = 0;
  for (uint32_t k = 0; k < ns; k++)
    if (seen[k].cand == c)
      ctx->matched = seen[k].depth;
  return c;
}

static void prefix_picked(const struct ilb__snap *snap,
                          struct ilb__pick_ctx *ctx, uint32_t c) {
  if (!ctx->n_blocks || !snap->pidx)
    return;
  struct ilb__stripe *st = ctx->stripe;
  ilb__bump(&st->pfx_lookups, 1);
  ilb__bump(&st->pfx_blocks, ctx->n_blocks);
  ilb__bump(&st->pfx_matched, c == ctx->choice ? ctx->matched : 0);
  uint32_t slot = snap->cand[c].slot->index;
  if (snap->pfx_mode == ILB_PREFIX_ROUTED)
    ilb__pfx_record(ctx->pool, snap->pidx, st, slot, ctx->hbuf,
                    ctx->n_blocks, ctx->walked, ILB__PFX_TRY);
  else if (c == ctx->choice && ctx->matched)
    /* events only: no new blocks, but the server touches the prefix it
     * reuses (and sends no event for it): refresh those records */
    ilb__pfx_record(ctx->pool, snap->pidx, st, slot, ctx->hbuf, ctx->matched,
                    ctx->matched, ILB__PFX_TRY | ILB__PFX_REFRESH);
}

const struct ilb__policy ilb__policy_prefix = {
    .id = ILB_POLICY_PREFIX,
    .name = "prefix",
    .build = prefix_build,
    .destroy = ilb__policy_free_state,
    .choose = prefix_choose,
    .picked = prefix_picked,
    .counts_total = 1,
    .costs_all = 1,
    .slow_start = 1,
};
