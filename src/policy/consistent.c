/* Shared machinery of the consistent-hashing policies: the canonical order
 * and key-seeded probe order, the no-key fallback and the Maglev table. See
 * consistent.h.
 * SPDX-License-Identifier: MIT */
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
  uint32_t idx;
};

/* Bottom-up merge sort of v by id (ids are NUL-free, so strcmp is byte
 * order), with scratch tmp of the same size: no allocation behind the
 * host's allocator (qsort may call malloc). Returns the sorted array (v or
 * tmp). */
static struct by_id *sort_by_id(struct by_id *v, struct by_id *tmp,
                                uint32_t n) {
  for (uint32_t width = 1; width < n; width *= 2) {
    for (uint32_t lo = 0; lo < n; lo += 2 * width) {
      uint32_t mid = lo + width < n ? lo + width : n;
      uint32_t hi = lo + 2 * width < n ? lo + 2 * width : n;
      uint32_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi)
        tmp[k++] = strcmp(v[j].id, v[i].id) < 0 ? v[j++] : v[i++];
      while (i < mid)
        tmp[k++] = v[i++];
      while (j < hi)
        tmp[k++] = v[j++];
    }
    struct by_id *x = v;
    v = tmp;
    tmp = x;
  }
  return v;
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
  struct by_id *tmp = ilb__malloc(a, sizeof(*tmp) * 2 * (size_t)n);
  if (!o->order || !tmp) {
    ilb__free(a, o->order);
    ilb__free(a, tmp);
    o->order = NULL;
    return ILB_ENOMEM;
  }
  o->rank = o->order + n;
  o->n = n;
  for (uint32_t i = 0; i < n; i++)
    tmp[i] = (struct by_id){snap->cand[i].id, i};
  const struct by_id *sorted = sort_by_id(tmp, tmp + n, n);
  for (uint32_t k = 0; k < n; k++) {
    o->order[k] = sorted[k].idx;
    o->rank[sorted[k].idx] = k;
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
  uint32_t weight;
  uint64_t turns; /* entries claimed so far */
  uint64_t round; /* the round of its next turn */
};

/* Is replica a's next turn before b's? By round, then canonical rank. */
static inline int mg_before(const struct mg_walk *w, uint32_t a, uint32_t b) {
  return w[a].round < w[b].round || (w[a].round == w[b].round && a < b);
}

static void mg_sift_down(uint32_t *hp, uint32_t n, uint32_t i,
                         const struct mg_walk *w) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, s = i;
    if (l < n && mg_before(w, hp[l], hp[s]))
      s = l;
    if (r < n && mg_before(w, hp[r], hp[s]))
      s = r;
    if (s == i)
      return;
    uint32_t t = hp[i];
    hp[i] = hp[s];
    hp[s] = t;
    i = s;
  }
}

/* Replica k claims the next free entry of its permutation. */
static inline void mg_claim(struct ilb__maglev *t, struct mg_walk *w,
                            uint32_t k, uint32_t cand) {
  uint32_t p = w[k].pos, m = t->m;
  while (t->table[p] != UINT32_MAX) {
    p += w[k].skip;
    if (p >= m)
      p -= m;
  }
  t->table[p] = cand;
  p += w[k].skip;
  w[k].pos = p >= m ? p - m : p;
}

/* Rounds as in Envoy: in every round each replica earns its weight in
 * credit and takes a turn per max weight of credit, in canonical order, so
 * a replica of weight w takes its j-th turn in round ceil(j * maxw / w).
 * Turns are drawn from a heap ordered by (round, rank): the same table as
 * running the rounds, in O(M log n) instead of O(rounds * n), which with
 * one heavy replica among many light ones would be O(M * n). */
int ilb__maglev_build(struct ilb__maglev *t, const struct ilb__snap *snap,
                      const struct ilb__horder *o, const struct ilb__alloc *a) {
  uint32_t n = snap->n, m = ilb__maglev_size(snap->maglev_m, n);
  t->m = m;
  t->table = ilb__malloc(a, sizeof(uint32_t) * (size_t)m);
  struct mg_walk *w = ilb__malloc(a, sizeof(*w) * (size_t)n);
  uint32_t *hp = ilb__malloc(a, sizeof(*hp) * (size_t)n);
  if (!t->table || !w || !hp) {
    ilb__free(a, t->table);
    ilb__free(a, w);
    ilb__free(a, hp);
    t->table = NULL;
    return ILB_ENOMEM;
  }
  memset(t->table, 0xff, sizeof(uint32_t) * (size_t)m);
  uint64_t maxw = 0;
  for (uint32_t k = 0; k < n; k++) {
    const struct ilb__cand *c = &snap->cand[o->order[k]];
    size_t len = strlen(c->id);
    w[k].pos = (uint32_t)(ilb__xxh64(c->id, len, 1) % m);
    w[k].skip = (uint32_t)(ilb__xxh64(c->id, len, 2) % (m - 1)) + 1;
    w[k].weight = c->weight;
    w[k].turns = 0;
    if (c->weight > maxw)
      maxw = c->weight;
  }
  /* A round costs n; rounds take (total weight / maxw) turns each. While
   * the weights are even (maxw <= 8 x the mean), run the rounds: cheaper
   * than the heap's log n a turn. Both give the same table. */
  if (maxw * n <= 8 * snap->total_weight) {
    for (uint32_t k = 0; k < n; k++)
      w[k].round = 0; /* here: credit */
    for (uint32_t filled = 0; filled < m;)
      for (uint32_t k = 0; k < n && filled < m; k++) {
        w[k].round += w[k].weight;
        if (w[k].round < maxw)
          continue;
        w[k].round -= maxw;
        mg_claim(t, w, k, o->order[k]);
        filled++;
      }
  } else {
    for (uint32_t k = 0; k < n; k++) {
      w[k].round = (maxw + w[k].weight - 1) / w[k].weight;
      hp[k] = k;
    }
    for (uint32_t i = n / 2; i-- > 0;)
      mg_sift_down(hp, n, i, w);
    for (uint32_t filled = 0; filled < m; filled++) {
      uint32_t k = hp[0];
      mg_claim(t, w, k, o->order[k]);
      w[k].turns++; /* <= m < 2^24; times maxw <= 2^20: no overflow */
      w[k].round = ((w[k].turns + 1) * maxw + w[k].weight - 1) / w[k].weight;
      mg_sift_down(hp, n, 0, w);
    }
  }
  ilb__free(a, w);
  ilb__free(a, hp);
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
