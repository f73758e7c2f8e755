/* weighted_round_robin: O(1) per pick, smooth, no burst after a change.
 *
 * When a snapshot is built, the weights are laid out once into a table of L
 * slots in earliest-deadline-first order: the j-th of replica i's m_i slots
 * is due at virtual time (2j + 1) / (2 m_i), and slots are emitted in order
 * of that time (ties by registry order). Every window of the table then holds
 * each replica within about one slot of its exact share. A pick reads
 * table[cursor++] from its thread's cursor: no division, no shared write.
 *
 * The weights are first divided by their greatest common divisor. Then
 * m_i = weight_i when they sum to at most L_MAX: shares are exact. Otherwise
 * m_i = max(1, floor(weight_i * L_MAX / sum)): a replica's share is off by
 * less than one slot, 1 / L, and one of L slots is the least share a replica
 * gets (a weight below sum / L_MAX is rounded up to it). L_MAX =
 * max(65536, 16 n), capped at 2^22 slots (16 MiB); building costs
 * O(L log n) on the writer.
 *
 * After a change the cursor keeps its position in the new (again smooth)
 * table, so there is no burst on the heaviest replica, unlike nginx's smooth
 * WRR, which restarts from zero current weights and is O(n) per pick.
 * SPDX-License-Identifier: MIT */
#include "policy/policy.h"

struct wrr_table {
  uint32_t len;
  uint32_t idx[]; /* candidate index per slot */
};

struct due {
  uint32_t i, j; /* replica i's j-th slot */
};

/* Is x due strictly before y? (2jx+1)/(2mx) < (2jy+1)/(2my), ties by i. */
static inline int before(struct due x, struct due y, const uint32_t *m) {
  uint64_t a = (2 * (uint64_t)x.j + 1) * m[y.i];
  uint64_t b = (2 * (uint64_t)y.j + 1) * m[x.i];
  return a < b || (a == b && x.i < y.i);
}

static void sift_down(struct due *h, uint32_t n, uint32_t k,
                      const uint32_t *m) {
  for (;;) {
    uint32_t l = 2 * k + 1, r = l + 1, s = k;
    if (l < n && before(h[l], h[s], m))
      s = l;
    if (r < n && before(h[r], h[s], m))
      s = r;
    if (s == k)
      return;
    struct due t = h[k];
    h[k] = h[s];
    h[s] = t;
    k = s;
  }
}

static int wrr_build(void **state, const struct ilb__snap *snap,
                     const struct ilb__alloc *a) {
  uint32_t n = snap->n;
  uint64_t lmax = 65536;
  if ((uint64_t)16 * n > lmax)
    lmax = (uint64_t)16 * n;
  if (lmax > (UINT64_C(1) << 22))
    lmax = UINT64_C(1) << 22;
  uint32_t *m = ilb__calloc(a, n, sizeof(*m));
  struct due *h = ilb__calloc(a, n, sizeof(*h));
  if (!m || !h) {
    ilb__free(a, m);
    ilb__free(a, h);
    return ILB_ENOMEM;
  }
  uint64_t g = 0, len = 0;
  for (uint32_t i = 0; i < n; i++)
    for (uint64_t x = snap->cand[i].weight, y; x; x = y)
      y = g % x, g = x; /* Euclid: g = gcd(g, weight) */
  if (g == 0) /* unreachable: n >= 1 and weights >= 1; keeps analyzers calm */
    g = 1;
  uint64_t total = snap->total_weight / g;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t w = snap->cand[i].weight / g;
    if (total > lmax) {
      w = w * lmax / total;
      if (w == 0)
        w = 1;
    }
    m[i] = (uint32_t)w;
    len += w;
  }
  struct wrr_table *t =
      ilb__malloc(a, sizeof(*t) + sizeof(uint32_t) * (size_t)len);
  if (!t) {
    ilb__free(a, m);
    ilb__free(a, h);
    return ILB_ENOMEM;
  }
  t->len = (uint32_t)len;
  for (uint32_t i = 0; i < n; i++)
    h[i] = (struct due){i, 0};
  for (uint32_t k = n / 2; k-- > 0;)
    sift_down(h, n, k, m);
  uint32_t live = n;
  for (uint32_t s = 0; s < t->len; s++) {
    struct due d = h[0];
    t->idx[s] = d.i;
    if (d.j + 1 < m[d.i])
      h[0].j = d.j + 1;
    else
      h[0] = h[--live];
    sift_down(h, live, 0, m);
  }
  ilb__free(a, m);
  ilb__free(a, h);
  *state = t;
  return 0;
}

static uint32_t wrr_choose(const struct ilb__snap *snap,
                           struct ilb__pick_ctx *ctx) {
  const struct wrr_table *t = snap->pstate;
  uint64_t c = atomic_load_explicit(&ctx->stripe->rr, memory_order_relaxed);
  if (ILB__UNLIKELY(c >= t->len))
    c %= t->len;
  atomic_store_explicit(&ctx->stripe->rr, c + 1 == t->len ? 0 : c + 1,
                        memory_order_relaxed);
  return t->idx[c];
}

const struct ilb__policy ilb__policy_weighted_round_robin = {
    .id = ILB_POLICY_WEIGHTED_ROUND_ROBIN,
    .name = "weighted_round_robin",
    .build = wrr_build,
    .destroy = ilb__policy_free_state,
    .choose = wrr_choose,
    .slow_start = 1,
};
