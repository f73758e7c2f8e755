/* Shared machinery of the consistent-hashing policies: XXH64, primes, the
 * canonical order and key-seeded probe order, the no-key fallback and the
 * Maglev table. See hash.h.
 * SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "policy/hash.h"

/* ---- XXH64 --------------------------------------------------------------
 * Written from the xxHash specification (doc/xxhash_spec.md in Collet's
 * repository): four 64-bit accumulators over 32-byte stripes, then the
 * remaining 8-, 4- and 1-byte pieces, then an avalanche. Input is read as
 * little-endian whatever the host's byte order. Checked against the
 * project's published sanity vectors in tests/test_hash.c. */

#define P1 UINT64_C(0x9E3779B185EBCA87)
#define P2 UINT64_C(0xC2B2AE3D27D4EB4F)
#define P3 UINT64_C(0x165667B19E3779F9)
#define P4 UINT64_C(0x85EBCA77C2B2AE63)
#define P5 UINT64_C(0x27D4EB2F165667C5)

static inline uint64_t rotl64(uint64_t x, unsigned r) {
  return (x << r) | (x >> (64 - r));
}

static inline uint64_t le64(const unsigned char *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
         (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
         (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static inline uint64_t le32(const unsigned char *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
         (uint64_t)p[3] << 24;
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t lane) {
  acc += lane * P2;
  acc = rotl64(acc, 31);
  return acc * P1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t v) {
  acc ^= xxh_round(0, v);
  return acc * P1 + P4;
}

uint64_t ilb__xxh64(const void *data, size_t len, uint64_t seed) {
  const unsigned char *p = data, *end = p + len;
  uint64_t acc;
  if (len >= 32) {
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    const unsigned char *limit = end - 32;
    do {
      v1 = xxh_round(v1, le64(p));
      v2 = xxh_round(v2, le64(p + 8));
      v3 = xxh_round(v3, le64(p + 16));
      v4 = xxh_round(v4, le64(p + 24));
      p += 32;
    } while (p <= limit);
    acc = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
    acc = xxh_merge(acc, v1);
    acc = xxh_merge(acc, v2);
    acc = xxh_merge(acc, v3);
    acc = xxh_merge(acc, v4);
  } else {
    acc = seed + P5;
  }
  acc += (uint64_t)len;
  for (; end - p >= 8; p += 8) {
    acc ^= xxh_round(0, le64(p));
    acc = rotl64(acc, 27) * P1 + P4;
  }
  if (end - p >= 4) {
    acc ^= le32(p) * P1;
    acc = rotl64(acc, 23) * P2 + P3;
    p += 4;
  }
  for (; p < end; p++) {
    acc ^= (uint64_t)*p * P5;
    acc = rotl64(acc, 11) * P1;
  }
  acc ^= acc >> 33;
  acc *= P2;
  acc ^= acc >> 29;
  acc *= P3;
  acc ^= acc >> 32;
  return acc;
}

int ilb_hash64(uint64_t *hash_out, const void *data, size_t len,
               uint64_t seed) {
  if (!hash_out || (!data && len))
    return ILB_EINVAL;
  *hash_out = ilb__xxh64(len ? data : "", len, seed);
  return 0;
}

/* ---- primes ------------------------------------------------------------- */

int ilb__is_prime(uint32_t x) {
  if (x < 2)
    return 0;
  if (x % 2 == 0)
    return x == 2;
  for (uint32_t d = 3; d <= x / d; d += 2)
    if (x % d == 0)
      return 0;
  return 1;
}

uint32_t ilb__maglev_size(uint32_t opt_m, uint32_t n) {
  if (opt_m != 0 && opt_m >= n)
    return opt_m;
  uint64_t want = (uint64_t)n * 100;
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
  uint32_t n = o->n, step = ilb__horder_stride(o, h), pos = o->rank[home];
  for (uint32_t j = 1; j < n; j++) {
    pos += step;
    if (pos >= n)
      pos -= n;
    const struct ilb__cand *c = &snap->cand[o->order[pos]];
    if (ilb__has_room(c, ilb__load(c)))
      return o->order[pos];
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
