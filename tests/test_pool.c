/*
 * Pool lifecycle, host struct handling, options and batches.
 *
 * SPDX-License-Identifier: MIT
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <inferlb/inferlb.h>

#include "testutil.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static ilb_pool *new_pool(const ilb_host *host) {
  ilb_pool *pool = NULL;
  assert_rc(ilb_pool_new(&pool, host), ILB_OK);
  assert_non_null(pool);
  track_pool(pool);
  return pool;
}

static int64_t get_opt(const ilb_pool *pool, int32_t opt) {
  int64_t v = -777;
  assert_rc(ilb_pool_get_option(&v, pool, opt), ILB_OK);
  return v;
}

static size_t pool_count(ilb_pool *pool) {
  size_t n = (size_t)-1;
  assert_rc(ilb_pool_count(&n, pool), ILB_OK);
  return n;
}

static const int32_t all_options[] = {ILB_OPT_POLICY, ILB_OPT_P2C_CHOICES,
                                      ILB_OPT_MAX_IN_FLIGHT,
                                      ILB_OPT_ALLOW_OVER_CAPACITY};
#define N_OPTIONS (sizeof all_options / sizeof all_options[0])

/* A counting allocator: every byte the pool takes must come back. */
struct alloc_ctx {
  size_t allocs;
  size_t frees;
  int bad_user_data;
};

static void *count_alloc(size_t size, void *user_data) {
  struct alloc_ctx *c = user_data;
  c->allocs++;
  return malloc(size ? size : 1);
}

static void count_free(void *ptr, void *user_data) {
  struct alloc_ctx *c = user_data;
  if (ptr != NULL)
    c->frees++;
  free(ptr);
}

/* A fake clock plus an event and log recorder. */
struct host_ctx {
  uint64_t now;
  size_t clock_calls;
  size_t n_events;
  int32_t last_type;
  uint64_t last_ts;
  char last_id[ILB_ID_MAX + 1];
  size_t n_logs;
  int32_t max_level;
  int bad_user_data;
  int bad_log;
};

static uint64_t fake_clock(void *user_data) {
  struct host_ctx *c = user_data;
  c->clock_calls++;
  return c->now;
}

static void record_event(const ilb_event *ev, void *user_data) {
  struct host_ctx *c = user_data;
  c->n_events++;
  c->last_type = ev->type;
  c->last_ts = ev->timestamp_ns;
  strncpy(c->last_id, ev->replica_id ? ev->replica_id : "", ILB_ID_MAX);
  c->last_id[ILB_ID_MAX] = '\0';
}

static void record_log(int32_t level, const char *msg, size_t len,
                       void *user_data) {
  struct host_ctx *c = user_data;
  c->n_logs++;
  if (level > c->max_level)
    c->max_level = level;
  if (level < ILB_LOG_ERROR || level > ILB_LOG_DEBUG)
    c->bad_log = 1;
  if (len > 0 && msg == NULL)
    c->bad_log = 1;
  if (len > 0) {
    /* Touch every byte (valgrind checks it is readable). */
    volatile char sink = 0;
    for (size_t i = 0; i < len; i++)
      sink ^= msg[i];
    (void)sink;
  }
}

/* Does a pick succeed right now? Completes what it picked. */
static int try_pick(ilb_pool *pool, const char **id_out) {
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  int rc = ilb_pick(&res, pool, NULL);
  if (rc == ILB_OK) {
    assert_int_not_equal(res.ticket, 0);
    if (id_out != NULL)
      *id_out = res.replica_id;
    assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);
  } else {
    assert_int_equal(res.ticket, 0);
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */
/* ------------------------------------------------------------------------ */

static void host_init_defaults(void **state) {
  (void)state;
  ilb_host host;
  memset(&host, 0xAB, sizeof host);
  assert_rc(ilb_host_init(&host), ILB_OK);
  assert_int_equal(host.struct_size, sizeof(ilb_host));
  assert_null(host.clock_ns);
  assert_null(host.on_event);
  assert_null(host.log);
  assert_null(host.alloc);
  assert_null(host.free);
  assert_null(host.rand);
  assert_int_equal(host.seed, 0);
  assert_int_equal(host.log_level, ILB_LOG_WARN);
  assert_int_equal(host.reserved0, 0);
  assert_null(host.user_data);

  assert_rc(ilb_host_init(NULL), ILB_EINVAL);
}

static void pool_new_null_host(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  assert_int_equal(pool_count(pool), 0);
  /* Defaults as ilb_option_bounds reports them. */
  for (size_t i = 0; i < N_OPTIONS; i++) {
    int64_t def = -1;
    assert_rc(ilb_option_bounds(NULL, NULL, &def, all_options[i]), ILB_OK);
    assert_int_equal(get_opt(pool, all_options[i]), def);
  }
  assert_int_equal(get_opt(pool, ILB_OPT_POLICY), ILB_POLICY_P2C);
  /* Usable: the default clock and generator work. */
  add_replica(pool, "a", 1, 0, NULL);
  const char *id = NULL;
  assert_rc(try_pick(pool, &id), ILB_OK);
  assert_string_equal(id, "a");
  free_pool(pool);
}

static void pool_new_with_init_host(void **state) {
  (void)state;
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  ilb_pool *pool = new_pool(&host);
  assert_int_equal(pool_count(pool), 0);
  assert_int_equal(get_opt(pool, ILB_OPT_POLICY), ILB_POLICY_P2C);
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(try_pick(pool, NULL), ILB_OK);
  free_pool(pool);
}

static void pool_new_null_out(void **state) {
  (void)state;
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  assert_rc(ilb_pool_new(NULL, NULL), ILB_EINVAL);
  assert_rc(ilb_pool_new(NULL, &host), ILB_EINVAL);
}

static void pool_new_alloc_without_free(void **state) {
  (void)state;
  /* static: a leftover pool freed after a failure still reaches it. */
  static struct alloc_ctx ac;
  memset(&ac, 0, sizeof ac);
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.user_data = &ac;

  ilb_pool *pool = NULL;
  host.alloc = count_alloc;
  host.free = NULL;
  assert_rc(ilb_pool_new(&pool, &host), ILB_EINVAL);
  assert_null(pool);

  host.alloc = NULL;
  host.free = count_free;
  assert_rc(ilb_pool_new(&pool, &host), ILB_EINVAL);
  assert_null(pool);

  assert_int_equal(ac.allocs, 0);
  assert_int_equal(ac.frees, 0);
}

static void pool_custom_allocator_balanced(void **state) {
  (void)state;
  /* static: a leftover pool freed after a failure still reaches it. */
  static struct alloc_ctx ac;
  memset(&ac, 0, sizeof ac);
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.alloc = count_alloc;
  host.free = count_free;
  host.user_data = &ac;

  ilb_pool *pool = new_pool(&host);
  assert_true(ac.allocs > 0); /* the pool itself came from our allocator */
  add_replica(pool, "a", 1, 0, NULL);
  add_replica(pool, "b", 2, 0, NULL);
  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 128), ILB_OK);
  assert_rc(try_pick(pool, NULL), ILB_OK);
  free_pool(pool);
  assert_int_equal(ac.allocs, ac.frees);
}

static void pool_new_struct_size_bad(void **state) {
  (void)state;
  ilb_host host;
  ilb_pool *pool = NULL;

  assert_rc(ilb_host_init(&host), ILB_OK);
  host.struct_size = 0;
  assert_rc(ilb_pool_new(&pool, &host), ILB_ESIZE);
  assert_null(pool);

  /* Absurd sizes must be rejected without reading that far. */
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.struct_size = SIZE_MAX;
  assert_rc(ilb_pool_new(&pool, &host), ILB_ESIZE);
  assert_null(pool);

  assert_rc(ilb_host_init(&host), ILB_OK);
  host.struct_size = SIZE_MAX / 2;
  assert_rc(ilb_pool_new(&pool, &host), ILB_ESIZE);
  assert_null(pool);
}

static void pool_new_struct_tail(void **state) {
  (void)state;
  /* A newer caller's struct: ilb_host plus fields this library lacks. */
  struct {
    ilb_host host;
    unsigned char tail[32];
  } big;
  ilb_pool *pool = NULL;

  memset(&big, 0, sizeof big);
  assert_rc(ilb_host_init(&big.host), ILB_OK);
  big.host.struct_size = sizeof big;
  big.tail[17] = 1;
  assert_rc(ilb_pool_new(&pool, &big.host), ILB_ESIZE);
  assert_null(pool);

  big.tail[17] = 0;
  big.tail[31] = 0x80;
  assert_rc(ilb_pool_new(&pool, &big.host), ILB_ESIZE);
  assert_null(pool);

  big.tail[31] = 0;
  assert_rc(ilb_pool_new(&pool, &big.host), ILB_OK);
  assert_non_null(pool);
  track_pool(pool);
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(try_pick(pool, NULL), ILB_OK);
  free_pool(pool);
}

static void pool_free_null(void **state) {
  (void)state;
  ilb_pool_free(NULL);
  ilb_pool_free(NULL);
  assert_true(1); /* reached: no crash */
}

static void pool_free_with_outstanding_tickets(void **state) {
  (void)state;
  /* Outstanding tickets become invalid, and nothing leaks (valgrind). */
  /* static: a leftover pool freed after a failure still reaches it. */
  static struct alloc_ctx ac;
  memset(&ac, 0, sizeof ac);
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.alloc = count_alloc;
  host.free = count_free;
  host.user_data = &ac;
  ilb_pool *pool = new_pool(&host);
  add_replica(pool, "a", 1, 0, NULL);
  for (int i = 0; i < 10; i++) {
    ilb_pick_result res;
    assert_rc(ilb_pick_result_init(&res), ILB_OK);
    assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
  }
  free_pool(pool);
  assert_int_equal(ac.allocs, ac.frees);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                   */
/* ------------------------------------------------------------------------ */

static void option_set_get_every_option(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);

  for (int32_t p = ILB_POLICY_ROUND_ROBIN; p <= ILB_POLICY_CHWBL; p++) {
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, p), ILB_OK);
    assert_int_equal(get_opt(pool, ILB_OPT_POLICY), p);
  }
  for (int64_t c = 2; c <= 16; c++) {
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_P2C_CHOICES, c), ILB_OK);
    assert_int_equal(get_opt(pool, ILB_OPT_P2C_CHOICES), c);
  }
  const int64_t pow2[] = {64, 128, 1024, 65536, 16777216, 64};
  for (size_t i = 0; i < sizeof pow2 / sizeof pow2[0]; i++) {
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, pow2[i]),
              ILB_OK);
    assert_int_equal(get_opt(pool, ILB_OPT_MAX_IN_FLIGHT), pow2[i]);
  }
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_ALLOW_OVER_CAPACITY, 1), ILB_OK);
  assert_int_equal(get_opt(pool, ILB_OPT_ALLOW_OVER_CAPACITY), 1);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_ALLOW_OVER_CAPACITY, 0), ILB_OK);
  assert_int_equal(get_opt(pool, ILB_OPT_ALLOW_OVER_CAPACITY), 0);

  /* The pool still works after all that. */
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(try_pick(pool, NULL), ILB_OK);
  free_pool(pool);
}

static void option_out_of_range_keeps_old(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);

  assert_rc(ilb_pool_set_option(pool, ILB_OPT_P2C_CHOICES, 5), ILB_OK);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 256), ILB_OK);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_ALLOW_OVER_CAPACITY, 1), ILB_OK);

  const struct {
    int32_t opt;
    int64_t value;
  } bad[] = {
      {ILB_OPT_P2C_CHOICES, 1},          {ILB_OPT_P2C_CHOICES, 17},
      {ILB_OPT_P2C_CHOICES, 0},          {ILB_OPT_P2C_CHOICES, -2},
      {ILB_OPT_P2C_CHOICES, INT64_MAX},  {ILB_OPT_P2C_CHOICES, INT64_MIN},
      {ILB_OPT_MAX_IN_FLIGHT, 63},       {ILB_OPT_MAX_IN_FLIGHT, 0},
      {ILB_OPT_MAX_IN_FLIGHT, -64},      {ILB_OPT_MAX_IN_FLIGHT, 16777217},
      {ILB_OPT_MAX_IN_FLIGHT, INT64_MAX}, {ILB_OPT_MAX_IN_FLIGHT, INT64_MIN},
      {ILB_OPT_MAX_IN_FLIGHT, (int64_t)1 << 32},
      {ILB_OPT_ALLOW_OVER_CAPACITY, 2},  {ILB_OPT_ALLOW_OVER_CAPACITY, -1},
      {ILB_OPT_ALLOW_OVER_CAPACITY, INT64_MAX},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_rc(ilb_pool_set_option(pool, bad[i].opt, bad[i].value),
              ILB_ERANGE);

  assert_int_equal(get_opt(pool, ILB_OPT_P2C_CHOICES), 5);
  assert_int_equal(get_opt(pool, ILB_OPT_MAX_IN_FLIGHT), 256);
  assert_int_equal(get_opt(pool, ILB_OPT_ALLOW_OVER_CAPACITY), 1);
  free_pool(pool);
}

static void option_policy_not_a_policy(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, ILB_POLICY_LEAST_CONN),
            ILB_OK);
  const int64_t bad[] = {0, 16, -1, 1000, INT64_MAX, INT64_MIN,
                         ((int64_t)1 << 32) | ILB_POLICY_RANDOM};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, bad[i]),
              ILB_EUNKNOWN);
  assert_int_equal(get_opt(pool, ILB_OPT_POLICY), ILB_POLICY_LEAST_CONN);
  free_pool(pool);
}

static void option_unknown(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  const int32_t bad[] = {0, 1, 99, 183, 199, 200, 204, 205, -1, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t v = 0;
    assert_rc(ilb_pool_set_option(pool, bad[i], 0), ILB_EUNKNOWN);
    assert_rc(ilb_pool_set_option(pool, bad[i], 1), ILB_EUNKNOWN);
    assert_rc(ilb_pool_get_option(&v, pool, bad[i]), ILB_EUNKNOWN);
  }
  free_pool(pool);
}

static void option_null_args(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  int64_t v = 0;
  for (size_t i = 0; i < N_OPTIONS; i++) {
    assert_rc(ilb_pool_set_option(NULL, all_options[i], 1), ILB_EINVAL);
    assert_rc(ilb_pool_get_option(&v, NULL, all_options[i]), ILB_EINVAL);
    assert_rc(ilb_pool_get_option(NULL, pool, all_options[i]), ILB_EINVAL);
  }
  free_pool(pool);
}

static void option_max_in_flight_rounds_up(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  const struct {
    int64_t set, want;
  } cases[] = {
      {65, 128},           {100, 128},           {127, 128},
      {129, 256},          {1000, 1024},         {4097, 8192},
      {65535, 65536},      {65537, 131072},      {16777215, 16777216},
      {64, 64},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, cases[i].set),
              ILB_OK);
    assert_int_equal(get_opt(pool, ILB_OPT_MAX_IN_FLIGHT), cases[i].want);
  }
  free_pool(pool);
}

static void option_max_in_flight_rounded_is_enforced(void **state) {
  (void)state;
  /* 65 rounds up to 128: with this thread's ILB_THREAD_TICKETS private
   * entries exactly 128 + ILB_THREAD_TICKETS picks fit, the next does not. */
  enum { CAP = 128 + ILB_THREAD_TICKETS };
  ilb_pool *pool = new_pool(NULL);
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 65), ILB_OK);
  uint64_t tickets[CAP];
  for (int i = 0; i < CAP; i++) {
    ilb_pick_result res;
    assert_rc(ilb_pick_result_init(&res), ILB_OK);
    assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
    tickets[i] = res.ticket;
  }
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, pool, NULL), ILB_ETICKETS);
  for (int i = 0; i < CAP; i++)
    assert_rc(ilb_complete(pool, tickets[i], NULL), ILB_OK);
  free_pool(pool);
}

static void option_max_in_flight_busy(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  add_replica(pool, "a", 1, 0, NULL);

  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);

  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 128), ILB_EBUSY);
  assert_int_equal(get_opt(pool, ILB_OPT_MAX_IN_FLIGHT), 65536);
  /* Other options are not blocked by requests in flight. */
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, ILB_POLICY_RANDOM),
            ILB_OK);
  /* The outstanding ticket survived the refused change. */
  assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);

  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 128), ILB_OK);
  assert_int_equal(get_opt(pool, ILB_OPT_MAX_IN_FLIGHT), 128);
  assert_rc(try_pick(pool, NULL), ILB_OK);
  free_pool(pool);
}

static void option_max_in_flight_busy_removed_replica(void **state) {
  (void)state;
  /* A request in flight on a removed replica is still in flight. */
  ilb_pool *pool = new_pool(NULL);
  add_replica(pool, "a", 1, 0, NULL);
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 128), ILB_EBUSY);
  assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_EREMOVED);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 128), ILB_OK);
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */
/* ------------------------------------------------------------------------ */

static void batch_nested_publishes_at_outermost_commit(void **state) {
  (void)state;
  struct host_ctx hc = {0};
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.on_event = record_event;
  host.user_data = &hc;
  ilb_pool *pool = new_pool(&host);

  assert_rc(ilb_pool_batch_begin(pool), ILB_OK);
  assert_rc(ilb_pool_batch_begin(pool), ILB_OK);
  add_replica(pool, "a", 1, 0, NULL);
  /* The registry changed and the event fired... */
  assert_int_equal(pool_count(pool), 1);
  assert_int_equal(hc.n_events, 1);
  assert_int_equal(hc.last_type, ILB_EVENT_REPLICA_ADDED);
  /* ...but picks still see the old (empty) snapshot. */
  assert_rc(try_pick(pool, NULL), ILB_ENOREPLICA);

  assert_rc(ilb_pool_batch_commit(pool), ILB_OK); /* inner */
  assert_rc(try_pick(pool, NULL), ILB_ENOREPLICA);

  assert_rc(ilb_pool_batch_commit(pool), ILB_OK); /* outermost */
  const char *id = NULL;
  assert_rc(try_pick(pool, &id), ILB_OK);
  assert_string_equal(id, "a");

  /* The batch is closed: another commit has no begin. */
  assert_rc(ilb_pool_batch_commit(pool), ILB_EINVAL);
  free_pool(pool);
}

static void batch_remove_published_at_commit(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  add_replica(pool, "a", 1, 0, NULL);

  assert_rc(ilb_pool_batch_begin(pool), ILB_OK);
  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  assert_int_equal(pool_count(pool), 0);
  /* Old snapshot: "a" is still picked until the commit. */
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
  assert_string_equal(res.replica_id, "a");
  assert_rc(ilb_pool_batch_commit(pool), ILB_OK);

  assert_rc(try_pick(pool, NULL), ILB_ENOREPLICA);
  assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_EREMOVED);
  free_pool(pool);
}

static void batch_many_writes_one_commit(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  assert_rc(ilb_pool_batch_begin(pool), ILB_OK);
  char id[16];
  for (int i = 0; i < 100; i++) {
    snprintf(id, sizeof id, "r%d", i);
    add_replica(pool, id, (uint32_t)(i + 1), 0, NULL);
  }
  assert_rc(ilb_replica_set_weight(pool, "r5", 77), ILB_OK);
  assert_rc(ilb_replica_remove(pool, "r7"), ILB_OK);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, ILB_POLICY_ROUND_ROBIN),
            ILB_OK);
  assert_rc(try_pick(pool, NULL), ILB_ENOREPLICA);
  assert_rc(ilb_pool_batch_commit(pool), ILB_OK);

  assert_int_equal(pool_count(pool), 99);
  ilb_replica_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  assert_rc(ilb_replica_get(&info, pool, "r5"), ILB_OK);
  assert_int_equal(info.weight, 77);
  assert_rc(ilb_replica_get(&info, pool, "r7"), ILB_ENOENT);
  for (int i = 0; i < 300; i++) {
    const char *got = NULL;
    assert_rc(try_pick(pool, &got), ILB_OK);
    assert_string_not_equal(got, "r7");
  }
  free_pool(pool);
}

static void batch_commit_without_begin(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  assert_rc(ilb_pool_batch_commit(pool), ILB_EINVAL);
  assert_rc(ilb_pool_batch_begin(pool), ILB_OK);
  assert_rc(ilb_pool_batch_commit(pool), ILB_OK);
  assert_rc(ilb_pool_batch_commit(pool), ILB_EINVAL);
  /* A refused commit did not leave a batch open: writes publish at once. */
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(try_pick(pool, NULL), ILB_OK);

  assert_rc(ilb_pool_batch_begin(NULL), ILB_EINVAL);
  assert_rc(ilb_pool_batch_commit(NULL), ILB_EINVAL);
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* Count, clock, log                                                         */
/* ------------------------------------------------------------------------ */

static void pool_count_tracks_replicas(void **state) {
  (void)state;
  ilb_pool *pool = new_pool(NULL);
  size_t n = 0;
  assert_rc(ilb_pool_count(NULL, pool), ILB_EINVAL);
  assert_rc(ilb_pool_count(&n, NULL), ILB_EINVAL);

  assert_int_equal(pool_count(pool), 0);
  add_replica(pool, "a", 1, 0, NULL);
  add_replica(pool, "b", 1, 0, NULL);
  add_replica(pool, "c", 1, 0, NULL);
  assert_int_equal(pool_count(pool), 3);
  assert_rc(ilb_replica_remove(pool, "b"), ILB_OK);
  assert_int_equal(pool_count(pool), 2);
  /* Failed writes change nothing. */
  assert_rc(ilb_replica_remove(pool, "b"), ILB_ENOENT);
  ilb_replica_spec spec;
  assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
  spec.id = "a";
  assert_rc(ilb_replica_add(pool, &spec), ILB_EEXIST);
  assert_int_equal(pool_count(pool), 2);
  free_pool(pool);
}

static void custom_clock_used_for_events(void **state) {
  (void)state;
  struct host_ctx hc = {0};
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.clock_ns = fake_clock;
  host.on_event = record_event;
  host.user_data = &hc;
  ilb_pool *pool = new_pool(&host);

  hc.now = 12345;
  add_replica(pool, "a", 1, 0, NULL);
  assert_int_equal(hc.n_events, 1);
  assert_int_equal(hc.last_type, ILB_EVENT_REPLICA_ADDED);
  assert_int_equal(hc.last_ts, 12345);
  assert_string_equal(hc.last_id, "a");
  assert_true(hc.clock_calls > 0);

  hc.now = 5000000000ull;
  assert_rc(ilb_replica_set_weight(pool, "a", 3), ILB_OK);
  assert_int_equal(hc.n_events, 2);
  assert_int_equal(hc.last_type, ILB_EVENT_REPLICA_WEIGHT);
  assert_int_equal(hc.last_ts, 5000000000ull);

  hc.now = UINT64_MAX - 1;
  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  assert_int_equal(hc.n_events, 3);
  assert_int_equal(hc.last_type, ILB_EVENT_REPLICA_REMOVED);
  assert_int_equal(hc.last_ts, UINT64_MAX - 1);
  free_pool(pool);
}

static void host_is_copied(void **state) {
  (void)state;
  /* The pool keeps its own copy: changing the caller's struct later has no
   * effect. */
  struct host_ctx hc = {0};
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.clock_ns = fake_clock;
  host.on_event = record_event;
  host.user_data = &hc;
  ilb_pool *pool = new_pool(&host);
  memset(&host, 0, sizeof host);

  hc.now = 42;
  add_replica(pool, "a", 1, 0, NULL);
  assert_int_equal(hc.n_events, 1);
  assert_int_equal(hc.last_ts, 42);
  free_pool(pool);
}

static void custom_log_callback(void **state) {
  (void)state;
  struct host_ctx hc = {0};
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.log = record_log;
  host.log_level = ILB_LOG_DEBUG;
  host.user_data = &hc;
  ilb_pool *pool = new_pool(&host);

  /* Exercise writers and error paths; whatever is logged must be sane. */
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(ilb_replica_set_weight(pool, "a", 9), ILB_OK);
  assert_rc(ilb_replica_remove(pool, "nope"), ILB_ENOENT);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, 99), ILB_EUNKNOWN);
  assert_rc(try_pick(pool, NULL), ILB_OK);
  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  free_pool(pool);
  assert_false(hc.bad_log);
}

static void log_level_none_delivers_nothing(void **state) {
  (void)state;
  struct host_ctx hc = {0};
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.log = record_log;
  host.log_level = ILB_LOG_NONE;
  host.user_data = &hc;
  ilb_pool *pool = new_pool(&host);
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(ilb_replica_remove(pool, "nope"), ILB_ENOENT);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, 99), ILB_EUNKNOWN);
  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  free_pool(pool);
  /* No level is <= ILB_LOG_NONE. */
  assert_int_equal(hc.n_logs, 0);
}

static void log_level_filters(void **state) {
  (void)state;
  const int32_t levels[] = {ILB_LOG_ERROR, ILB_LOG_WARN, ILB_LOG_INFO};
  for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
    struct host_ctx hc = {0};
    ilb_host host;
    assert_rc(ilb_host_init(&host), ILB_OK);
    host.log = record_log;
    host.log_level = levels[i];
    host.user_data = &hc;
    ilb_pool *pool = new_pool(&host);
    add_replica(pool, "a", 1, 0, NULL);
    assert_rc(ilb_replica_set_weight(pool, "a", 9), ILB_OK);
    assert_rc(ilb_replica_remove(pool, "nope"), ILB_ENOENT);
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 1), ILB_ERANGE);
    assert_rc(try_pick(pool, NULL), ILB_OK);
    assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
    free_pool(pool);
    /* Delivered only when level <= log_level. */
    assert_true(hc.max_level <= levels[i]);
    assert_false(hc.bad_log);
  }
}

/* Every host callback a writer makes (log, clock, allocator, event) runs
 * inside the writer: a writer call on the same pool from there is refused
 * with ILB_EDEADLK and the outer change completes intact. */
struct reenter {
  ilb_pool *pool;
  int calls, refused, other;
};

static void reenter_try(struct reenter *r) {
  if (!r->pool)
    return;
  r->calls++;
  ilb_replica_spec spec;
  ilb_replica_spec_init(&spec);
  spec.id = "inner";
  int rc = ilb_replica_add(r->pool, &spec);
  if (rc == ILB_EDEADLK)
    r->refused++;
  else
    r->other++;
  if (ilb_pool_set_option(r->pool, ILB_OPT_POLICY, ILB_POLICY_RANDOM) !=
      ILB_EDEADLK)
    r->other++;
}

static void reenter_log(int32_t level, const char *msg, size_t len,
                        void *user_data) {
  (void)level, (void)msg, (void)len;
  reenter_try(user_data);
}

static uint64_t reenter_clock(void *user_data) {
  reenter_try(user_data);
  return 7;
}

static void ignore_event(const ilb_event *ev, void *user_data) {
  (void)ev, (void)user_data;
}

static void writer_refused_from_log_and_clock(void **state) {
  (void)state;
  for (int which = 0; which < 2; which++) {
    struct reenter r = {0};
    ilb_host host;
    assert_rc(ilb_host_init(&host), ILB_OK);
    host.user_data = &r;
    if (which == 0) {
      host.log = reenter_log;
      host.log_level = ILB_LOG_DEBUG; /* publishes log at DEBUG */
    } else {
      host.clock_ns = reenter_clock; /* events read the clock */
      host.on_event = ignore_event;
    }
    ilb_pool *pool = new_pool(&host);
    r.pool = pool;
    add_replica(pool, "a", 1, 0, NULL);
    add_replica(pool, "b", 1, 0, NULL);
    assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
    assert_true(r.calls > 0);
    assert_int_equal(r.refused, r.calls);
    assert_int_equal(r.other, 0);
    size_t n = 0;
    assert_rc(ilb_pool_count(&n, pool), ILB_OK);
    assert_int_equal(n, 1); /* "b" only: no "inner" got in */
    ilb_replica_info info = get_info(pool, "b");
    assert_int_equal(info.weight, 1);
    r.pool = NULL;
    free_pool(pool);
  }
}

static void host_reserved_must_be_zero(void **state) {
  (void)state;
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.reserved0 = 1;
  ilb_pool *pool = (ilb_pool *)&host;
  assert_rc(ilb_pool_new(&pool, &host), ILB_EINVAL);
  assert_null(pool);
}

/* Replaced ticket tables are kept until ilb_pool_free, but one per size:
 * switching ILB_OPT_MAX_IN_FLIGHT back and forth must not grow memory. */
struct bytes_ctx {
  size_t live, peak;
};

static void *bytes_alloc(size_t size, void *ud) {
  struct bytes_ctx *c = ud;
  size_t *b = malloc(size + sizeof(size_t) * 2);
  if (!b)
    return NULL;
  b[0] = size;
  c->live += size;
  if (c->live > c->peak)
    c->peak = c->live;
  return b + 2;
}

static void bytes_free(void *ptr, void *ud) {
  struct bytes_ctx *c = ud;
  size_t *b = (size_t *)ptr - 2;
  c->live -= b[0];
  free(b);
}

static void ticket_tables_bounded(void **state) {
  (void)state;
  struct bytes_ctx c = {0, 0};
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.alloc = bytes_alloc;
  host.free = bytes_free;
  host.user_data = &c;
  ilb_pool *pool = new_pool(&host);
  add_replica(pool, "a", 1, 0, NULL);
  enum { BIG = 1 << 20 }; /* 8 MiB of entries */
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, BIG), ILB_OK);
  size_t after_first = c.live;
  for (int i = 0; i < 10; i++) {
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 64), ILB_OK);
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, BIG), ILB_OK);
    /* picks and completes still work on the table in use */
    ilb_pick_result res;
    assert_rc(ilb_pick_result_init(&res), ILB_OK);
    assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
    assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);
  }
  /* at most one extra small table besides those present after the first
   * switch (without reuse: ten more 8 MiB tables) */
  assert_true(c.live <= after_first + 65536);
  free_pool(pool);
  assert_int_equal(c.live, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(host_init_defaults),
      cmocka_unit_test(pool_new_null_host),
      cmocka_unit_test(pool_new_with_init_host),
      cmocka_unit_test(pool_new_null_out),
      cmocka_unit_test(pool_new_alloc_without_free),
      cmocka_unit_test(pool_custom_allocator_balanced),
      cmocka_unit_test(pool_new_struct_size_bad),
      cmocka_unit_test(pool_new_struct_tail),
      cmocka_unit_test(pool_free_null),
      cmocka_unit_test(pool_free_with_outstanding_tickets),
      cmocka_unit_test(option_set_get_every_option),
      cmocka_unit_test(option_out_of_range_keeps_old),
      cmocka_unit_test(option_policy_not_a_policy),
      cmocka_unit_test(option_unknown),
      cmocka_unit_test(option_null_args),
      cmocka_unit_test(option_max_in_flight_rounds_up),
      cmocka_unit_test(option_max_in_flight_rounded_is_enforced),
      cmocka_unit_test(option_max_in_flight_busy),
      cmocka_unit_test(option_max_in_flight_busy_removed_replica),
      cmocka_unit_test(batch_nested_publishes_at_outermost_commit),
      cmocka_unit_test(batch_remove_published_at_commit),
      cmocka_unit_test(batch_many_writes_one_commit),
      cmocka_unit_test(batch_commit_without_begin),
      cmocka_unit_test(pool_count_tracks_replicas),
      cmocka_unit_test(custom_clock_used_for_events),
      cmocka_unit_test(host_is_copied),
      cmocka_unit_test(custom_log_callback),
      cmocka_unit_test(log_level_none_delivers_nothing),
      cmocka_unit_test(log_level_filters),
      cmocka_unit_test(writer_refused_from_log_and_clock),
      cmocka_unit_test(host_reserved_must_be_zero),
      cmocka_unit_test(ticket_tables_bounded),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
