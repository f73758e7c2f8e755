/* weighted_least_request: the candidate with the smallest
 * (in_flight + 1) / weight -- the load it would have after taking this
 * request, per unit of weight; ties broken uniformly at random. O(n): a
 * scan, and a partial second scan when there are ties.
 * SPDX-License-Identifier: MIT */
#include "policy/policy.h"

static uint32_t wlr_choose(const struct ilb__snap *snap,
                           struct ilb__pick_ctx *ctx) {
  return ilb__scan_least(snap, ctx, 1);
}

const struct ilb__policy ilb__policy_weighted_least_request = {
    .id = ILB_POLICY_WEIGHTED_LEAST_REQUEST,
    .name = "weighted_least_request",
    .choose = wlr_choose,
    .slow_start = 1,
};
