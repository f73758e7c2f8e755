/* weighted_random: a candidate drawn with probability weight / total, by
 * Walker's alias method (Vose's O(n) construction): O(1) per pick with one
 * 64-bit random draw. SPDX-License-Identifier: MIT */
#include "policy/policy.h"

struct alias_table {
  uint32_t n;
  uint32_t *thresh; /* accept column i when low 32 random bits < thresh */
  uint32_t *alias;  /* else take alias[i]; alias[i] == i when always kept */
};

static int alias_build(void **state, const struct ilb__snap *snap,
                       const struct ilb__alloc *a) {
  uint32_t n = snap->n;
  struct alias_table *t =
      ilb__calloc(a, 1, sizeof(*t) + sizeof(uint32_t) * 2 * (size_t)n);
  /* scratch: scaled probabilities, and a worklist holding small entries
   * from the front and large ones from the back */
  double *q = ilb__calloc(a, n, sizeof(*q));
  uint32_t *work = ilb__calloc(a, n, sizeof(*work));
  if (!t || !q || !work) {
    ilb__free(a, t);
    ilb__free(a, q);
    ilb__free(a, work);
    return ILB_ENOMEM;
  }
  t->n = n;
  t->thresh = (uint32_t *)(void *)(t + 1);
  t->alias = t->thresh + n;
  uint32_t ns = 0, nl = n;
  for (uint32_t i = 0; i < n; i++) {
    q[i] = (double)snap->cand[i].weight * n / (double)snap->total_weight;
    if (q[i] < 1.0)
      work[ns++] = i;
    else
      work[--nl] = i;
  }
  while (ns > 0 && nl < n) {
    uint32_t s = work[--ns], l = work[nl];
    t->thresh[s] = (uint32_t)(q[s] * 4294967296.0);
    t->alias[s] = l;
    q[l] -= 1.0 - q[s];
    if (q[l] < 1.0) {
      nl++;
      work[ns++] = l;
    }
  }
  /* Leftovers are 1.0 up to rounding: always keep their own column. */
  for (uint32_t j = 0; j < ns; j++)
    t->alias[work[j]] = work[j];
  for (uint32_t j = nl; j < n; j++)
    t->alias[work[j]] = work[j];
  ilb__free(a, q);
  ilb__free(a, work);
  *state = t;
  return 0;
}

static uint32_t wr_choose(const struct ilb__snap *snap,
                          struct ilb__pick_ctx *ctx) {
  const struct alias_table *t = snap->pstate;
  uint64_t r = ilb__rand(ctx);
  uint32_t i = ilb__range32((uint32_t)(r >> 32), t->n);
  return t->alias[i] == i || (uint32_t)r < t->thresh[i] ? i : t->alias[i];
}

const struct ilb__policy ilb__policy_weighted_random = {
    .id = ILB_POLICY_WEIGHTED_RANDOM,
    .name = "weighted_random",
    .build = alias_build,
    .destroy = ilb__policy_free_state,
    .choose = wr_choose,
    .slow_start = 1,
};
