/*
 * Property tests of the seven core routing policies, through the public API
 * only: long-run shares, least-load invariants, capacity, removal, smooth
 * weighted round robin and determinism by seed.
 *
 * Statistical checks run with fixed seeds, so every run is reproducible. The
 * tolerance for a count whose expectation is E is 5 * sqrt(E) + 1: five
 * standard deviations of a binomial count (sd <= sqrt(E)) plus one for
 * rounding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inferlb/inferlb.h>

#include "testutil.h"

#define MAX_SLOTS 80
#define SHARE_PICKS 1000000u
#define SEED UINT64_C(0x5eed5eed12345678)

/* ------------------------------------------------------------------------ */
/* Fixture: a pool plus our own model of it                                  */
/* ------------------------------------------------------------------------ */

typedef struct fx {
  ilb_pool *pool;
  int32_t policy;
  size_t n; /* slots used; a slot is one replica ever added */
  char id[MAX_SLOTS][16];
  uint32_t weight[MAX_SLOTS];
  uint32_t capacity[MAX_SLOTS];
  int present[MAX_SLOTS];
  int64_t in_flight[MAX_SLOTS]; /* our count of uncompleted tickets */
} fx;

static fx *fx_new(int32_t policy, uint64_t seed) {
  fx *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  ilb_host host;
  CHECK_RC(0, ilb_host_init(&host));
  host.seed = seed;
  CHECK_RC(0, ilb_pool_new(&f->pool, &host));
  assert_non_null(f->pool);
  CHECK_RC(0, ilb_pool_set_option(f->pool, ILB_OPT_POLICY, policy));
  int64_t v = 0;
  CHECK_RC(0, ilb_pool_get_option(&v, f->pool, ILB_OPT_POLICY));
  assert_true(v == policy);
  f->policy = policy;
  return f;
}

static void fx_free(fx *f) {
  ilb_pool_free(f->pool);
  free(f);
}

/* Add a replica as a new slot; name NULL means "rNN" after the slot. */
static size_t fx_add_named(fx *f, const char *name, uint32_t weight,
                           uint32_t capacity) {
  assert_true(f->n < MAX_SLOTS);
  size_t s = f->n++;
  if (name)
    snprintf(f->id[s], sizeof(f->id[s]), "%s", name);
  else
    snprintf(f->id[s], sizeof(f->id[s]), "r%02zu", s);
  ilb_replica_spec spec;
  CHECK_RC(0, ilb_replica_spec_init(&spec));
  spec.id = f->id[s];
  spec.weight = weight;
  spec.capacity = capacity;
  spec.host_data = (void *)(uintptr_t)(s + 1);
  CHECK_RC(0, ilb_replica_add(f->pool, &spec));
  f->weight[s] = weight;
  f->capacity[s] = capacity;
  f->present[s] = 1;
  return s;
}

static size_t fx_add(fx *f, uint32_t weight, uint32_t capacity) {
  return fx_add_named(f, NULL, weight, capacity);
}

static void fx_remove(fx *f, size_t s) {
  CHECK_RC(0, ilb_replica_remove(f->pool, f->id[s]));
  f->present[s] = 0;
}

static void fx_set_weight(fx *f, size_t s, uint32_t w) {
  CHECK_RC(0, ilb_replica_set_weight(f->pool, f->id[s], w));
  f->weight[s] = w;
}

/* The slot of a successful pick; fails unless the result names a replica
 * that is in the pool, consistently by host_data and by id. */
static size_t fx_slot_of(const fx *f, const ilb_pick_result *res) {
  uintptr_t hd = (uintptr_t)res->host_data;
  if (res->ticket == 0)
    fail_msg("successful pick returned ticket 0");
  if (hd == 0 || hd > f->n)
    fail_msg("pick returned unknown host_data %p", res->host_data);
  size_t s = hd - 1;
  if (res->replica_id == NULL || strcmp(res->replica_id, f->id[s]) != 0)
    fail_msg("pick returned id \"%s\" with host_data of \"%s\"",
             res->replica_id ? res->replica_id : "(null)", f->id[s]);
  if (!f->present[s])
    fail_msg("pick returned removed replica \"%s\" (policy %s)", f->id[s],
             ilb_policy_name(f->policy));
  return s;
}

/* Pick without completing; returns the slot, the ticket in *ticket. */
static size_t fx_pick(fx *f, uint64_t *ticket) {
  ilb_pick_result res;
  CHECK_RC(0, ilb_pick_result_init(&res));
  CHECK_RC(0, ilb_pick(&res, f->pool, NULL));
  size_t s = fx_slot_of(f, &res);
  f->in_flight[s]++;
  if (f->capacity[s] != 0 && f->in_flight[s] > (int64_t)f->capacity[s])
    fail_msg("replica %s has %lld in flight, capacity %u", f->id[s],
             (long long)f->in_flight[s], f->capacity[s]);
  *ticket = res.ticket;
  return s;
}

/* Complete a ticket of slot s: 0 while it is present, ILB_EREMOVED after it
 * was removed. */
static void fx_complete(fx *f, uint64_t ticket, size_t s,
                        const ilb_outcome *o) {
  int rc = ilb_complete(f->pool, ticket, o);
  int want = f->present[s] ? 0 : ILB_EREMOVED;
  if (rc != want)
    fail_msg("ilb_complete(%s) = %d (%s), expected %s", f->id[s], rc,
             ilb_err_name(rc), ilb_err_name(want));
  if (f->present[s])
    f->in_flight[s]--;
}

static void fx_get(ilb_replica_info *info, fx *f, size_t s) {
  memset(info, 0, sizeof(*info));
  info->struct_size = sizeof(*info);
  CHECK_RC(0, ilb_replica_get(info, f->pool, f->id[s]));
}

/* The library's in-flight counts equal ours (and so are never negative). */
static void fx_check_in_flight(fx *f) {
  for (size_t s = 0; s < f->n; s++) {
    if (!f->present[s])
      continue;
    ilb_replica_info info;
    fx_get(&info, f, s);
    if (info.in_flight < 0 || info.in_flight != f->in_flight[s])
      fail_msg("replica %s: in_flight %lld, expected %lld", f->id[s],
               (long long)info.in_flight, (long long)f->in_flight[s]);
  }
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* Statistical tolerance: |got - E| <= 5 * sqrt(E) + 1 (see top of file). */
static void check_near(uint64_t got, double expected, const char *policy,
                       size_t n, size_t slot) {
  double tol = 5.0 * sqrt_d(expected) + 1.0;
  double d = (double)got - expected;
  if (d < 0)
    d = -d;
  if (d > tol)
    fail_msg("%s N=%zu: replica %zu got %llu picks, expected %.1f +- %.1f",
             policy, n, slot, (unsigned long long)got, expected, tol);
}

static double binom(unsigned n, unsigned k) {
  if (k > n)
    return 0;
  double r = 1;
  for (unsigned i = 1; i <= k; i++)
    r = r * (double)(n - k + i) / (double)i;
  return r;
}

/* Probability that p2c with k choices picks replica i when nothing is in
 * flight: i must be in the uniformly sampled k-subset, every other sampled
 * replica must weigh no more, and ties among equal weights split evenly. */
static double p2c_share(const uint32_t *w, size_t n, size_t i, unsigned k) {
  unsigned lower = 0, equal = 0; /* equal excludes i itself */
  for (size_t j = 0; j < n; j++) {
    if (j == i)
      continue;
    if (w[j] < w[i])
      lower++;
    else if (w[j] == w[i])
      equal++;
  }
  double p = 0;
  for (unsigned m = 0; m <= equal && m + 1 <= k; m++)
    p += binom(equal, m) * binom(lower, k - 1 - m) / (double)(m + 1);
  return p / binom((unsigned)n, k);
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Pick and complete at once `picks` times; count picks per slot and, when
 * seq is not NULL, record the slot sequence. */
static void run_immediate(fx *f, size_t picks, uint64_t *counts,
                          uint8_t *seq) {
  ilb_pick_result res;
  CHECK_RC(0, ilb_pick_result_init(&res));
  for (size_t j = 0; j < picks; j++) {
    int rc = ilb_pick(&res, f->pool, NULL);
    if (rc != 0)
      fail_msg("pick %zu: %s", j, ilb_err_name(rc));
    size_t s = fx_slot_of(f, &res);
    if (counts)
      counts[s]++;
    if (seq)
      seq[j] = (uint8_t)s;
    rc = ilb_complete(f->pool, res.ticket, NULL);
    if (rc != 0)
      fail_msg("complete %zu: %s", j, ilb_err_name(rc));
  }
}

/* Every window of W = sum of weights consecutive picks holds each present
 * replica within +-2 of its weight. */
static void check_windows(const fx *f, const uint8_t *seq, size_t len,
                          const char *what) {
  uint64_t w_sum = 0;
  for (size_t s = 0; s < f->n; s++)
    if (f->present[s])
      w_sum += f->weight[s];
  assert_true(w_sum > 0 && len >= w_sum);
  int64_t cnt[MAX_SLOTS] = {0};
  for (size_t j = 0; j < len; j++) {
    cnt[seq[j]]++;
    if (j >= w_sum)
      cnt[seq[j - w_sum]]--;
    if (j + 1 < w_sum)
      continue;
    for (size_t s = 0; s < f->n; s++) {
      /* After the first full window only the two slots that moved change. */
      if (j + 1 > w_sum && s != seq[j] && s != seq[j - w_sum])
        continue;
      int64_t want = f->present[s] ? (int64_t)f->weight[s] : 0;
      if (cnt[s] < want - 2 || cnt[s] > want + 2)
        fail_msg("%s: window of %llu picks ending at %zu has %lld of %s "
                 "(weight %lld)",
                 what, (unsigned long long)w_sum, j, (long long)cnt[s],
                 f->id[s], (long long)want);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Shares over 10^6 pick+complete pairs                                      */
/* ------------------------------------------------------------------------ */

/* N = 4: weights {1,2,3,4} (sum 10). N = 64: {1,2,3,4,5,6,7,12} repeated
 * (sum 320). Both sums divide 10^6, so WRR shares are exact. */
static uint32_t share_weight(size_t n, size_t i) {
  static const uint32_t w8[8] = {1, 2, 3, 4, 5, 6, 7, 12};
  return n == 4 ? (uint32_t)(i + 1) : w8[i % 8];
}

static void check_shares(int32_t policy, size_t n, int equal_weights) {
  fx *f = fx_new(policy, SEED + n);
  uint64_t w_sum = 0;
  uint32_t w_max = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t w = equal_weights ? 1 : share_weight(n, i);
    fx_add(f, w, 0);
    w_sum += w;
    if (w > w_max)
      w_max = w;
  }
  uint64_t counts[MAX_SLOTS] = {0};
  uint8_t *seq = malloc(SHARE_PICKS);
  assert_non_null(seq);
  run_immediate(f, SHARE_PICKS, counts, seq);
  const char *name = ilb_policy_name(policy);
  double picks = SHARE_PICKS;
  unsigned ties = 0;
  for (size_t i = 0; i < n; i++)
    ties += f->weight[i] == w_max;

  switch (policy) {
  case ILB_POLICY_ROUND_ROBIN:
    /* Cycles, ignoring weight: 10^6/N +- 1 each, and a strict cycle. */
    for (size_t i = 0; i < n; i++)
      if (counts[i] + 1 < SHARE_PICKS / n || counts[i] > SHARE_PICKS / n + 1)
        fail_msg("round_robin N=%zu: replica %zu got %llu", n, i,
                 (unsigned long long)counts[i]);
    for (size_t j = n; j < SHARE_PICKS; j++)
      if (seq[j] != seq[j - n])
        fail_msg("round_robin N=%zu: pick %zu is not one cycle after %zu", n,
                 j, j - n);
    break;
  case ILB_POLICY_WEIGHTED_ROUND_ROBIN:
    /* Exact shares (10^6 is a multiple of the weight sum) and smooth. */
    assert_true(SHARE_PICKS % w_sum == 0);
    for (size_t i = 0; i < n; i++)
      if (counts[i] != SHARE_PICKS / w_sum * f->weight[i])
        fail_msg("weighted_round_robin N=%zu: replica %zu (weight %u) got "
                 "%llu, expected exactly %llu",
                 n, i, f->weight[i], (unsigned long long)counts[i],
                 (unsigned long long)(SHARE_PICKS / w_sum * f->weight[i]));
    check_windows(f, seq, SHARE_PICKS, "weighted_round_robin");
    break;
  case ILB_POLICY_RANDOM:
  case ILB_POLICY_LEAST_CONN:
    /* Uniform, ignoring weight (least_conn: all idle, ties at random). */
    for (size_t i = 0; i < n; i++)
      check_near(counts[i], picks / (double)n, name, n, i);
    break;
  case ILB_POLICY_WEIGHTED_RANDOM:
    for (size_t i = 0; i < n; i++)
      check_near(counts[i], picks * f->weight[i] / (double)w_sum, name, n, i);
    break;
  case ILB_POLICY_WEIGHTED_LEAST_REQUEST:
    /* Idle pool: smallest 1/weight wins, so only the heaviest replicas are
     * picked, evenly among themselves. */
    for (size_t i = 0; i < n; i++)
      check_near(counts[i], f->weight[i] == w_max ? picks / ties : 0.0, name,
                 n, i);
    break;
  case ILB_POLICY_P2C: {
    int64_t k = 0;
    CHECK_RC(0, ilb_pool_get_option(&k, f->pool, ILB_OPT_P2C_CHOICES));
    assert_true(k == 2); /* the documented default */
    for (size_t i = 0; i < n; i++)
      check_near(counts[i], picks * p2c_share(f->weight, n, i, 2), name, n,
                 i);
    break;
  }
  default:
    fail();
  }
  fx_check_in_flight(f); /* all zero again */
  free(seq);
  fx_free(f);
}

#define SHARES_TEST(name, policy, n)                                         \
  static void test_shares_##name##_##n(void **state) {                       \
    (void)state;                                                             \
    check_shares(policy, n, 0);                                              \
  }
SHARES_TEST(round_robin, ILB_POLICY_ROUND_ROBIN, 4)
SHARES_TEST(round_robin, ILB_POLICY_ROUND_ROBIN, 64)
SHARES_TEST(weighted_round_robin, ILB_POLICY_WEIGHTED_ROUND_ROBIN, 4)
SHARES_TEST(weighted_round_robin, ILB_POLICY_WEIGHTED_ROUND_ROBIN, 64)
SHARES_TEST(random, ILB_POLICY_RANDOM, 4)
SHARES_TEST(random, ILB_POLICY_RANDOM, 64)
SHARES_TEST(weighted_random, ILB_POLICY_WEIGHTED_RANDOM, 4)
SHARES_TEST(weighted_random, ILB_POLICY_WEIGHTED_RANDOM, 64)
SHARES_TEST(least_conn, ILB_POLICY_LEAST_CONN, 4)
SHARES_TEST(least_conn, ILB_POLICY_LEAST_CONN, 64)
SHARES_TEST(weighted_least_request, ILB_POLICY_WEIGHTED_LEAST_REQUEST, 4)
SHARES_TEST(weighted_least_request, ILB_POLICY_WEIGHTED_LEAST_REQUEST, 64)
SHARES_TEST(p2c, ILB_POLICY_P2C, 4)
SHARES_TEST(p2c, ILB_POLICY_P2C, 64)

/* p2c with equal weights and immediate completion is uniform. */
static void test_shares_p2c_equal_weights(void **state) {
  (void)state;
  check_shares(ILB_POLICY_P2C, 4, 1);
  check_shares(ILB_POLICY_P2C, 64, 1);
}

/* ------------------------------------------------------------------------ */
/* Least-load properties                                                     */
/* ------------------------------------------------------------------------ */

/* Score comparison for (in_flight + 1) / weight without division:
 * returns <0, 0, >0 as score(a) <, ==, > score(b). */
static int score_cmp(const fx *f, size_t a, size_t b) {
  uint64_t l = (uint64_t)(f->in_flight[a] + 1) * f->weight[b];
  uint64_t r = (uint64_t)(f->in_flight[b] + 1) * f->weight[a];
  return l < r ? -1 : l > r;
}

/* Picks n*k times without completing: least_conn always picks a replica
 * with the fewest in flight, so every replica ends with exactly k. */
static void least_conn_without_completion(size_t n) {
  const size_t k = 25;
  fx *f = fx_new(ILB_POLICY_LEAST_CONN, SEED);
  for (size_t i = 0; i < n; i++)
    fx_add(f, (uint32_t)(1 + (i * 7) % 5), 0); /* weights are ignored */
  uint64_t *tickets = calloc(n * k, sizeof(*tickets));
  size_t *slots = calloc(n * k, sizeof(*slots));
  assert_true(tickets && slots);
  for (size_t j = 0; j < n * k; j++) {
    int64_t min = INT64_MAX;
    for (size_t i = 0; i < n; i++)
      if (f->in_flight[i] < min)
        min = f->in_flight[i];
    slots[j] = fx_pick(f, &tickets[j]);
    if (f->in_flight[slots[j]] - 1 != min)
      fail_msg("least_conn pick %zu chose %s with %lld in flight, min %lld",
               j, f->id[slots[j]], (long long)f->in_flight[slots[j]] - 1,
               (long long)min);
  }
  for (size_t i = 0; i < n; i++)
    assert_true(f->in_flight[i] == (int64_t)k);
  fx_check_in_flight(f);
  for (size_t j = 0; j < n * k; j++)
    fx_complete(f, tickets[j], slots[j], NULL);
  fx_check_in_flight(f);
  free(tickets);
  free(slots);
  fx_free(f);
}

static void test_least_conn_without_completion(void **state) {
  (void)state;
  least_conn_without_completion(4);
  least_conn_without_completion(64);
}

/* Picks m * (weight sum) times without completing, checking every pick is a
 * replica of smallest (in_flight+1)/weight; in-flight ends proportional to
 * weight, within 1 per replica. Used for weighted_least_request and for p2c
 * with as many choices as replicas (which must behave exactly the same). */
static void proportional_without_completion(int32_t policy, size_t n,
                                            int64_t choices) {
  const size_t m = 20;
  fx *f = fx_new(policy, SEED + 7);
  if (choices)
    CHECK_RC(0, ilb_pool_set_option(f->pool, ILB_OPT_P2C_CHOICES, choices));
  uint64_t w_sum = 0;
  for (size_t i = 0; i < n; i++) {
    fx_add(f, share_weight(n == 16 ? 64 : n, i), 0);
    w_sum += f->weight[i];
  }
  size_t total = m * w_sum;
  uint64_t *tickets = calloc(total, sizeof(*tickets));
  size_t *slots = calloc(total, sizeof(*slots));
  assert_true(tickets && slots);
  for (size_t j = 0; j < total; j++) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
      if (score_cmp(f, i, best) < 0)
        best = i;
    slots[j] = fx_pick(f, &tickets[j]);
    f->in_flight[slots[j]]--; /* compare with the state before the pick */
    if (score_cmp(f, slots[j], best) != 0)
      fail_msg("%s (choices %lld) pick %zu chose %s (in flight %lld, weight "
               "%u), but %s has (in flight %lld, weight %u)",
               ilb_policy_name(policy), (long long)choices, j,
               f->id[slots[j]], (long long)f->in_flight[slots[j]],
               f->weight[slots[j]], f->id[best], (long long)f->in_flight[best],
               f->weight[best]);
    f->in_flight[slots[j]]++;
  }
  for (size_t i = 0; i < n; i++) {
    int64_t want = (int64_t)(m * f->weight[i]);
    if (f->in_flight[i] < want - 1 || f->in_flight[i] > want + 1)
      fail_msg("%s N=%zu: %s has %lld in flight, expected %lld +- 1",
               ilb_policy_name(policy), n, f->id[i],
               (long long)f->in_flight[i], (long long)want);
  }
  fx_check_in_flight(f);
  for (size_t j = 0; j < total; j++)
    fx_complete(f, tickets[j], slots[j], NULL);
  fx_check_in_flight(f);
  free(tickets);
  free(slots);
  fx_free(f);
}

static void test_wlr_without_completion(void **state) {
  (void)state;
  proportional_without_completion(ILB_POLICY_WEIGHTED_LEAST_REQUEST, 4, 0);
  proportional_without_completion(ILB_POLICY_WEIGHTED_LEAST_REQUEST, 64, 0);
}

/* p2c with ILB_OPT_P2C_CHOICES == N behaves exactly like
 * weighted_least_request, loaded or idle. */
static void test_p2c_choices_equal_n(void **state) {
  (void)state;
  proportional_without_completion(ILB_POLICY_P2C, 4, 4);
  proportional_without_completion(ILB_POLICY_P2C, 16, 16);

  fx *f = fx_new(ILB_POLICY_P2C, SEED);
  CHECK_RC(0, ilb_pool_set_option(f->pool, ILB_OPT_P2C_CHOICES, 4));
  for (uint32_t w = 1; w <= 4; w++)
    fx_add(f, w, 0);
  uint64_t counts[MAX_SLOTS] = {0};
  run_immediate(f, 100000, counts, NULL);
  assert_true(counts[3] == 100000); /* the heaviest always wins when idle */
  fx_free(f);
}

/* p2c without completion: every pick is the best of some k distinct
 * replicas, so at least k-1 other replicas score no better than the chosen
 * one; with equal weights in-flight stays within 3 of each other. */
static void p2c_spread(int64_t choices) {
  const size_t n = 16, total = 1600;
  fx *f = fx_new(ILB_POLICY_P2C, SEED + (uint64_t)choices);
  CHECK_RC(0, ilb_pool_set_option(f->pool, ILB_OPT_P2C_CHOICES, choices));
  for (size_t i = 0; i < n; i++)
    fx_add(f, 1, 0);
  uint64_t *tickets = calloc(total, sizeof(*tickets));
  size_t *slots = calloc(total, sizeof(*slots));
  assert_true(tickets && slots);
  for (size_t j = 0; j < total; j++) {
    slots[j] = fx_pick(f, &tickets[j]);
    f->in_flight[slots[j]]--;
    long no_better = 0;
    for (size_t i = 0; i < n; i++)
      if (i != slots[j] && score_cmp(f, i, slots[j]) >= 0)
        no_better++;
    if (no_better < choices - 1)
      fail_msg("p2c (choices %lld) pick %zu chose %s with %lld in flight; "
               "only %ld others are as loaded",
               (long long)choices, j, f->id[slots[j]],
               (long long)f->in_flight[slots[j]], no_better);
    f->in_flight[slots[j]]++;
  }
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (size_t i = 0; i < n; i++) {
    if (f->in_flight[i] < lo)
      lo = f->in_flight[i];
    if (f->in_flight[i] > hi)
      hi = f->in_flight[i];
  }
  if (hi - lo > 3)
    fail_msg("p2c (choices %lld): in flight spans %lld..%lld after %zu picks",
             (long long)choices, (long long)lo, (long long)hi, total);
  fx_check_in_flight(f);
  for (size_t j = 0; j < total; j++)
    fx_complete(f, tickets[j], slots[j], NULL);
  fx_check_in_flight(f);
  free(tickets);
  free(slots);
  fx_free(f);
}

static void test_p2c_spread_without_completion(void **state) {
  (void)state;
  p2c_spread(2);
  p2c_spread(3);
}

/* With two replicas p2c must sample both (distinct samples): the lighter
 * weight never wins when idle, and equal replicas stay within 1. */
static void test_p2c_two_replicas(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_P2C, SEED);
  fx_add(f, 1, 0);
  fx_add(f, 3, 0);
  uint64_t counts[MAX_SLOTS] = {0};
  run_immediate(f, 100000, counts, NULL);
  if (counts[0] != 0)
    fail_msg("p2c N=2: weight-1 replica picked %llu times while idle; the "
             "samples are not distinct",
             (unsigned long long)counts[0]);
  fx_free(f);

  f = fx_new(ILB_POLICY_P2C, SEED);
  fx_add(f, 5, 0);
  fx_add(f, 5, 0);
  uint64_t tickets[400];
  size_t slots[400];
  for (size_t j = 0; j < 400; j++) {
    slots[j] = fx_pick(f, &tickets[j]);
    int64_t d = f->in_flight[0] - f->in_flight[1];
    if (d < -1 || d > 1)
      fail_msg("p2c N=2 pick %zu: in flight %lld vs %lld", j,
               (long long)f->in_flight[0], (long long)f->in_flight[1]);
  }
  fx_check_in_flight(f);
  for (size_t j = 0; j < 400; j++)
    fx_complete(f, tickets[j], slots[j], NULL);
  fx_check_in_flight(f);
  fx_free(f);
}

/* ------------------------------------------------------------------------ */
/* Determinism by seed                                                       */
/* ------------------------------------------------------------------------ */

#define SCRIPT_LEN 6000

/* One fixed single-threaded script: picks, tickets held and completed in a
 * varying pattern (some failures), a reweight, an add and a remove. */
static void run_script(int32_t policy, uint64_t seed, uint8_t *seq) {
  fx *f = fx_new(policy, seed);
  for (uint32_t i = 0; i < 8; i++)
    fx_add(f, i + 1, 0);
  uint64_t held_t[8];
  size_t held_s[8], nheld = 0;
  ilb_outcome fail_out;
  CHECK_RC(0, ilb_outcome_init(&fail_out));
  fail_out.status = ILB_OUTCOME_TIMEOUT;
  for (size_t j = 0; j < SCRIPT_LEN; j++) {
    if (j == SCRIPT_LEN / 3)
      fx_set_weight(f, 2, 9);
    if (j == SCRIPT_LEN / 2)
      fx_add(f, 5, 0);
    if (j == 2 * SCRIPT_LEN / 3)
      fx_remove(f, 1);
    uint64_t t;
    size_t s = fx_pick(f, &t);
    seq[j] = (uint8_t)s;
    held_t[nheld] = t;
    held_s[nheld++] = s;
    size_t target = (j / 97) % 7;
    while (nheld > target) {
      fx_complete(f, held_t[0], held_s[0], (j & 1) ? &fail_out : NULL);
      memmove(held_t, held_t + 1, (nheld - 1) * sizeof(*held_t));
      memmove(held_s, held_s + 1, (nheld - 1) * sizeof(*held_s));
      nheld--;
    }
  }
  fx_check_in_flight(f);
  fx_free(f);
}

static void test_determinism_same_seed(void **state) {
  (void)state;
  static uint8_t a[SCRIPT_LEN], b[SCRIPT_LEN];
  for (size_t p = 0; p < N_POLICIES; p++) {
    for (uint64_t seed = 0; seed < 3; seed++) {
      run_script(all_policies[p], seed * UINT64_C(0x1234567), a);
      run_script(all_policies[p], seed * UINT64_C(0x1234567), b);
      for (size_t j = 0; j < SCRIPT_LEN; j++)
        if (a[j] != b[j])
          fail_msg("%s seed %llu: pick %zu differs between identical runs "
                   "(r%02u vs r%02u)",
                   ilb_policy_name(all_policies[p]),
                   (unsigned long long)seed, j, a[j], b[j]);
    }
  }
}

static void test_determinism_different_seed(void **state) {
  (void)state;
  static uint8_t a[SCRIPT_LEN], b[SCRIPT_LEN];
  const int32_t randomised[] = {ILB_POLICY_RANDOM, ILB_POLICY_WEIGHTED_RANDOM,
                                ILB_POLICY_P2C};
  for (size_t p = 0; p < 3; p++) {
    run_script(randomised[p], 1, a);
    run_script(randomised[p], 2, b);
    if (memcmp(a, b, sizeof(a)) == 0)
      fail_msg("%s: seeds 1 and 2 gave the same %d picks",
               ilb_policy_name(randomised[p]), SCRIPT_LEN);
  }
}

/* ------------------------------------------------------------------------ */
/* Removal                                                                   */
/* ------------------------------------------------------------------------ */

/* After ilb_replica_remove returns, 10^5 picks never return the replica;
 * its tickets complete with ILB_EREMOVED, once. */
static void test_removed_never_picked(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    fx *f = fx_new(all_policies[p], SEED + p);
    for (uint32_t i = 0; i < 8; i++)
      fx_add(f, i + 1, 0);
    uint64_t held_t[16];
    size_t held_s[16];
    for (size_t j = 0; j < 16; j++)
      held_s[j] = fx_pick(f, &held_t[j]);
    const size_t victim = 7; /* the heaviest */
    fx_remove(f, victim);
    size_t count = 0;
    CHECK_RC(0, ilb_pool_count(&count, f->pool));
    assert_true(count == 7);
    /* Mostly immediate completion, with a rolling hold of 3 so the
     * least-load policies see varied load. */
    uint64_t roll_t[4];
    size_t roll_s[4], nroll = 0;
    for (size_t j = 0; j < 100000; j++) {
      roll_s[nroll] = fx_pick(f, &roll_t[nroll]); /* fails on the victim */
      nroll++;
      if (nroll > 3 || (j % 5) == 0) {
        fx_complete(f, roll_t[0], roll_s[0], NULL);
        memmove(roll_t, roll_t + 1, (nroll - 1) * sizeof(*roll_t));
        memmove(roll_s, roll_s + 1, (nroll - 1) * sizeof(*roll_s));
        nroll--;
      }
    }
    for (size_t j = 0; j < nroll; j++)
      fx_complete(f, roll_t[j], roll_s[j], NULL);
    for (size_t j = 0; j < 16; j++) {
      fx_complete(f, held_t[j], held_s[j], NULL); /* EREMOVED for victim */
      CHECK_RC(ILB_ESTALE, ilb_complete(f->pool, held_t[j], NULL));
    }
    ilb_replica_info info;
    memset(&info, 0, sizeof(info));
    info.struct_size = sizeof(info);
    CHECK_RC(ILB_ENOENT, ilb_replica_get(&info, f->pool, f->id[victim]));
    fx_check_in_flight(f);
    fx_free(f);
  }
}

/* A ticket of a removed replica completes with ILB_EREMOVED, then
 * ILB_ESTALE; a replica re-added under the same id starts from zero and is
 * not touched by the old tickets. */
static void test_removed_ticket_and_readd(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_ROUND_ROBIN, SEED);
  for (uint32_t i = 0; i < 4; i++)
    fx_add(f, 1, 0);
  uint64_t t[8];
  size_t s[8];
  for (size_t j = 0; j < 8; j++)
    s[j] = fx_pick(f, &t[j]);
  assert_true(f->in_flight[0] == 2);
  fx_remove(f, 0);
  /* Re-add the same id: a new slot sharing the name. */
  size_t again = fx_add_named(f, f->id[0], 1, 0);
  ilb_replica_spec dup;
  CHECK_RC(0, ilb_replica_spec_init(&dup));
  dup.id = f->id[0];
  CHECK_RC(ILB_EEXIST, ilb_replica_add(f->pool, &dup));
  for (size_t j = 0; j < 8; j++) {
    fx_complete(f, t[j], s[j], NULL);
    CHECK_RC(ILB_ESTALE, ilb_complete(f->pool, t[j], NULL));
  }
  ilb_replica_info info;
  fx_get(&info, f, again);
  assert_true(info.in_flight == 0);
  assert_true(info.completed == 0);
  fx_check_in_flight(f);
  fx_free(f);
}

/* ------------------------------------------------------------------------ */
/* Smooth weighted round robin after changes                                 */
/* ------------------------------------------------------------------------ */

static void wrr_record_and_check(fx *f, size_t windows, const char *what) {
  uint64_t w_sum = 0;
  for (size_t s = 0; s < f->n; s++)
    if (f->present[s])
      w_sum += f->weight[s];
  size_t len = windows * w_sum;
  uint8_t *seq = malloc(len);
  assert_non_null(seq);
  run_immediate(f, len, NULL, seq);
  check_windows(f, seq, len, what);
  free(seq);
}

static void test_wrr_smooth_after_set_weight(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_WEIGHTED_ROUND_ROBIN, SEED);
  for (uint32_t w = 1; w <= 4; w++)
    fx_add(f, w, 0);
  run_immediate(f, 10 * 10 + 7, NULL, NULL); /* stop mid-cycle */
  fx_set_weight(f, 3, 12);
  wrr_record_and_check(f, 6, "wrr after r03 1..4 -> 12");
  run_immediate(f, 5, NULL, NULL);
  fx_set_weight(f, 3, 1);
  wrr_record_and_check(f, 6, "wrr after r03 12 -> 1");
  run_immediate(f, 3, NULL, NULL);
  fx_set_weight(f, 0, 9);
  wrr_record_and_check(f, 6, "wrr after r00 1 -> 9");
  fx_set_weight(f, 1, 30);
  fx_set_weight(f, 2, 30);
  wrr_record_and_check(f, 4, "wrr after two reweights in a row");
  fx_free(f);
}

static void test_wrr_smooth_after_add_and_remove(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_WEIGHTED_ROUND_ROBIN, SEED);
  for (uint32_t w = 1; w <= 4; w++)
    fx_add(f, w, 0);
  run_immediate(f, 13, NULL, NULL);
  fx_add(f, 20, 0); /* a heavy newcomer must not get a burst */
  wrr_record_and_check(f, 6, "wrr after adding weight 20");
  run_immediate(f, 11, NULL, NULL);
  fx_add(f, 1, 0);
  wrr_record_and_check(f, 6, "wrr after adding weight 1");
  run_immediate(f, 7, NULL, NULL);
  fx_remove(f, 4);
  wrr_record_and_check(f, 6, "wrr after removing weight 20");
  fx_free(f);
}

/* Shares are exact per weight sum even for a sum of 65536. */
static void test_wrr_exact_large_sum(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_WEIGHTED_ROUND_ROBIN, SEED);
  const uint32_t w[4] = {1000, 2000, 7000, 55536};
  for (size_t i = 0; i < 4; i++)
    fx_add(f, w[i], 0);
  uint64_t counts[MAX_SLOTS] = {0};
  size_t len = 2 * 65536;
  uint8_t *seq = malloc(len);
  assert_non_null(seq);
  run_immediate(f, len, counts, seq);
  for (size_t i = 0; i < 4; i++)
    if (counts[i] != 2 * (uint64_t)w[i])
      fail_msg("wrr sum 65536: replica %zu got %llu, expected %llu", i,
               (unsigned long long)counts[i], 2 * (unsigned long long)w[i]);
  check_windows(f, seq, len, "wrr sum 65536");
  free(seq);
  fx_free(f);
}

/* ------------------------------------------------------------------------ */
/* In-flight accounting and capacity                                         */
/* ------------------------------------------------------------------------ */

/* Counts via ilb_replica_get match every pick and complete; a second
 * complete, a zero or unknown ticket and a bad outcome change nothing. */
static void test_in_flight_exact_and_never_negative(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_ROUND_ROBIN, SEED);
  for (uint32_t i = 0; i < 4; i++)
    fx_add(f, i + 1, 0);
  enum { N = 40 };
  uint64_t t[N];
  size_t s[N];
  uint64_t completed[4] = {0};
  for (size_t j = 0; j < N; j++)
    s[j] = fx_pick(f, &t[j]);
  fx_check_in_flight(f);

  ilb_outcome bad;
  CHECK_RC(0, ilb_outcome_init(&bad));
  bad.status = 99;
  CHECK_RC(ILB_EINVAL, ilb_complete(f->pool, t[0], &bad));
  bad.status = ILB_OUTCOME_HTTP_ERROR;
  bad.http_status = 600;
  CHECK_RC(ILB_EINVAL, ilb_complete(f->pool, t[0], &bad));
  fx_check_in_flight(f); /* the rejected completes released nothing */

  static const int32_t statuses[5] = {
      ILB_OUTCOME_OK, ILB_OUTCOME_CONNECT_ERROR, ILB_OUTCOME_TIMEOUT,
      ILB_OUTCOME_HTTP_ERROR, ILB_OUTCOME_CANCELLED};
  for (size_t j = 0; j < N; j++) {
    ilb_outcome o;
    CHECK_RC(0, ilb_outcome_init(&o));
    o.status = statuses[j % 5];
    if (o.status == ILB_OUTCOME_HTTP_ERROR)
      o.http_status = 503;
    o.latency_ns = 1000000 + j;
    fx_complete(f, t[j], s[j], (j % 7 == 6) ? NULL : &o);
    completed[s[j]]++;
    if (j % 10 == 9) {
      fx_check_in_flight(f);
      for (size_t i = 0; i < 4; i++) {
        ilb_replica_info info;
        fx_get(&info, f, i);
        if (info.completed != completed[i])
          fail_msg("%s: completed %llu, expected %llu", f->id[i],
                   (unsigned long long)info.completed,
                   (unsigned long long)completed[i]);
      }
    }
  }
  for (size_t j = 0; j < N; j++)
    CHECK_RC(ILB_ESTALE, ilb_complete(f->pool, t[j], NULL));
  CHECK_RC(ILB_ESTALE, ilb_complete(f->pool, 0, NULL));
  CHECK_RC(ILB_ESTALE, ilb_complete(f->pool, UINT64_MAX, NULL));
  fx_check_in_flight(f);
  for (size_t i = 0; i < 4; i++) {
    ilb_replica_info info;
    fx_get(&info, f, i);
    assert_true(info.in_flight == 0);
    assert_true(info.completed == completed[i]);
  }
  fx_free(f);
}

/* ilb_replica_info.failed counts completions with outcome CONNECT_ERROR,
 * TIMEOUT or HTTP_ERROR (header): not OK, not CANCELLED (the client's
 * doing); an ILB_ESTALE or ILB_EREMOVED completion records nothing. */
static void test_failed_counter_per_status(void **state) {
  (void)state;
  static const int32_t statuses[5] = {
      ILB_OUTCOME_OK, ILB_OUTCOME_CONNECT_ERROR, ILB_OUTCOME_TIMEOUT,
      ILB_OUTCOME_HTTP_ERROR, ILB_OUTCOME_CANCELLED};
  static const char *const names[5] = {"OK", "CONNECT_ERROR", "TIMEOUT",
                                       "HTTP_ERROR", "CANCELLED"};
  fx *f = fx_new(ILB_POLICY_ROUND_ROBIN, SEED);
  fx_add(f, 1, 0);
  uint64_t want_completed = 0, want_failed = 0;
  for (size_t i = 0; i < 5; i++) {
    uint64_t t;
    size_t s = fx_pick(f, &t);
    ilb_outcome o;
    CHECK_RC(0, ilb_outcome_init(&o));
    o.status = statuses[i];
    if (o.status == ILB_OUTCOME_HTTP_ERROR)
      o.http_status = 502;
    fx_complete(f, t, s, &o);
    CHECK_RC(ILB_ESTALE, ilb_complete(f->pool, t, &o));
    want_completed++;
    want_failed += statuses[i] != ILB_OUTCOME_OK &&
                   statuses[i] != ILB_OUTCOME_CANCELLED;
    ilb_replica_info info;
    fx_get(&info, f, s);
    if (info.completed != want_completed || info.failed != want_failed)
      fail_msg("after an outcome %s: completed/failed %llu/%llu, expected "
               "%llu/%llu",
               names[i], (unsigned long long)info.completed,
               (unsigned long long)info.failed,
               (unsigned long long)want_completed,
               (unsigned long long)want_failed);
  }
  fx_free(f);
}

/* A replica with capacity c never has more than c in flight; when all are
 * full the pick says ILB_ESATURATED with ticket 0; a freed slot is found
 * whatever the policy chose first. */
static void test_capacity_respected(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    fx *f = fx_new(all_policies[p], SEED);
    fx_add(f, 1, 2);
    fx_add(f, 2, 3);
    fx_add(f, 3, 5);
    uint64_t t[11];
    size_t s[11];
    for (size_t j = 0; j < 10; j++)
      s[j] = fx_pick(f, &t[j]); /* fx_pick checks in_flight <= capacity */
    fx_check_in_flight(f);
    for (size_t i = 0; i < 3; i++)
      assert_true(f->in_flight[i] == (int64_t)f->capacity[i]);
    for (int rep = 0; rep < 3; rep++) {
      ilb_pick_result res;
      CHECK_RC(0, ilb_pick_result_init(&res));
      CHECK_RC(ILB_ESATURATED, ilb_pick(&res, f->pool, NULL));
      assert_true(res.ticket == 0);
    }
    for (size_t want = 0; want < 3; want++) {
      size_t j = 0;
      while (s[j] != want)
        j++;
      fx_complete(f, t[j], s[j], NULL);
      s[j] = fx_pick(f, &t[j]);
      if (s[j] != want)
        fail_msg("%s: only %s had room but the pick chose %s",
                 ilb_policy_name(all_policies[p]), f->id[want],
                 f->id[s[j]]);
    }
    CHECK_RC(0, ilb_pool_set_option(f->pool, ILB_OPT_ALLOW_OVER_CAPACITY, 1));
    f->capacity[0] = f->capacity[1] = f->capacity[2] = 0; /* may exceed */
    s[10] = fx_pick(f, &t[10]);
    for (size_t j = 0; j < 11; j++)
      fx_complete(f, t[j], s[j], NULL);
    fx_check_in_flight(f);
    fx_free(f);
  }
}

/* An empty pool says ILB_ENOREPLICA with ticket 0, for every policy,
 * including after its last replica was removed. */
static void test_empty_pool(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    fx *f = fx_new(all_policies[p], SEED);
    ilb_pick_result res;
    CHECK_RC(0, ilb_pick_result_init(&res));
    CHECK_RC(ILB_ENOREPLICA, ilb_pick(&res, f->pool, NULL));
    assert_true(res.ticket == 0);
    fx_add(f, 3, 0);
    run_immediate(f, 10, NULL, NULL);
    fx_remove(f, 0);
    res.ticket = 12345;
    CHECK_RC(ILB_ENOREPLICA, ilb_pick(&res, f->pool, NULL));
    assert_true(res.ticket == 0);
    fx_free(f);
  }
}

/* Random held/complete traffic with failures, for every policy: the
 * library's counts always equal ours, so never negative. */
static void test_in_flight_random_traffic(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    fx *f = fx_new(all_policies[p], SEED + 99);
    for (uint32_t i = 0; i < 6; i++)
      fx_add(f, 1 + i * 3, i == 2 ? 4 : 0);
    uint64_t rng = p + 1;
    uint64_t held_t[32];
    size_t held_s[32], nheld = 0;
    for (size_t j = 0; j < 20000; j++) {
      if (nheld < 32 && (splitmix(&rng) % 3) != 0) {
        held_s[nheld] = fx_pick(f, &held_t[nheld]);
        nheld++;
      } else if (nheld > 0) {
        size_t k = splitmix(&rng) % nheld;
        ilb_outcome o;
        CHECK_RC(0, ilb_outcome_init(&o));
        o.status = (int32_t)(splitmix(&rng) % 5);
        if (o.status == ILB_OUTCOME_HTTP_ERROR)
          o.http_status = 500;
        fx_complete(f, held_t[k], held_s[k], &o);
        held_t[k] = held_t[nheld - 1];
        held_s[k] = held_s[nheld - 1];
        nheld--;
      }
      if (j % 1000 == 0)
        fx_check_in_flight(f);
    }
    while (nheld > 0) {
      nheld--;
      fx_complete(f, held_t[nheld], held_s[nheld], NULL);
    }
    fx_check_in_flight(f);
    fx_free(f);
  }
}

/* ------------------------------------------------------------------------ */
/* Tie-breaks, overflow spreading, p2c sampling, WRR precision               */
/* ------------------------------------------------------------------------ */

/* Two idle replicas after a run of busy ones must tie 50/50 (a scan from a
 * random origin keeping the first tie would give the first one 7/8). */
static void test_least_load_ties_uniform(void **state) {
  (void)state;
  const int32_t pols[] = {ILB_POLICY_LEAST_CONN,
                          ILB_POLICY_WEIGHTED_LEAST_REQUEST};
  for (size_t p = 0; p < 2; p++) {
    fx *f = fx_new(pols[p], SEED);
    for (int i = 0; i < 8; i++)
      fx_add(f, 1, 0);
    /* make r02..r07 busy: pick until each has one in flight, completing at
     * once whatever lands on r00/r01 */
    uint64_t held[8];
    size_t nheld = 0;
    while (nheld < 6) {
      uint64_t t;
      size_t s = fx_pick(f, &t);
      if (s >= 2)
        held[nheld++] = t;
      else
        fx_complete(f, t, s, NULL);
      for (size_t q = 2; q < 8; q++)
        if (f->in_flight[q] > 1)
          fail_msg("least-load gave r%02zu a second request", q);
    }
    enum { PICKS = 20000 };
    uint64_t count[2] = {0, 0};
    for (int i = 0; i < PICKS; i++) {
      uint64_t t;
      size_t s = fx_pick(f, &t);
      if (s > 1)
        fail_msg("picked busy replica r%02zu", s);
      count[s]++;
      fx_complete(f, t, s, NULL);
    }
    check_near(count[0], PICKS / 2.0, ilb_policy_name(pols[p]), 8, 0);
    check_near(count[1], PICKS / 2.0, ilb_policy_name(pols[p]), 8, 1);
    for (size_t i = 0; i < nheld; i++)
      CHECK_RC(0, ilb_complete(f->pool, held[i], NULL));
    fx_free(f);
  }
}

/* When the chosen replica is full, the overflow goes to a random replica
 * with room, not always to the chosen one's neighbour. */
static void test_overflow_spreads(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_WEIGHTED_ROUND_ROBIN, SEED);
  size_t heavy = fx_add(f, 1000, 1); /* wrr chooses it ~99.7% of the time */
  for (int i = 0; i < 3; i++)
    fx_add(f, 1, 0);
  /* fill the heavy replica (capacity 1) and hold it */
  uint64_t t0;
  size_t s0;
  while ((s0 = fx_pick(f, &t0)) != heavy)
    fx_complete(f, t0, s0, NULL);
  enum { PICKS = 6000 };
  uint64_t count[4] = {0};
  for (int i = 0; i < PICKS; i++) {
    uint64_t t;
    size_t s = fx_pick(f, &t);
    assert_true(s != heavy);
    count[s]++;
    fx_complete(f, t, s, NULL);
  }
  for (size_t s = 1; s < 4; s++)
    check_near(count[s], PICKS / 3.0, "weighted_round_robin", 4, s);
  fx_complete(f, t0, heavy, NULL);
  fx_free(f);
}

/* A host generator that always returns the same value: p2c with k > 2 must
 * still finish (exactly k draws) and return a real replica. */
static uint64_t constant_rand(void *ud) {
  (void)ud;
  return 42;
}

static void test_p2c_many_choices_bad_rand(void **state) {
  (void)state;
  for (int64_t k = 3; k <= 16; k++) {
    ilb_host host;
    CHECK_RC(0, ilb_host_init(&host));
    host.rand = constant_rand;
    ilb_pool *pool = NULL;
    CHECK_RC(0, ilb_pool_new(&pool, &host));
    CHECK_RC(0, ilb_pool_set_option(pool, ILB_OPT_P2C_CHOICES, k));
    char ids[20][8];
    for (int i = 0; i < 20; i++) {
      ilb_replica_spec spec;
      CHECK_RC(0, ilb_replica_spec_init(&spec));
      snprintf(ids[i], sizeof ids[i], "r%02d", i);
      spec.id = ids[i];
      CHECK_RC(0, ilb_replica_add(pool, &spec));
    }
    for (int i = 0; i < 100; i++) {
      ilb_pick_result res;
      CHECK_RC(0, ilb_pick_result_init(&res));
      CHECK_RC(0, ilb_pick(&res, pool, NULL));
      assert_non_null(res.replica_id);
      CHECK_RC(0, ilb_complete(pool, res.ticket, NULL));
    }
    ilb_pool_free(pool);
  }
}

/* With k > 2 the samples are distinct: k = n - 1 over n replicas, holding
 * requests, always finds one of the two least loaded. */
static void test_p2c_k_distinct(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_P2C, SEED);
  for (int i = 0; i < 6; i++)
    fx_add(f, 1, 0);
  CHECK_RC(0, ilb_pool_set_option(f->pool, ILB_OPT_P2C_CHOICES, 5));
  uint64_t t[60];
  for (int i = 0; i < 60; i++) {
    int64_t lo = INT64_MAX, second = INT64_MAX;
    for (size_t s = 0; s < 6; s++) {
      if (f->in_flight[s] < lo)
        second = lo, lo = f->in_flight[s];
      else if (f->in_flight[s] < second)
        second = f->in_flight[s];
    }
    size_t s = fx_pick(f, &t[i]);
    /* 5 distinct of 6 always include one of the two least loaded */
    if (f->in_flight[s] - 1 > second)
      fail_msg("p2c k=5 picked r%02zu at load %lld, second least %lld", s,
               (long long)(f->in_flight[s] - 1), (long long)second);
  }
  fx_check_in_flight(f);
  for (int i = 0; i < 60; i++)
    CHECK_RC(0, ilb_complete(f->pool, t[i], NULL));
  fx_free(f);
}

/* Weights with a large common divisor are exact: {300000, 200000, 100000}
 * is {3, 2, 1}, so every 6 picks hold exactly 3, 2 and 1. */
static void test_wrr_gcd_exact(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_WEIGHTED_ROUND_ROBIN, SEED);
  fx_add(f, 300000, 0);
  fx_add(f, 200000, 0);
  fx_add(f, 100000, 0);
  uint64_t c[3] = {0, 0, 0};
  for (int i = 0; i < 6000; i++) {
    uint64_t t;
    size_t s = fx_pick(f, &t);
    c[s]++;
    fx_complete(f, t, s, NULL);
    if ((i + 1) % 6 == 0 &&
        (c[0] * 6 != (uint64_t)(i + 1) * 3 || c[1] * 6 != (uint64_t)(i + 1) * 2))
      fail_msg("after %d picks: %llu %llu %llu", i + 1,
               (unsigned long long)c[0], (unsigned long long)c[1],
               (unsigned long long)c[2]);
  }
  fx_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shares_round_robin_4),
      cmocka_unit_test(test_shares_round_robin_64),
      cmocka_unit_test(test_shares_weighted_round_robin_4),
      cmocka_unit_test(test_shares_weighted_round_robin_64),
      cmocka_unit_test(test_shares_random_4),
      cmocka_unit_test(test_shares_random_64),
      cmocka_unit_test(test_shares_weighted_random_4),
      cmocka_unit_test(test_shares_weighted_random_64),
      cmocka_unit_test(test_shares_least_conn_4),
      cmocka_unit_test(test_shares_least_conn_64),
      cmocka_unit_test(test_shares_weighted_least_request_4),
      cmocka_unit_test(test_shares_weighted_least_request_64),
      cmocka_unit_test(test_shares_p2c_4),
      cmocka_unit_test(test_shares_p2c_64),
      cmocka_unit_test(test_shares_p2c_equal_weights),
      cmocka_unit_test(test_least_conn_without_completion),
      cmocka_unit_test(test_wlr_without_completion),
      cmocka_unit_test(test_p2c_choices_equal_n),
      cmocka_unit_test(test_p2c_spread_without_completion),
      cmocka_unit_test(test_p2c_two_replicas),
      cmocka_unit_test(test_determinism_same_seed),
      cmocka_unit_test(test_determinism_different_seed),
      cmocka_unit_test(test_removed_never_picked),
      cmocka_unit_test(test_removed_ticket_and_readd),
      cmocka_unit_test(test_wrr_smooth_after_set_weight),
      cmocka_unit_test(test_wrr_smooth_after_add_and_remove),
      cmocka_unit_test(test_wrr_exact_large_sum),
      cmocka_unit_test(test_in_flight_exact_and_never_negative),
      cmocka_unit_test(test_failed_counter_per_status),
      cmocka_unit_test(test_capacity_respected),
      cmocka_unit_test(test_empty_pool),
      cmocka_unit_test(test_in_flight_random_traffic),
      cmocka_unit_test(test_least_load_ties_uniform),
      cmocka_unit_test(test_overflow_spreads),
      cmocka_unit_test(test_p2c_many_choices_bad_rand),
      cmocka_unit_test(test_p2c_k_distinct),
      cmocka_unit_test(test_wrr_gcd_exact),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
