/* Shared machinery of the consistent-hashing policies: the canonical order
 * and key-seeded probe order, the no-key fallback and the Maglev table. See
 * consistent.h.
 * SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "policy/consistent.h"

/* ---- Maglev table size -------------------------------------------------- */

uint32_t ilb__maglev_size(uint32_t opt_m, uint32_t n) {
  if (opt_m != 0 && opt_m >= n)
    return opt_m;
  /* From the next power of two, not n itself: the size (and with it the
   * place of every key) then changes only when the pool crosses one. */
  uint64_t p2 = 1;
  while (p2 < n)
    p2 <<= 1;
  uint64_t want = p2 * 100;
  if (want < ILB__MAGLEV_M_MIN_AUTO)
    want = ILB__MAGLEV_M_MIN_AUTO;
  if (want >= ILB__MAGLEV_M_MAX)
    return ILB__MAGLEV_M_MAX;
  uint32_t m = (uint32_t)want;
  while (!ilb__is_prime(m)) /* prime gaps below 2^24 are < 200 */
    m++;
  return m;
}

/* ---- canonical order and probe order ------------------------------------ */

struct by_id {
  const char *id;
  uint32_t len;
  uint32_t idx;
};

static int cmp_id(const void *a, const void *b) {
  const struct by_id *x = a, *y = b;
  uint32_t l = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->id, y->id, l);
  if (c)
    return c;
  return (x->len > y->len) - (x->len < y->len); /* ids are unique */
}

static uint32_t gcd32(uint32_t a, uint32_t b) {
  while (b) {
    uint32_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

int ilb__horder_build(struct ilb__horder *o, const struct ilb__snap *snap,
                      const struct ilb__alloc *a) {
  uint32_t n = snap->n;
  memset(o, 0, sizeof(*o));
  o->order = ilb__malloc(a, sizeof(uint32_t) * 2 * (size_t)n);
  struct by_id *tmp = ilb__malloc(a, sizeof(*tmp) * (size_t)n);
  if (!o->order || !tmp) {
    ilb__free(a, o->order);
    ilb__free(a, tmp);
    o->order = NULL;
    return ILB_ENOMEM;
  }
  o->rank = o->order + n;
  o->n = n;
  o->equal_weights = 1;
  for (uint32_t i = 0; i < n; i++) {
    tmp[i] = (struct by_id){snap->cand[i].id, snap->cand[i].id_len, i};
    if (snap->cand[i].weight != snap->cand[0].weight)
      o->equal_weights = 0;
  }
  qsort(tmp, n, sizeof(*tmp), cmp_id);
  for (uint32_t k = 0; k < n; k++) {
    o->order[k] = tmp[k].idx;
    o->rank[tmp[k].idx] = k;
  }
  ilb__free(a, tmp);
  /* Strides coprime with n, spread over [1, n): each is a full cycle. */
  uint32_t k = n > 1 ? n - 1 : 1;
  o->n_steps = k < ILB__STEPS ? k : ILB__STEPS;
  for (uint32_t i = 0; i < o->n_steps; i++) {
    uint32_t s = 1 + (uint32_t)((uint64_t)i * k / o->n_steps);
    while (n > 1 && gcd32(s, n) != 1)
      s = s + 1 < n ? s + 1 : 1;
    o->steps[i] = s;
  }
  return 0;
}

void ilb__horder_free(struct ilb__horder *o, const struct ilb__alloc *a) {
  ilb__free(a, o->order); /* rank shares the block */
  o->order = o->rank = NULL;
}

uint32_t ilb__horder_next(const struct ilb__horder *o,
                          const struct ilb__snap *snap, uint32_t home,
                          uint64_t h) {
  struct ilb__probe pr;
  ilb__probe_init(&pr, o, home, h);
  for (uint32_t k; (k = ilb__probe_next(&pr, o)) != UINT32_MAX;) {
    const struct ilb__cand *c = &snap->cand[k];
    if (ilb__has_room(c, ilb__load(c)))
      return k;
  }
  return UINT32_MAX;
}

/* ---- keys --------------------------------------------------------------- */

int ilb__key_hash(const struct ilb__snap *snap, struct ilb__pick_ctx *ctx,
                  uint64_t *h, uint32_t *fallback) {
  const ilb_request *req = ctx->req;
  if (ILB__LIKELY(req && req->key_len)) {
    *h = ilb__xxh64(req->key, req->key_len, 0);
    return 1;
  }
  if (snap->no_key == ILB_NO_KEY_ERROR) {
    ctx->err = ILB_ENOKEY;
    *fallback = ILB__NO_CHOICE;
  } else {
    *fallback = ilb__policy_p2c.choose(snap, ctx);
  }
  return 0;
}

/* ---- Maglev ---------------------------------------------------------------
 * Each replica walks its own permutation of the table, position
 * (offset + j * skip) mod M with offset = XXH64(id, 1) mod M and
 * skip = XXH64(id, 2) mod (M - 1) + 1 (M prime, so every skip is a full
 * cycle), and in turns claims the next entry of its permutation still free.
 * Turns go in canonical (id) order. Weighted as in Envoy: a replica earns
 * its weight in credit every round and takes a turn per max-weight of
 * credit, so its share of entries is proportional to its weight. */

struct mg_walk {
  uint32_t pos, skip;
  uint64_t credit;
};

int ilb__maglev_build(struct ilb__maglev *t, const struct ilb__snap *snap,
                      const struct ilb__horder *o, const struct ilb__alloc *a) {
  uint32_t n = snap->n, m = ilb__maglev_size(snap->maglev_m, n);
  t->m = m;
  t->table = ilb__malloc(a, sizeof(uint32_t) * (size_t)m);
  struct mg_walk *w = ilb__malloc(a, sizeof(*w) * (size_t)n);
  if (!t->table || !w) {
    ilb__free(a, t->table);
    ilb__free(a, w);
    t->table = NULL;
    return ILB_ENOMEM;
  }
  memset(t->table, 0xff, sizeof(uint32_t) * (size_t)m);
  uint32_t maxw = 0;
  for (uint32_t k = 0; k < n; k++) {
    const struct ilb__cand *c = &snap->cand[o->order[k]];
    w[k].pos = (uint32_t)(ilb__xxh64(c->id, c->id_len, 1) % m);
    w[k].skip = (uint32_t)(ilb__xxh64(c->id, c->id_len, 2) % (m - 1)) + 1;
    w[k].credit = 0;
    if (c->weight > maxw)
      maxw = c->weight;
  }
  for (uint32_t filled = 0; filled < m;) {
    for (uint32_t k = 0; k < n && filled < m; k++) {
      const struct ilb__cand *c = &snap->cand[o->order[k]];
      w[k].credit += c->weight;
      if (w[k].credit < maxw)
        continue;
      w[k].credit -= maxw;
      uint32_t p = w[k].pos;
      while (t->table[p] != UINT32_MAX) {
        p += w[k].skip;
        if (p >= m)
          p -= m;
      }
      t->table[p] = o->order[k];
      filled++;
      p += w[k].skip;
      w[k].pos = p >= m ? p - m : p;
    }
  }
  ilb__free(a, w);
  return 0;
}

void ilb__maglev_state_destroy(void *state, const struct ilb__alloc *a) {
  struct ilb__maglev_state *s = state;
  ilb__horder_free(&s->order, a);
  ilb__free(a, s->table.table);
  ilb__free(a, s);
}

int ilb__maglev_state_build(void **state, const struct ilb__snap *snap,
                            const struct ilb__alloc *a) {
  struct ilb__maglev_state *s = ilb__calloc(a, 1, sizeof(*s));
  if (!s)
    return ILB_ENOMEM;
  if (ilb__horder_build(&s->order, snap, a) ||
      ilb__maglev_build(&s->table, snap, &s->order, a)) {
    ilb__maglev_state_destroy(s, a);
    return ILB_ENOMEM;
  }
  *state = s;
  return 0;
}
