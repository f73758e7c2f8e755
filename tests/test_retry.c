/*
 * Retries and load shedding (since 0.4), through the public API only:
 *   8. ilb_retry: which outcomes are retried (ILB_OPT_RETRY_ON, table-
 *      driven), the attempt limit, never the same replica twice while
 *      another one has room, a pool of one, backoff bounds, stale tickets,
 *      bad arguments;
 *   9. a retry storm against the retry budget, and the budget's window;
 *  10. load shedding: ILB_OPT_POOL_MAX_IN_FLIGHT, sheddable requests at
 *      ILB_OPT_SHED_PERCENT, retry_after_ns of shed and saturated picks,
 *      bad priorities, 0.3-sized requests.
 * The rest of health and failure handling is in test_health.c.
 *
 * The host clock is fake (fake_ns below); pools are seeded; each test
 * makes its own pool. No assertion depends on wall-clock time.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inferlb/inferlb.h>

#include "testutil.h"
#include "healthutil.h"

#define SEED UINT64_C(0x2e7281e5eed00017)




static ilb_pool *new_pool(int32_t policy) {
  ilb_pool *p = fake_pool(SEED, NULL);
  SET_OPT(p, ILB_OPT_POLICY, policy);
  return p;
}


/* Replica i is "r<i>" with host_data i + 1. */
static void add_n(ilb_pool *p, int n, uint32_t capacity) {
  for (int i = 0; i < n; i++)
    add_replica(p, rname(i), 1, capacity, (void *)(uintptr_t)(i + 1));
}

static int idx_of(void *host_data) { return (int)((uintptr_t)host_data - 1); }


static int pick_idx(ilb_pool *p, const ilb_request *req, uint64_t *ticket) {
  int i = -1;
  assert_rc(try_pick_after(p, req, &i, ticket, NULL), ILB_OK);
  return i;
}



static ilb_retry_result retry(ilb_pool *p, ilb_retry_state *st,
                              const ilb_request *req, uint64_t ticket,
                              const ilb_outcome *o) {
  ilb_retry_result res;
  memset(&res, 0x5A, sizeof res);
  assert_rc(ilb_retry_result_init(&res), ILB_OK);
  assert_rc(ilb_retry(&res, p, st, req, ticket, o), ILB_OK);
  assert_int_equal(res.struct_size, sizeof res);
  if (res.verdict == ILB_RETRY_YES) {
    assert_true(res.ticket != 0);
    assert_non_null(res.replica_id);
    assert_string_equal(res.replica_id, rname(idx_of(res.host_data)));
  } else {
    assert_true(res.ticket == 0);
  }
  return res;
}

/* A budget that never binds. */
static void no_budget_limit(ilb_pool *p) {
  SET_OPT(p, ILB_OPT_RETRY_BUDGET_PERCENT, 100000);
  SET_OPT(p, ILB_OPT_RETRY_BUDGET_MIN_PER_S, 1000000);
}

static void all_done(ilb_pool *p, int n) {
  for (int i = 0; i < n; i++) {
    ilb_replica_info in = get_info(p, rname(i));
    if (in.in_flight != 0)
      fail_msg("r%d: %lld in flight", i, (long long)in.in_flight);
  }
}

/* ------------------------------------------------------------------------ */
/* 8. ilb_retry                                                              */
/* ------------------------------------------------------------------------ */

#define ON_DEFAULT (-1)
#define CE ILB_OUTCOME_CONNECT_ERROR
#define TO ILB_OUTCOME_TIMEOUT
#define REF ILB_OUTCOME_REFUSED
#define HE ILB_OUTCOME_HTTP_ERROR
#define OK ILB_OUTCOME_OK
#define CAN ILB_OUTCOME_CANCELLED
#define NO_OUTCOME (-1)

static const struct {
  int64_t on;
  int32_t status, http;
  int32_t verdict;
} retry_on_cases[] = {
    /* default: gateway failures only */
    {ON_DEFAULT, CE, 0, ILB_RETRY_YES},
    {ON_DEFAULT, REF, 0, ILB_RETRY_YES},
    {ON_DEFAULT, TO, 0, ILB_RETRY_YES},
    {ON_DEFAULT, TO, 503, ILB_RETRY_YES},
    {ON_DEFAULT, HE, 503, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, HE, 0, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, HE, 500, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, OK, 502, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, HE, 429, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, HE, 404, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, OK, 0, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, OK, 200, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, CAN, 0, ILB_RETRY_NOT_RETRYABLE},
    {ON_DEFAULT, NO_OUTCOME, 0, ILB_RETRY_NOT_RETRYABLE},
    /* HTTP errors only */
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, HE, 503, ILB_RETRY_YES},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, HE, 0, ILB_RETRY_YES},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, OK, 500, ILB_RETRY_YES},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, HE, 599, ILB_RETRY_YES},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, HE, 429, ILB_RETRY_YES},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, OK, 429, ILB_RETRY_YES},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, HE, 404, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, CE, 0, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, REF, 0, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, CAN, 503, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_5XX | ILB_RETRY_ON_429, OK, 200, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_5XX, HE, 429, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_429, HE, 503, ILB_RETRY_NOT_RETRYABLE},
    /* one condition at a time */
    {ILB_RETRY_ON_CONNECT_ERROR, CE, 0, ILB_RETRY_YES},
    {ILB_RETRY_ON_CONNECT_ERROR, REF, 0, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_CONNECT_ERROR, TO, 0, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_REFUSED, REF, 0, ILB_RETRY_YES},
    {ILB_RETRY_ON_REFUSED, CE, 0, ILB_RETRY_NOT_RETRYABLE},
    {ILB_RETRY_ON_TIMEOUT, TO, 0, ILB_RETRY_YES},
    {ILB_RETRY_ON_TIMEOUT, CE, 0, ILB_RETRY_NOT_RETRYABLE},
    {0, CE, 0, ILB_RETRY_NOT_RETRYABLE},
    {0, HE, 503, ILB_RETRY_NOT_RETRYABLE},
    {31, HE, 503, ILB_RETRY_YES},
    {31, CE, 0, ILB_RETRY_YES},
    {31, CAN, 0, ILB_RETRY_NOT_RETRYABLE},
};

static void test_retry_on(void **state) {
  (void)state;
  for (size_t c = 0; c < sizeof retry_on_cases / sizeof retry_on_cases[0];
       c++) {
    ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
    no_budget_limit(p);
    if (retry_on_cases[c].on != ON_DEFAULT)
      SET_OPT(p, ILB_OPT_RETRY_ON, retry_on_cases[c].on);
    add_n(p, 3, 0);
    uint64_t t;
    int first = pick_idx(p, NULL, &t);
    ilb_retry_state st;
    assert_rc(ilb_retry_state_init(&st), ILB_OK);
    ilb_outcome o = oc(retry_on_cases[c].status, retry_on_cases[c].http);
    ilb_retry_result r = retry(
        p, &st, NULL, t, retry_on_cases[c].status == NO_OUTCOME ? NULL : &o);
    if (r.verdict != retry_on_cases[c].verdict)
      fail_msg("case %zu: retry_on %lld, status %d http %d: verdict %d, "
               "expected %d",
               c, (long long)retry_on_cases[c].on, retry_on_cases[c].status,
               retry_on_cases[c].http, r.verdict, retry_on_cases[c].verdict);
    /* the attempt was completed either way, with its outcome */
    ilb_replica_info in = get_info(p, rname(first));
    assert_int_equal(in.completed, 1);
    assert_int_equal(st.attempts, r.verdict == ILB_RETRY_YES ? 2 : 1);
    assert_int_equal(pstat(p).retries, r.verdict == ILB_RETRY_YES);
    if (r.verdict == ILB_RETRY_YES) {
      assert_true(idx_of(r.host_data) != first);
      assert_int_equal(get_info(p, rname(idx_of(r.host_data))).in_flight, 1);
      assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
    } else {
      assert_true(r.backoff_ns == 0);
    }
    assert_rc(ilb_complete(p, t, NULL), ILB_ESTALE);
    all_done(p, 3);
    free_pool(p);
  }
}

/* Every failure retried until ILB_OPT_RETRY_MAX_ATTEMPTS attempts, each
 * on a replica not tried before. */
static void test_retry_max_attempts(void **state) {
  (void)state;
  for (int64_t max = 1; max <= ILB_RETRY_TRIED_MAX; max++) {
    ilb_pool *p = new_pool(ILB_POLICY_P2C);
    no_budget_limit(p);
    SET_OPT(p, ILB_OPT_RETRY_MAX_ATTEMPTS, max);
    add_n(p, 10, 0);
    for (int req = 0; req < 20; req++) {
      uint64_t t;
      int seen[10] = {0};
      seen[pick_idx(p, NULL, &t)]++;
      ilb_retry_state st;
      assert_rc(ilb_retry_state_init(&st), ILB_OK);
      assert_int_equal(st.attempts, 1);
      ilb_outcome o = oc(ILB_OUTCOME_REFUSED, 0);
      int yes = 0;
      for (;;) {
        ilb_retry_result r = retry(p, &st, NULL, t, &o);
        if (r.verdict != ILB_RETRY_YES) {
          assert_int_equal(r.verdict, ILB_RETRY_ATTEMPTS);
          break;
        }
        yes++;
        int i = idx_of(r.host_data);
        if (seen[i]++)
          fail_msg("max %lld: attempt %d went to r%d again", (long long)max,
                   yes + 1, i);
        t = r.ticket;
      }
      assert_int_equal(yes, max - 1);
      assert_int_equal(st.attempts, max);
    }
    assert_int_equal(pstat(p).retries, 20 * (max - 1));
    all_done(p, 10);
    free_pool(p);
  }
}

/* A pool of 3 where everything fails: the 3 attempts of a request go to 3
 * distinct replicas, under every policy. */
static void test_retry_distinct_replicas(void **state) {
  (void)state;
  for (size_t k = 0; k < N_POLICIES; k++) {
    ilb_pool *p = new_pool(all_policies[k]);
    no_budget_limit(p);
    SET_OPT(p, ILB_OPT_RETRY_MAX_ATTEMPTS, 3);
    add_n(p, 3, 0);
    for (int n = 0; n < 100; n++) {
      char key[16];
      snprintf(key, sizeof key, "user-%d", n);
      ilb_request req;
      assert_rc(ilb_request_init(&req), ILB_OK);
      req.key = key;
      req.key_len = strlen(key);
      uint64_t t;
      int seen[3] = {0};
      seen[pick_idx(p, &req, &t)]++;
      ilb_retry_state st;
      assert_rc(ilb_retry_state_init(&st), ILB_OK);
      ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
      for (int a = 2; a <= 3; a++) {
        ilb_retry_result r = retry(p, &st, &req, t, &o);
        assert_int_equal(r.verdict, ILB_RETRY_YES);
        int i = idx_of(r.host_data);
        if (seen[i]++)
          fail_msg("%s, request %d: attempt %d on r%d again",
                   ilb_policy_name(all_policies[k]), n, a, i);
        t = r.ticket;
      }
      ilb_retry_result r = retry(p, &st, &req, t, &o);
      assert_int_equal(r.verdict, ILB_RETRY_ATTEMPTS);
    }
    all_done(p, 3);
    free_pool(p);
  }
}

/* With no other replica available (or with room) the retry goes to the
 * same one. */
static void test_retry_same_replica_when_alone(void **state) {
  (void)state;
  /* a pool of 1 */
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  no_budget_limit(p);
  SET_OPT(p, ILB_OPT_RETRY_MAX_ATTEMPTS, 3);
  add_n(p, 1, 0);
  uint64_t t;
  pick_idx(p, NULL, &t);
  ilb_retry_state st;
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  ilb_outcome o = oc(ILB_OUTCOME_TIMEOUT, 0);
  for (int a = 2; a <= 3; a++) {
    ilb_retry_result r = retry(p, &st, NULL, t, &o);
    assert_int_equal(r.verdict, ILB_RETRY_YES);
    assert_string_equal(r.replica_id, "r0");
    t = r.ticket;
  }
  assert_int_equal(retry(p, &st, NULL, t, &o).verdict, ILB_RETRY_ATTEMPTS);
  all_done(p, 1);
  free_pool(p);

  /* the other one full (capacity 1, held) */
  p = new_pool(ILB_POLICY_ROUND_ROBIN);
  no_budget_limit(p);
  add_n(p, 2, 1);
  uint64_t held, t0;
  int a = pick_idx(p, NULL, &t0);
  int b = pick_idx(p, NULL, &held);
  assert_true(a != b);
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  ilb_retry_result r = retry(p, &st, NULL, t0, &o);
  assert_int_equal(r.verdict, ILB_RETRY_YES);
  assert_int_equal(idx_of(r.host_data), a);
  assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
  /* the other one unavailable */
  assert_rc(ilb_complete(p, held, NULL), ILB_OK);
  assert_rc(ilb_replica_set_available(p, rname(b), 0), ILB_OK);
  pick_idx(p, NULL, &t0);
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  r = retry(p, &st, NULL, t0, &o);
  assert_int_equal(r.verdict, ILB_RETRY_YES);
  assert_int_equal(idx_of(r.host_data), a);
  assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
  /* none available at all: NO_REPLICA with the pick's error */
  pick_idx(p, NULL, &t0);
  assert_rc(ilb_replica_set_available(p, rname(a), 0), ILB_OK);
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  r = retry(p, &st, NULL, t0, &o);
  assert_int_equal(r.verdict, ILB_RETRY_NO_REPLICA);
  assert_int_equal(r.error, ILB_ENOREPLICA);
  assert_int_equal(st.attempts, 1);
  assert_int_equal(pstat(p).retries, 2);
  all_done(p, 2);
  free_pool(p);
}

/* Full jitter: the k-th retry waits a random 0..min(max, base * 2^(k-1)). */
static void test_retry_backoff(void **state) {
  (void)state;
  static const struct {
    int64_t base_ms, max_ms;
  } cases[] = {{100, 1000}, {25, 250}, {7, 10000}, {300, 200}, {0, 250},
               {50, 0}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    ilb_pool *p = new_pool(ILB_POLICY_P2C);
    no_budget_limit(p);
    SET_OPT(p, ILB_OPT_RETRY_MAX_ATTEMPTS, ILB_RETRY_TRIED_MAX);
    SET_OPT(p, ILB_OPT_RETRY_BACKOFF_BASE_MS, cases[c].base_ms);
    SET_OPT(p, ILB_OPT_RETRY_BACKOFF_MAX_MS, cases[c].max_ms);
    add_n(p, ILB_RETRY_TRIED_MAX, 0);
    uint64_t lo[ILB_RETRY_TRIED_MAX], hi[ILB_RETRY_TRIED_MAX];
    for (int k = 0; k < ILB_RETRY_TRIED_MAX; k++) {
      lo[k] = UINT64_MAX;
      hi[k] = 0;
    }
    for (int n = 0; n < 300; n++) {
      advance(MS);
      uint64_t t;
      pick_idx(p, NULL, &t);
      ilb_retry_state st;
      assert_rc(ilb_retry_state_init(&st), ILB_OK);
      ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
      for (int k = 1;; k++) {
        ilb_retry_result r = retry(p, &st, NULL, t, &o);
        if (r.verdict != ILB_RETRY_YES)
          break;
        uint64_t b = (uint64_t)cases[c].base_ms * MS << (k - 1);
        uint64_t bound = (uint64_t)cases[c].max_ms * MS;
        bound = b < bound ? b : bound;
        if (r.backoff_ns > bound)
          fail_msg("base %lld max %lld, retry %d: backoff %llu ns > %llu",
                   (long long)cases[c].base_ms, (long long)cases[c].max_ms,
                   k, (unsigned long long)r.backoff_ns,
                   (unsigned long long)bound);
        lo[k] = r.backoff_ns < lo[k] ? r.backoff_ns : lo[k];
        hi[k] = r.backoff_ns > hi[k] ? r.backoff_ns : hi[k];
        t = r.ticket;
      }
    }
    /* the range is used: jittered over [0, bound] */
    for (int k = 1; k < ILB_RETRY_TRIED_MAX; k++) {
      uint64_t b = (uint64_t)cases[c].base_ms * MS << (k - 1);
      uint64_t bound = (uint64_t)cases[c].max_ms * MS;
      bound = b < bound ? b : bound;
      if (bound == 0) {
        assert_true(hi[k] == 0);
        continue;
      }
      assert_true(lo[k] < bound / 4);
      assert_true(hi[k] > bound / 4 * 3);
    }
    all_done(p, ILB_RETRY_TRIED_MAX);
    free_pool(p);
  }
}

/* A completed (or unknown) ticket: ILB_ESTALE, and nothing else happens. */
static void test_retry_stale(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  no_budget_limit(p);
  add_n(p, 2, 0);
  uint64_t t;
  int i = pick_idx(p, NULL, &t);
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  ilb_retry_state st, st0;
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  memcpy(&st0, &st, sizeof st);
  ilb_retry_result res, res0;
  memset(&res, 0x5A, sizeof res);
  res.struct_size = sizeof res;
  memcpy(&res0, &res, sizeof res);
  ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_rc(ilb_retry(&res, p, &st, NULL, t, &o), ILB_ESTALE);
  assert_rc(ilb_retry(&res, p, &st, NULL, 0, &o), ILB_ESTALE);
  assert_rc(ilb_retry(&res, p, &st, NULL, UINT64_MAX, &o), ILB_ESTALE);
  assert_memory_equal(&st, &st0, sizeof st);
  assert_memory_equal(&res, &res0, sizeof res);
  ilb_replica_info in = get_info(p, rname(i));
  assert_int_equal(in.completed, 1);
  assert_int_equal(in.failed, 0);
  assert_int_equal(in.errors, 0);
  ilb_pool_status ps = pstat(p);
  assert_int_equal(ps.retries, 0);
  assert_int_equal(ps.in_flight, 0);
  /* a ticket already passed to ilb_retry is completed */
  i = pick_idx(p, NULL, &t);
  ilb_retry_result r = retry(p, &st, NULL, t, &o);
  assert_int_equal(r.verdict, ILB_RETRY_YES);
  memcpy(&st0, &st, sizeof st);
  assert_rc(ilb_retry(&res, p, &st, NULL, t, &o), ILB_ESTALE);
  assert_memory_equal(&st, &st0, sizeof st);
  assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
  all_done(p, 2);
  free_pool(p);
}

static void test_retry_args(void **state) {
  (void)state;
  assert_rc(ilb_retry_state_init(NULL), ILB_EINVAL);
  assert_rc(ilb_retry_result_init(NULL), ILB_EINVAL);
  ilb_retry_state st;
  memset(&st, 0x5A, sizeof st);
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  assert_int_equal(st.struct_size, sizeof st);
  assert_int_equal(st.attempts, 1);
  ilb_retry_result res;
  memset(&res, 0x5A, sizeof res);
  assert_rc(ilb_retry_result_init(&res), ILB_OK);
  assert_int_equal(res.struct_size, sizeof res);
  assert_true(res.ticket == 0 && res.backoff_ns == 0 && res.verdict == 0 &&
              res.replica_id == NULL);

  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  no_budget_limit(p);
  add_n(p, 2, 0);
  uint64_t t;
  int i = pick_idx(p, NULL, &t);
  ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_rc(ilb_retry(NULL, p, &st, NULL, t, &o), ILB_EINVAL);
  assert_rc(ilb_retry(&res, NULL, &st, NULL, t, &o), ILB_EINVAL);
  assert_rc(ilb_retry(&res, p, NULL, NULL, t, &o), ILB_EINVAL);
  res.struct_size = 0;
  assert_rc(ilb_retry(&res, p, &st, NULL, t, &o), ILB_ESIZE);
  res.struct_size = sizeof res;
  st.struct_size = sizeof st - 8;
  assert_rc(ilb_retry(&res, p, &st, NULL, t, &o), ILB_ESIZE);
  st.struct_size = sizeof st;
  ilb_outcome bad = oc(99, 0);
  assert_rc(ilb_retry(&res, p, &st, NULL, t, &bad), ILB_EINVAL);
  bad = oc(ILB_OUTCOME_HTTP_ERROR, 600);
  assert_rc(ilb_retry(&res, p, &st, NULL, t, &bad), ILB_EINVAL);
  bad = oc(ILB_OUTCOME_HTTP_ERROR, 99);
  assert_rc(ilb_retry(&res, p, &st, NULL, t, &bad), ILB_EINVAL);
  /* nothing happened so far: the ticket is still out, on the same replica */
  ilb_replica_info in = get_info(p, rname(i));
  assert_int_equal(in.in_flight, 1);
  assert_int_equal(in.completed, 0);
  assert_int_equal(st.attempts, 1);
  assert_int_equal(pstat(p).retries, 0);
  /* and it can still be retried, once */
  ilb_retry_result r = retry(p, &st, NULL, t, &o);
  assert_int_equal(r.verdict, ILB_RETRY_YES);
  assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
  all_done(p, 2);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 9. Retry budget                                                           */
/* ------------------------------------------------------------------------ */

/* 2000 requests on 4 replicas that all fail, each retried until the
 * verdict is not YES: with MIN_PER_S 0 and 20%, the retries granted are at
 * most 20% of the requests, and the budget is used (at least 15%). */
static void test_retry_storm(void **state) {
  (void)state;
  static const struct {
    int64_t pct, max_attempts;
  } cases[] = {{20, 8}, {20, 2}, {50, 3}, {5, 8}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    ilb_pool *p = new_pool(ILB_POLICY_P2C);
    SET_OPT(p, ILB_OPT_RETRY_BUDGET_MIN_PER_S, 0);
    SET_OPT(p, ILB_OPT_RETRY_BUDGET_PERCENT, cases[c].pct);
    SET_OPT(p, ILB_OPT_RETRY_MAX_ATTEMPTS, cases[c].max_attempts);
    add_n(p, 4, 0);
    const int n = 2000;
    uint64_t yes = 0, budget = 0, attempts = 0;
    for (int k = 0; k < n; k++) {
      advance(MS); /* 2 s in all: one budget window */
      uint64_t t;
      pick_idx(p, NULL, &t);
      ilb_retry_state st;
      assert_rc(ilb_retry_state_init(&st), ILB_OK);
      ilb_outcome o = oc(k % 2 ? ILB_OUTCOME_CONNECT_ERROR
                               : ILB_OUTCOME_REFUSED,
                         0);
      for (;;) {
        ilb_retry_result r = retry(p, &st, NULL, t, &o);
        if (r.verdict == ILB_RETRY_BUDGET)
          budget++;
        if (r.verdict == ILB_RETRY_ATTEMPTS)
          attempts++;
        if (r.verdict != ILB_RETRY_YES) {
          assert_true(r.verdict == ILB_RETRY_BUDGET ||
                      r.verdict == ILB_RETRY_ATTEMPTS);
          break;
        }
        yes++;
        t = r.ticket;
      }
    }
    uint64_t allowed = (uint64_t)n * (uint64_t)cases[c].pct / 100;
    if (yes > allowed + 2 || yes * 100 < allowed * 75)
      fail_msg("%lld%%, %lld attempts: %llu retries for %d requests, "
               "budget %llu",
               (long long)cases[c].pct, (long long)cases[c].max_attempts,
               (unsigned long long)yes, n, (unsigned long long)allowed);
    assert_true(budget > 0);
    ilb_pool_status ps = pstat(p);
    assert_int_equal(ps.retries, yes);
    assert_int_equal(ps.retries_denied_budget, budget);
    assert_int_equal(ps.in_flight, 0);
    uint64_t completed = 0;
    for (int i = 0; i < 4; i++)
      completed += get_info(p, rname(i)).completed;
    assert_int_equal(completed, (uint64_t)n + yes);
    free_pool(p);
  }
}

/* ILB_OPT_RETRY_BUDGET_MIN_PER_S: that many retries per second of the 10 s
 * window even without requests to take a percentage of; the window
 * slides. */
static void test_retry_budget_min_per_s(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  SET_OPT(p, ILB_OPT_RETRY_BUDGET_PERCENT, 0);
  SET_OPT(p, ILB_OPT_RETRY_BUDGET_MIN_PER_S, 2);
  add_n(p, 3, 0);
  for (int round = 0; round < 3; round++) {
    uint64_t yes = 0, no = 0;
    for (int k = 0; k < 40; k++) {
      uint64_t t;
      pick_idx(p, NULL, &t);
      ilb_retry_state st;
      assert_rc(ilb_retry_state_init(&st), ILB_OK);
      ilb_outcome o = oc(ILB_OUTCOME_TIMEOUT, 0);
      ilb_retry_result r = retry(p, &st, NULL, t, &o);
      if (r.verdict == ILB_RETRY_YES) {
        yes++;
        assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
      } else {
        assert_int_equal(r.verdict, ILB_RETRY_BUDGET);
        no++;
      }
    }
    assert_int_equal(yes, 20); /* 2 per second over 10 s */
    assert_int_equal(no, 20);
    advance(12 * SEC); /* the window has moved on */
  }
  assert_int_equal(pstat(p).retries_denied_budget, 60);
  free_pool(p);
}

/* The budget is a percentage of the requests of the last 10 s: after 1000
 * requests that went well, the first failure may be retried (20% of 1000
 * is 200), also with MIN_PER_S 0. */
static void test_retry_budget_counts_earlier_requests(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  SET_OPT(p, ILB_OPT_RETRY_BUDGET_MIN_PER_S, 0);
  SET_OPT(p, ILB_OPT_RETRY_BUDGET_PERCENT, 20);
  add_n(p, 3, 0);
  for (int k = 0; k < 1000; k++) {
    advance(5 * MS);
    uint64_t t;
    pick_idx(p, NULL, &t);
    assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  }
  uint64_t t;
  pick_idx(p, NULL, &t);
  ilb_retry_state st;
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  ilb_retry_result r = retry(p, &st, NULL, t, &o);
  if (r.verdict != ILB_RETRY_YES)
    fail_msg("first retry after 1000 requests in the last 5 s (budget 20%%, "
             "min 0/s): verdict %d, expected YES (%d)",
             r.verdict, ILB_RETRY_YES);
  assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
  free_pool(p);
}

/* The window slides over the requests too: requests more than 10 s old
 * no longer pay for retries. A host calling ilb_next_due every second. */
static void test_retry_budget_window_slides(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  SET_OPT(p, ILB_OPT_RETRY_BUDGET_MIN_PER_S, 0);
  SET_OPT(p, ILB_OPT_RETRY_BUDGET_PERCENT, 20);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  add_n(p, 3, 0);
  size_t n;
  assert_rc(ilb_next_due(NULL, 0, 0, &n, NULL, p), ILB_OK);
  for (int k = 0; k < 1000; k++) {
    advance(MS);
    uint64_t t;
    pick_idx(p, NULL, &t);
    assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  }
  for (int sec = 0; sec < 20; sec++) {
    advance(SEC);
    assert_rc(ilb_next_due(NULL, 0, 0, &n, NULL, p), ILB_OK);
  }
  ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  uint64_t t;
  pick_idx(p, NULL, &t);
  ilb_retry_state st;
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  ilb_retry_result r = retry(p, &st, NULL, t, &o);
  if (r.verdict != ILB_RETRY_BUDGET)
    fail_msg("1000 requests 20 s ago, none since: verdict %d, expected the "
             "budget (%d)",
             r.verdict, ILB_RETRY_BUDGET);
  /* 200 fresh requests over 2 s: about 40 retries */
  for (int k = 0; k < 200; k++) {
    advance(10 * MS);
    if (k % 100 == 99)
      assert_rc(ilb_next_due(NULL, 0, 0, &n, NULL, p), ILB_OK);
    pick_idx(p, NULL, &t);
    assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  }
  int yes = 0;
  for (int k = 0; k < 100; k++) {
    pick_idx(p, NULL, &t);
    assert_rc(ilb_retry_state_init(&st), ILB_OK);
    r = retry(p, &st, NULL, t, &o);
    if (r.verdict == ILB_RETRY_YES) {
      yes++;
      assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
    } else {
      assert_int_equal(r.verdict, ILB_RETRY_BUDGET);
    }
  }
  assert_in(yes, 30, 65); /* 20% of 200 to 300 requests */
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 10. Load shedding                                                         */
/* ------------------------------------------------------------------------ */

static ilb_request prio(int32_t priority) {
  ilb_request req;
  assert_rc(ilb_request_init(&req), ILB_OK);
  assert_int_equal(req.priority, ILB_PRIORITY_CRITICAL);
  req.priority = priority;
  return req;
}

static void test_shed_pool_limit(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 10);
  add_n(p, 3, 0);
  ilb_request crit = prio(ILB_PRIORITY_CRITICAL);
  uint64_t held[10];
  for (int k = 0; k < 10; k++) {
    int i;
    assert_rc(try_pick_after(p, k % 2 ? &crit : NULL, &i, &held[k], NULL), ILB_OK);
  }
  for (int k = 0; k < 3; k++) {
    int i;
    uint64_t t, after;
    assert_rc(try_pick_after(p, k % 2 ? &crit : NULL, &i, &t, &after), ILB_ESHED);
    assert_true(after > 0);
  }
  ilb_pool_status ps = pstat(p);
  assert_int_equal(ps.shed, 3);
  assert_int_equal(ps.in_flight, 10);
  /* completing frees room, one request's worth */
  assert_rc(ilb_complete(p, held[0], NULL), ILB_OK);
  int i;
  uint64_t t;
  assert_rc(try_pick_after(p, NULL, &i, &held[0], NULL), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &t, NULL), ILB_ESHED);
  /* failures and cancellations free room too */
  ilb_outcome o = oc(ILB_OUTCOME_CANCELLED, 0);
  assert_rc(ilb_complete(p, held[1], &o), ILB_OK);
  o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_rc(ilb_complete(p, held[2], &o), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &held[1], NULL), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &held[2], NULL), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &t, NULL), ILB_ESHED);
  assert_int_equal(pstat(p).shed, 5);
  /* raising the limit, and 0 = none */
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 11);
  assert_rc(try_pick_after(p, NULL, &i, &t, NULL), ILB_OK);
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 0);
  uint64_t more[20];
  for (int k = 0; k < 20; k++)
    assert_rc(try_pick_after(p, NULL, &i, &more[k], NULL), ILB_OK);
  for (int k = 0; k < 20; k++)
    assert_rc(ilb_complete(p, more[k], NULL), ILB_OK);
  for (int k = 0; k < 10; k++)
    assert_rc(ilb_complete(p, held[k], NULL), ILB_OK);
  all_done(p, 3);
  assert_int_equal(pstat(p).shed, 5);
  free_pool(p);
}

/* Sheddable requests stop at SHED_PERCENT of the limit, critical ones
 * keep the rest. */
static const struct {
  int64_t max, pct;
  int sheddable_room; /* sheddable requests that pass in an idle pool */
} shed_cases[] = {
    {10, 50, 5}, {10, 80, 8}, {10, 100, 10}, {200, 1, 2}, {4, 25, 1},
    {1, 100, 1}, {100, 37, 37},
};

static void run_shed_case(int64_t max, int64_t pct, int room) {
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, max);
  SET_OPT(p, ILB_OPT_SHED_PERCENT, pct);
  add_n(p, 4, 0);
  ilb_request shed = prio(ILB_PRIORITY_SHEDDABLE);
  uint64_t *held = calloc((size_t)max + 1, sizeof *held);
  assert_non_null(held);
  int n = 0, i;
  uint64_t t, after;
  for (;;) {
    int rc = try_pick_after(p, &shed, &i, &t, &after);
    if (rc != ILB_OK) {
      assert_rc(rc, ILB_ESHED);
      assert_true(after > 0);
      break;
    }
    assert_true(n < max);
    held[n++] = t;
  }
  if (n != room) {
    free(held);
    fail_msg("limit %lld, shed at %lld%%: %d sheddable requests passed, "
             "expected %d (shed once %lld%% of %lld are in flight)",
             (long long)max, (long long)pct, n, room, (long long)pct,
             (long long)max);
  }
  /* critical requests still pass, up to the limit */
  while (n < max) {
    assert_rc(try_pick_after(p, NULL, &i, &held[n], NULL), ILB_OK);
    n++;
  }
  assert_rc(try_pick_after(p, NULL, &i, &t, NULL), ILB_ESHED);
  assert_rc(try_pick_after(p, &shed, &i, &t, NULL), ILB_ESHED);
  /* below the sheddable limit again: sheddable ones pass */
  for (int k = room - 1; k < n; k++)
    assert_rc(ilb_complete(p, held[k], NULL), ILB_OK);
  n = room - 1;
  if (room > 0) {
    assert_rc(try_pick_after(p, &shed, &i, &held[n], NULL), ILB_OK);
    n++;
    assert_rc(try_pick_after(p, &shed, &i, &t, NULL), ILB_ESHED);
  }
  for (int k = 0; k < n; k++)
    assert_rc(ilb_complete(p, held[k], NULL), ILB_OK);
  free(held);
  all_done(p, 4);
  free_pool(p);
}

static void test_shed_sheddable(void **state) {
  (void)state;
  for (size_t c = 0; c < sizeof shed_cases / sizeof shed_cases[0]; c++)
    run_shed_case(shed_cases[c].max, shed_cases[c].pct,
                  shed_cases[c].sheddable_room);
}

/* Never back to a tried replica while another has room, also when the
 * policy's own choice is full and the pick moves on to one with room. */
static void test_retry_avoids_tried_when_choice_full(void **state) {
  (void)state;
  const int32_t pols[] = {ILB_POLICY_RANDOM, ILB_POLICY_ROUND_ROBIN,
                          ILB_POLICY_P2C};
  for (size_t k = 0; k < sizeof pols / sizeof pols[0]; k++) {
    ilb_pool *p = new_pool(pols[k]);
    SET_OPT(p, ILB_OPT_RETRY_MAX_ATTEMPTS, 2);
    SET_OPT(p, ILB_OPT_RETRY_BUDGET_MIN_PER_S, 1000000);
    add_replica(p, rname(0), 1, 0, (void *)(uintptr_t)1);
    add_replica(p, rname(1), 1, 1, (void *)(uintptr_t)2); /* kept full */
    add_replica(p, rname(2), 1, 0, (void *)(uintptr_t)3);
    uint64_t hold;
    int i;
    do {
      assert_rc(try_pick_after(p, NULL, &i, &hold, NULL), ILB_OK);
      if (i != 1)
        assert_rc(ilb_complete(p, hold, NULL), ILB_OK);
    } while (i != 1);
    ilb_outcome refused = oc(ILB_OUTCOME_REFUSED, 0);
    for (int n = 0; n < 500; n++) {
      uint64_t t;
      assert_rc(try_pick_after(p, NULL, &i, &t, NULL), ILB_OK);
      assert_true(i != 1);
      ilb_retry_state st;
      assert_rc(ilb_retry_state_init(&st), ILB_OK);
      ilb_retry_result r = retry(p, &st, NULL, t, &refused);
      assert_int_equal(r.verdict, ILB_RETRY_YES);
      int j = idx_of(r.host_data);
      if (j == i)
        fail_msg("%s: retry back on r%d while r%d had room",
                 ilb_policy_name(pols[k]), i, i == 0 ? 2 : 0);
      assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
    }
    assert_rc(ilb_complete(p, hold, NULL), ILB_OK);
    free_pool(p);
  }
}

/* composite: when every replica is saturated (KV cache full), a sheddable
 * request is shed with a retry-after hint; a critical one still goes to
 * the best of them (fail open); once one replica has room again, both
 * pass. */
static void test_shed_saturated_composite(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE);
  add_n(p, 3, 0);
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  t.present = ILB_SIGNAL_BIT(ILB_SIGNAL_KV_CACHE_USAGE);
  t.kv_cache_usage = 1.0;
  for (int i = 0; i < 3; i++)
    assert_rc(ilb_replica_report(p, rname(i), &t), ILB_OK);
  ilb_request shed, crit;
  assert_rc(ilb_request_init(&shed), ILB_OK);
  assert_rc(ilb_request_init(&crit), ILB_OK);
  shed.priority = ILB_PRIORITY_SHEDDABLE;
  int i;
  uint64_t tk, after = 0;
  assert_rc(try_pick_after(p, &shed, &i, &tk, &after), ILB_ESHED);
  assert_true(after > 0);
  assert_rc(try_pick_after(p, &crit, &i, &tk, NULL), ILB_OK);
  assert_rc(ilb_complete(p, tk, NULL), ILB_OK);
  assert_int_equal(pstat(p).shed, 1);
  /* r1 has room again: the sheddable request goes there */
  t.kv_cache_usage = 0.5;
  assert_rc(ilb_replica_report(p, rname(1), &t), ILB_OK);
  for (int k = 0; k < 10; k++) {
    assert_rc(try_pick_after(p, &shed, &i, &tk, NULL), ILB_OK);
    assert_int_equal(i, 1);
    assert_rc(ilb_complete(p, tk, NULL), ILB_OK);
  }
  free_pool(p);
}

/* "Shed once the pool holds this percentage of the limit", with a
 * percentage that is not a whole number of requests: 1% of 3 is 0.03, so
 * an idle pool (0 in flight) takes one sheddable request. */
static void test_shed_percent_small_pool(void **state) {
  (void)state;
  run_shed_case(3, 1, 1);
}

/* The same: 85% of 10 is 8.5, so sheddable requests are shed from 9 in
 * flight on, not from 8. */
static void test_shed_percent_not_whole(void **state) {
  (void)state;
  run_shed_case(10, 85, 9);
}

/* All replicas at capacity: ILB_ESATURATED with a retry-after; the hint
 * is RETRY_AFTER_MS (plus up to 50%) without latency estimates, and the
 * soonest expected completion with them. */
static void test_saturated_retry_after(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  SET_OPT(p, ILB_OPT_RETRY_AFTER_MS, 400);
  add_n(p, 2, 1);
  uint64_t a, b, t, after;
  int i;
  assert_rc(try_pick_after(p, NULL, &i, &a, NULL), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &b, NULL), ILB_OK);
  for (int k = 0; k < 50; k++) {
    assert_rc(try_pick_after(p, NULL, &i, &t, &after), ILB_ESATURATED);
    assert_in(after, 400 * MS, 600 * MS);
  }
  assert_int_equal(pstat(p).shed, 0);
  /* latency estimates of 200 ms, one request in flight on each */
  ilb_outcome o = oc(ILB_OUTCOME_OK, 200);
  o.latency_ns = 200 * MS;
  assert_rc(ilb_complete(p, a, &o), ILB_OK);
  assert_rc(ilb_complete(p, b, &o), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &a, NULL), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &b, NULL), ILB_OK);
  for (int k = 0; k < 50; k++) {
    assert_rc(try_pick_after(p, NULL, &i, &t, &after), ILB_ESATURATED);
    assert_in(after, 200 * MS, 300 * MS);
  }
  /* the same hint for a shed pick */
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 2);
  assert_rc(try_pick_after(p, NULL, &i, &t, &after), ILB_ESATURATED);
  assert_true(after > 0);
  free_pool(p);
  p = new_pool(ILB_POLICY_P2C);
  SET_OPT(p, ILB_OPT_RETRY_AFTER_MS, 400);
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 1);
  add_n(p, 2, 0);
  assert_rc(try_pick_after(p, NULL, &i, &a, NULL), ILB_OK);
  for (int k = 0; k < 50; k++) {
    assert_rc(try_pick_after(p, NULL, &i, &t, &after), ILB_ESHED);
    assert_in(after, 400 * MS, 600 * MS);
  }
  assert_rc(ilb_complete(p, a, NULL), ILB_OK);
  assert_int_equal(pstat(p).shed, 50);
  free_pool(p);
}

/* Unknown priority or reserved0 != 0: EINVAL, nothing counted. A
 * 0.3-sized request (no priority field) is accepted as critical. */
static void test_request_priority_args(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 2);
  SET_OPT(p, ILB_OPT_SHED_PERCENT, 50);
  add_n(p, 2, 0);
  int i;
  uint64_t t, t2;
  static const int32_t bad[] = {2, -1, 1000, INT32_MIN, INT32_MAX};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    ilb_request req = prio(bad[k]);
    assert_rc(try_pick_after(p, &req, &i, &t, NULL), ILB_EINVAL);
  }
  ilb_request req = prio(ILB_PRIORITY_CRITICAL);
  req.reserved0 = 1;
  assert_rc(try_pick_after(p, &req, &i, &t, NULL), ILB_EINVAL);
  ilb_pool_status ps = pstat(p);
  assert_int_equal(ps.in_flight, 0);
  assert_int_equal(ps.shed, 0);
  /* 0.3-sized: whatever lies past its end is not read; critical */
  req = prio(ILB_PRIORITY_SHEDDABLE);
  req.reserved0 = 99;
  req.struct_size = offsetof(ilb_request, priority);
  assert_rc(try_pick_after(p, &req, &i, &t, NULL), ILB_OK);
  assert_rc(try_pick_after(p, &req, &i, &t2, NULL), ILB_OK); /* past 50% of 2 */
  uint64_t t3;
  assert_rc(try_pick_after(p, &req, &i, &t3, NULL), ILB_ESHED); /* at the limit */
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  assert_rc(ilb_complete(p, t2, NULL), ILB_OK);
  /* a sheddable request of today's size is shed at 1 of 2 */
  ilb_request sh = prio(ILB_PRIORITY_SHEDDABLE);
  assert_rc(try_pick_after(p, &sh, &i, &t, NULL), ILB_OK);
  assert_rc(try_pick_after(p, &sh, &i, &t2, NULL), ILB_ESHED);
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  /* other odd sizes are still ESIZE */
  req = prio(ILB_PRIORITY_CRITICAL);
  req.struct_size = offsetof(ilb_request, priority) + 4;
  assert_rc(try_pick_after(p, &req, &i, &t, NULL), ILB_ESIZE);
  req.struct_size = offsetof(ilb_request, priority) - 8;
  assert_rc(try_pick_after(p, &req, &i, &t, NULL), ILB_ESIZE);
  assert_int_equal(pstat(p).in_flight, 0);
  free_pool(p);
}

/* Shedding and retries together. */
static void test_retry_shed(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  no_budget_limit(p);
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 2);
  add_n(p, 3, 0);
  uint64_t a, b, c;
  int i;
  assert_rc(try_pick_after(p, NULL, &i, &a, NULL), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &b, NULL), ILB_OK);
  assert_rc(try_pick_after(p, NULL, &i, &c, NULL), ILB_ESHED);
  /* the pool is full, but the retry first completes its own attempt */
  ilb_retry_state st;
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  ilb_retry_result r = retry(p, &st, NULL, a, &o);
  assert_int_equal(r.verdict, ILB_RETRY_YES);
  assert_int_equal(pstat(p).in_flight, 2);
  assert_rc(try_pick_after(p, NULL, &i, &c, NULL), ILB_ESHED);
  assert_rc(ilb_complete(p, r.ticket, NULL), ILB_OK);
  assert_rc(ilb_complete(p, b, NULL), ILB_OK);
  all_done(p, 3);
  free_pool(p);

  /* a retry whose pick is shed: NO_REPLICA, error ILB_ESHED, backoff =
   * the pick's retry-after; the attempt is not counted */
  p = new_pool(ILB_POLICY_P2C);
  no_budget_limit(p);
  add_n(p, 2, 0);
  assert_rc(try_pick_after(p, NULL, &i, &a, NULL), ILB_OK);
  /* a was picked before the limit was set: not in the pool's count */
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 1);
  assert_rc(try_pick_after(p, NULL, &i, &b, NULL), ILB_OK); /* 1 of 1 */
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  r = retry(p, &st, NULL, a, &o);
  assert_int_equal(r.verdict, ILB_RETRY_NO_REPLICA);
  assert_int_equal(r.error, ILB_ESHED);
  assert_true(r.backoff_ns > 0);
  assert_int_equal(st.attempts, 1);
  ilb_pool_status ps = pstat(p);
  assert_int_equal(ps.retries, 0);
  assert_int_equal(ps.shed, 1);
  assert_rc(ilb_complete(p, b, NULL), ILB_OK);
  all_done(p, 2);
  free_pool(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_retry_on),
      cmocka_unit_test(test_retry_max_attempts),
      cmocka_unit_test(test_retry_distinct_replicas),
      cmocka_unit_test(test_retry_same_replica_when_alone),
      cmocka_unit_test(test_retry_backoff),
      cmocka_unit_test(test_retry_stale),
      cmocka_unit_test(test_retry_args),
      cmocka_unit_test(test_retry_storm),
      cmocka_unit_test(test_retry_budget_min_per_s),
      cmocka_unit_test(test_retry_budget_counts_earlier_requests),
      cmocka_unit_test(test_retry_budget_window_slides),
      cmocka_unit_test(test_shed_pool_limit),
      cmocka_unit_test(test_shed_sheddable),
      cmocka_unit_test(test_shed_saturated_composite),
      cmocka_unit_test(test_retry_avoids_tried_when_choice_full),
      cmocka_unit_test(test_shed_percent_small_pool),
      cmocka_unit_test(test_shed_percent_not_whole),
      cmocka_unit_test(test_saturated_retry_after),
      cmocka_unit_test(test_request_priority_args),
      cmocka_unit_test(test_retry_shed),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
