/* least_tokens: least outstanding work in tokens. Every request in flight
 * carries a token cost (prompt_tokens + output_tokens scaled by
 * ILB_OPT_TOKEN_OUTPUT_PERCENT, or ILB_OPT_TOKEN_DEFAULT_COST without
 * estimates), counted on its replica from pick to completion; the score is
 * (outstanding cost + this request's cost) / weight, so three 8k-token
 * prompts weigh more than four 50-token ones. O(compared candidates).
 * SPDX-License-Identifier: MIT */
#include "policy/score.h"

static double tokens_score(const struct ilb__snap *snap,
                           const struct ilb__sc *c, uint64_t load,
                           const void *arg) {
  (void)snap, (void)load;
  uint64_t t = atomic_load_explicit(&c->slot->tokens, memory_order_relaxed);
  return (double)(t + *(const uint32_t *)arg) * c->k;
}

static uint32_t tokens_choose(const struct ilb__snap *snap,
                              struct ilb__pick_ctx *ctx) {
  uint32_t cost = ilb__req_cost(snap, ctx->req);
  return ilb__score_choose(snap, ctx, tokens_score, &cost);
}

const struct ilb__policy ilb__policy_least_tokens = {
    .id = ILB_POLICY_LEAST_TOKENS,
    .name = "least_tokens",
    .build = ilb__score_build_inv,
    .destroy = ilb__policy_free_state,
    .choose = tokens_choose,
    .costs_all = 1,
    .slow_start = 1,
};
