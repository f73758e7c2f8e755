/* peak_ewma: least expected latency (Finagle's and Linkerd's "Peak EWMA").
 * A replica's cost is its latency estimate -- a peak-sensitive EWMA of the
 * latencies ilb_complete() reports, decayed towards 0 since the last one
 * (ILB_OPT_EWMA_DECAY_MS), ILB_OPT_EWMA_DEFAULT_MS before the first --
 * times (in_flight + 1), per unit of weight. Failures count as at least
 * ILB_OPT_EWMA_PENALTY_MS (pick.c), so a replica that fails fast does not
 * look fast. One clock read per pick; O(compared candidates).
 * SPDX-License-Identifier: MIT */
#include "policy/score.h"

static double ewma_score(const struct ilb__snap *snap, const struct ilb__sc *c,
                         uint64_t load, const void *arg) {
  double e = ilb__ewma_now(c->slot, snap->ewma_tau_ns, *(const uint64_t *)arg);
  if (e < 0)
    e = snap->ewma_default_ns;
  return e * (double)(load + 1) * c->k;
}

static uint32_t ewma_choose(const struct ilb__snap *snap,
                            struct ilb__pick_ctx *ctx) {
  uint64_t now = ilb__now_fast(ctx->pool);
  return ilb__score_choose(snap, ctx, ewma_score, &now);
}

const struct ilb__policy ilb__policy_peak_ewma = {
    .id = ILB_POLICY_PEAK_EWMA,
    .name = "peak_ewma",
    .build = ilb__score_build_inv,
    .destroy = ilb__policy_free_state,
    .choose = ewma_choose,
    .slow_start = 1,
};
