/* What the health and prefix suites share: a fake host clock and pools on
 * it, option and range assertions, replica names, picks, outcomes and the
 * pool's status.
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

#define assert_u64(got, want)                                                \
  do {                                                                       \
    uint64_t g_ = (got), w_ = (want);                                        \
    if (g_ != w_)                                                            \
      fail_msg("%s = %llu, expected %llu", #got, (unsigned long long)g_,    \
               (unsigned long long)w_);                                      \
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

/* A pool on the fake clock (reset to T0) with a seed, no log, tracked for
 * teardown; extra: a host to start from (callbacks), or NULL. The policy
 * is set by the caller. */
static inline ilb_pool *fake_pool(uint64_t seed, const ilb_host *extra) {
  set_now(T0);
  ilb_host h;
  if (extra)
    h = *extra;
  else
    assert_rc(ilb_host_init(&h), ILB_OK);
  h.clock_ns = fake_clock;
  h.seed = seed;
  h.log_level = ILB_LOG_NONE;
  ilb_pool *p = NULL;
  assert_rc(ilb_pool_new(&p, &h), ILB_OK);
  assert_non_null(p);
  track_pool(p);
  return p;
}

/* A pick: ILB_OK with *idx = the replica's host_data - 1 and *ticket, or
 * the error (*idx -1, *ticket 0); *retry_after (may be NULL) the result's
 * retry_after_ns. */
static inline int try_pick_after(ilb_pool *p, const ilb_request *req,
                                 int *idx, uint64_t *ticket,
                                 uint64_t *retry_after) {
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  int rc = ilb_pick(&res, p, req);
  *idx = -1;
  if (rc == ILB_OK) {
    assert_true(res.ticket != 0);
    assert_non_null(res.replica_id);
    *idx = (int)((uintptr_t)res.host_data - 1);
  } else {
    assert_true(res.ticket == 0);
  }
  *ticket = res.ticket;
  if (retry_after)
    *retry_after = res.retry_after_ns;
  return rc;
}

static inline int try_pick(ilb_pool *p, const ilb_request *req, int *idx,
                           uint64_t *ticket) {
  return try_pick_after(p, req, idx, ticket, NULL);
}

/* An option's bounds and default are the header's (min, max, def), pool
 * (untouched) holds the default, and one past either end is ILB_ERANGE. */
static inline void assert_option_doc(ilb_pool *pool, int32_t opt, int64_t min,
                                     int64_t max, int64_t def) {
  int64_t mn = -7, mx = -7, df = -7, v = -7;
  assert_rc(ilb_option_bounds(&mn, &mx, &df, opt), ILB_OK);
  if (mn != min || mx != max || df != def)
    fail_msg("option %d: [%lld, %lld] default %lld, header says [%lld, "
             "%lld] default %lld",
             opt, (long long)mn, (long long)mx, (long long)df,
             (long long)min, (long long)max, (long long)def);
  assert_rc(ilb_pool_get_option(&v, pool, opt), ILB_OK);
  assert_int_equal(v, def);
  assert_rc(ilb_pool_set_option(pool, opt, min - 1), ILB_ERANGE);
  assert_rc(ilb_pool_set_option(pool, opt, max + 1), ILB_ERANGE);
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
