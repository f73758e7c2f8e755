/* The scoring policies' per-snapshot state (see score.h).
 * SPDX-License-Identifier: MIT */
#include "policy/score.h"

static int build(void **state, const struct ilb__snap *snap,
                 const struct ilb__alloc *a, double factor) {
  struct ilb__sc *sc = ilb__calloc(a, snap->n, sizeof(*sc));
  if (!sc)
    return ILB_ENOMEM;
  for (uint32_t i = 0; i < snap->n; i++) {
    const struct ilb__cand *c = &snap->cand[i];
    sc[i].slot = c->slot;
    /* weights published scaled for slow start: per unit of the host's
     * weight, as the telemetry terms are */
    sc[i].k = factor * snap->wscale / c->weight;
    sc[i].capacity = c->capacity;
    sc[i].weight = c->weight;
  }
  *state = sc;
  return 0;
}

int ilb__score_build_inv(void **state, const struct ilb__snap *snap,
                         const struct ilb__alloc *a) {
  return build(state, snap, a, 1.0);
}

int ilb__score_build_queue(void **state, const struct ilb__snap *snap,
                           const struct ilb__alloc *a) {
  return build(state, snap, a, snap->w_queue);
}
