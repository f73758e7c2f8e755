/* Shared scaffolding of the API unit tests: an assertion on ILB_* return
 * codes that prints both names, and tracking of open pools so that a failing
 * test (cmocka longjmps out of it) does not also show up as a leak.
 * SPDX-License-Identifier: MIT */
#ifndef INFERLB_TESTS_TESTUTIL_H
#define INFERLB_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <inferlb/inferlb.h>

#define assert_rc(expr, want)                                                \
  do {                                                                       \
    int rc_ = (expr);                                                        \
    int want_ = (want);                                                      \
    if (rc_ != want_)                                                        \
      fail_msg("%s: expected %d (%s), got %d (%s)", #expr, want_,           \
               ilb_err_name(want_), rc_, ilb_err_name(rc_));                 \
  } while (0)

/* Pools still open when a test fails (cmocka longjmps out of it) are freed
 * by the group teardown, so a failure does not also show up as a leak. */
#define MAX_TRACKED 16
static ilb_pool *tracked[MAX_TRACKED];

static inline void track_pool(ilb_pool *pool) {
  for (size_t i = 0; i < MAX_TRACKED; i++) {
    if (tracked[i] == NULL) {
      tracked[i] = pool;
      return;
    }
  }
  fail_msg("too many pools open at once");
}

static inline void free_pool(ilb_pool *pool) {
  for (size_t i = 0; i < MAX_TRACKED; i++)
    if (tracked[i] == pool)
      tracked[i] = NULL;
  ilb_pool_free(pool);
}

static inline int free_leftover_pools(void **state) {
  (void)state;
  for (size_t i = 0; i < MAX_TRACKED; i++) {
    ilb_pool_free(tracked[i]);
    tracked[i] = NULL;
  }
  return 0;
}

/* Add a replica, asserting success. */
static inline void add_replica(ilb_pool *pool, const char *id, uint32_t weight,
                        uint32_t capacity, void *host_data) {
  ilb_replica_spec spec;
  assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
  spec.id = id;
  spec.weight = weight;
  spec.capacity = capacity;
  spec.host_data = host_data;
  assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
}

/* A replica's info, asserting success; poisoned first so unwritten fields
 * show. */
static inline ilb_replica_info get_info(ilb_pool *pool, const char *id) {
  ilb_replica_info info;
  memset(&info, 0x5A, sizeof info);
  info.struct_size = sizeof info;
  assert_rc(ilb_replica_get(&info, pool, id), ILB_OK);
  return info;
}

/* The same check, expected code first (used by the property tests). */
#define CHECK_RC(want, expr)                                                 \
  do {                                                                       \
    int rc_ = (expr);                                                        \
    if (rc_ != (want))                                                       \
      fail_msg("%s = %d (%s), expected %d (%s)", #expr, rc_,                 \
               ilb_err_name(rc_), (int)(want), ilb_err_name(want));          \
  } while (0)

/* Square root without libm: Newton's iteration, plenty for statistical
 * tolerances and reports. */
static inline double sqrt_d(double x) {
  if (x <= 0)
    return 0;
  double r = x > 1 ? x : 1;
  for (int i = 0; i < 200; i++)
    r = 0.5 * (r + x / r);
  return r;
}

/* Every policy, for tests that run over all of them. */
static const int32_t all_policies[] = {
    ILB_POLICY_ROUND_ROBIN,  ILB_POLICY_WEIGHTED_ROUND_ROBIN,
    ILB_POLICY_RANDOM,       ILB_POLICY_WEIGHTED_RANDOM,
    ILB_POLICY_LEAST_CONN,   ILB_POLICY_WEIGHTED_LEAST_REQUEST,
    ILB_POLICY_P2C,          ILB_POLICY_RING,
    ILB_POLICY_MAGLEV,       ILB_POLICY_RENDEZVOUS,
    ILB_POLICY_CHWBL,        ILB_POLICY_COMPOSITE,
    ILB_POLICY_PEAK_EWMA,    ILB_POLICY_LEAST_TOKENS,
    ILB_POLICY_PREFIX,
};
#define N_POLICIES (sizeof(all_policies) / sizeof(all_policies[0]))

#endif
