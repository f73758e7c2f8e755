/* round_robin: each thread cycles over the candidates in registry order,
 * ignoring weights. O(1), no shared write (the cursor is per thread stripe).
 * SPDX-License-Identifier: MIT */
#include "policy/policy.h"

static uint32_t rr_choose(const struct ilb__snap *snap,
                          struct ilb__pick_ctx *ctx) {
  uint64_t c = atomic_load_explicit(&ctx->stripe->rr, memory_order_relaxed);
  if (ILB__UNLIKELY(c >= snap->n))
    c %= snap->n;
  atomic_store_explicit(&ctx->stripe->rr, c + 1 == snap->n ? 0 : c + 1,
                        memory_order_relaxed);
  return (uint32_t)c;
}

const struct ilb__policy ilb__policy_round_robin = {
    .id = ILB_POLICY_ROUND_ROBIN,
    .name = "round_robin",
    .choose = rr_choose,
};
