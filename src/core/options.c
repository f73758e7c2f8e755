/* Options: one table of bounds and defaults, one setter, one getter.
 * SPDX-License-Identifier: MIT */
#include <stddef.h>

#include "core/internal.h"
#include "policy/consistent.h"
#include "policy/policy.h"

/* Every option once: id, bounds, default and where the pool keeps it. */
struct ilb__opt_def {
  int32_t id;
  int64_t min, max, def;
  size_t field; /* offset of the _Atomic int64_t in struct ilb_pool */
};

#define F(name) offsetof(struct ilb_pool, name)
static const struct ilb__opt_def opt_defs[] = {
    {ILB_OPT_POLICY, ILB_POLICY_ROUND_ROBIN, ILB_POLICY_PREFIX,
     ILB_POLICY_P2C,
     F(opt_policy)},
    /* 16: P2C_MAX in policy/p2c.c */
    {ILB_OPT_P2C_CHOICES, 2, 16, 2, F(opt_p2c_k)},
    {ILB_OPT_MAX_IN_FLIGHT, 64, 16777216, 65536, F(opt_max_in_flight)},
    {ILB_OPT_ALLOW_OVER_CAPACITY, 0, 1, 0, F(opt_allow_over)},
    {ILB_OPT_HASH_NO_KEY, ILB_NO_KEY_LEAST_REQUEST, ILB_NO_KEY_ERROR,
     ILB_NO_KEY_LEAST_REQUEST, F(opt_no_key)},
    {ILB_OPT_RING_VNODES, 1, 1000, 160, F(opt_ring_vnodes)},
    /* ILB__MAGLEV_M_MAX in policy/consistent.h */
    {ILB_OPT_MAGLEV_TABLE_SIZE, 0, 16777213, 65537, F(opt_maglev_m)},
    {ILB_OPT_HASH_BALANCE_FACTOR, 100, 10000, 125, F(opt_balance)},
    {ILB_OPT_TELEMETRY_MAX_AGE_MS, 1, 86400000, 10000, F(opt_tm_max_age_ms)},
    {ILB_OPT_TELEMETRY_ALL_STALE, ILB_ALL_STALE_FAIL_OPEN,
     ILB_ALL_STALE_SATURATED, ILB_ALL_STALE_FAIL_OPEN, F(opt_tm_all_stale)},
    {ILB_OPT_SCORE_QUEUE, 0, 1000000, 400, F(opt_score[0])},
    {ILB_OPT_SCORE_GPU, 0, 1000000, 300, F(opt_score[1])},
    {ILB_OPT_SCORE_KV, 0, 1000000, 200, F(opt_score[2])},
    {ILB_OPT_SCORE_LATENCY, 0, 1000000, 100, F(opt_score[3])},
    {ILB_OPT_SCORE_MEMORY, 0, 1000000, 0, F(opt_score[4])},
    {ILB_OPT_SCAN_MAX, 0, 1048576, 16, F(opt_scan_max)},
    {ILB_OPT_KV_SATURATION_PERCENT, 0, 100, 100, F(opt_kv_sat_pct)},
    {ILB_OPT_GPU_MEMORY_MIN_FREE_MIB, 0, 16777216, 0, F(opt_mem_min_mib)},
    {ILB_OPT_TIE_PERCENT, 0, 100, 2, F(opt_tie_pct)},
    {ILB_OPT_EWMA_DECAY_MS, 1, 3600000, 10000, F(opt_ewma_decay_ms)},
    {ILB_OPT_EWMA_DEFAULT_MS, 1, 3600000, 1000, F(opt_ewma_default_ms)},
    {ILB_OPT_EWMA_PENALTY_MS, 0, 3600000, 10000, F(opt_ewma_penalty_ms)},
    {ILB_OPT_TOKEN_OUTPUT_PERCENT, 0, 100000, 100, F(opt_token_out_pct)},
    {ILB_OPT_TOKEN_DEFAULT_COST, 1, 16777216, 512, F(opt_token_default)},
    /* health and failure handling: opt_h[id - ILB__OPT_H_FIRST] */
    {ILB_OPT_HEALTH_INITIAL, ILB_HEALTH_UNKNOWN, ILB_HEALTH_HEALTHY, ILB_HEALTH_HEALTHY,
     F(opt_h[ILB_OPT_HEALTH_INITIAL - ILB__OPT_H_FIRST])},
    {ILB_OPT_HEALTH_RISE, 1, 1000, 2,
     F(opt_h[ILB_OPT_HEALTH_RISE - ILB__OPT_H_FIRST])},
    {ILB_OPT_HEALTH_FALL, 1, 1000, 3,
     F(opt_h[ILB_OPT_HEALTH_FALL - ILB__OPT_H_FIRST])},
    {ILB_OPT_PROBE_INTERVAL_MS, 0, 86400000, 5000,
     F(opt_h[ILB_OPT_PROBE_INTERVAL_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS, 1, 86400000, 2000,
     F(opt_h[ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_PROBE_INITIAL_DELAY_MS, 0, 86400000, 0,
     F(opt_h[ILB_OPT_PROBE_INITIAL_DELAY_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_PROBE_JITTER_PERCENT, 0, 100, 10,
     F(opt_h[ILB_OPT_PROBE_JITTER_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_SCRAPE_INTERVAL_MS, 0, 86400000, 0,
     F(opt_h[ILB_OPT_SCRAPE_INTERVAL_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_CONSECUTIVE_5XX, 0, 65535, 0,
     F(opt_h[ILB_OPT_OUTLIER_CONSECUTIVE_5XX - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 0, 65535, 0,
     F(opt_h[ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_INTERVAL_MS, 1, 86400000, 10000,
     F(opt_h[ILB_OPT_OUTLIER_INTERVAL_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_BASE_EJECTION_MS, 1, 86400000, 30000,
     F(opt_h[ILB_OPT_OUTLIER_BASE_EJECTION_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_MAX_EJECTION_MS, 1, 86400000, 300000,
     F(opt_h[ILB_OPT_OUTLIER_MAX_EJECTION_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_JITTER_PERCENT, 0, 100, 10,
     F(opt_h[ILB_OPT_OUTLIER_JITTER_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT, 0, 100, 50,
     F(opt_h[ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV, 0, 100000, 0,
     F(opt_h[ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_FAILURE_PERCENT, 0, 100, 0,
     F(opt_h[ILB_OPT_OUTLIER_FAILURE_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_MIN_HOSTS, 1, 1000000, 5,
     F(opt_h[ILB_OPT_OUTLIER_MIN_HOSTS - ILB__OPT_H_FIRST])},
    {ILB_OPT_OUTLIER_REQUEST_VOLUME, 1, 1000000000, 100,
     F(opt_h[ILB_OPT_OUTLIER_REQUEST_VOLUME - ILB__OPT_H_FIRST])},
    {ILB_OPT_PANIC_THRESHOLD_PERCENT, 0, 100, 50,
     F(opt_h[ILB_OPT_PANIC_THRESHOLD_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_SLOW_START_MS, 0, 3600000, 0,
     F(opt_h[ILB_OPT_SLOW_START_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_SLOW_START_AGGRESSION, 1, 100000, 1000,
     F(opt_h[ILB_OPT_SLOW_START_AGGRESSION - ILB__OPT_H_FIRST])},
    {ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT, 1, 100, 10,
     F(opt_h[ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_BREAKER_CONSECUTIVE, 0, 65535, 0,
     F(opt_h[ILB_OPT_BREAKER_CONSECUTIVE - ILB__OPT_H_FIRST])},
    {ILB_OPT_BREAKER_ERROR_PERCENT, 0, 100, 0,
     F(opt_h[ILB_OPT_BREAKER_ERROR_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_BREAKER_MIN_REQUESTS, 1, 1000000000, 20,
     F(opt_h[ILB_OPT_BREAKER_MIN_REQUESTS - ILB__OPT_H_FIRST])},
    {ILB_OPT_BREAKER_WINDOW_MS, 2, 86400000, 10000,
     F(opt_h[ILB_OPT_BREAKER_WINDOW_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_BREAKER_OPEN_MS, 1, 86400000, 30000,
     F(opt_h[ILB_OPT_BREAKER_OPEN_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_BREAKER_HALF_OPEN_MAX, 1, 65535, 1,
     F(opt_h[ILB_OPT_BREAKER_HALF_OPEN_MAX - ILB__OPT_H_FIRST])},
    {ILB_OPT_BREAKER_CLOSE_SUCCESSES, 1, 65535, 3,
     F(opt_h[ILB_OPT_BREAKER_CLOSE_SUCCESSES - ILB__OPT_H_FIRST])},
    {ILB_OPT_POOL_MAX_IN_FLIGHT, 0, 16777216, 0,
     F(opt_h[ILB_OPT_POOL_MAX_IN_FLIGHT - ILB__OPT_H_FIRST])},
    {ILB_OPT_SHED_PERCENT, 1, 100, 80,
     F(opt_h[ILB_OPT_SHED_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_RETRY_AFTER_MS, 1, 3600000, 1000,
     F(opt_h[ILB_OPT_RETRY_AFTER_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_RETRY_ON, 0, 31, ILB_RETRY_ON_CONNECT_ERROR | ILB_RETRY_ON_REFUSED | ILB_RETRY_ON_TIMEOUT,
     F(opt_h[ILB_OPT_RETRY_ON - ILB__OPT_H_FIRST])},
    {ILB_OPT_RETRY_MAX_ATTEMPTS, 1, ILB_RETRY_TRIED_MAX, 2,
     F(opt_h[ILB_OPT_RETRY_MAX_ATTEMPTS - ILB__OPT_H_FIRST])},
    {ILB_OPT_RETRY_BUDGET_PERCENT, 0, 100000, 20,
     F(opt_h[ILB_OPT_RETRY_BUDGET_PERCENT - ILB__OPT_H_FIRST])},
    {ILB_OPT_RETRY_BUDGET_MIN_PER_S, 0, 1000000, 10,
     F(opt_h[ILB_OPT_RETRY_BUDGET_MIN_PER_S - ILB__OPT_H_FIRST])},
    {ILB_OPT_RETRY_BACKOFF_BASE_MS, 0, 3600000, 25,
     F(opt_h[ILB_OPT_RETRY_BACKOFF_BASE_MS - ILB__OPT_H_FIRST])},
    {ILB_OPT_RETRY_BACKOFF_MAX_MS, 0, 3600000, 250,
     F(opt_h[ILB_OPT_RETRY_BACKOFF_MAX_MS - ILB__OPT_H_FIRST])},
#define PFX(id) F(opt_pfx[id - ILB__OPT_PFX_FIRST])
    {ILB_OPT_PREFIX_BLOCK_BYTES, 16, 1048576, 256,
     PFX(ILB_OPT_PREFIX_BLOCK_BYTES)},
    {ILB_OPT_PREFIX_BLOCK_TOKENS, 1, 1048576, 64,
     PFX(ILB_OPT_PREFIX_BLOCK_TOKENS)},
    /* ILB__HBUF in policy/policy.h */
    {ILB_OPT_PREFIX_MAX_BLOCKS, 1, 256, 128, PFX(ILB_OPT_PREFIX_MAX_BLOCKS)},
    {ILB_OPT_PREFIX_TABLE_BLOCKS, 1024, 16777216, 262144,
     PFX(ILB_OPT_PREFIX_TABLE_BLOCKS)},
    {ILB_OPT_PREFIX_REPLICA_TOKENS, 1, INT64_C(1) << 40, 262144,
     PFX(ILB_OPT_PREFIX_REPLICA_TOKENS)},
    {ILB_OPT_PREFIX_MODE, ILB_PREFIX_ROUTED, ILB_PREFIX_EVENTS,
     ILB_PREFIX_ROUTED, PFX(ILB_OPT_PREFIX_MODE)},
    {ILB_OPT_PREFIX_PREFILL_WEIGHT, 0, 100000, 100,
     PFX(ILB_OPT_PREFIX_PREFILL_WEIGHT)},
    {ILB_OPT_PREFIX_LOAD_WEIGHT, 0, 100000, 25,
     PFX(ILB_OPT_PREFIX_LOAD_WEIGHT)},
    {ILB_OPT_PREFIX_QUEUE_WEIGHT, 0, 100000, 100,
     PFX(ILB_OPT_PREFIX_QUEUE_WEIGHT)},
    {ILB_OPT_PREFIX_BOUND_MIN, 0, 16777216, 8, PFX(ILB_OPT_PREFIX_BOUND_MIN)},
#undef PFX
    {ILB_OPT_LOCALITY, 0, 1, 1, F(opt_loc[0])},
    {ILB_OPT_LOCALITY_MIN_HEALTHY_PERCENT, 0, 100, 70, F(opt_loc[1])},
    {ILB_OPT_LOCALITY_SPILL_PERCENT, 100, 100000, 150, F(opt_loc[2])},
#define SC(id) F(opt_scale[id - ILB_OPT_SCALE_TARGET_IN_FLIGHT])
    {ILB_OPT_SCALE_TARGET_IN_FLIGHT, 1, 1000000, 8,
     SC(ILB_OPT_SCALE_TARGET_IN_FLIGHT)},
    {ILB_OPT_SCALE_TARGET_QUEUE, 1, 1000000, 5, SC(ILB_OPT_SCALE_TARGET_QUEUE)},
    {ILB_OPT_SCALE_TARGET_UTILIZATION, 1, 100, 80,
     SC(ILB_OPT_SCALE_TARGET_UTILIZATION)},
    {ILB_OPT_SCALE_UP_WINDOW_MS, 0, 86400000, 60000,
     SC(ILB_OPT_SCALE_UP_WINDOW_MS)},
    {ILB_OPT_SCALE_DOWN_WINDOW_MS, 0, 86400000, 300000,
     SC(ILB_OPT_SCALE_DOWN_WINDOW_MS)},
    {ILB_OPT_SCALE_MIN_REPLICAS, 0, 1000000, 1, SC(ILB_OPT_SCALE_MIN_REPLICAS)},
    {ILB_OPT_SCALE_MAX_REPLICAS, 0, 1000000, 1000000,
     SC(ILB_OPT_SCALE_MAX_REPLICAS)},
#undef SC
    /* router options: no pool field */
    {ILB_OPT_ROUTER_STICKY_ENTRIES, 0, 16777216, 65536, ILB__OPT_ROUTER},
    {ILB_OPT_ROUTER_STICKY_TTL_MS, 1, 604800000, 1800000, ILB__OPT_ROUTER},
    {ILB_OPT_ROUTER_STICKY_BOUND_PERCENT, 100, 100000, 200, ILB__OPT_ROUTER},
    {ILB_OPT_ROUTER_PAIRS_MAX, 64, 16777216, 65536, ILB__OPT_ROUTER},
    {ILB_OPT_ROUTER_RATE_KEYS, 64, 16777216, 65536, ILB__OPT_ROUTER},
};
_Static_assert(ILB_OPT_SCALE_MAX_REPLICAS - ILB_OPT_SCALE_TARGET_IN_FLIGHT + 1 ==
                   ILB__OPT_SCALE_N,
               "one opt_scale entry per autoscaling option");
_Static_assert(ILB__OPT_PFX_N == 10, "one opt_pfx entry per prefix option");
_Static_assert(ILB__HBUF == 256, "ILB_OPT_PREFIX_MAX_BLOCKS's maximum");
_Static_assert(ILB__OPT_H_N == 39, "one opt_h entry per health option");
#undef F
#define N_OPTS (sizeof(opt_defs) / sizeof(opt_defs[0]))

static const struct ilb__opt_def *opt_find(int32_t id) {
  for (size_t i = 0; i < N_OPTS; i++)
    if (opt_defs[i].id == id)
      return &opt_defs[i];
  return NULL;
}

int ilb__opt_is_router(int32_t id) {
  const struct ilb__opt_def *d = opt_find(id);
  return d && d->field == ILB__OPT_ROUTER;
}

/* The option as a pool option: NULL for unknown and router options. */
static const struct ilb__opt_def *pool_opt_find(int32_t id) {
  const struct ilb__opt_def *d = opt_find(id);
  return d && d->field != ILB__OPT_ROUTER ? d : NULL;
}

static _Atomic int64_t *opt_field(const ilb_pool *pool,
                                  const struct ilb__opt_def *d) {
  return (_Atomic int64_t *)(void *)((char *)(uintptr_t)pool + d->field);
}

void ilb__opt_init(struct ilb_pool *pool) {
  for (size_t i = 0; i < N_OPTS; i++)
    if (opt_defs[i].field != ILB__OPT_ROUTER)
      atomic_init(opt_field(pool, &opt_defs[i]), opt_defs[i].def);
}

int ilb_option_bounds(int64_t *min_out, int64_t *max_out, int64_t *default_out,
                      int32_t option) {
  const struct ilb__opt_def *d = opt_find(option);
  if (!d)
    return ILB_EUNKNOWN;
  if (min_out)
    *min_out = d->min;
  if (max_out)
    *max_out = d->max;
  if (default_out)
    *default_out = d->def;
  return 0;
}

int ilb__opt_validate(int32_t option, int64_t value) {
  const struct ilb__opt_def *d = opt_find(option);
  if (!d)
    return ILB_EUNKNOWN;
  if (option == ILB_OPT_POLICY)
    return value >= INT32_MIN && value <= INT32_MAX &&
                   ilb__policy_get((int32_t)value)
               ? 0
               : ILB_EUNKNOWN;
  if (value < d->min || value > d->max)
    return ILB_ERANGE;
  if (option == ILB_OPT_MAGLEV_TABLE_SIZE && value != 0 &&
      (value < 3 || !ilb__is_prime((uint32_t)value)))
    return ILB_ERANGE;
  return 0;
}

int ilb_pool_get_option(int64_t *value_out, const ilb_pool *pool,
                        int32_t option) {
  if (!value_out || !pool)
    return ILB_EINVAL;
  const struct ilb__opt_def *d = pool_opt_find(option);
  if (!d)
    return ILB_EUNKNOWN;
  *value_out = atomic_load_explicit(opt_field(pool, d), memory_order_relaxed);
  return 0;
}

/* Set from the writer (mutex held, value validated). */
int ilb__opt_store(ilb_pool *pool, int32_t option, int64_t value) {
  const struct ilb__opt_def *d = pool_opt_find(option);
  if (!d)
    return ILB_EUNKNOWN;
  atomic_store_explicit(opt_field(pool, d), value, memory_order_relaxed);
  return 0;
}
