/* least_conn: the candidate with the fewest requests in flight, ignoring
 * weight; ties broken uniformly at random. O(n): a scan, and a partial second
 * scan when there are ties.
 * SPDX-License-Identifier: MIT */
#include "policy/policy.h"

static uint32_t lc_choose(const struct ilb__snap *snap,
                          struct ilb__pick_ctx *ctx) {
  return ilb__scan_least(snap, ctx, 0);
}

const struct ilb__policy ilb__policy_least_conn = {
    .id = ILB_POLICY_LEAST_CONN,
    .name = "least_conn",
    .choose = lc_choose,
};
