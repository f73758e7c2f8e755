/* Shared machinery of the consistent-hashing policies (ring, maglev,
 * rendezvous, chwbl): the key hash (XXH64), replicas in a canonical order
 * (by id bytes, so tables never depend on insertion order), a key-seeded
 * probe order over that canonical order, and the Maglev table.
 * SPDX-License-Identifier: MIT */
#ifndef ILB_POLICY_CONSISTENT_H
#define ILB_POLICY_CONSISTENT_H

#include "policy/policy.h"

/* Primes for the Maglev table size. */
#define ILB__MAGLEV_M_MAX 16777213u /* the largest prime below 2^24 */
#define ILB__MAGLEV_M_MIN_AUTO 65537u
/* The table size for n replicas (see ILB_OPT_MAGLEV_TABLE_SIZE). */
uint32_t ilb__maglev_size(uint32_t opt_m, uint32_t n);

/* Number of distinct probe strides kept per snapshot. */
#define ILB__STEPS 64

/* Candidates in canonical (id) order, for a key's probe order over them
 * (struct ilb__probe): the keys of one full or unavailable replica spread
 * over all the others instead of spilling onto its neighbour. */
struct ilb__horder {
  uint32_t n;
  uint32_t n_steps;
  uint32_t steps[ILB__STEPS];
  uint32_t *order;   /* canonical position -> candidate index */
  uint32_t *rank;    /* candidate index -> canonical position */
};

/* Fill o for snap (allocates order and rank). 0 or ILB_ENOMEM. */
int ilb__horder_build(struct ilb__horder *o, const struct ilb__snap *snap,
                      const struct ilb__alloc *a);
void ilb__horder_free(struct ilb__horder *o, const struct ilb__alloc *a);

/* A key's walk over the candidates other than its home: it starts at a
 * canonical position drawn by the key uniformly among the other n - 1 (a
 * stride alone, coprime with n and so odd for even n, would reach only half
 * of them first) and moves by the key's stride, which visits all n
 * positions once; home is skipped. */
struct ilb__probe {
  uint32_t pos, step, home, left;
};

static inline void ilb__probe_init(struct ilb__probe *pr,
                                   const struct ilb__horder *o, uint32_t home,
                                   uint64_t h) {
  uint64_t x = ilb__mix64(h);
  uint32_t n = o->n, r = o->rank[home];
  pr->home = r;
  pr->step = o->steps[(uint32_t)x % o->n_steps];
  pr->left = n;
  if (n < 2) {
    pr->left = 0;
    return;
  }
  uint32_t start = r + 1 + ilb__range32((uint32_t)(x >> 32), n - 1);
  pr->pos = start >= n ? start - n : start;
}

/* The next candidate index of the walk, or UINT32_MAX when done. */
static inline uint32_t ilb__probe_next(struct ilb__probe *pr,
                                       const struct ilb__horder *o) {
  while (pr->left) {
    uint32_t p = pr->pos, n = o->n;
    pr->left--;
    pr->pos = p + pr->step >= n ? p + pr->step - n : p + pr->step;
    if (p != pr->home)
      return o->order[p];
  }
  return UINT32_MAX;
}

/* First candidate with room in h's order after home (home itself is not
 * tried), or UINT32_MAX when none has room. O(n) at worst. */
uint32_t ilb__horder_next(const struct ilb__horder *o,
                          const struct ilb__snap *snap, uint32_t home,
                          uint64_t h);

/* The key's hash, or the no-key behaviour: returns 1 with *h set when the
 * request has a key; else 0 with *fallback set to the choice to return
 * (p2c's, or ILB__NO_CHOICE with ctx->err = ILB_ENOKEY). */
int ilb__key_hash(const struct ilb__snap *snap, struct ilb__pick_ctx *ctx,
                  uint64_t *h, uint32_t *fallback);

/* Maglev lookup table (Eisenbud et al., NSDI 2016), weighted: entry ->
 * candidate index. */
struct ilb__maglev {
  uint32_t m;      /* prime table size */
  uint32_t *table; /* m entries */
};

int ilb__maglev_build(struct ilb__maglev *t, const struct ilb__snap *snap,
                      const struct ilb__horder *o, const struct ilb__alloc *a);

/* The state of maglev and chwbl: the canonical order and the table. */
struct ilb__maglev_state {
  struct ilb__horder order;
  struct ilb__maglev table;
};
int ilb__maglev_state_build(void **state, const struct ilb__snap *snap,
                            const struct ilb__alloc *a);
void ilb__maglev_state_destroy(void *state, const struct ilb__alloc *a);

/* Entry of key hash h: multiply-shift of the high 32 bits, no division. */
static inline uint32_t ilb__maglev_lookup(const struct ilb__maglev *t,
                                          uint64_t h) {
  return t->table[(uint32_t)(((h >> 32) * (uint64_t)t->m) >> 32)];
}

#endif
