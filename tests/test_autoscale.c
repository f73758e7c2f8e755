/*
 * The autoscaling signal (ilb_pool_autoscale, since 0.6), through the
 * public API only:
 *   - desired from requests in flight (tickets held open), from requests
 *     waiting (fresh telemetry only), and from arrival against service
 *     (picks over fake time, completions with latency; concurrency from
 *     capacity, telemetry or the in-flight target; replicas without a
 *     latency estimate at the others' mean; the estimate's decay);
 *   - the stabilisation windows, HPA-style (a call counts while younger
 *     than the window): a spike is recommended once every call of the up
 *     window asked for it, never when shorter; a drop keeps the
 *     recommendation until the down window holds no higher call, then
 *     follows it step by step; a rise during a down hold is followed at
 *     once;
 *   - the 256-call history, the first call, min/max bounds (crossed bounds:
 *     the maximum wins; a changed bound applies at once), ready replicas,
 *     the overloaded flag, arrival at the same instant;
 *   - bad input, sized output, ILB_EDEADLK from a callback, ILB_ENOMEM from
 *     a failing allocator (and no leak).
 * The host clock is fake (healthutil.h); pools are seeded.
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

#define SEED UINT64_C(0xa5ca1e5eed000006)

static ilb_pool *new_pool(const ilb_host *extra) {
  ilb_pool *p = fake_pool(SEED, extra);
  SET_OPT(p, ILB_OPT_POLICY, ILB_POLICY_ROUND_ROBIN);
  return p;
}

/* Replica i is "r<i>" with host_data i + 1. */
static void add_n(ilb_pool *p, int n, uint32_t capacity) {
  for (int i = 0; i < n; i++)
    add_replica(p, rname(i), 1, capacity, (void *)(uintptr_t)(i + 1));
}

/* No stabilisation: recommended follows desired. */
static void no_windows(ilb_pool *p) {
  SET_OPT(p, ILB_OPT_SCALE_UP_WINDOW_MS, 0);
  SET_OPT(p, ILB_OPT_SCALE_DOWN_WINDOW_MS, 0);
}

static ilb_autoscale scale(ilb_pool *p) {
  ilb_autoscale a;
  memset(&a, 0x5A, sizeof a);
  a.struct_size = sizeof a;
  assert_rc(ilb_pool_autoscale(&a, p), ILB_OK);
  assert_int_equal(a.struct_size, sizeof a);
  assert_int_equal(a.reserved0, 0);
  return a;
}

static void assert_near(double got, double want) {
  double d = got - want, tol = 1e-9 * (want > 1 ? want : 1);
  if (d > tol || d < -tol)
    fail_msg("got %.12g, expected %.12g", got, want);
}

/* Hold n tickets open in held[]. */
static void hold(ilb_pool *p, uint64_t *held, int n) {
  for (int k = 0; k < n; k++) {
    int i;
    assert_rc(try_pick(p, NULL, &i, &held[k]), ILB_OK);
  }
}

static void release(ilb_pool *p, uint64_t *held, int from, int to) {
  for (int k = from; k < to; k++)
    assert_rc(ilb_complete(p, held[k], NULL), ILB_OK);
}

/* n picks completed at once: replica i's with latency lat_ms[i] (0: no
 * latency measured). */
static void traffic(ilb_pool *p, int n, const uint64_t *lat_ms) {
  for (int k = 0; k < n; k++) {
    int i;
    uint64_t t;
    assert_rc(try_pick(p, NULL, &i, &t), ILB_OK);
    ilb_outcome o = oc(ILB_OUTCOME_OK, 200);
    o.latency_ns = lat_ms[i] * MS;
    assert_rc(ilb_complete(p, t, &o), ILB_OK);
  }
}

static void report(ilb_pool *p, const char *id, int32_t sig, double v,
                   uint64_t ts) {
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  t.present = ILB_SIGNAL_BIT(sig);
  t.timestamp_ns = ts;
  if (sig == ILB_SIGNAL_REQUESTS_WAITING)
    t.requests_waiting = v;
  else
    t.max_concurrency = v;
  assert_rc(ilb_replica_report(p, id, &t), ILB_OK);
}

/* ------------------------------------------------------------------------ */

static void test_options_doc(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  assert_option_doc(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT, 1, 1000000, 8);
  assert_option_doc(p, ILB_OPT_SCALE_TARGET_QUEUE, 1, 1000000, 5);
  assert_option_doc(p, ILB_OPT_SCALE_TARGET_UTILIZATION, 1, 100, 80);
  assert_option_doc(p, ILB_OPT_SCALE_UP_WINDOW_MS, 0, 86400000, 60000);
  assert_option_doc(p, ILB_OPT_SCALE_DOWN_WINDOW_MS, 0, 86400000, 300000);
  assert_option_doc(p, ILB_OPT_SCALE_MIN_REPLICAS, 0, 1000000, 1);
  assert_option_doc(p, ILB_OPT_SCALE_MAX_REPLICAS, 0, 1000000, 1000000);
  free_pool(p);
}

/* NULL, sizes: too small is ILB_ESIZE and records no call; the least
 * size (through `current`) gets that much; a newer caller's larger struct
 * gets ours and its tail is left alone. */
static void test_args_and_sizes(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  add_n(p, 2, 0);
  no_windows(p);
  ilb_autoscale a;
  memset(&a, 0, sizeof a);
  a.struct_size = sizeof a;
  assert_rc(ilb_pool_autoscale(NULL, p), ILB_EINVAL);
  assert_rc(ilb_pool_autoscale(&a, NULL), ILB_EINVAL);
  size_t least = offsetof(ilb_autoscale, current) + sizeof(uint32_t);
  size_t bad[] = {0, sizeof(size_t), least - 1};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    memset(&a, 0x5A, sizeof a);
    a.struct_size = bad[k];
    assert_rc(ilb_pool_autoscale(&a, p), ILB_ESIZE);
    assert_int_equal(a.struct_size, bad[k]);
  }

  unsigned char big[sizeof(ilb_autoscale) + 32];
  memset(big, 0x5A, sizeof big);
  size_t sz = least;
  memcpy(big, &sz, sizeof sz);
  assert_rc(ilb_pool_autoscale((ilb_autoscale *)(void *)big, p), ILB_OK);
  memcpy(&sz, big, sizeof sz);
  assert_int_equal(sz, least);
  uint32_t cur;
  memcpy(&cur, big + offsetof(ilb_autoscale, current), sizeof cur);
  assert_int_equal(cur, 2);
  for (size_t k = least; k < sizeof big; k++)
    assert_int_equal(big[k], 0x5A);

  memset(big, 0x5A, sizeof big);
  sz = sizeof big;
  memcpy(big, &sz, sizeof sz);
  assert_rc(ilb_pool_autoscale((ilb_autoscale *)(void *)big, p), ILB_OK);
  memcpy(&a, big, sizeof a);
  assert_int_equal(a.struct_size, sizeof a);
  assert_int_equal(a.current, 2);
  assert_int_equal(a.ready, 2);
  assert_int_equal(a.desired, 1);
  assert_int_equal(a.recommended, 1);
  for (size_t k = sizeof a; k < sizeof big; k++)
    assert_int_equal(big[k], 0x5A);
  free_pool(p);
}

/* The first call: nothing measured yet but what is there now; the
 * recommendation starts at desired, whatever the windows. */
static void test_first_call(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  ilb_autoscale a = scale(p);
  assert_int_equal(a.current, 0);
  assert_int_equal(a.ready, 0);
  assert_int_equal(a.desired, 1); /* ILB_OPT_SCALE_MIN_REPLICAS */
  assert_int_equal(a.recommended, 1);
  assert_u64(a.in_flight, 0);
  assert_u64(a.waiting, 0);
  assert_true(a.arrival_per_s == 0);
  assert_true(a.service_per_s == 0);
  assert_true(a.utilization == 0);
  assert_int_equal(a.overloaded, 0);
  free_pool(p);

  /* with load at the first call, the default windows (1 and 5 min) do not
   * hold it back */
  p = new_pool(NULL);
  add_n(p, 2, 0);
  uint64_t held[30];
  hold(p, held, 30);
  a = scale(p);
  assert_int_equal(a.desired, 4); /* ceil(30 / 8) */
  assert_int_equal(a.recommended, 4);
  assert_true(a.arrival_per_s == 0); /* no interval yet */
  release(p, held, 0, 30);
  free_pool(p);
}

static void test_in_flight(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  no_windows(p);
  add_n(p, 3, 0);
  uint64_t held[20];
  hold(p, held, 20);
  ilb_autoscale a = scale(p);
  assert_int_equal(a.current, 3);
  assert_int_equal(a.ready, 3);
  assert_u64(a.in_flight, 20);
  assert_int_equal(a.desired, 3); /* ceil(20 / 8) */
  assert_int_equal(a.recommended, 3);
  SET_OPT(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT, 5);
  assert_int_equal(scale(p).desired, 4);
  SET_OPT(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT, 4);
  assert_int_equal(scale(p).desired, 5); /* exactly 20 / 4 */
  SET_OPT(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT, 20);
  assert_int_equal(scale(p).desired, 1);
  SET_OPT(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT, 1);
  release(p, held, 0, 13);
  a = scale(p);
  assert_u64(a.in_flight, 7);
  assert_int_equal(a.desired, 7);
  /* an excluded replica's requests still count: they are running */
  assert_rc(ilb_replica_set_available(p, rname(0), 0), ILB_OK);
  a = scale(p);
  assert_int_equal(a.ready, 2);
  assert_int_equal(a.current, 3);
  assert_u64(a.in_flight, 7);
  release(p, held, 13, 20);
  a = scale(p);
  assert_u64(a.in_flight, 0);
  assert_int_equal(a.desired, 1);
  free_pool(p);
}

static void test_queue(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  no_windows(p);
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 1000);
  add_n(p, 3, 0);
  report(p, rname(0), ILB_SIGNAL_REQUESTS_WAITING, 7, 0);
  report(p, rname(1), ILB_SIGNAL_REQUESTS_WAITING, 4, 0);
  ilb_autoscale a = scale(p);
  assert_u64(a.waiting, 11);
  assert_int_equal(a.desired, 3); /* ceil(11 / 5) */
  SET_OPT(p, ILB_OPT_SCALE_TARGET_QUEUE, 2);
  assert_int_equal(scale(p).desired, 6);
  /* the largest term wins: 20 in flight / 8 = 3 < 6 */
  uint64_t held[20];
  hold(p, held, 20);
  assert_int_equal(scale(p).desired, 6);
  SET_OPT(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT, 2);
  assert_int_equal(scale(p).desired, 10);
  SET_OPT(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT, 8);
  /* fresh until its age reaches the maximum: r1's report is newer */
  advance(500 * MS);
  report(p, rname(1), ILB_SIGNAL_REQUESTS_WAITING, 4, 0);
  advance(499 * MS);
  assert_u64(scale(p).waiting, 11);
  advance(1 * MS);
  a = scale(p);
  assert_u64(a.waiting, 4);
  assert_int_equal(a.desired, 3); /* in flight now: ceil(20 / 8) */
  advance(500 * MS);
  a = scale(p);
  assert_u64(a.waiting, 0); /* unknown */
  release(p, held, 0, 20);
  assert_int_equal(scale(p).desired, 1);
  free_pool(p);
}

/* Two replicas of concurrency 4 and latency 100 ms serve 80 requests/s;
 * at a target of 80 % one replica takes 32/s. */
static void test_arrival_service(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  no_windows(p);
  add_n(p, 2, 4);
  const uint64_t lat[2] = {100, 100};
  ilb_autoscale a = scale(p); /* the baseline */
  assert_true(a.arrival_per_s == 0);
  assert_true(a.service_per_s == 0); /* no latency yet: unknown */
  assert_true(a.utilization == 0);
  assert_int_equal(a.overloaded, 0);

  advance(SEC);
  traffic(p, 100, lat);
  a = scale(p);
  assert_near(a.arrival_per_s, 100);
  assert_near(a.service_per_s, 80);
  assert_near(a.utilization, 1.25);
  assert_int_equal(a.overloaded, 1);
  assert_int_equal(a.desired, 4); /* ceil(100 / 32) */
  assert_u64(a.in_flight, 0);

  /* a second call at the same instant keeps the last rate */
  a = scale(p);
  assert_near(a.arrival_per_s, 100);
  assert_int_equal(a.desired, 4);

  advance(2 * SEC);
  traffic(p, 100, lat); /* 50/s */
  a = scale(p);
  assert_near(a.arrival_per_s, 50);
  assert_near(a.utilization, 0.625);
  assert_int_equal(a.overloaded, 0);
  assert_int_equal(a.desired, 2); /* ceil(50 / 32) */
  SET_OPT(p, ILB_OPT_SCALE_TARGET_UTILIZATION, 100);
  assert_int_equal(scale(p).desired, 2); /* ceil(50 / 40) */
  SET_OPT(p, ILB_OPT_SCALE_TARGET_UTILIZATION, 10);
  assert_int_equal(scale(p).desired, 13); /* ceil(50 / 4) */
  SET_OPT(p, ILB_OPT_SCALE_TARGET_UTILIZATION, 80);

  /* idle for one decay time (ILB_OPT_EWMA_DECAY_MS, 10 s): no arrivals,
   * and the estimate has decayed to 1/e as peak_ewma sees it */
  advance(10 * SEC);
  a = scale(p);
  assert_true(a.arrival_per_s == 0);
  assert_true(a.service_per_s > 80 * 2.71828 && a.service_per_s < 80 * 2.71829);
  assert_int_equal(a.desired, 1);

  /* no ready replica: service unknown, whatever the estimates */
  assert_rc(ilb_replica_set_available(p, rname(0), 0), ILB_OK);
  assert_rc(ilb_replica_set_available(p, rname(1), 0), ILB_OK);
  a = scale(p);
  assert_int_equal(a.ready, 0);
  assert_true(a.service_per_s == 0);
  assert_int_equal(a.overloaded, 0);
  free_pool(p);
}

/* A replica's concurrency: its capacity, else fresh telemetry's max
 * concurrency, else the in-flight target; without a latency estimate it
 * is counted at the mean latency of the others; excluded replicas serve
 * nothing. */
static void test_service_sources(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  no_windows(p);
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 1000);
  add_replica(p, rname(0), 1, 2, (void *)(uintptr_t)1);
  add_replica(p, rname(1), 1, 0, (void *)(uintptr_t)2);
  add_replica(p, rname(2), 1, 0, (void *)(uintptr_t)3);
  report(p, rname(1), ILB_SIGNAL_MAX_CONCURRENCY, 6, now_ns() - 999 * MS);
  const uint64_t lat[3] = {100, 200, 0};
  traffic(p, 3, lat); /* round robin: one each */
  ilb_autoscale a = scale(p);
  /* 2 / 0.1 s + 6 / 0.2 s + 8 / 0.15 s */
  assert_near(a.service_per_s, 20 + 30 + 8 / 0.15);
  /* stale max concurrency: the in-flight target */
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 999);
  a = scale(p);
  assert_near(a.service_per_s, 20 + 40 + 8 / 0.15);
  SET_OPT(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT, 4);
  assert_near(scale(p).service_per_s, 20 + 20 + 4 / 0.15);
  /* an excluded replica neither serves nor sets the others' mean */
  assert_rc(ilb_replica_set_available(p, rname(1), 0), ILB_OK);
  a = scale(p);
  assert_int_equal(a.ready, 2);
  assert_near(a.service_per_s, 20 + 4 / 0.1);
  assert_rc(ilb_replica_set_available(p, rname(2), 0), ILB_OK);
  assert_near(scale(p).service_per_s, 20);
  free_pool(p);
}

/* The up window: a spike is recommended once every call of the last
 * window asked for it -- the last call that did not is a whole window old
 * (a call counts while younger than the window, as in Kubernetes) -- and
 * a shorter spike never is. */
static void test_up_window(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  SET_OPT(p, ILB_OPT_SCALE_UP_WINDOW_MS, 60000);
  add_n(p, 2, 0);
  uint64_t held[40];
  assert_int_equal(scale(p).recommended, 1); /* t = 0 */
  /* a short spike: 40 s of 5 */
  hold(p, held, 40);
  for (int t = 10; t <= 50; t += 10) {
    advance(10 * SEC);
    ilb_autoscale a = scale(p);
    assert_int_equal(a.desired, 5);
    assert_int_equal(a.recommended, 1);
  }
  release(p, held, 0, 40);
  for (int t = 60; t <= 200; t += 10) {
    advance(10 * SEC);
    ilb_autoscale a = scale(p);
    assert_int_equal(a.desired, 1);
    assert_int_equal(a.recommended, 1);
  }
  /* a lasting one, first seen at s = 210 s: 1 while the call at 200 s is
   * in the window, 5 from 260 s */
  hold(p, held, 40);
  for (int t = 210; t <= 250; t += 10) {
    advance(10 * SEC);
    assert_int_equal(scale(p).recommended, 1);
  }
  advance(10 * SEC);
  assert_int_equal(scale(p).recommended, 5);
  /* a step further: 3 more in flight ask for 6 (ceil(43 / 8)) from 270 s,
   * given at 320 s; meanwhile 5 holds */
  uint64_t more[3];
  hold(p, more, 3);
  for (int t = 270; t <= 310; t += 10) {
    advance(10 * SEC);
    ilb_autoscale a = scale(p);
    assert_int_equal(a.desired, 6);
    assert_int_equal(a.recommended, 5);
  }
  advance(10 * SEC);
  assert_int_equal(scale(p).recommended, 6);
  release(p, more, 0, 3);
  release(p, held, 0, 40);
  free_pool(p);
}

/* The down window: a drop keeps the recommendation until the highest
 * value of the last window (calls younger than it) is lower, then
 * follows that, step by step. */
static void test_down_window(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  SET_OPT(p, ILB_OPT_SCALE_UP_WINDOW_MS, 0);
  SET_OPT(p, ILB_OPT_SCALE_DOWN_WINDOW_MS, 300000);
  add_n(p, 2, 0);
  uint64_t held[40];
  hold(p, held, 40);
  assert_int_equal(scale(p).recommended, 5); /* t = 0 */
  release(p, held, 24, 40);                  /* 24 in flight: 3 */
  for (int t = 30; t <= 450; t += 30) {
    advance(30 * SEC);
    if (t == 150)
      release(p, held, 0, 24); /* none: 1 */
    ilb_autoscale a = scale(p);
    assert_int_equal(a.desired, t < 150 ? 3 : 1);
    /* 5 until the call at 0 s is 300 s old, 3 until the last one asking
     * for 3 (120 s) is */
    uint32_t want = t < 300 ? 5 : t < 420 ? 3 : 1;
    if (a.recommended != want)
      fail_msg("t = %d s: recommended %u, expected %u", t, a.recommended, want);
  }
  /* a rise during a hold is followed at once (up window 0) */
  SET_OPT(p, ILB_OPT_SCALE_DOWN_WINDOW_MS, 86400000);
  hold(p, held, 24);
  advance(30 * SEC);
  assert_int_equal(scale(p).recommended, 3);
  release(p, held, 0, 24);
  advance(30 * SEC);
  ilb_autoscale a = scale(p);
  assert_int_equal(a.desired, 1);
  assert_int_equal(a.recommended, 3);
  uint64_t big[56];
  hold(p, big, 56);
  advance(30 * SEC);
  assert_int_equal(scale(p).recommended, 7);
  release(p, big, 0, 56);
  free_pool(p);
}

/* The history holds 256 calls: a window longer than that many calls is
 * judged on the last 256. */
static void test_history_256(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  SET_OPT(p, ILB_OPT_SCALE_UP_WINDOW_MS, 86400000);
  add_n(p, 2, 0);
  assert_int_equal(scale(p).recommended, 1); /* call 1 */
  uint64_t held[40];
  hold(p, held, 40);
  for (int k = 2; k <= 256; k++) {
    advance(SEC);
    ilb_autoscale a = scale(p);
    assert_int_equal(a.desired, 5);
    if (a.recommended != 1)
      fail_msg("call %d: recommended %u while call 1 is remembered", k,
               a.recommended);
  }
  advance(SEC);
  assert_int_equal(scale(p).recommended, 5); /* call 257: call 1 forgotten */
  release(p, held, 0, 40);
  free_pool(p);
}

static void test_bounds(void **state) {
  (void)state;
  ilb_pool *p = new_pool(NULL);
  no_windows(p);
  add_n(p, 2, 0);
  SET_OPT(p, ILB_OPT_SCALE_MIN_REPLICAS, 0);
  ilb_autoscale a = scale(p);
  assert_int_equal(a.desired, 0); /* scale to zero */
  assert_int_equal(a.recommended, 0);
  SET_OPT(p, ILB_OPT_SCALE_MIN_REPLICAS, 3);
  assert_int_equal(scale(p).desired, 3);
  uint64_t held[100];
  hold(p, held, 100);
  a = scale(p);
  assert_int_equal(a.desired, 13);
  SET_OPT(p, ILB_OPT_SCALE_MAX_REPLICAS, 10);
  a = scale(p);
  assert_int_equal(a.desired, 10);
  assert_int_equal(a.recommended, 10);
  /* a lower maximum applies to the recommendation at once, down window
   * or not */
  SET_OPT(p, ILB_OPT_SCALE_DOWN_WINDOW_MS, 300000);
  SET_OPT(p, ILB_OPT_SCALE_MAX_REPLICAS, 4);
  advance(SEC);
  a = scale(p);
  assert_int_equal(a.desired, 4);
  assert_int_equal(a.recommended, 4);
  /* crossed bounds: the maximum wins */
  SET_OPT(p, ILB_OPT_SCALE_MIN_REPLICAS, 6);
  SET_OPT(p, ILB_OPT_SCALE_MAX_REPLICAS, 2);
  release(p, held, 0, 100);
  a = scale(p);
  assert_int_equal(a.desired, 2);
  assert_int_equal(a.recommended, 2);
  /* the arrival term is capped too: huge rate, tiny service */
  SET_OPT(p, ILB_OPT_SCALE_MIN_REPLICAS, 0);
  SET_OPT(p, ILB_OPT_SCALE_MAX_REPLICAS, 1000000);
  SET_OPT(p, ILB_OPT_SCALE_DOWN_WINDOW_MS, 0);
  SET_OPT(p, ILB_OPT_SCALE_TARGET_UTILIZATION, 1);
  const uint64_t lat[2] = {3600000, 3600000};
  advance(SEC);
  scale(p);
  advance(1);
  traffic(p, 50, lat); /* 50 per ns */
  a = scale(p);
  assert_true(a.overloaded);
  assert_int_equal(a.desired, 1000000);
  free_pool(p);
}

/* ---- ILB_EDEADLK from a callback ---------------------------------------- */

static ilb_pool *cb_pool; /* the pool whose callback calls back */
static int cb_rc = 1;

static void on_event_scale(const ilb_event *ev, void *user_data) {
  (void)user_data;
  if (ev->type != ILB_EVENT_REPLICA_ADDED || !cb_pool)
    return;
  ilb_autoscale a;
  memset(&a, 0, sizeof a);
  a.struct_size = sizeof a;
  cb_rc = ilb_pool_autoscale(&a, cb_pool);
}

static void test_edeadlk(void **state) {
  (void)state;
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.on_event = on_event_scale;
  ilb_pool *p = new_pool(&h);
  cb_pool = p;
  cb_rc = 1;
  add_n(p, 1, 0);
  cb_pool = NULL;
  assert_rc(cb_rc, ILB_EDEADLK);
  /* the refused call recorded nothing: this is the first */
  ilb_autoscale a = scale(p);
  assert_int_equal(a.current, 1);
  assert_true(a.arrival_per_s == 0);
  free_pool(p);
}

/* ---- ILB_ENOMEM ------------------------------------------------------------
 */

typedef struct {
  long live; /* allocations not freed */
  int fail;  /* fail every allocation while set */
  long failed;
} counting;

static counting alloc_state;

static void *c_alloc(size_t size, void *user_data) {
  counting *c = user_data;
  if (c->fail) {
    c->failed++;
    return NULL;
  }
  void *q = malloc(size ? size : 1);
  if (q)
    c->live++;
  return q;
}

static void c_free(void *ptr, void *user_data) {
  counting *c = user_data;
  if (ptr) {
    c->live--;
    free(ptr);
  }
}

/* The history is allocated at the first call: without memory that call is
 * ILB_ENOMEM, leaves *out alone and records nothing; the next one works
 * as a first call; freeing the pool frees the history. */
static void test_enomem(void **state) {
  (void)state;
  memset(&alloc_state, 0, sizeof alloc_state);
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.alloc = c_alloc;
  h.free = c_free;
  h.user_data = &alloc_state;
  ilb_pool *p = new_pool(&h);
  add_n(p, 2, 4);
  uint64_t held[3];
  hold(p, held, 3);
  ilb_autoscale a, a0;
  memset(&a, 0x5A, sizeof a);
  a.struct_size = sizeof a;
  memcpy(&a0, &a, sizeof a);
  alloc_state.fail = 1;
  assert_rc(ilb_pool_autoscale(&a, p), ILB_ENOMEM);
  alloc_state.fail = 0;
  assert_true(alloc_state.failed >= 1);
  assert_memory_equal(&a, &a0, sizeof a);
  advance(SEC);
  a = scale(p);
  assert_true(a.arrival_per_s == 0); /* the first call: no interval */
  assert_u64(a.in_flight, 3);
  long live = alloc_state.live;
  /* later calls allocate nothing */
  alloc_state.fail = 1;
  advance(SEC);
  a = scale(p);
  assert_near(a.arrival_per_s, 0);
  alloc_state.fail = 0;
  assert_int_equal(alloc_state.live, live);
  release(p, held, 0, 3);
  free_pool(p);
  assert_int_equal(alloc_state.live, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options_doc),
      cmocka_unit_test(test_args_and_sizes),
      cmocka_unit_test(test_first_call),
      cmocka_unit_test(test_in_flight),
      cmocka_unit_test(test_queue),
      cmocka_unit_test(test_arrival_service),
      cmocka_unit_test(test_service_sources),
      cmocka_unit_test(test_up_window),
      cmocka_unit_test(test_down_window),
      cmocka_unit_test(test_history_256),
      cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_edeadlk),
      cmocka_unit_test(test_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
