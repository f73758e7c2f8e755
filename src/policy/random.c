/* random: a uniformly random candidate. O(1).
 * SPDX-License-Identifier: MIT */
#include "policy/policy.h"

static uint32_t random_choose(const struct ilb__snap *snap,
                              struct ilb__pick_ctx *ctx) {
  return ilb__range32((uint32_t)(ilb__rand(ctx) >> 32), snap->n);
}

const struct ilb__policy ilb__policy_random = {
    .id = ILB_POLICY_RANDOM,
    .name = "random",
    .choose = random_choose,
};
