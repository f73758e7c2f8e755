/*
 * Telemetry and the scoring policies (composite, peak_ewma, least_tokens),
 * through the public API only:
 *   1. ilb_replica_report validation (every signal's range, all-or-nothing),
 *      ilb_signal_name, ilb_telemetry_init, the telemetry options' bounds;
 *   2. ilb_replica_telemetry: present / stale masks and timestamps as a
 *      fake clock advances, per signal; a re-added id starts empty;
 *   3. staleness in composite: a stale "idle" replica does not keep winning
 *      (GAIE #1497), ILB_OPT_TELEMETRY_ALL_STALE both ways;
 *   4. composite picks what a human would pick (table-driven, with the
 *      winner also computed from the documented formula), deep-health
 *      filters, options taking effect at once;
 *   5. near-ties broken at random, exact ties with ILB_OPT_TIE_PERCENT 0;
 *   6. sampling (k = 2) in pools larger than ILB_OPT_SCAN_MAX;
 *   7. peak_ewma: reaction to a 10x slower replica within one completion,
 *      failure penalties, decay against exp(-dt / tau), the default;
 *   8. token cost: tokens_in_flight under every policy, least_tokens;
 *   9. a concurrency smoke test (pickers, a reporter, option changes).
 *
 * The host clock is fake (fake_ns below), so staleness and decay are
 * deterministic; pools are seeded. Statistical bounds are at least five
 * standard deviations wide. No assertion depends on wall-clock time.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h> /* NAN and INFINITY only (macros: no libm needed) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <inferlb/inferlb.h>

#include "testutil.h"

#define SEED UINT64_C(0x7e1e3e7e12345678)
#define MS UINT64_C(1000000)
#define SEC UINT64_C(1000000000)
#define T0 SEC /* the fake clock starts at 1 s, not at 0 (= "now") */
#define MAX_HELD 4096
#define MIB 1048576.0
#define GIB (1024.0 * MIB)

/* ------------------------------------------------------------------------ */
/* Fake clock, pools, replicas, picks                                        */
/* ------------------------------------------------------------------------ */

static _Atomic uint64_t fake_ns = T0;

static uint64_t fake_clock(void *user_data) {
  (void)user_data;
  return atomic_load_explicit(&fake_ns, memory_order_relaxed);
}

static uint64_t now_ns(void) { return atomic_load(&fake_ns); }
static void advance(uint64_t ns) { atomic_fetch_add(&fake_ns, ns); }

#define SET_OPT(pool, opt, val)                                              \
  assert_rc(ilb_pool_set_option((pool), (opt), (val)), ILB_OK)

/* A pool with the fake clock (reset to T0), a seed and a policy. */
static ilb_pool *new_pool(int32_t policy, uint64_t seed) {
  atomic_store(&fake_ns, T0);
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.clock_ns = fake_clock;
  h.seed = seed;
  h.log_level = ILB_LOG_NONE;
  ilb_pool *p = NULL;
  assert_rc(ilb_pool_new(&p, &h), ILB_OK);
  assert_non_null(p);
  track_pool(p);
  SET_OPT(p, ILB_OPT_POLICY, policy);
  return p;
}

/* prefix followed by i (0..999) in decimal, in buf (>= 16 bytes). */
static void fmt_id(char *buf, const char *prefix, int i) {
  size_t n = strlen(prefix);
  assert_true(n < 8 && i >= 0 && i < 1000);
  memcpy(buf, prefix, n);
  if (i >= 100)
    buf[n++] = (char)('0' + i / 100);
  if (i >= 10)
    buf[n++] = (char)('0' + i / 10 % 10);
  buf[n++] = (char)('0' + i % 10);
  buf[n] = 0;
}

/* Replica i is "r<i>" with host_data i + 1. */
static char names[128][16];
static const char *rname(int i) {
  assert_true(i >= 0 && i < 128);
  if (!names[i][0])
    fmt_id(names[i], "r", i);
  return names[i];
}

static void add_n(ilb_pool *p, int n, const uint32_t *weights) {
  for (int i = 0; i < n; i++)
    add_replica(p, rname(i), weights ? weights[i] : 1, 0,
                (void *)(uintptr_t)(i + 1));
}

/* Pick (asserting success); returns the replica index. */
static int pick_idx(ilb_pool *p, const ilb_request *req, uint64_t *ticket) {
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, p, req), ILB_OK);
  assert_true(res.ticket != 0);
  if (ticket)
    *ticket = res.ticket;
  return (int)((uintptr_t)res.host_data - 1);
}

/* Pick and complete at once (no load builds up). */
static int pick_done(ilb_pool *p, const ilb_request *req) {
  uint64_t t;
  int i = pick_idx(p, req, &t);
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  return i;
}

static void complete_all(ilb_pool *p, uint64_t *tickets, size_t *n) {
  for (size_t i = 0; i < *n; i++)
    assert_rc(ilb_complete(p, tickets[i], NULL), ILB_OK);
  *n = 0;
}

static ilb_replica_info info_of(ilb_pool *p, int i) {
  return get_info(p, rname(i));
}

static ilb_telemetry tm_get(ilb_pool *p, const char *id) {
  ilb_telemetry t;
  memset(&t, 0x5A, sizeof t);
  t.struct_size = sizeof t;
  assert_rc(ilb_replica_telemetry(&t, p, id), ILB_OK);
  assert_int_equal(t.struct_size, sizeof t);
  return t;
}

#define BIT(s) ILB_SIGNAL_BIT(ILB_SIGNAL_##s)

/* The usual scrape: waiting queue, KV-cache usage, GPU utilisation. */
static ilb_telemetry tm_load(double waiting, double kv, double gpu) {
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  t.present = BIT(REQUESTS_WAITING) | BIT(KV_CACHE_USAGE) | BIT(GPU_UTILIZATION);
  t.requests_waiting = waiting;
  t.kv_cache_usage = kv;
  t.gpu_utilization = gpu;
  return t;
}

static void report(ilb_pool *p, int i, const ilb_telemetry *t) {
  assert_rc(ilb_replica_report(p, rname(i), t), ILB_OK);
}

static void report_load(ilb_pool *p, int i, double waiting, double kv,
                        double gpu) {
  ilb_telemetry t = tm_load(waiting, kv, gpu);
  report(p, i, &t);
}

/* exp(-x), x >= 0, to ~1e-15 relative: Taylor series of exp(-x / 2^k),
 * then squared k times (no libm). */
static double exp_neg_d(double x) {
  int k = 0;
  while (x > 0.5 / 1024) {
    x /= 2;
    k++;
  }
  double term = 1, sum = 1;
  for (int i = 1; i < 20; i++) {
    term *= -x / i;
    sum += term;
  }
  while (k-- > 0)
    sum *= sum;
  return sum;
}

static double abs_d(double x) { return x < 0 ? -x : x; }

#define assert_rel(got, want, rel)                                           \
  do {                                                                       \
    double g_ = (got), w_ = (want);                                          \
    if (!(abs_d(g_ - w_) <= (rel)*abs_d(w_)))                                \
      fail_msg("%s = %.17g, expected %.17g (relative %g)", #got, g_, w_,     \
               (double)(rel));                                               \
  } while (0)

#define assert_in(v, lo, hi)                                                 \
  do {                                                                       \
    long long v_ = (long long)(v);                                           \
    if (v_ < (long long)(lo) || v_ > (long long)(hi))                        \
      fail_msg("%s = %lld, expected in [%lld, %lld]", #v, v_,               \
               (long long)(lo), (long long)(hi));                            \
  } while (0)

/* ------------------------------------------------------------------------ */
/* 1. Report validation                                                      */
/* ------------------------------------------------------------------------ */

static const size_t sig_off[ILB_SIGNAL_COUNT] = {
    offsetof(ilb_telemetry, requests_waiting),
    offsetof(ilb_telemetry, requests_running),
    offsetof(ilb_telemetry, kv_cache_usage),
    offsetof(ilb_telemetry, gpu_utilization),
    offsetof(ilb_telemetry, gpu_memory_free),
    offsetof(ilb_telemetry, gpu_memory_total),
    offsetof(ilb_telemetry, prefix_hit_rate),
    offsetof(ilb_telemetry, gen_tokens_per_s),
    offsetof(ilb_telemetry, ttft_s),
    offsetof(ilb_telemetry, queue_time_s),
    offsetof(ilb_telemetry, request_rate),
    offsetof(ilb_telemetry, max_concurrency),
    offsetof(ilb_telemetry, model_ready),
    offsetof(ilb_telemetry, kv_block_size),
    offsetof(ilb_telemetry, kv_blocks_total),
};

static double sig_get(const ilb_telemetry *t, int s) {
  double v;
  memcpy(&v, (const char *)t + sig_off[s], sizeof v);
  return v;
}

static void sig_set(ilb_telemetry *t, int s, double v) {
  memcpy((char *)t + sig_off[s], &v, sizeof v);
  t->present |= ILB_SIGNAL_BIT(s);
}

/* Every signal present with a valid value; `alt` picks a second set. */
static ilb_telemetry tm_full(int alt) {
  static const double a[ILB_SIGNAL_COUNT] = {3,   2,   0.5, 0.6, 1e9, 8e9, 0.3, 100,
                                             0.2, 0.05, 7, 64,  1,   16,  1000};
  static const double b[ILB_SIGNAL_COUNT] = {
      9, 5, 0.25, 0.75, 2e9, 9e9, 0.5, 250, 0.4, 0.1, 11, 32, 0, 32, 2000};
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  for (int s = 0; s < ILB_SIGNAL_COUNT; s++)
    sig_set(&t, s, alt ? b[s] : a[s]);
  return t;
}

/* All present values and their timestamp equal. */
static void assert_same_values(const ilb_telemetry *got,
                               const ilb_telemetry *want, uint64_t ts) {
  assert_true(got->present == want->present);
  assert_true(got->timestamp_ns == ts);
  for (int s = 0; s < ILB_SIGNAL_COUNT; s++)
    if (want->present & ILB_SIGNAL_BIT(s))
      if (sig_get(got, s) != sig_get(want, s))
        fail_msg("signal %s: %.17g, expected %.17g", ilb_signal_name(s),
                 sig_get(got, s), sig_get(want, s));
}

static void test_signal_names(void **state) {
  (void)state;
  /* ttft and queue_time: see test_signal_name_is_field_name */
  static const char *const want[ILB_SIGNAL_COUNT] = {
      "requests_waiting", "requests_running", "kv_cache_usage",
      "gpu_utilization",  "gpu_memory_free",  "gpu_memory_total",
      "prefix_hit_rate",  "gen_tokens_per_s", NULL,
      NULL,               "request_rate",     "max_concurrency",
      "model_ready",      "kv_block_size",    "kv_blocks_total"};
  for (int s = 0; s < ILB_SIGNAL_COUNT; s++) {
    const char *n = ilb_signal_name(s);
    assert_non_null(n);
    if (want[s])
      assert_string_equal(n, want[s]);
    for (int u = 0; u < s; u++) /* distinct */
      assert_true(strcmp(n, ilb_signal_name(u)) != 0);
  }
  assert_null(ilb_signal_name(-1));
  assert_null(ilb_signal_name(ILB_SIGNAL_COUNT));
  assert_null(ilb_signal_name(63));
  assert_null(ilb_signal_name(INT32_MAX));
  assert_null(ilb_signal_name(INT32_MIN));
}

/* The header: ilb_signal_name gives "the field names above"; the fields of
 * ILB_SIGNAL_TTFT and ILB_SIGNAL_QUEUE_TIME are ttft_s and queue_time_s. */
static void test_signal_name_is_field_name(void **state) {
  (void)state;
  assert_string_equal(ilb_signal_name(ILB_SIGNAL_TTFT), "ttft_s");
  assert_string_equal(ilb_signal_name(ILB_SIGNAL_QUEUE_TIME), "queue_time_s");
}

static void test_telemetry_init(void **state) {
  (void)state;
  assert_rc(ilb_telemetry_init(NULL), ILB_EINVAL);
  ilb_telemetry t;
  memset(&t, 0x5A, sizeof t);
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  assert_int_equal(t.struct_size, sizeof t);
  assert_true(t.present == 0 && t.stale == 0 && t.timestamp_ns == 0);
  for (int s = 0; s < ILB_SIGNAL_COUNT; s++)
    assert_true(sig_get(&t, s) == 0.0);
}

/* Bounds and defaults of options 108..123 as the header documents them. */
static void test_option_bounds(void **state) {
  (void)state;
  static const struct {
    int32_t opt;
    int64_t min, max, def;
  } rows[] = {
      {ILB_OPT_TELEMETRY_MAX_AGE_MS, 1, 86400000, 10000},
      {ILB_OPT_TELEMETRY_ALL_STALE, 0, 1, ILB_ALL_STALE_FAIL_OPEN},
      {ILB_OPT_SCORE_QUEUE, 0, 1000000, 400},
      {ILB_OPT_SCORE_GPU, 0, 1000000, 300},
      {ILB_OPT_SCORE_KV, 0, 1000000, 200},
      {ILB_OPT_SCORE_LATENCY, 0, 1000000, 100},
      {ILB_OPT_SCORE_MEMORY, 0, 1000000, 0},
      {ILB_OPT_SCAN_MAX, 0, 1048576, 16},
      {ILB_OPT_KV_SATURATION_PERCENT, 0, 100, 100},
      {ILB_OPT_GPU_MEMORY_MIN_FREE_MIB, 0, 16777216, 0},
      {ILB_OPT_TIE_PERCENT, 0, 100, 2},
      {ILB_OPT_EWMA_DECAY_MS, 1, 3600000, 10000},
      {ILB_OPT_EWMA_DEFAULT_MS, 1, 3600000, 1000},
      {ILB_OPT_EWMA_PENALTY_MS, 0, 3600000, 10000},
      {ILB_OPT_TOKEN_OUTPUT_PERCENT, 0, 100000, 100},
      {ILB_OPT_TOKEN_DEFAULT_COST, 1, 16777216, 512},
  };
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    int64_t mn = -7, mx = -7, df = -7, v = -7;
    assert_rc(ilb_option_bounds(&mn, &mx, &df, rows[i].opt), ILB_OK);
    if (mn != rows[i].min || mx != rows[i].max || df != rows[i].def)
      fail_msg("option %d: bounds %lld..%lld default %lld", rows[i].opt,
               (long long)mn, (long long)mx, (long long)df);
    assert_rc(ilb_pool_get_option(&v, p, rows[i].opt), ILB_OK);
    assert_true(v == rows[i].def);
    assert_rc(ilb_pool_set_option(p, rows[i].opt, rows[i].min - 1),
              ILB_ERANGE);
    assert_rc(ilb_pool_set_option(p, rows[i].opt, rows[i].max + 1),
              ILB_ERANGE);
    SET_OPT(p, rows[i].opt, rows[i].max);
    assert_rc(ilb_pool_get_option(&v, p, rows[i].opt), ILB_OK);
    assert_true(v == rows[i].max);
    SET_OPT(p, rows[i].opt, rows[i].min);
    assert_rc(ilb_pool_get_option(&v, p, rows[i].opt), ILB_OK);
    assert_true(v == rows[i].min);
    SET_OPT(p, rows[i].opt, rows[i].def);
  }
  free_pool(p);
}

/* Every signal: its documented range ends are accepted, and every bad
 * value fails the report (alone, or inside a report that changes all the
 * other signals) with ILB_ERANGE and leaves every old value in place. */
static void test_report_ranges(void **state) {
  (void)state;
  enum { COUNT, FRACTION, READY, BLOCK };
  int k[ILB_SIGNAL_COUNT];
  for (int s = 0; s < ILB_SIGNAL_COUNT; s++)
    k[s] = COUNT;
  k[ILB_SIGNAL_KV_CACHE_USAGE] = k[ILB_SIGNAL_GPU_UTILIZATION] =
      k[ILB_SIGNAL_PREFIX_HIT_RATE] = FRACTION;
  k[ILB_SIGNAL_MODEL_READY] = READY;
  k[ILB_SIGNAL_KV_BLOCK_SIZE] = BLOCK;

  const double above_max = 1.0000001e18; /* > ILB_SIGNAL_MAX */
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 1, NULL);
  const ilb_telemetry base = tm_full(0), other = tm_full(1);
  advance(5 * MS);
  uint64_t ts0 = now_ns();
  report(p, 0, &base);

  for (int s = 0; s < ILB_SIGNAL_COUNT; s++) {
    double bad[8];
    int nbad = 0;
    bad[nbad++] = NAN;
    bad[nbad++] = INFINITY;
    bad[nbad++] = -INFINITY;
    bad[nbad++] = -1.0;
    switch (k[s]) {
    case FRACTION:
      bad[nbad++] = 1.0000001;
      bad[nbad++] = 1.5;
      bad[nbad++] = -1e-9;
      break;
    case READY:
      bad[nbad++] = 1.5;
      bad[nbad++] = 2;
      break;
    case BLOCK:
      bad[nbad++] = 0;
      bad[nbad++] = 0.5;
      bad[nbad++] = above_max;
      break;
    default:
      bad[nbad++] = -1e-9;
      bad[nbad++] = above_max;
      bad[nbad++] = 1e19;
      break;
    }
    for (int b = 0; b < nbad; b++) {
      for (int alone = 0; alone < 2; alone++) {
        ilb_telemetry t;
        if (alone) {
          assert_rc(ilb_telemetry_init(&t), ILB_OK);
        } else {
          t = other;
        }
        sig_set(&t, s, bad[b]);
        int rc = ilb_replica_report(p, rname(0), &t);
        if (rc != ILB_ERANGE)
          fail_msg("signal %s = %g (alone %d): %s, expected ERANGE",
                   ilb_signal_name(s), bad[b], alone, ilb_err_name(rc));
        ilb_telemetry got = tm_get(p, rname(0));
        assert_same_values(&got, &base, ts0);
      }
    }
  }

  /* Range ends, each accepted (on a replica of its own, so that the
   * free <= total rule does not interfere). */
  for (int s = 0; s < ILB_SIGNAL_COUNT; s++) {
    double ends[2];
    ends[0] = k[s] == BLOCK ? 1 : 0;
    ends[1] = k[s] == FRACTION || k[s] == READY ? 1 : ILB_SIGNAL_MAX;
    char id[16];
    fmt_id(id, "end", s);
    add_replica(p, id, 1, 0, NULL);
    for (int e = 0; e < 2; e++) {
      ilb_telemetry t;
      assert_rc(ilb_telemetry_init(&t), ILB_OK);
      sig_set(&t, s, ends[e]);
      if (s == ILB_SIGNAL_GPU_MEMORY_FREE)
        sig_set(&t, ILB_SIGNAL_GPU_MEMORY_TOTAL, ILB_SIGNAL_MAX);
      if (s == ILB_SIGNAL_GPU_MEMORY_TOTAL)
        sig_set(&t, ILB_SIGNAL_GPU_MEMORY_FREE, 0);
      int rc = ilb_replica_report(p, id, &t);
      if (rc != ILB_OK)
        fail_msg("signal %s = %g: %s", ilb_signal_name(s), ends[e],
                 ilb_err_name(rc));
      ilb_telemetry got = tm_get(p, id);
      assert_true(got.present & ILB_SIGNAL_BIT(s));
      assert_true(sig_get(&got, s) == ends[e]);
    }
  }
  free_pool(p);
}

/* gpu_memory_free <= gpu_memory_total: refused within one report; across
 * two, the contradicted stored partner is forgotten. */
static void test_report_free_above_total(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 2, NULL);
  ilb_telemetry t, got;
  const int F = ILB_SIGNAL_GPU_MEMORY_FREE, T = ILB_SIGNAL_GPU_MEMORY_TOTAL;

  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  sig_set(&t, F, 20);
  sig_set(&t, T, 10);
  assert_rc(ilb_replica_report(p, rname(0), &t), ILB_ERANGE);
  assert_true(tm_get(p, rname(0)).present == 0);
  sig_set(&t, F, 10); /* equal is fine */
  assert_rc(ilb_replica_report(p, rname(0), &t), ILB_OK);

  /* Across reports: total = 10, then free = 20 alone: the contradicted
   * stored total is forgotten (a scrape whose "used" gauge was NaN sends
   * one of the pair alone); free is kept. */
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  sig_set(&t, T, 10);
  report(p, 1, &t);
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  sig_set(&t, F, 20);
  assert_rc(ilb_replica_report(p, rname(1), &t), ILB_OK);
  got = tm_get(p, rname(1));
  assert_true(got.present == ILB_SIGNAL_BIT(F));
  assert_true(got.gpu_memory_free == 20);
  /* A consistent partner is kept: total 30, then free 5 alone. */
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  sig_set(&t, T, 30);
  report(p, 1, &t);
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  sig_set(&t, F, 5);
  report(p, 1, &t);
  got = tm_get(p, rname(1));
  assert_true(got.present == (ILB_SIGNAL_BIT(F) | ILB_SIGNAL_BIT(T)));
  assert_true(got.gpu_memory_total == 30 && got.gpu_memory_free == 5);
  /* ... and the other way: total 4 alone, below the stored free 5: the
   * stored free is forgotten. */
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  sig_set(&t, T, 4);
  assert_rc(ilb_replica_report(p, rname(1), &t), ILB_OK);
  got = tm_get(p, rname(1));
  assert_true(got.present == ILB_SIGNAL_BIT(T) && got.gpu_memory_total == 4);
  /* Both in one report may move together. */
  sig_set(&t, F, 2);
  report(p, 1, &t);
  got = tm_get(p, rname(1));
  assert_true(got.gpu_memory_total == 4 && got.gpu_memory_free == 2);
  free_pool(p);
}

/* Arguments, present bits, struct_size, timestamps. */
static void test_report_args(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 1, NULL);
  ilb_telemetry t = tm_load(1, 0.5, 0.5);
  assert_rc(ilb_replica_report(NULL, rname(0), &t), ILB_EINVAL);
  assert_rc(ilb_replica_report(p, NULL, &t), ILB_EINVAL);
  assert_rc(ilb_replica_report(p, rname(0), NULL), ILB_EINVAL);
  assert_rc(ilb_replica_report(p, "nope", &t), ILB_ENOENT);

  /* Unknown present bits. */
  t.present |= ILB_SIGNAL_BIT(ILB_SIGNAL_COUNT);
  assert_rc(ilb_replica_report(p, rname(0), &t), ILB_EINVAL);
  t.present = BIT(KV_CACHE_USAGE) | (UINT64_C(1) << 63);
  assert_rc(ilb_replica_report(p, rname(0), &t), ILB_EINVAL);
  assert_true(tm_get(p, rname(0)).present == 0);

  /* struct_size */
  t = tm_load(1, 0.5, 0.5);
  size_t sizes[] = {0, sizeof(size_t), sizeof t - 8, sizeof t - 1};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    t.struct_size = sizes[i];
    assert_rc(ilb_replica_report(p, rname(0), &t), ILB_ESIZE);
  }
  struct {
    ilb_telemetry t;
    uint64_t tail[4];
  } big;
  memset(&big, 0, sizeof big);
  big.t = tm_load(1, 0.5, 0.5);
  big.t.struct_size = sizeof big;
  big.tail[2] = 1;
  assert_rc(ilb_replica_report(p, rname(0), &big.t), ILB_ESIZE);
  assert_true(tm_get(p, rname(0)).present == 0);
  big.tail[2] = 0; /* a newer caller's zero tail is fine */
  assert_rc(ilb_replica_report(p, rname(0), &big.t), ILB_OK);
  assert_true(tm_get(p, rname(0)).present == big.t.present);

  /* Fields whose bit is clear are ignored, and so is `stale` on input. */
  ilb_telemetry u;
  assert_rc(ilb_telemetry_init(&u), ILB_OK);
  u.present = BIT(REQUESTS_RUNNING);
  u.requests_running = 4;
  u.kv_cache_usage = NAN;
  u.gpu_utilization = -5;
  u.stale = ~UINT64_C(0);
  assert_rc(ilb_replica_report(p, rname(0), &u), ILB_OK);
  ilb_telemetry got = tm_get(p, rname(0));
  assert_true(got.kv_cache_usage == 0.5 && got.gpu_utilization == 0.5);
  assert_true(got.requests_running == 4);
  assert_true(got.stale == 0);

  /* Nothing present: accepted, changes nothing. */
  assert_rc(ilb_telemetry_init(&u), ILB_OK);
  assert_rc(ilb_replica_report(p, rname(0), &u), ILB_OK);
  assert_true(tm_get(p, rname(0)).present == got.present);

  /* Timestamps: 0 = now, now itself, the past; the future is ERANGE and
   * changes nothing. */
  advance(3 * SEC);
  uint64_t now = now_ns();
  assert_rc(ilb_telemetry_init(&u), ILB_OK);
  u.present = BIT(REQUESTS_RUNNING);
  u.requests_running = 6;
  u.timestamp_ns = now + 1;
  assert_rc(ilb_replica_report(p, rname(0), &u), ILB_ERANGE);
  got = tm_get(p, rname(0));
  assert_true(got.requests_running == 4 && got.timestamp_ns == T0);
  u.timestamp_ns = now + 10 * SEC;
  assert_rc(ilb_replica_report(p, rname(0), &u), ILB_ERANGE);
  u.timestamp_ns = now;
  assert_rc(ilb_replica_report(p, rname(0), &u), ILB_OK);
  assert_true(tm_get(p, rname(0)).requests_running == 6);
  free_pool(p);
}

static void test_telemetry_get_args(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 1, NULL);
  report_load(p, 0, 2, 0.25, 0.5);
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  assert_rc(ilb_replica_telemetry(NULL, p, rname(0)), ILB_EINVAL);
  assert_rc(ilb_replica_telemetry(&t, NULL, rname(0)), ILB_EINVAL);
  assert_rc(ilb_replica_telemetry(&t, p, NULL), ILB_EINVAL);
  assert_rc(ilb_replica_telemetry(&t, p, "nope"), ILB_ENOENT);
  t.struct_size = 0;
  assert_rc(ilb_replica_telemetry(&t, p, rname(0)), ILB_ESIZE);
  t.struct_size = sizeof(size_t);
  assert_rc(ilb_replica_telemetry(&t, p, rname(0)), ILB_ESIZE);

  /* An output struct: any size covering `present` is filled that far. */
  size_t small = offsetof(ilb_telemetry, present) + sizeof(uint64_t);
  memset(&t, 0x5A, sizeof t);
  t.struct_size = small;
  assert_rc(ilb_replica_telemetry(&t, p, rname(0)), ILB_OK);
  assert_int_equal(t.struct_size, small);
  assert_true(t.present == tm_load(0, 0, 0).present);
  const unsigned char *b = (const unsigned char *)&t;
  for (size_t i = small; i < sizeof t; i++)
    assert_int_equal(b[i], 0x5A);

  struct {
    ilb_telemetry t;
    unsigned char tail[32];
  } big;
  memset(&big, 0x5A, sizeof big);
  big.t.struct_size = sizeof big;
  assert_rc(ilb_replica_telemetry(&big.t, p, rname(0)), ILB_OK);
  assert_int_equal(big.t.struct_size, sizeof(ilb_telemetry));
  assert_true(big.t.kv_cache_usage == 0.25);
  for (size_t i = 0; i < sizeof big.tail; i++)
    assert_int_equal(big.tail[i], 0x5A);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 2. ilb_replica_telemetry: present, stale, timestamp                       */
/* ------------------------------------------------------------------------ */

static void test_stale_masks(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 1, NULL);
  int64_t age_ms = 0;
  assert_rc(ilb_pool_get_option(&age_ms, p, ILB_OPT_TELEMETRY_MAX_AGE_MS),
            ILB_OK);
  assert_true(age_ms == 10000);
  const uint64_t age = (uint64_t)age_ms * MS;

  ilb_telemetry t = tm_get(p, rname(0));
  assert_true(t.present == 0 && t.stale == 0 && t.timestamp_ns == 0);

  /* kv at T0, gpu 5 s later: they age independently. */
  ilb_telemetry r;
  assert_rc(ilb_telemetry_init(&r), ILB_OK);
  sig_set(&r, ILB_SIGNAL_KV_CACHE_USAGE, 0.5);
  report(p, 0, &r);
  t = tm_get(p, rname(0));
  assert_true(t.present == BIT(KV_CACHE_USAGE) && t.stale == 0);
  assert_true(t.timestamp_ns == T0);
  advance(5 * SEC);
  assert_rc(ilb_telemetry_init(&r), ILB_OK);
  sig_set(&r, ILB_SIGNAL_GPU_UTILIZATION, 0.7);
  report(p, 0, &r);
  t = tm_get(p, rname(0));
  assert_true(t.present == (BIT(KV_CACHE_USAGE) | BIT(GPU_UTILIZATION)));
  assert_true(t.stale == 0);
  assert_true(t.timestamp_ns == T0); /* the oldest */

  atomic_store(&fake_ns, T0 + age - MS);
  assert_true(tm_get(p, rname(0)).stale == 0);
  atomic_store(&fake_ns, T0 + age + MS);
  t = tm_get(p, rname(0));
  assert_true(t.stale == BIT(KV_CACHE_USAGE));
  assert_true(t.kv_cache_usage == 0.5); /* still reported, as last seen */
  atomic_store(&fake_ns, T0 + 5 * SEC + age - MS);
  assert_true(tm_get(p, rname(0)).stale == BIT(KV_CACHE_USAGE));
  atomic_store(&fake_ns, T0 + 5 * SEC + age + MS);
  assert_true(tm_get(p, rname(0)).stale ==
              (BIT(KV_CACHE_USAGE) | BIT(GPU_UTILIZATION)));

  /* A fresh kv: only gpu stale, and the oldest timestamp is gpu's. */
  assert_rc(ilb_telemetry_init(&r), ILB_OK);
  sig_set(&r, ILB_SIGNAL_KV_CACHE_USAGE, 0.25);
  report(p, 0, &r);
  t = tm_get(p, rname(0));
  assert_true(t.stale == BIT(GPU_UTILIZATION));
  assert_true(t.timestamp_ns == T0 + 5 * SEC);
  assert_true(t.kv_cache_usage == 0.25);

  /* A measurement taken long ago is stale as soon as it is reported. */
  assert_rc(ilb_telemetry_init(&r), ILB_OK);
  sig_set(&r, ILB_SIGNAL_REQUESTS_WAITING, 3);
  r.timestamp_ns = now_ns() - age - SEC;
  report(p, 0, &r);
  t = tm_get(p, rname(0));
  assert_true(t.stale == (BIT(GPU_UTILIZATION) | BIT(REQUESTS_WAITING)));
  assert_true(t.timestamp_ns == r.timestamp_ns);

  /* A longer maximum age applies at once, without a new report. */
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 60000);
  assert_true(tm_get(p, rname(0)).stale == 0);
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 1);
  assert_true(tm_get(p, rname(0)).stale ==
              (BIT(GPU_UTILIZATION) | BIT(REQUESTS_WAITING)));
  advance(2 * MS); /* kv was reported at the current instant */
  assert_true(tm_get(p, rname(0)).stale == t.present);
  free_pool(p);
}

/* A removed id added again starts with no telemetry, no latency estimate
 * and no tokens: both when its old slot is reused (nothing in flight) and
 * when it is not (a request of the old one still in flight). */
static void test_readd_starts_empty(void **state) {
  (void)state;
  for (int held = 0; held < 2; held++) {
    ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
    add_n(p, 1, NULL);
    ilb_telemetry full = tm_full(0);
    report(p, 0, &full);
    ilb_request req;
    assert_rc(ilb_request_init(&req), ILB_OK);
    req.prompt_tokens = 700;
    ilb_outcome out;
    assert_rc(ilb_outcome_init(&out), ILB_OK);
    out.latency_ns = 300 * MS;
    uint64_t t1, t2;
    pick_idx(p, &req, &t1);
    pick_idx(p, &req, &t2);
    assert_rc(ilb_complete(p, t1, &out), ILB_OK);
    if (!held)
      assert_rc(ilb_complete(p, t2, &out), ILB_OK);
    ilb_replica_info in = info_of(p, 0);
    assert_true(in.latency_ewma_ms > 0);
    assert_true(in.tokens_in_flight == (held ? 700u : 0u));
    assert_rc(ilb_replica_remove(p, rname(0)), ILB_OK);
    add_n(p, 1, NULL);
    ilb_telemetry t = tm_get(p, rname(0));
    assert_true(t.present == 0 && t.stale == 0 && t.timestamp_ns == 0);
    in = info_of(p, 0);
    assert_true(in.latency_ewma_ms == -1.0);
    assert_true(in.tokens_in_flight == 0);
    assert_true(in.in_flight == 0);
    if (held) {
      assert_rc(ilb_complete(p, t2, &out), ILB_EREMOVED);
      in = info_of(p, 0);
      assert_true(in.latency_ewma_ms == -1.0 && in.tokens_in_flight == 0);
    }
    free_pool(p);
  }
}

/* ------------------------------------------------------------------------ */
/* 3. Staleness in composite                                                 */
/* ------------------------------------------------------------------------ */

/* Replica 0 reports "idle" (kv 0, gpu 0, waiting 0), the others "busy"
 * (waiting 10, kv 0.8, gpu 0.9). While fresh, replica 0 wins. Once its
 * report is older than the maximum age while the others keep reporting,
 * it must get only its share by local load: it is scored with its own
 * in-flight term plus the mean telemetry of the fresh ones -- not as idle
 * (GAIE #1497: the stale idle replica keeps winning and hot-spots). A
 * fresh report brings it back. */
static void test_stale_idle_does_not_keep_winning(void **state) {
  (void)state;
  static const struct {
    const char *name;
    int n;
    uint32_t w[8];
    int hold;     /* keep the requests in flight */
    int picks;    /* phase 2 picks */
    int lo, hi;   /* replica 0's phase 2 count */
  } rows[] = {
      /* completed at once: all four tie, 1/4 each (sd 13.7) */
      {"4 equal, completed at once", 4, {1, 1, 1, 1}, 0, 1000, 182, 318},
      /* 8: 1/8 each (sd 10.5) */
      {"8 equal, completed at once", 8, {1, 1, 1, 1, 1, 1, 1, 1}, 0, 1600,
       134, 266},
      /* held, TIE_PERCENT 0: in-flight counts stay within one: 100 each
       * (treated as idle, it would get about 108) */
      {"4 equal, held", 4, {1, 1, 1, 1}, 1, 400, 99, 101},
      /* held, weights 3 : 1 -> 300 : 100 */
      {"weight 3 vs 1, held", 2, {3, 1}, 1, 400, 299, 301},
  };
  for (size_t row = 0; row < sizeof rows / sizeof rows[0]; row++) {
    ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED + row);
    add_n(p, rows[row].n, rows[row].w);
    if (rows[row].hold)
      SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
    static uint64_t held[MAX_HELD];
    size_t nh = 0;
    int64_t age_ms;
    assert_rc(ilb_pool_get_option(&age_ms, p, ILB_OPT_TELEMETRY_MAX_AGE_MS),
              ILB_OK);

    /* Phase 1: fresh, replica 0 wins. */
    report_load(p, 0, 0, 0, 0);
    for (int i = 1; i < rows[row].n; i++)
      report_load(p, i, 10, 0.8, 0.9);
    for (int k = 0; k < 10; k++) {
      int got = rows[row].hold ? pick_idx(p, NULL, &held[nh++])
                               : pick_done(p, NULL);
      if (got != 0)
        fail_msg("%s: fresh pick %d went to r%d", rows[row].name, k, got);
    }
    complete_all(p, held, &nh);

    /* Phase 2: replica 0's report goes stale, the others stay fresh. */
    advance((uint64_t)age_ms * MS + MS);
    for (int i = 1; i < rows[row].n; i++)
      report_load(p, i, 10, 0.8, 0.9);
    ilb_telemetry t = tm_get(p, rname(0));
    assert_true(t.stale == t.present);
    int count0 = 0;
    for (int k = 0; k < rows[row].picks; k++) {
      int got = rows[row].hold ? pick_idx(p, NULL, &held[nh++])
                               : pick_done(p, NULL);
      count0 += got == 0;
    }
    if (count0 < rows[row].lo || count0 > rows[row].hi)
      fail_msg("%s: stale replica got %d of %d picks, expected %d..%d",
               rows[row].name, count0, rows[row].picks, rows[row].lo,
               rows[row].hi);

    /* Phase 3: a fresh idle report brings it back. */
    report_load(p, 0, 0, 0, 0);
    for (int k = 0; k < 10; k++) {
      int got = rows[row].hold ? pick_idx(p, NULL, &held[nh++])
                               : pick_done(p, NULL);
      if (got != 0)
        fail_msg("%s: pick %d after a fresh report went to r%d",
                 rows[row].name, k, got);
    }
    complete_all(p, held, &nh);
    for (int i = 0; i < rows[row].n; i++)
      assert_true(info_of(p, i).in_flight == 0);
    free_pool(p);
  }
}

/* The same, a month later: a replica whose scrape broke 30 days ago is as
 * stale as one whose scrape broke 11 s ago. */
static void test_stale_idle_after_30_days(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 4, NULL);
  report_load(p, 0, 0, 0, 0);
  for (int i = 1; i < 4; i++)
    report_load(p, i, 10, 0.8, 0.9);
  assert_int_equal(pick_done(p, NULL), 0);
  advance(30 * 86400 * SEC);
  for (int i = 1; i < 4; i++)
    report_load(p, i, 10, 0.8, 0.9);
  ilb_telemetry t = tm_get(p, rname(0));
  assert_true(t.stale == t.present);
  int count0 = 0;
  for (int k = 0; k < 1000; k++)
    count0 += pick_done(p, NULL) == 0;
  assert_in(count0, 182, 318);
  free_pool(p);
}

/* Signals go stale one by one: a replica that reported a static signal
 * (total GPU memory, model ready) once and its load every scrape keeps its
 * fresh load signals. Here the fresh ones say its KV cache is full: it
 * must take no request while the other, fresh and idle, can. */
static void test_signals_stale_independently_in_composite(void **state) {
  (void)state;
  static const int statics[] = {ILB_SIGNAL_GPU_MEMORY_TOTAL,
                                ILB_SIGNAL_MODEL_READY};
  for (size_t row = 0; row < 2; row++) {
    ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
    add_n(p, 2, NULL);
    ilb_telemetry s;
    assert_rc(ilb_telemetry_init(&s), ILB_OK);
    sig_set(&s, statics[row], statics[row] == ILB_SIGNAL_MODEL_READY ? 1 : 80 * GIB);
    report(p, 0, &s); /* once, at T0 */
    advance(8 * SEC);
    report_load(p, 0, 0, 1.0, 0.5); /* KV cache full */
    report_load(p, 1, 0, 0.0, 0.5);
    assert_int_equal(pick_done(p, NULL), 1);
    advance(4 * SEC); /* the static signal is 12 s old, the others 4 s */
    ilb_telemetry t = tm_get(p, rname(0));
    assert_true(t.stale == ILB_SIGNAL_BIT(statics[row]));
    int count0 = 0;
    for (int k = 0; k < 200; k++)
      count0 += pick_done(p, NULL) == 0;
    if (count0)
      fail_msg("static signal %s stale: the replica with a full KV cache "
               "(fresh) got %d of 200 picks",
               ilb_signal_name(statics[row]), count0);
    free_pool(p);
  }
}

/* ILB_OPT_TELEMETRY_ALL_STALE. */
static void test_all_stale(void **state) {
  (void)state;
  static const uint32_t w[4] = {1, 2, 3, 4};
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 4, w);
  SET_OPT(p, ILB_OPT_TELEMETRY_ALL_STALE, ILB_ALL_STALE_SATURATED);
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  /* Nothing ever reported: no replica has fresh telemetry. */
  assert_rc(ilb_pick(&res, p, NULL), ILB_ESATURATED);
  assert_true(res.ticket == 0);
  for (int i = 0; i < 4; i++)
    report_load(p, i, 1, 0.5, 0.5);
  pick_done(p, NULL);
  advance(10 * SEC + MS);
  res.ticket = 77;
  assert_rc(ilb_pick(&res, p, NULL), ILB_ESATURATED);
  assert_true(res.ticket == 0);
  for (int i = 0; i < 4; i++)
    assert_true(info_of(p, i).in_flight == 0);
  /* One fresh report: picks work again. */
  report_load(p, 2, 1, 0.5, 0.5);
  for (int k = 0; k < 20; k++)
    pick_done(p, NULL);
  advance(10 * SEC + MS);
  assert_rc(ilb_pick(&res, p, NULL), ILB_ESATURATED);

  /* Fail open: spread by local in-flight load per unit of weight. */
  SET_OPT(p, ILB_OPT_TELEMETRY_ALL_STALE, ILB_ALL_STALE_FAIL_OPEN);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  static uint64_t held[100];
  size_t nh = 0;
  int count[4] = {0};
  for (int k = 0; k < 100; k++)
    count[pick_idx(p, NULL, &held[nh++])]++;
  for (int i = 0; i < 4; i++)
    assert_in(count[i], 10 * (i + 1) - 1, 10 * (i + 1) + 1);
  complete_all(p, held, &nh);
  free_pool(p);
}

/* ALL_STALE = SATURATED is about the *available* replicas: fresh telemetry
 * on one that is unavailable, or was removed, does not count. */
static void test_all_stale_ignores_unavailable_and_removed(void **state) {
  (void)state;
  for (int removed = 0; removed < 2; removed++) {
    ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
    add_n(p, 3, NULL);
    SET_OPT(p, ILB_OPT_TELEMETRY_ALL_STALE, ILB_ALL_STALE_SATURATED);
    for (int i = 0; i < 3; i++)
      report_load(p, i, 1, 0.5, 0.5);
    advance(6 * SEC);
    report_load(p, 0, 1, 0.5, 0.5); /* only r0 keeps reporting */
    advance(5 * SEC);               /* r1, r2 stale; r0 fresh */
    pick_done(p, NULL);
    if (removed)
      assert_rc(ilb_replica_remove(p, rname(0)), ILB_OK);
    else
      assert_rc(ilb_replica_set_available(p, rname(0), 0), ILB_OK);
    ilb_pick_result res;
    assert_rc(ilb_pick_result_init(&res), ILB_OK);
    int rc = ilb_pick(&res, p, NULL);
    if (rc == ILB_OK)
      assert_rc(ilb_complete(p, res.ticket, NULL), ILB_OK);
    if (rc != ILB_ESATURATED)
      fail_msg("the only fresh replica %s, the others stale: pick gave %s "
               "(replica %s), expected ESATURATED",
               removed ? "removed" : "unavailable", ilb_err_name(rc),
               res.replica_id ? res.replica_id : "-");
    free_pool(p);
  }
}

/* ------------------------------------------------------------------------ */
/* 4. Composite picks what a human would pick                                */
/* ------------------------------------------------------------------------ */

#define P_W BIT(REQUESTS_WAITING)
#define P_K BIT(KV_CACHE_USAGE)
#define P_G BIT(GPU_UTILIZATION)
#define P_T BIT(TTFT)
#define P_M (BIT(GPU_MEMORY_FREE) | BIT(GPU_MEMORY_TOTAL))
#define P_R BIT(MODEL_READY)
#define P_WKG (P_W | P_K | P_G)

typedef struct rep {
  uint32_t weight;
  uint64_t present;
  double waiting, kv, gpu, ttft, mfree, mtotal, ready;
} rep;

typedef struct wts {
  double q, g, k, l, m; /* term weights (option / 1000) */
  int64_t kv_sat_pct, mem_min_mib;
} wts;

/* The header's formula for a replica with fresh telemetry. */
static double model_score(const rep *r, const wts *w, double in_flight) {
  double s = w->q * ((r->present & P_W ? r->waiting : 0) + in_flight + 1) /
             r->weight;
  if (r->present & P_G)
    s += w->g * r->gpu;
  if (r->present & P_K)
    s += w->k * r->kv;
  if (r->present & P_T)
    s += w->l * r->ttft;
  if ((r->present & P_M) == P_M && r->mtotal > 0)
    s += w->m * (1 - r->mfree / r->mtotal);
  return s;
}

static int model_saturated(const rep *r, const wts *w) {
  return ((r->present & P_K) && w->kv_sat_pct > 0 &&
          r->kv * 100 >= (double)w->kv_sat_pct) ||
         ((r->present & BIT(GPU_MEMORY_FREE)) && w->mem_min_mib > 0 &&
          r->mfree < (double)w->mem_min_mib * MIB) ||
         ((r->present & P_R) && r->ready == 0);
}

/* The documented winner (saturated ones only when all are), and its
 * relative margin over the runner-up. */
static int model_winner(const rep *r, int n, const wts *w, double *margin) {
  int all_sat = 1;
  for (int i = 0; i < n; i++)
    all_sat &= model_saturated(&r[i], w);
  int best = -1;
  double bs = 0, second = 1e300;
  for (int i = 0; i < n; i++) {
    if (!all_sat && model_saturated(&r[i], w))
      continue;
    double s = model_score(&r[i], w, 0);
    if (best < 0 || s < bs) {
      if (best >= 0)
        second = bs;
      best = i, bs = s;
    } else if (s < second) {
      second = s;
    }
  }
  *margin = (second - bs) / second;
  return best;
}

static ilb_telemetry rep_tm(const rep *r) {
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  t.present = r->present;
  t.requests_waiting = r->waiting;
  t.kv_cache_usage = r->kv;
  t.gpu_utilization = r->gpu;
  t.ttft_s = r->ttft;
  t.gpu_memory_free = r->mfree;
  t.gpu_memory_total = r->mtotal;
  t.model_ready = r->ready;
  return t;
}

static void test_composite_human_choices(void **state) {
  (void)state;
  static const struct {
    const char *name;
    int n;
    rep r[4];
    int64_t kv_sat, mem_min, w_mem; /* -1: default */
    int human;
  } cases[] = {
      {"A100 (weight 5) beats T4 (weight 2) with the same queue", 2,
       {{2, P_WKG, 10, 0.5, 0.7, 0, 0, 0, 0},
        {5, P_WKG, 10, 0.5, 0.7, 0, 0, 0, 0}},
       -1, -1, -1, 1},
      {"shorter queue", 2,
       {{1, P_WKG, 8, 0.4, 0.8, 0, 0, 0, 0},
        {1, P_WKG, 2, 0.4, 0.8, 0, 0, 0, 0}},
       -1, -1, -1, 1},
      {"emptier KV cache", 3,
       {{1, P_WKG, 4, 0.9, 0.5, 0, 0, 0, 0},
        {1, P_WKG, 4, 0.3, 0.5, 0, 0, 0, 0},
        {1, P_WKG, 4, 0.6, 0.5, 0, 0, 0, 0}},
       -1, -1, -1, 1},
      {"idle GPU", 2,
       {{1, P_WKG, 3, 0.5, 0.2, 0, 0, 0, 0},
        {1, P_WKG, 3, 0.5, 0.95, 0, 0, 0, 0}},
       -1, -1, -1, 0},
      {"faster time to first token", 3,
       {{1, P_WKG | P_T, 3, 0.5, 0.5, 2.0, 0, 0, 0},
        {1, P_WKG | P_T, 3, 0.5, 0.5, 0.25, 0, 0, 0},
        {1, P_WKG | P_T, 3, 0.5, 0.5, 1.0, 0, 0, 0}},
       -1, -1, -1, 1},
      {"full KV cache takes nothing though idle", 2,
       {{1, P_WKG, 0, 1.0, 0, 0, 0, 0, 0},
        {1, P_WKG, 30, 0.6, 0.9, 0, 0, 0, 0}},
       -1, -1, -1, 1},
      {"KV saturation at 90%", 3,
       {{1, P_WKG, 0, 0.92, 0.1, 0, 0, 0, 0},
        {1, P_WKG, 5, 0.5, 0.6, 0, 0, 0, 0},
        {1, P_WKG, 1, 0.95, 0.1, 0, 0, 0, 0}},
       90, -1, -1, 1},
      {"every KV cache full: fail open to the best", 3,
       {{1, P_WKG, 5, 1.0, 0.5, 0, 0, 0, 0},
        {1, P_WKG, 0, 1.0, 0.5, 0, 0, 0, 0},
        {1, P_WKG, 9, 1.0, 0.5, 0, 0, 0, 0}},
       -1, -1, -1, 1},
      {"free GPU memory below the minimum", 2,
       {{1, P_WKG | P_M, 0, 0.1, 0.1, 0, 512 * MIB, 80 * GIB, 0},
        {1, P_WKG | P_M, 10, 0.5, 0.8, 0, 10 * GIB, 80 * GIB, 0}},
       -1, 1024, -1, 1},
      {"model not ready", 3,
       {{1, P_WKG | P_R, 0, 0, 0, 0, 0, 0, 0},
        {1, P_WKG | P_R, 20, 0.5, 0.9, 0, 0, 0, 1},
        {1, P_WKG | P_R, 25, 0.5, 0.9, 0, 0, 0, 1}},
       -1, -1, -1, 1},
      {"GPU memory term when weighted", 2,
       {{1, P_WKG | P_M, 2, 0.5, 0.5, 0, 8 * GIB, 80 * GIB, 0},
        {1, P_WKG | P_M, 2, 0.5, 0.5, 0, 64 * GIB, 80 * GIB, 0}},
       -1, -1, 1000, 1},
      {"four mixed, per unit of capacity", 4,
       {{1, P_WKG, 2, 0.3, 0.4, 0, 0, 0, 0},
        {5, P_WKG, 12, 0.6, 0.9, 0, 0, 0, 0},
        {2, P_WKG, 4, 0.2, 0.5, 0, 0, 0, 0},
        {1, P_WKG | P_T, 0, 0.95, 0.99, 5, 0, 0, 0}},
       -1, -1, -1, 2},
      {"A100 with 20 waiting beats T4 with 10 waiting", 2,
       {{2, P_WKG, 10, 0.5, 0.5, 0, 0, 0, 0},
        {5, P_WKG, 20, 0.5, 0.5, 0, 0, 0, 0}},
       -1, -1, -1, 1},
      {"T4 with 3 waiting beats A100 with 20 waiting", 2,
       {{5, P_WKG, 20, 0.5, 0.5, 0, 0, 0, 0},
        {1, P_WKG, 3, 0.5, 0.5, 0, 0, 0, 0}},
       -1, -1, -1, 1},
      {"an unreported signal adds nothing", 2,
       {{1, P_WKG, 0, 0, 0.5, 0, 0, 0, 0},
        {1, P_W, 0, 0.9, 0.9, 0, 0, 0, 0}},
       -1, -1, -1, 1},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED + c);
    SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
    wts w = {0.4, 0.3, 0.2, 0.1, 0.0, 100, 0};
    if (cases[c].kv_sat >= 0) {
      SET_OPT(p, ILB_OPT_KV_SATURATION_PERCENT, cases[c].kv_sat);
      w.kv_sat_pct = cases[c].kv_sat;
    }
    if (cases[c].mem_min >= 0) {
      SET_OPT(p, ILB_OPT_GPU_MEMORY_MIN_FREE_MIB, cases[c].mem_min);
      w.mem_min_mib = cases[c].mem_min;
    }
    if (cases[c].w_mem >= 0) {
      SET_OPT(p, ILB_OPT_SCORE_MEMORY, cases[c].w_mem);
      w.m = (double)cases[c].w_mem / 1000;
    }
    uint32_t weights[4];
    for (int i = 0; i < cases[c].n; i++)
      weights[i] = cases[c].r[i].weight;
    add_n(p, cases[c].n, weights);
    for (int i = 0; i < cases[c].n; i++) {
      ilb_telemetry t = rep_tm(&cases[c].r[i]);
      report(p, i, &t);
    }
    double margin;
    int formula = model_winner(cases[c].r, cases[c].n, &w, &margin);
    if (formula != cases[c].human || !(margin > 1e-4))
      fail_msg("case \"%s\": the formula picks r%d (margin %g), the table "
               "says r%d",
               cases[c].name, formula, margin, cases[c].human);
    for (int k = 0; k < 50; k++) {
      int got = pick_done(p, NULL);
      if (got != cases[c].human)
        fail_msg("case \"%s\": pick %d went to r%d, expected r%d",
                 cases[c].name, k, got, cases[c].human);
    }
    free_pool(p);
  }
}

/* Telemetry options apply from the next pick on, without a new report. */
static void test_composite_options_apply_at_once(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 2, NULL);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  /* r0: busy GPU, empty KV cache; r1: idle GPU, half-full KV cache.
   * Defaults: r0 = .4 + .27 = .67, r1 = .4 + .1 = .5. */
  report_load(p, 0, 0, 0.0, 0.9);
  report_load(p, 1, 0, 0.5, 0.0);
  static const struct {
    int32_t opt;
    int64_t val;
    int winner;
  } steps[] = {
      {0, 0, 1},
      {ILB_OPT_SCORE_GPU, 0, 0},   /* r0 .4, r1 .5 */
      {ILB_OPT_SCORE_GPU, 300, 1},
      {ILB_OPT_SCORE_KV, 2000, 0}, /* r1 .4 + 1.0 */
      {ILB_OPT_SCORE_KV, 200, 1},
      {ILB_OPT_KV_SATURATION_PERCENT, 50, 0}, /* r1 saturated */
      {ILB_OPT_KV_SATURATION_PERCENT, 51, 1},
      {ILB_OPT_KV_SATURATION_PERCENT, 0, 1}, /* off */
      {ILB_OPT_SCORE_QUEUE, 0, 1},
      {ILB_OPT_SCORE_GPU, 100, 0}, /* r0 .09, r1 .1 */
  };
  for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
    if (steps[s].opt)
      SET_OPT(p, steps[s].opt, steps[s].val);
    for (int k = 0; k < 20; k++) {
      int got = pick_done(p, NULL);
      if (got != steps[s].winner)
        fail_msg("step %zu (option %d = %lld): r%d, expected r%d", s,
                 steps[s].opt, (long long)steps[s].val, got,
                 steps[s].winner);
    }
  }
  SET_OPT(p, ILB_OPT_SCORE_QUEUE, 400);
  SET_OPT(p, ILB_OPT_SCORE_GPU, 300);
  SET_OPT(p, ILB_OPT_KV_SATURATION_PERCENT, 100);
  /* The maximum age: 5 s later, 1 s makes both stale at once, so with
   * ALL_STALE = SATURATED picks fail; 60 s makes them fresh again. */
  SET_OPT(p, ILB_OPT_TELEMETRY_ALL_STALE, ILB_ALL_STALE_SATURATED);
  advance(5 * SEC);
  assert_int_equal(pick_done(p, NULL), 1);
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 1000);
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, p, NULL), ILB_ESATURATED);
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 60000);
  for (int k = 0; k < 20; k++)
    assert_int_equal(pick_done(p, NULL), 1);
  /* Weight changes too: r0 at weight 100 makes its queue term tiny
   * (.004 + .27 < .5). */
  assert_rc(ilb_replica_set_weight(p, rname(0), 100), ILB_OK);
  for (int k = 0; k < 20; k++)
    assert_int_equal(pick_done(p, NULL), 0);
  free_pool(p);
}

/* Inside a batch, option changes reach picks at the commit (the batch
 * contract), telemetry options included. */
static void test_composite_options_wait_for_batch_commit(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 2, NULL);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  report_load(p, 0, 0, 0.0, 0.9);
  report_load(p, 1, 0, 0.5, 0.0);
  assert_int_equal(pick_done(p, NULL), 1);
  assert_rc(ilb_pool_batch_begin(p), ILB_OK);
  SET_OPT(p, ILB_OPT_SCORE_GPU, 0);
  int moved = 0;
  for (int k = 0; k < 20; k++)
    moved += pick_done(p, NULL) != 1;
  assert_rc(ilb_pool_batch_commit(p), ILB_OK);
  if (moved)
    fail_msg("%d of 20 picks inside the batch used the uncommitted "
             "ILB_OPT_SCORE_GPU",
             moved);
  for (int k = 0; k < 20; k++)
    assert_int_equal(pick_done(p, NULL), 0);
  free_pool(p);
}

/* A report inside a batch is stored at once but scored at the commit. */
static void test_report_inside_batch(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 2, NULL);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  report_load(p, 0, 0, 0.0, 0.0);
  report_load(p, 1, 0, 0.5, 0.5);
  assert_int_equal(pick_done(p, NULL), 0);
  assert_rc(ilb_pool_batch_begin(p), ILB_OK);
  report_load(p, 0, 0, 0.9, 0.9); /* replica 0 turns busy */
  assert_true(tm_get(p, rname(0)).kv_cache_usage == 0.9);
  for (int k = 0; k < 20; k++)
    assert_int_equal(pick_done(p, NULL), 0);
  assert_rc(ilb_pool_batch_commit(p), ILB_OK);
  for (int k = 0; k < 20; k++)
    assert_int_equal(pick_done(p, NULL), 1);
  free_pool(p);
}

/* Five signals reported at five different times (more than the four
 * stages tracked): the oldest expire together, early, and the newest one
 * still counts until its own expiry. */
static void test_many_report_times(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 2, NULL);
  SET_OPT(p, ILB_OPT_TELEMETRY_ALL_STALE, ILB_ALL_STALE_SATURATED);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  static const int sigs[] = {ILB_SIGNAL_REQUESTS_WAITING,
                             ILB_SIGNAL_GPU_UTILIZATION,
                             ILB_SIGNAL_KV_CACHE_USAGE, ILB_SIGNAL_TTFT,
                             ILB_SIGNAL_MODEL_READY};
  for (int k = 0; k < 5; k++) { /* at +0, +1, .. +4 s */
    ilb_telemetry t;
    assert_rc(ilb_telemetry_init(&t), ILB_OK);
    sig_set(&t, sigs[k], sigs[k] == ILB_SIGNAL_MODEL_READY ? 0 : 0.5);
    report(p, 0, &t);
    advance(SEC);
  }
  /* replica 1 never reports; replica 0 is "not ready" while fresh */
  for (int k = 0; k < 10; k++)
    assert_int_equal(pick_done(p, NULL), 1);
  advance(8500 * MS); /* +13.5 s: only model_ready (at +4 s) is fresh */
  ilb_telemetry got = tm_get(p, rname(0));
  assert_true(!(got.stale & BIT(MODEL_READY)));
  assert_true(got.stale & BIT(REQUESTS_WAITING));
  /* fresh telemetry exists: no ESATURATED, and "not ready" still holds */
  for (int k = 0; k < 10; k++)
    assert_int_equal(pick_done(p, NULL), 1);
  advance(SEC); /* +14.5 s: everything stale */
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, p, NULL), ILB_ESATURATED);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 5. Near-ties                                                              */
/* ------------------------------------------------------------------------ */

static void test_near_ties(void **state) {
  (void)state;
  static const struct {
    const char *name;
    int64_t tie_pct;
    int n;
    double kv[3], gpu[3];
    int lo, hi; /* r0's count of 1000 */
  } rows[] = {
      /* identical: 1/2 each (sd 15.8), with the default tolerance and with
       * none (an exact tie is still a tie) */
      {"identical, default", -1, 2, {0.5, 0.5}, {0.5, 0.5}, 400, 600},
      {"identical, 0%", 0, 2, {0.5, 0.5}, {0.5, 0.5}, 400, 600},
      /* three identical: 1/3 each (sd 14.9) */
      {"3 identical", -1, 3, {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5}, 258, 408},
      /* .5 vs .5004 (0.08%): with 0% the better always wins */
      {"tiny difference, 0%", 0, 2, {0.500, 0.502}, {0, 0}, 1000, 1000},
      {"tiny difference, default 2%", -1, 2, {0.500, 0.502}, {0, 0}, 400,
       600},
      /* .4 vs .42 (4.8% of the larger): a tie at 10%, not at 2% */
      {"5% difference, 10%", 10, 2, {0, 0}, {0, 0.2 / 3}, 400, 600},
      {"5% difference, 2%", 2, 2, {0, 0}, {0, 0.2 / 3}, 1000, 1000},
  };
  for (size_t row = 0; row < sizeof rows / sizeof rows[0]; row++) {
    ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED + row);
    add_n(p, rows[row].n, NULL);
    if (rows[row].tie_pct >= 0)
      SET_OPT(p, ILB_OPT_TIE_PERCENT, rows[row].tie_pct);
    for (int i = 0; i < rows[row].n; i++)
      report_load(p, i, 0, rows[row].kv[i], rows[row].gpu[i]);
    int count0 = 0;
    for (int k = 0; k < 1000; k++)
      count0 += pick_done(p, NULL) == 0;
    if (count0 < rows[row].lo || count0 > rows[row].hi)
      fail_msg("%s: r0 got %d of 1000, expected %d..%d", rows[row].name,
               count0, rows[row].lo, rows[row].hi);
    free_pool(p);
  }
  /* The other scoring policies break exact ties at random too. */
  static const int32_t pol[] = {ILB_POLICY_PEAK_EWMA, ILB_POLICY_LEAST_TOKENS};
  for (size_t i = 0; i < 2; i++) {
    ilb_pool *p = new_pool(pol[i], SEED);
    add_n(p, 2, NULL);
    int count0 = 0;
    for (int k = 0; k < 1000; k++)
      count0 += pick_done(p, NULL) == 0;
    assert_in(count0, 400, 600);
    free_pool(p);
  }
}

/* ------------------------------------------------------------------------ */
/* 6. Sampling in large pools                                                */
/* ------------------------------------------------------------------------ */

/* 100 replicas, r_i with kv = i / 200 (r0 best, r99 worst), TIE 0. With
 * ILB_OPT_SCAN_MAX 16 a pick compares k = 2 distinct replicas drawn
 * uniformly and takes the better: r_i wins with probability
 * 2 (99 - i) / (100 * 99) -- r99 never (it loses to whichever other one is
 * drawn with it), r0 1/50 of the time (twice its 1/100 share). */
/* The tie window is relative to the lowest score of all compared, not to
 * a running best that slides down a chain of close scores: least_tokens
 * over weights 100..163 with no load scores 512 / w; with 2% ties only the
 * weights within 2% of 163 may win. */
static void test_tie_window_does_not_slide(void **state) {
  (void)state;
  uint32_t w[64];
  for (int i = 0; i < 64; i++)
    w[i] = 100 + (uint32_t)i;
  ilb_pool *p = new_pool(ILB_POLICY_LEAST_TOKENS, SEED);
  add_n(p, 64, w);
  SET_OPT(p, ILB_OPT_SCAN_MAX, 64);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 2);
  int outside = 0, seen[64] = {0};
  for (int k = 0; k < 4000; k++) {
    int i = pick_done(p, NULL);
    seen[i]++;
    /* tie iff 512/w_i - 512/163 <= 0.02 * 512/w_i, i.e. w_i >= 0.98*163 */
    outside += (double)w[i] < 0.98 * 163.0;
  }
  assert_int_equal(outside, 0);
  /* and the ties are all drawn: 160..163 (w >= 159.74) */
  for (int i = 60; i < 64; i++)
    assert_true(seen[i] > 4000 / 4 / 2);
  free_pool(p);
}

/* Fresh and stale candidates tied exactly share the picks evenly: one
 * replica reports telemetry whose terms are 0, three report nothing; all
 * score QUEUE * 1 / 1. */
static void test_fresh_stale_ties_uniform(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, 4, NULL);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  sig_set(&t, ILB_SIGNAL_REQUESTS_WAITING, 0);
  report(p, 0, &t);
  int cnt[4] = {0};
  for (int k = 0; k < 4000; k++)
    cnt[pick_done(p, NULL)]++;
  for (int i = 0; i < 4; i++) /* 1000 expected; 6 sigma ~ 165 */
    if (cnt[i] < 830 || cnt[i] > 1170)
      fail_msg("replica %d got %d of 4000 picks (expected ~1000)", i,
               cnt[i]);
  free_pool(p);
}

/* When no sampled candidate has room, the scoring policies choose among
 * the whole pool by score, not at random: 100 replicas of capacity 1, all
 * full but 98 (weight 1) and 99 (weight 5). A pick goes to 98 only when
 * 98 is sampled and 99 is not (k = 2 of 100: about 2%); the core's random
 * fallback would send half of the others there. */
static void test_sampled_full_rescans(void **state) {
  (void)state;
  static const int32_t pols[] = {ILB_POLICY_COMPOSITE, ILB_POLICY_PEAK_EWMA,
                                 ILB_POLICY_LEAST_TOKENS};
  for (size_t q = 0; q < 3; q++) {
    ilb_pool *p = new_pool(pols[q], SEED);
    for (int i = 0; i < 100; i++)
      add_replica(p, rname(i), i == 99 ? 5 : 1, 1, (void *)(uintptr_t)(i + 1));
    SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
    /* fill 0..97: with 98 and 99 unavailable, 98 picks take them all */
    assert_rc(ilb_replica_set_available(p, rname(98), 0), ILB_OK);
    assert_rc(ilb_replica_set_available(p, rname(99), 0), ILB_OK);
    static uint64_t held[100];
    size_t nh = 0;
    for (int i = 0; i < 98; i++)
      pick_idx(p, NULL, &held[nh++]);
    for (int i = 0; i < 98; i++)
      assert_int_equal(info_of(p, i).in_flight, 1);
    assert_rc(ilb_replica_set_available(p, rname(98), 1), ILB_OK);
    assert_rc(ilb_replica_set_available(p, rname(99), 1), ILB_OK);
    int to98 = 0;
    for (int k = 0; k < 200; k++)
      to98 += pick_done(p, NULL) == 98;
    if (to98 >= 20)
      fail_msg("%s: %d of 200 picks went to replica 98 (weight 1) with 99 "
               "(weight 5) free too: expected about 4",
               ilb_policy_name(pols[q]), to98);
    complete_all(p, held, &nh);
    free_pool(p);
  }
}

static void test_sampling(void **state) {
  (void)state;
  enum { N = 100, PICKS = 20000 };
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  add_n(p, N, NULL);
  for (int i = 0; i < N; i++)
    report_load(p, i, 0, i / 200.0, 0.5);
  static int count[N];
  memset(count, 0, sizeof count);
  for (int k = 0; k < PICKS; k++)
    count[pick_done(p, NULL)]++;
  assert_int_equal(count[N - 1], 0);
  /* r0: E = 400, sd 19.8; r50: E = 198, sd 14 */
  assert_in(count[0], 300, 500);
  assert_true(count[0] > PICKS / N);
  assert_in(count[50], 128, 268);
  /* Rank order: the best ten win more than the worst ten together. */
  int top = 0, bottom = 0;
  for (int i = 0; i < 10; i++)
    top += count[i], bottom += count[N - 1 - i];
  assert_true(top > 3 * bottom);

  /* Pools scanned in full: the best always wins. */
  SET_OPT(p, ILB_OPT_SCAN_MAX, N);
  for (int k = 0; k < 1000; k++)
    assert_int_equal(pick_done(p, NULL), 0);

  /* Sampling where nearly every replica is saturated: when both sampled
   * ones are, the whole pool is scanned, so the one healthy replica gets
   * every request. */
  SET_OPT(p, ILB_OPT_SCAN_MAX, 16);
  for (int i = 0; i < N; i++)
    report_load(p, i, 0, i == 37 ? 0.5 : 1.0, 0.5);
  for (int k = 0; k < 1000; k++)
    assert_int_equal(pick_done(p, NULL), 37);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 7. PeakEWMA                                                               */
/* ------------------------------------------------------------------------ */

static void complete_latency(ilb_pool *p, uint64_t ticket, uint64_t lat_ns) {
  ilb_outcome out;
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  out.latency_ns = lat_ns;
  assert_rc(ilb_complete(p, ticket, &out), ILB_OK);
}

/* Four equal replicas answering in 100 ms. Then r2 turns 10x slower.
 * Stated reaction: ONE completion. Its first 1000 ms completion replaces its
 * estimate at once (the peak rule), so with the other three at 100 ms
 * it receives none of the next 27 requests held in flight (the others at
 * in-flight k cost 100 ms x (k + 1) <= 900 ms < 1000 ms), and it is not
 * shunned for ever: within 12 more it gets one (the others' cost passes
 * 1000 ms). */
static void test_peak_ewma_slow_replica(void **state) {
  (void)state;
  enum { SLOW = 2 };
  ilb_pool *p = new_pool(ILB_POLICY_PEAK_EWMA, SEED);
  add_n(p, 4, NULL);
  static uint64_t tk[64];
  int who[64];
  /* Warm-up: rounds of 8 requests in flight, all answering in 100 ms. */
  for (int round = 0; round < 10; round++) {
    int count[4] = {0};
    for (int k = 0; k < 8; k++)
      count[who[k] = pick_idx(p, NULL, &tk[k])]++;
    if (round > 0)
      for (int i = 0; i < 4; i++)
        if (count[i] != 2)
          fail_msg("warm-up round %d: r%d got %d of 8", round, i, count[i]);
    advance(100 * MS);
    for (int k = 0; k < 8; k++)
      complete_latency(p, tk[k], 100 * MS);
  }
  assert_rel(info_of(p, SLOW).latency_ewma_ms, 100, 1e-9);

  /* r2 turns slow: in this round its two requests take 1000 ms. */
  int count[4] = {0};
  for (int k = 0; k < 8; k++)
    count[who[k] = pick_idx(p, NULL, &tk[k])]++;
  assert_int_equal(count[SLOW], 2); /* full share before */
  advance(100 * MS);
  int first = -1;
  for (int k = 0; k < 8; k++)
    if (who[k] == SLOW && first < 0)
      first = k;
  complete_latency(p, tk[first], 1000 * MS); /* the first slow completion */
  assert_rel(info_of(p, SLOW).latency_ewma_ms, 1000, 1e-9);
  for (int k = 0; k < 8; k++)
    if (k != first)
      complete_latency(p, tk[k], who[k] == SLOW ? 1000 * MS : 100 * MS);

  /* After one slow completion: none of the next 27. */
  int n = 0;
  for (; n < 27; n++) {
    who[n] = pick_idx(p, NULL, &tk[n]);
    if (who[n] == SLOW)
      fail_msg("held pick %d went to the slow replica", n);
  }
  int slow_after = 0;
  for (; n < 39; n++) {
    who[n] = pick_idx(p, NULL, &tk[n]);
    slow_after += who[n] == SLOW;
  }
  assert_true(slow_after >= 1);
  for (int k = 0; k < n; k++)
    complete_latency(p, tk[k], who[k] == SLOW ? 1000 * MS : 100 * MS);
  free_pool(p);
}

/* Failures are recorded as at least ILB_OPT_EWMA_PENALTY_MS, under every
 * policy; 4xx other than 429 are not the replica's fault; CANCELLED
 * records nothing. */
static void test_peak_ewma_penalty(void **state) {
  (void)state;
  static const struct {
    int32_t status, http;
    uint64_t lat_ms;
    int64_t penalty_ms; /* -1: default 10000 */
    double want_ms;     /* -1: no observation */
  } rows[] = {
      {ILB_OUTCOME_CONNECT_ERROR, 0, 1, -1, 10000},
      {ILB_OUTCOME_TIMEOUT, 0, 1, -1, 10000},
      {ILB_OUTCOME_HTTP_ERROR, 503, 1, -1, 10000},
      {ILB_OUTCOME_HTTP_ERROR, 500, 1, -1, 10000},
      {ILB_OUTCOME_HTTP_ERROR, 429, 1, -1, 10000},
      {ILB_OUTCOME_OK, 503, 1, -1, 10000},
      {ILB_OUTCOME_CONNECT_ERROR, 0, 0, -1, 10000},
      {ILB_OUTCOME_TIMEOUT, 0, 20000, -1, 20000}, /* measured is larger */
      {ILB_OUTCOME_CONNECT_ERROR, 0, 1, 2500, 2500},
      {ILB_OUTCOME_HTTP_ERROR, 404, 1, -1, 1},
      {ILB_OUTCOME_HTTP_ERROR, 400, 0, -1, -1},
      {ILB_OUTCOME_CANCELLED, 0, 5, -1, -1},
      {ILB_OUTCOME_OK, 200, 250, -1, 250},
      {ILB_OUTCOME_OK, 0, 0, -1, -1},
  };
  for (size_t pi = 0; pi < N_POLICIES; pi++) {
    for (size_t row = 0; row < sizeof rows / sizeof rows[0]; row++) {
      ilb_pool *p = new_pool(all_policies[pi], SEED);
      add_n(p, 1, NULL);
      if (rows[row].penalty_ms >= 0)
        SET_OPT(p, ILB_OPT_EWMA_PENALTY_MS, rows[row].penalty_ms);
      assert_true(info_of(p, 0).latency_ewma_ms == -1.0);
      uint64_t t;
      pick_idx(p, NULL, &t);
      ilb_outcome out;
      assert_rc(ilb_outcome_init(&out), ILB_OK);
      out.status = rows[row].status;
      out.http_status = rows[row].http;
      out.latency_ns = rows[row].lat_ms * MS;
      assert_rc(ilb_complete(p, t, &out), ILB_OK);
      double got = info_of(p, 0).latency_ewma_ms;
      int ok = rows[row].want_ms < 0
                   ? got == -1.0
                   : abs_d(got - rows[row].want_ms) <= 1e-9 * rows[row].want_ms;
      if (!ok)
        fail_msg("%s, status %d http %d latency %llu ms: estimate %g ms, "
                 "expected %g",
                 ilb_policy_name(all_policies[pi]), rows[row].status,
                 rows[row].http, (unsigned long long)rows[row].lat_ms, got,
                 rows[row].want_ms);
      free_pool(p);
    }
  }
}

/* The estimate decays as exp(-dt / tau) since the last observation; a
 * lower latency is blended in with weight 1 - exp(-dt / tau); a higher one
 * replaces it. */
static void test_peak_ewma_decay(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_PEAK_EWMA, SEED);
  add_n(p, 1, NULL);
  uint64_t t;
  double tau = 10.0; /* s, the default */
  pick_idx(p, NULL, &t);
  complete_latency(p, t, 200 * MS);
  assert_rel(info_of(p, 0).latency_ewma_ms, 200, 1e-12);

  advance(3700 * MS);
  double w = exp_neg_d(3.7 / tau);
  assert_rel(info_of(p, 0).latency_ewma_ms, 200 * w, 1e-6);
  pick_idx(p, NULL, &t);
  complete_latency(p, t, 50 * MS);
  double e = 200 * w + 50 * (1 - w);
  assert_rel(info_of(p, 0).latency_ewma_ms, e, 1e-6);

  advance(1234 * MS);
  assert_rel(info_of(p, 0).latency_ewma_ms, e * exp_neg_d(1.234 / tau), 1e-6);
  pick_idx(p, NULL, &t);
  complete_latency(p, t, 900 * MS); /* a peak replaces it */
  assert_rel(info_of(p, 0).latency_ewma_ms, 900, 1e-9);

  /* A shorter time constant applies to the estimate at once. */
  SET_OPT(p, ILB_OPT_EWMA_DECAY_MS, 2000);
  advance(1 * SEC);
  assert_rel(info_of(p, 0).latency_ewma_ms, 900 * exp_neg_d(0.5), 1e-6);
  advance(59 * SEC);
  assert_rel(info_of(p, 0).latency_ewma_ms, 900 * exp_neg_d(30.0), 1e-6);
  assert_true(info_of(p, 0).latency_ewma_ms > 0);
  free_pool(p);
}

/* A replica without an observation reports -1 and is scored with
 * ILB_OPT_EWMA_DEFAULT_MS. */
static void test_peak_ewma_default(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_PEAK_EWMA, SEED);
  add_n(p, 2, NULL);
  assert_true(info_of(p, 0).latency_ewma_ms == -1.0);
  assert_true(info_of(p, 1).latency_ewma_ms == -1.0);
  /* r0 observed at 500 ms (place it there with r1 unavailable). */
  assert_rc(ilb_replica_set_available(p, rname(1), 0), ILB_OK);
  uint64_t t;
  assert_int_equal(pick_idx(p, NULL, &t), 0);
  complete_latency(p, t, 500 * MS);
  assert_rc(ilb_replica_set_available(p, rname(1), 1), ILB_OK);
  assert_true(info_of(p, 1).latency_ewma_ms == -1.0);
  static const struct {
    int64_t def_ms;
    int winner;
  } steps[] = {{1000, 0}, {400, 1}, {600, 0}, {1, 1}, {3600000, 0}};
  for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
    SET_OPT(p, ILB_OPT_EWMA_DEFAULT_MS, steps[s].def_ms);
    for (int k = 0; k < 20; k++)
      if (pick_done(p, NULL) != steps[s].winner)
        fail_msg("default %lld ms vs 500 ms: expected r%d",
                 (long long)steps[s].def_ms, steps[s].winner);
  }
  /* Completions without a latency left r1 unobserved. */
  assert_true(info_of(p, 1).latency_ewma_ms == -1.0);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 8. Token cost                                                             */
/* ------------------------------------------------------------------------ */

/* tokens_in_flight = sum over open tickets of prompt + output * pct / 100
 * under every policy, for requests with estimates; 0 once all complete. */
static void test_tokens_in_flight_all_policies(void **state) {
  (void)state;
  enum { N = 3, PICKS = 60 };
  static const uint32_t w[N] = {1, 2, 3};
  for (size_t pi = 0; pi < N_POLICIES; pi++) {
    ilb_pool *p = new_pool(all_policies[pi], SEED);
    add_n(p, N, w);
    SET_OPT(p, ILB_OPT_TOKEN_OUTPUT_PERCENT, 150);
    uint64_t want[N] = {0};
    int64_t inflight[N] = {0};
    uint64_t tk[PICKS];
    int who[PICKS];
    uint64_t cost[PICKS];
    for (int k = 0; k < PICKS; k++) {
      ilb_request req;
      assert_rc(ilb_request_init(&req), ILB_OK);
      uint32_t key = (uint32_t)k * 2654435761u;
      req.key = &key;
      req.key_len = sizeof key;
      req.prompt_tokens = k % 7 == 0 ? 0 : 10u + 7u * (uint32_t)k;
      req.output_tokens = (uint32_t)(k % 5) * 3u + (k % 7 == 0);
      cost[k] = req.prompt_tokens + req.output_tokens * 150u / 100u;
      who[k] = pick_idx(p, &req, &tk[k]);
      want[who[k]] += cost[k];
      inflight[who[k]]++;
    }
    for (int half = 0; half < 2; half++) {
      for (int i = 0; i < N; i++) {
        ilb_replica_info in = info_of(p, i);
        if (in.tokens_in_flight != want[i] || in.in_flight != inflight[i])
          fail_msg("%s, r%d: tokens %llu in flight %lld, expected %llu, %lld",
                   ilb_policy_name(all_policies[pi]), i,
                   (unsigned long long)in.tokens_in_flight,
                   (long long)in.in_flight, (unsigned long long)want[i],
                   (long long)inflight[i]);
      }
      for (int k = half; k < PICKS; k += 2) {
        ilb_outcome out;
        assert_rc(ilb_outcome_init(&out), ILB_OK);
        out.status = k % 3 == 0 ? ILB_OUTCOME_CANCELLED
                                : k % 3 == 1 ? ILB_OUTCOME_TIMEOUT
                                             : ILB_OUTCOME_OK;
        assert_rc(ilb_complete(p, tk[k], &out), ILB_OK);
        want[who[k]] -= cost[k];
        inflight[who[k]]--;
      }
    }
    for (int i = 0; i < N; i++) {
      ilb_replica_info in = info_of(p, i);
      assert_true(in.tokens_in_flight == 0 && in.in_flight == 0);
    }
    free_pool(p);
  }
}

/* least_tokens: requests without estimates cost ILB_OPT_TOKEN_DEFAULT_COST
 * (other policies give them no cost). */
static void test_least_tokens_default_cost(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_LEAST_TOKENS, SEED);
  add_n(p, 2, NULL);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  ilb_request big, none;
  assert_rc(ilb_request_init(&big), ILB_OK);
  assert_rc(ilb_request_init(&none), ILB_OK);
  big.prompt_tokens = 600;
  uint64_t tk[8];
  /* r0 holds 600. No estimates (512 each): r1 (512 < 1112), r1 again
   * (1024 < 1112), then r0 (1112 < 1536). */
  assert_rc(ilb_replica_set_available(p, rname(1), 0), ILB_OK);
  assert_int_equal(pick_idx(p, &big, &tk[0]), 0);
  assert_rc(ilb_replica_set_available(p, rname(1), 1), ILB_OK);
  assert_int_equal(pick_idx(p, &none, &tk[1]), 1);
  assert_int_equal(pick_idx(p, NULL, &tk[2]), 1);
  assert_int_equal(pick_idx(p, &none, &tk[3]), 0);
  assert_true(info_of(p, 0).tokens_in_flight == 600 + 512);
  assert_true(info_of(p, 1).tokens_in_flight == 1024);
  SET_OPT(p, ILB_OPT_TOKEN_DEFAULT_COST, 77);
  int i4 = pick_idx(p, NULL, &tk[4]);
  assert_int_equal(i4, 1);
  assert_true(info_of(p, 1).tokens_in_flight == 1024 + 77);
  for (int k = 0; k < 5; k++)
    assert_rc(ilb_complete(p, tk[k], NULL), ILB_OK);
  assert_true(info_of(p, 0).tokens_in_flight == 0);
  assert_true(info_of(p, 1).tokens_in_flight == 0);
  /* Under another policy a request without estimates costs nothing. */
  SET_OPT(p, ILB_OPT_POLICY, ILB_POLICY_P2C);
  int i = pick_idx(p, &none, &tk[0]);
  assert_true(info_of(p, i).tokens_in_flight == 0);
  assert_rc(ilb_complete(p, tk[0], NULL), ILB_OK);
  free_pool(p);
}

/* The issue's example: three 8k-token prompts are more load than four
 * 50-token ones. */
static void test_least_tokens_issue_example(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_LEAST_TOKENS, SEED);
  add_n(p, 2, NULL);
  ilb_request req;
  assert_rc(ilb_request_init(&req), ILB_OK);
  uint64_t tk[8];
  assert_rc(ilb_replica_set_available(p, rname(1), 0), ILB_OK);
  req.prompt_tokens = 8000;
  for (int k = 0; k < 3; k++)
    assert_int_equal(pick_idx(p, &req, &tk[k]), 0);
  assert_rc(ilb_replica_set_available(p, rname(1), 1), ILB_OK);
  assert_rc(ilb_replica_set_available(p, rname(0), 0), ILB_OK);
  req.prompt_tokens = 50;
  for (int k = 3; k < 7; k++)
    assert_int_equal(pick_idx(p, &req, &tk[k]), 1);
  assert_rc(ilb_replica_set_available(p, rname(0), 1), ILB_OK);
  assert_true(info_of(p, 0).tokens_in_flight == 24000);
  assert_true(info_of(p, 1).tokens_in_flight == 200);
  assert_true(info_of(p, 0).in_flight == 3 && info_of(p, 1).in_flight == 4);
  static const struct {
    int32_t policy;
    int want;
  } rows[] = {{ILB_POLICY_LEAST_TOKENS, 1},
              {ILB_POLICY_LEAST_CONN, 0},
              {ILB_POLICY_WEIGHTED_LEAST_REQUEST, 0},
              {ILB_POLICY_COMPOSITE, 0}};
  req.prompt_tokens = 100;
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
    SET_OPT(p, ILB_OPT_POLICY, rows[r].policy);
    for (int k = 0; k < 10; k++)
      if (pick_done(p, &req) != rows[r].want)
        fail_msg("%s: expected r%d", ilb_policy_name(rows[r].policy),
                 rows[r].want);
  }
  for (int k = 0; k < 7; k++)
    assert_rc(ilb_complete(p, tk[k], NULL), ILB_OK);
  assert_true(info_of(p, 0).tokens_in_flight == 0);
  assert_true(info_of(p, 1).tokens_in_flight == 0);
  free_pool(p);
}

/* ILB_EREMOVED, ILB_ESTALE and ILB_EINVAL completions keep token counts
 * consistent. */
static void test_tokens_removed_and_stale(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_LEAST_TOKENS, SEED);
  add_n(p, 2, NULL);
  ilb_request req;
  assert_rc(ilb_request_init(&req), ILB_OK);
  uint64_t a1, a2, b1, c1;
  assert_rc(ilb_replica_set_available(p, rname(1), 0), ILB_OK);
  req.prompt_tokens = 100;
  assert_int_equal(pick_idx(p, &req, &a1), 0);
  req.prompt_tokens = 200;
  assert_int_equal(pick_idx(p, &req, &a2), 0);
  assert_rc(ilb_replica_set_available(p, rname(1), 1), ILB_OK);
  assert_rc(ilb_replica_set_available(p, rname(0), 0), ILB_OK);
  req.prompt_tokens = 300;
  assert_int_equal(pick_idx(p, &req, &b1), 1);
  assert_true(info_of(p, 0).tokens_in_flight == 300);

  /* Remove r0 with its two requests in flight and add it again. */
  assert_rc(ilb_replica_remove(p, rname(0)), ILB_OK);
  add_n(p, 1, NULL);
  assert_true(info_of(p, 0).tokens_in_flight == 0);
  assert_rc(ilb_replica_set_available(p, rname(1), 0), ILB_OK);
  req.prompt_tokens = 50;
  assert_int_equal(pick_idx(p, &req, &c1), 0);
  assert_rc(ilb_replica_set_available(p, rname(1), 1), ILB_OK);
  assert_rc(ilb_complete(p, a1, NULL), ILB_EREMOVED);
  assert_rc(ilb_complete(p, a1, NULL), ILB_ESTALE);
  assert_true(info_of(p, 0).tokens_in_flight == 50);
  assert_true(info_of(p, 1).tokens_in_flight == 300);

  /* An invalid outcome changes nothing and keeps the ticket valid. */
  ilb_outcome bad;
  assert_rc(ilb_outcome_init(&bad), ILB_OK);
  bad.status = 99;
  assert_rc(ilb_complete(p, b1, &bad), ILB_EINVAL);
  assert_true(info_of(p, 1).tokens_in_flight == 300);
  assert_rc(ilb_complete(p, b1, NULL), ILB_OK);
  assert_true(info_of(p, 1).tokens_in_flight == 0);
  assert_rc(ilb_complete(p, b1, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(p, 0, NULL), ILB_ESTALE);
  assert_true(info_of(p, 1).tokens_in_flight == 0);
  assert_true(info_of(p, 0).tokens_in_flight == 50);
  assert_rc(ilb_complete(p, c1, NULL), ILB_OK);
  assert_rc(ilb_complete(p, a2, NULL), ILB_EREMOVED);
  assert_true(info_of(p, 0).tokens_in_flight == 0);
  assert_true(info_of(p, 0).in_flight == 0);
  free_pool(p);
}

/* Weights divide the token load: weight 4 and 1, equal requests held in
 * flight -> 4 : 1 (TIE 0: exact up to one request). */
static void test_least_tokens_weights(void **state) {
  (void)state;
  static const uint32_t w[2] = {4, 1};
  ilb_pool *p = new_pool(ILB_POLICY_LEAST_TOKENS, SEED);
  add_n(p, 2, w);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  ilb_request req;
  assert_rc(ilb_request_init(&req), ILB_OK);
  req.prompt_tokens = 100;
  static uint64_t held[100];
  size_t nh = 0;
  int count0 = 0;
  for (int k = 0; k < 100; k++)
    count0 += pick_idx(p, &req, &held[nh++]) == 0;
  assert_in(count0, 79, 81);
  uint64_t t0 = info_of(p, 0).tokens_in_flight,
           t1 = info_of(p, 1).tokens_in_flight;
  assert_true(t0 + t1 == 10000);
  complete_all(p, held, &nh);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 9. Concurrency smoke test                                                 */
/* ------------------------------------------------------------------------ */

enum { CC_N = 6 };

typedef struct cc_shared {
  ilb_pool *pool;
  atomic_int stop;
  atomic_long picks, errors, reports, options;
} cc_shared;

static uint64_t lcg(uint64_t *s) {
  *s = *s * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
  return *s >> 33;
}

static void *cc_picker(void *arg) {
  cc_shared *sh = arg;
  uint64_t rng = (uint64_t)(uintptr_t)&rng;
  uint64_t held[8];
  size_t nh = 0;
  while (!atomic_load(&sh->stop)) {
    ilb_request req;
    ilb_request_init(&req);
    req.prompt_tokens = (uint32_t)(lcg(&rng) % 4000);
    req.output_tokens = (uint32_t)(lcg(&rng) % 500);
    ilb_pick_result res;
    ilb_pick_result_init(&res);
    int rc = ilb_pick(&res, sh->pool, &req);
    if (rc == ILB_OK) {
      atomic_fetch_add(&sh->picks, 1);
      if (nh == 8) {
        ilb_outcome out;
        ilb_outcome_init(&out);
        out.latency_ns = (lcg(&rng) % 2000) * MS;
        out.status = (int32_t)(lcg(&rng) % 5);
        if (ilb_complete(sh->pool, held[0], &out) != ILB_OK)
          atomic_fetch_add(&sh->errors, 1);
        memmove(held, held + 1, 7 * sizeof held[0]);
        nh = 7;
      }
      held[nh++] = res.ticket;
    } else if (rc != ILB_ESATURATED) {
      atomic_fetch_add(&sh->errors, 1);
    }
  }
  for (size_t i = 0; i < nh; i++)
    if (ilb_complete(sh->pool, held[i], NULL) != ILB_OK)
      atomic_fetch_add(&sh->errors, 1);
  return NULL;
}

static void *cc_writer(void *arg) {
  cc_shared *sh = arg;
  uint64_t rng = 12345;
  static const int32_t opts[] = {
      ILB_OPT_SCORE_GPU,      ILB_OPT_SCORE_KV,
      ILB_OPT_TIE_PERCENT,    ILB_OPT_TELEMETRY_MAX_AGE_MS,
      ILB_OPT_KV_SATURATION_PERCENT, ILB_OPT_SCAN_MAX,
      ILB_OPT_TOKEN_OUTPUT_PERCENT,  ILB_OPT_GPU_MEMORY_MIN_FREE_MIB};
  while (!atomic_load(&sh->stop)) {
    advance(MS);
    ilb_telemetry t = tm_load((double)(lcg(&rng) % 50),
                              (double)(lcg(&rng) % 101) / 100.0,
                              (double)(lcg(&rng) % 101) / 100.0);
    t.present |= BIT(GPU_MEMORY_FREE) | BIT(GPU_MEMORY_TOTAL);
    t.gpu_memory_total = 80 * GIB;
    t.gpu_memory_free = (double)(lcg(&rng) % 80) * GIB;
    if (ilb_replica_report(sh->pool, rname((int)(lcg(&rng) % CC_N)), &t) !=
        ILB_OK)
      atomic_fetch_add(&sh->errors, 1);
    atomic_fetch_add(&sh->reports, 1);
    if (lcg(&rng) % 4 == 0) {
      int32_t o = opts[lcg(&rng) % (sizeof opts / sizeof opts[0])];
      int64_t mn, mx;
      ilb_option_bounds(&mn, &mx, NULL, o);
      int64_t v = o == ILB_OPT_TELEMETRY_MAX_AGE_MS
                      ? 1 + (int64_t)(lcg(&rng) % 50)
                  : o == ILB_OPT_SCAN_MAX ? (int64_t)(lcg(&rng) % 8)
                  : o == ILB_OPT_GPU_MEMORY_MIN_FREE_MIB
                      ? (int64_t)(lcg(&rng) % 40000)
                      : mn + (int64_t)(lcg(&rng) % (uint64_t)(mx - mn < 2000 ? mx - mn + 1 : 2000));
      if (ilb_pool_set_option(sh->pool, o, v) != ILB_OK)
        atomic_fetch_add(&sh->errors, 1);
      atomic_fetch_add(&sh->options, 1);
    }
    if (lcg(&rng) % 16 == 0 &&
        ilb_replica_set_weight(sh->pool, rname((int)(lcg(&rng) % CC_N)),
                               1 + (uint32_t)(lcg(&rng) % 5)) != ILB_OK)
      atomic_fetch_add(&sh->errors, 1);
  }
  return NULL;
}

static void test_concurrency_smoke(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_COMPOSITE, SEED);
  add_n(p, CC_N, NULL);
  cc_shared sh;
  memset(&sh, 0, sizeof sh);
  sh.pool = p;
  pthread_t th[3];
  assert_int_equal(pthread_create(&th[0], NULL, cc_picker, &sh), 0);
  assert_int_equal(pthread_create(&th[1], NULL, cc_picker, &sh), 0);
  assert_int_equal(pthread_create(&th[2], NULL, cc_writer, &sh), 0);
  struct timespec ts = {0, 500000000L};
  nanosleep(&ts, NULL);
  atomic_store(&sh.stop, 1);
  for (int i = 0; i < 3; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);
  assert_true(atomic_load(&sh.errors) == 0);
  assert_true(atomic_load(&sh.picks) > 0);
  assert_true(atomic_load(&sh.reports) > 0);
  for (int i = 0; i < CC_N; i++) {
    ilb_replica_info in = info_of(p, i);
    if (in.in_flight != 0 || in.tokens_in_flight != 0)
      fail_msg("r%d: in flight %lld, tokens %llu after all completed", i,
               (long long)in.in_flight,
               (unsigned long long)in.tokens_in_flight);
  }
  free_pool(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_signal_names),
      cmocka_unit_test(test_signal_name_is_field_name),
      cmocka_unit_test(test_telemetry_init),
      cmocka_unit_test(test_option_bounds),
      cmocka_unit_test(test_report_ranges),
      cmocka_unit_test(test_report_free_above_total),
      cmocka_unit_test(test_report_args),
      cmocka_unit_test(test_telemetry_get_args),
      cmocka_unit_test(test_stale_masks),
      cmocka_unit_test(test_readd_starts_empty),
      cmocka_unit_test(test_stale_idle_does_not_keep_winning),
      cmocka_unit_test(test_stale_idle_after_30_days),
      cmocka_unit_test(test_signals_stale_independently_in_composite),
      cmocka_unit_test(test_all_stale),
      cmocka_unit_test(test_all_stale_ignores_unavailable_and_removed),
      cmocka_unit_test(test_composite_human_choices),
      cmocka_unit_test(test_composite_options_apply_at_once),
      cmocka_unit_test(test_composite_options_wait_for_batch_commit),
      cmocka_unit_test(test_report_inside_batch),
      cmocka_unit_test(test_many_report_times),
      cmocka_unit_test(test_near_ties),
      cmocka_unit_test(test_tie_window_does_not_slide),
      cmocka_unit_test(test_fresh_stale_ties_uniform),
      cmocka_unit_test(test_sampled_full_rescans),
      cmocka_unit_test(test_sampling),
      cmocka_unit_test(test_peak_ewma_slow_replica),
      cmocka_unit_test(test_peak_ewma_penalty),
      cmocka_unit_test(test_peak_ewma_decay),
      cmocka_unit_test(test_peak_ewma_default),
      cmocka_unit_test(test_tokens_in_flight_all_policies),
      cmocka_unit_test(test_least_tokens_default_cost),
      cmocka_unit_test(test_least_tokens_issue_example),
      cmocka_unit_test(test_tokens_removed_and_stale),
      cmocka_unit_test(test_least_tokens_weights),
      cmocka_unit_test(test_concurrency_smoke),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
