/* What the health suite's two files share: a fake host clock, option and
 * range assertions, replica names, outcomes and the pool's status.
 * Include after testutil.h.
 * SPDX-License-Identifier: MIT */
#ifndef INFERLB_TESTS_HEALTHUTIL_H
#define INFERLB_TESTS_HEALTHUTIL_H

#include <stdatomic.h>
#include <stdio.h>

#define MS UINT64_C(1000000)
#define SEC UINT64_C(1000000000)
#define T0 SEC /* the fake clock starts at 1 s */

static _Atomic uint64_t fake_ns = T0;

static inline uint64_t fake_clock(void *user_data) {
  (void)user_data;
  return atomic_load_explicit(&fake_ns, memory_order_relaxed);
}

static inline uint64_t now_ns(void) { return atomic_load(&fake_ns); }
static inline void advance(uint64_t ns) { atomic_fetch_add(&fake_ns, ns); }
static inline void set_now(uint64_t ns) { atomic_store(&fake_ns, ns); }

#define SET_OPT(pool, opt, val)                                              \
  assert_rc(ilb_pool_set_option((pool), (opt), (val)), ILB_OK)

#define assert_in(v, lo, hi)                                                 \
  do {                                                                       \
    long long v_ = (long long)(v);                                           \
    if (v_ < (long long)(lo) || v_ > (long long)(hi))                        \
      fail_msg("%s = %lld, expected in [%lld, %lld]", #v, v_,               \
               (long long)(lo), (long long)(hi));                            \
  } while (0)

/* Replica i is "r<i>". */
static char names[64][16];
static inline const char *rname(int i) {
  assert_true(i >= 0 && i < 64);
  if (!names[i][0])
    snprintf(names[i], sizeof names[i], "r%d", i);
  return names[i];
}

static inline ilb_outcome oc(int32_t status, int32_t http) {
  ilb_outcome o;
  assert_rc(ilb_outcome_init(&o), ILB_OK);
  o.status = status;
  o.http_status = http;
  return o;
}

static inline ilb_pool_status pstat(ilb_pool *p) {
  ilb_pool_status st;
  memset(&st, 0x5A, sizeof st);
  st.struct_size = sizeof st;
  assert_rc(ilb_pool_health(&st, p), ILB_OK);
  assert_int_equal(st.struct_size, sizeof st);
  return st;
}

#endif
