/* Options: one table of bounds and defaults, one setter, one getter.
 * SPDX-License-Identifier: MIT */
#include "core/internal.h"
#include "policy/policy.h"

struct ilb__opt_def {
  int32_t id;
  int64_t min, max, def;
};

static const struct ilb__opt_def opt_defs[] = {
    {ILB_OPT_POLICY, ILB_POLICY_ROUND_ROBIN, ILB_POLICY_P2C, ILB_POLICY_P2C},
    {ILB_OPT_P2C_CHOICES, 2, 16, 2},
    {ILB_OPT_MAX_IN_FLIGHT, 64, 16777216, 65536},
    {ILB_OPT_ALLOW_OVER_CAPACITY, 0, 1, 0},
};

static const struct ilb__opt_def *opt_find(int32_t id) {
  for (size_t i = 0; i < sizeof(opt_defs) / sizeof(opt_defs[0]); i++)
    if (opt_defs[i].id == id)
      return &opt_defs[i];
  return NULL;
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
    return ilb__policy_get((int32_t)(value < INT32_MIN || value > INT32_MAX
                                         ? 0
                                         : value))
               ? 0
               : ILB_EUNKNOWN;
  if (value < d->min || value > d->max)
    return ILB_ERANGE;
  return 0;
}

static _Atomic int64_t *opt_field(const ilb_pool *pool, int32_t option) {
  ilb_pool *p = (ilb_pool *)(uintptr_t)pool;
  switch (option) {
  case ILB_OPT_POLICY:
    return &p->opt_policy;
  case ILB_OPT_P2C_CHOICES:
    return &p->opt_p2c_k;
  case ILB_OPT_MAX_IN_FLIGHT:
    return &p->opt_max_in_flight;
  case ILB_OPT_ALLOW_OVER_CAPACITY:
    return &p->opt_allow_over;
  default:
    return NULL;
  }
}

int ilb_pool_get_option(int64_t *value_out, const ilb_pool *pool,
                        int32_t option) {
  if (!value_out || !pool)
    return ILB_EINVAL;
  _Atomic int64_t *f = opt_field(pool, option);
  if (!f)
    return ILB_EUNKNOWN;
  *value_out = atomic_load_explicit(f, memory_order_relaxed);
  return 0;
}

/* Set from the writer (mutex held, value validated). */
int ilb__opt_store(ilb_pool *pool, int32_t option, int64_t value) {
  _Atomic int64_t *f = opt_field(pool, option);
  if (!f)
    return ILB_EUNKNOWN;
  atomic_store_explicit(f, value, memory_order_relaxed);
  return 0;
}
