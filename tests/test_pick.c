/*
 * ilb_pick / ilb_complete: tickets, in-flight accounting, outcomes, capacity
 * and the ticket table.
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

static ilb_pool *new_pool(void) {
  ilb_pool *pool = NULL;
  assert_rc(ilb_pool_new(&pool, NULL), ILB_OK);
  assert_non_null(pool);
  track_pool(pool);
  return pool;
}

static ilb_pool *new_pool_policy(int32_t policy) {
  ilb_pool *pool = new_pool();
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, policy), ILB_OK);
  return pool;
}

static int64_t in_flight(ilb_pool *pool, const char *id) {
  return get_info(pool, id).in_flight;
}

static ilb_pick_result fresh_result(void) {
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  res.ticket = 12345; /* must be overwritten: 0 on error, a ticket on success */
  return res;
}

/* A successful pick; returns the ticket. */
static uint64_t pick_ok(ilb_pool *pool, ilb_pick_result *res_out) {
  ilb_pick_result res = fresh_result();
  assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
  assert_int_not_equal(res.ticket, 0);
  assert_non_null(res.replica_id);
  if (res_out != NULL)
    *res_out = res;
  return res.ticket;
}

/* A failing pick: checks the code and that ticket is 0. */
static void pick_fails(ilb_pool *pool, int want) {
  ilb_pick_result res = fresh_result();
  assert_rc(ilb_pick(&res, pool, NULL), want);
  assert_int_equal(res.ticket, 0);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* xorshift64*: deterministic garbage for ticket fuzzing. */
static uint64_t next_rand(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

/* ------------------------------------------------------------------------ */
/* Init functions and argument checks                                        */
/* ------------------------------------------------------------------------ */

static void init_functions(void **state) {
  (void)state;
  ilb_pick_result res;
  memset(&res, 0xAB, sizeof res);
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_int_equal(res.struct_size, sizeof res);
  assert_int_equal(res.ticket, 0);
  assert_null(res.replica_id);
  assert_null(res.host_data);
  assert_int_equal(res.retry_after_ns, 0);

  ilb_request req;
  memset(&req, 0xAB, sizeof req);
  assert_rc(ilb_request_init(&req), ILB_OK);
  assert_int_equal(req.struct_size, sizeof req);
  assert_null(req.key);
  assert_int_equal(req.key_len, 0);
  assert_null(req.block_hashes);
  assert_int_equal(req.n_blocks, 0);
  assert_null(req.prompt);
  assert_int_equal(req.prompt_len, 0);
  assert_int_equal(req.prompt_tokens, 0);
  assert_int_equal(req.output_tokens, 0);
  assert_null(req.attrs);
  assert_int_equal(req.n_attrs, 0);

  ilb_outcome out;
  memset(&out, 0xAB, sizeof out);
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  assert_int_equal(out.struct_size, sizeof out);
  assert_int_equal(out.status, ILB_OUTCOME_OK);
  assert_int_equal(out.http_status, 0);
  assert_int_equal(out.latency_ns, 0);
  assert_int_equal(out.ttft_ns, 0);
  assert_int_equal(out.prompt_tokens, 0);
  assert_int_equal(out.output_tokens, 0);

  assert_rc(ilb_pick_result_init(NULL), ILB_EINVAL);
  assert_rc(ilb_request_init(NULL), ILB_EINVAL);
  assert_rc(ilb_outcome_init(NULL), ILB_EINVAL);
}

static void pick_empty_pool(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  pick_fails(pool, ILB_ENOREPLICA);

  /* Empty again after the last replica goes. */
  add_replica(pool, "a", 1, 0, NULL);
  uint64_t t = pick_ok(pool, NULL);
  assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  pick_fails(pool, ILB_ENOREPLICA);
  free_pool(pool);
}

static void pick_empty_pool_every_policy(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    ilb_pool *pool = new_pool_policy(all_policies[p]);
    pick_fails(pool, ILB_ENOREPLICA);
    free_pool(pool);
  }
}

static void pick_null_args(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  ilb_pick_result res = fresh_result();
  assert_rc(ilb_pick(NULL, pool, NULL), ILB_EINVAL);
  assert_rc(ilb_pick(&res, NULL, NULL), ILB_EINVAL);
  /* The header: "On error res->ticket is 0", also for a NULL pool. */
  assert_int_equal(res.ticket, 0);
  assert_int_equal(in_flight(pool, "a"), 0);

  uint64_t t = pick_ok(pool, NULL);
  assert_rc(ilb_complete(NULL, t, NULL), ILB_EINVAL);
  assert_int_equal(in_flight(pool, "a"), 1);
  assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "a"), 0);
  free_pool(pool);
}

static void pick_req_null_or_init(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);

  ilb_pick_result res = fresh_result();
  assert_rc(ilb_pick(&res, pool, NULL), ILB_OK);
  assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);

  ilb_request req;
  assert_rc(ilb_request_init(&req), ILB_OK);
  res = fresh_result();
  assert_rc(ilb_pick(&res, pool, &req), ILB_OK);
  assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);

  /* Fields the core policies ignore are still accepted. */
  static const uint64_t blocks[] = {1, 2, 3};
  static const ilb_label attrs[] = {{"model", "llama"}};
  req.key = "session-1";
  req.key_len = 9;
  req.block_hashes = blocks;
  req.n_blocks = 3;
  req.prompt = "hello";
  req.prompt_len = 5;
  req.prompt_tokens = 10;
  req.output_tokens = 20;
  req.attrs = attrs;
  req.n_attrs = 1;
  res = fresh_result();
  assert_rc(ilb_pick(&res, pool, &req), ILB_OK);
  assert_string_equal(res.replica_id, "a");
  assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);
  free_pool(pool);
}

static void pick_result_struct_size(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  ilb_pick_result res = fresh_result();
  res.struct_size = 0;
  assert_rc(ilb_pick(&res, pool, NULL), ILB_ESIZE);
  assert_int_equal(in_flight(pool, "a"), 0);
  free_pool(pool);
}

static void pick_result_smaller_struct_prefix(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  int hd = 0;
  add_replica(pool, "a", 1, 0, &hd);
  struct {
    ilb_pick_result res;
    unsigned char guard[16];
  } buf;
  const size_t prefix = offsetof(ilb_pick_result, host_data);
  memset(&buf, 0xA5, sizeof buf);
  buf.res.struct_size = prefix;
  assert_rc(ilb_pick(&buf.res, pool, NULL), ILB_OK);
  assert_int_not_equal(buf.res.ticket, 0);
  assert_string_equal(buf.res.replica_id, "a");
  const unsigned char *bytes = (const unsigned char *)&buf;
  for (size_t i = prefix; i < sizeof buf; i++) {
    if (bytes[i] != 0xA5)
      fail_msg("byte %zu (past struct_size %zu) was written", i, prefix);
  }
  assert_rc(ilb_complete(pool, buf.res.ticket, NULL), ILB_OK);
  free_pool(pool);
}

static void pick_request_struct_size(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);

  ilb_request req;
  assert_rc(ilb_request_init(&req), ILB_OK);
  req.struct_size = 0;
  {
    ilb_pick_result res = fresh_result();
    assert_rc(ilb_pick(&res, pool, &req), ILB_ESIZE);
    assert_int_equal(res.ticket, 0);
  }

  struct {
    ilb_request req;
    unsigned char tail[32];
  } big;
  memset(&big, 0, sizeof big);
  assert_rc(ilb_request_init(&big.req), ILB_OK);
  big.req.struct_size = sizeof big;
  big.tail[31] = 1;
  {
    ilb_pick_result res = fresh_result();
    assert_rc(ilb_pick(&res, pool, &big.req), ILB_ESIZE);
    assert_int_equal(res.ticket, 0);
  }
  assert_int_equal(in_flight(pool, "a"), 0);

  big.tail[31] = 0;
  {
    ilb_pick_result res = fresh_result();
    assert_rc(ilb_pick(&res, pool, &big.req), ILB_OK);
    assert_int_not_equal(res.ticket, 0);
    assert_rc(ilb_complete(pool, res.ticket, NULL), ILB_OK);
  }
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* Tickets and in-flight                                                     */
/* ------------------------------------------------------------------------ */

static void pick_returns_real_replica(void **state) {
  (void)state;
  int hd[3] = {0, 0, 0};
  const char *ids[3] = {"alpha", "beta", "gamma"};
  for (size_t p = 0; p < N_POLICIES; p++) {
    ilb_pool *pool = new_pool_policy(all_policies[p]);
    for (int i = 0; i < 3; i++)
      add_replica(pool, ids[i], (uint32_t)(i + 1), 0, &hd[i]);
    for (int n = 0; n < 200; n++) {
      ilb_pick_result res;
      uint64_t t = pick_ok(pool, &res);
      int found = -1;
      for (int i = 0; i < 3; i++)
        if (strcmp(res.replica_id, ids[i]) == 0)
          found = i;
      if (found < 0)
        fail_msg("policy %d picked unknown id '%s'", all_policies[p],
                 res.replica_id);
      assert_ptr_equal(res.host_data, &hd[found]);
      assert_int_equal(in_flight(pool, ids[found]), 1);
      assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
      assert_int_equal(in_flight(pool, ids[found]), 0);
    }
    free_pool(pool);
  }
}

static void in_flight_lifecycle(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  assert_int_equal(in_flight(pool, "a"), 0);
  uint64_t t1 = pick_ok(pool, NULL);
  assert_int_equal(in_flight(pool, "a"), 1);
  uint64_t t2 = pick_ok(pool, NULL);
  assert_int_not_equal(t1, t2);
  assert_int_equal(in_flight(pool, "a"), 2);
  assert_rc(ilb_complete(pool, t1, NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "a"), 1);
  assert_rc(ilb_complete(pool, t2, NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "a"), 0);
  assert_int_equal(get_info(pool, "a").completed, 2);
  free_pool(pool);
}

static void complete_twice_is_stale(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  uint64_t t = pick_ok(pool, NULL);
  uint64_t other = pick_ok(pool, NULL);
  assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "a"), 1);
  assert_rc(ilb_complete(pool, t, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(pool, t, NULL), ILB_ESTALE);
  ilb_outcome out;
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  out.status = ILB_OUTCOME_TIMEOUT;
  assert_rc(ilb_complete(pool, t, &out), ILB_ESTALE);
  /* Nothing changed: the other request is still in flight. */
  ilb_replica_info info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 1);
  assert_int_equal(info.completed, 1);
  assert_int_equal(info.failed, 0);
  assert_rc(ilb_complete(pool, other, NULL), ILB_OK);
  assert_rc(ilb_complete(pool, other, NULL), ILB_ESTALE);
  info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 2);
  free_pool(pool);
}

static void garbage_tickets_are_stale(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 64), ILB_OK);

  /* No ticket outstanding at all. */
  assert_rc(ilb_complete(pool, 0, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(pool, 0xdeadbeefcafebabeull, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(pool, UINT64_MAX, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(pool, 1, NULL), ILB_ESTALE);

  /* One ticket outstanding: any other value is not a live ticket. */
  uint64_t t = pick_ok(pool, NULL);
  const uint64_t fixed[] = {
      0,
      0xdeadbeefcafebabeull,
      UINT64_MAX,
      1,
      64,
      65,
      1000000,
      /* Index bits beyond a 64-entry table whichever half holds the index. */
      t | 0xFFFFFFFFull,
      t | 0xFFFFFFFF00000000ull,
      (t & 0xFFFFFFFF00000000ull) | 0x7FFFFFFFull,
      (t & 0xFFFFFFFF00000000ull) | 64,    /* one past a 64-entry table */
      (t & 0xFFFFFFFF00000000ull) | 65536,
      (t & 0x00000000FFFFFFFFull) | (64ull << 32),
      (t & 0x00000000FFFFFFFFull) | 0x7FFFFFFF00000000ull,
      t + 64,
      t + 1,
      t - 1,
      t + (1ull << 32),
      t - (1ull << 32),
      ~t,
  };
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    if (fixed[i] == t)
      continue;
    assert_rc(ilb_complete(pool, fixed[i], NULL), ILB_ESTALE);
  }
  for (int bit = 0; bit < 64; bit++)
    assert_rc(ilb_complete(pool, t ^ (1ull << bit), NULL), ILB_ESTALE);
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 5000; i++) {
    uint64_t g = next_rand(&s);
    if (g == t)
      continue;
    assert_rc(ilb_complete(pool, g, NULL), ILB_ESTALE);
  }

  ilb_replica_info info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 1);
  assert_int_equal(info.completed, 0);
  assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
  info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 1);
  free_pool(pool);
}

static void removed_replica_ticket(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  add_replica(pool, "b", 1, 0, NULL);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, ILB_POLICY_ROUND_ROBIN),
            ILB_OK);

  /* Get a ticket on each replica. */
  uint64_t ta = 0, tb = 0;
  for (int i = 0; i < 10 && (ta == 0 || tb == 0); i++) {
    ilb_pick_result res;
    uint64_t t = pick_ok(pool, &res);
    if (strcmp(res.replica_id, "a") == 0 && ta == 0)
      ta = t;
    else if (strcmp(res.replica_id, "b") == 0 && tb == 0)
      tb = t;
    else
      assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
  }
  assert_int_not_equal(ta, 0);
  assert_int_not_equal(tb, 0);

  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  ilb_outcome out;
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  out.status = ILB_OUTCOME_CONNECT_ERROR;
  assert_rc(ilb_complete(pool, ta, &out), ILB_EREMOVED);
  assert_rc(ilb_complete(pool, ta, &out), ILB_ESTALE);
  assert_rc(ilb_complete(pool, ta, NULL), ILB_ESTALE);

  /* The surviving replica is unaffected. */
  assert_int_equal(in_flight(pool, "b"), 1);
  assert_rc(ilb_complete(pool, tb, NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "b"), 0);
  free_pool(pool);
}

static void removed_tickets_release_slots(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 64), ILB_OK);
  /* one thread: the shared table plus its private entries */
  enum { CAP = 64 + ILB_THREAD_TICKETS };
  uint64_t t[CAP];
  for (int i = 0; i < CAP; i++)
    t[i] = pick_ok(pool, NULL);
  pick_fails(pool, ILB_ETICKETS);
  assert_rc(ilb_replica_remove(pool, "a"), ILB_OK);
  for (int i = 0; i < CAP; i++)
    assert_rc(ilb_complete(pool, t[i], NULL), ILB_EREMOVED);

  add_replica(pool, "b", 1, 0, NULL);
  for (int i = 0; i < CAP; i++) {
    ilb_pick_result res;
    t[i] = pick_ok(pool, &res);
    assert_string_equal(res.replica_id, "b");
  }
  pick_fails(pool, ILB_ETICKETS);
  for (int i = 0; i < CAP; i++)
    assert_rc(ilb_complete(pool, t[i], NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "b"), 0);
  free_pool(pool);
}

static void removed_replica_never_picked(void **state) {
  (void)state;
  int hd[3] = {0, 0, 0};
  for (size_t p = 0; p < N_POLICIES; p++) {
    ilb_pool *pool = new_pool_policy(all_policies[p]);
    add_replica(pool, "a", 1, 0, &hd[0]);
    add_replica(pool, "b", 2, 0, &hd[1]);
    add_replica(pool, "c", 3, 0, &hd[2]);
    /* Warm up, holding the tickets so that load-aware policies rotate, until
     * "b" is part of the policy's state. */
    enum { WARM = 300, WINDOW = 4 };
    uint64_t warm[WARM];
    int seen_b = 0;
    for (int i = 0; i < WARM; i++) {
      ilb_pick_result res;
      warm[i] = pick_ok(pool, &res);
      seen_b |= strcmp(res.replica_id, "b") == 0;
    }
    assert_true(seen_b);
    for (int i = 0; i < WARM; i++)
      assert_rc(ilb_complete(pool, warm[i], NULL), ILB_OK);

    assert_rc(ilb_replica_remove(pool, "b"), ILB_OK);
    /* A sliding window of requests in flight varies the load. */
    uint64_t win[WINDOW] = {0};
    for (int i = 0; i < 10000; i++) {
      ilb_pick_result res;
      uint64_t t = pick_ok(pool, &res);
      if (strcmp(res.replica_id, "b") == 0 || res.host_data == &hd[1])
        fail_msg("policy %s: pick %d returned removed replica",
                 ilb_policy_name(all_policies[p]), i);
      if (win[i % WINDOW] != 0)
        assert_rc(ilb_complete(pool, win[i % WINDOW], NULL), ILB_OK);
      win[i % WINDOW] = t;
    }
    for (int i = 0; i < WINDOW; i++)
      if (win[i] != 0)
        assert_rc(ilb_complete(pool, win[i], NULL), ILB_OK);
    free_pool(pool);
  }
}

static void tickets_unique_and_slot_reuse(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 64), ILB_OK);

  /* A completed ticket stays stale after its slot is reused. With a table of
   * 64 and 64 tickets held, t1's slot is certainly taken again. */
  uint64_t t1 = pick_ok(pool, NULL);
  assert_rc(ilb_complete(pool, t1, NULL), ILB_OK);
  uint64_t held[64];
  for (int i = 0; i < 64; i++) {
    held[i] = pick_ok(pool, NULL);
    assert_int_not_equal(held[i], t1);
  }
  assert_rc(ilb_complete(pool, t1, NULL), ILB_ESTALE);
  assert_int_equal(in_flight(pool, "a"), 64);
  for (int i = 0; i < 64; i++)
    assert_rc(ilb_complete(pool, held[i], NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "a"), 0);

  /* Many pick/complete cycles through a small table: every ticket ever
   * issued is distinct and every old one stays stale. */
  enum { N = 2000 };
  uint64_t *all = malloc(N * sizeof *all);
  assert_non_null(all);
  for (int i = 0; i < N; i++) {
    /* Keep a few in flight so that slots rotate. */
    all[i] = pick_ok(pool, NULL);
    if (i >= 3)
      assert_rc(ilb_complete(pool, all[i - 3], NULL), ILB_OK);
  }
  for (int i = N - 3; i < N; i++)
    assert_rc(ilb_complete(pool, all[i], NULL), ILB_OK);
  for (int i = 0; i < N; i += 97)
    assert_rc(ilb_complete(pool, all[i], NULL), ILB_ESTALE);
  qsort(all, N, sizeof *all, cmp_u64);
  for (int i = 1; i < N; i++)
    if (all[i] == all[i - 1])
      fail_msg("ticket 0x%llx issued twice", (unsigned long long)all[i]);
  assert_int_equal(in_flight(pool, "a"), 0);
  assert_int_equal(get_info(pool, "a").completed, 1 + 64 + N);
  free(all);
  free_pool(pool);
}

static void stale_ticket_after_table_resize(void **state) {
  (void)state;
  /* A completed ticket must stay stale after ILB_OPT_MAX_IN_FLIGHT replaced
   * the ticket table: a fresh table must not hand out the same ticket values
   * again. */
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  const int64_t sizes[] = {128, 64, 65536, 256};
  uint64_t old[8];
  size_t n_old = 0;
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    old[n_old++] = pick_ok(pool, NULL);
    assert_rc(ilb_complete(pool, old[n_old - 1], NULL), ILB_OK);
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, sizes[k]),
              ILB_OK);
    uint64_t t = pick_ok(pool, NULL);
    for (size_t i = 0; i < n_old; i++) {
      /* A new table must not reissue ticket values of the old one. */
      assert_rc(ilb_complete(pool, old[i], NULL), ILB_ESTALE);
      assert_int_not_equal(t, old[i]);
    }
    assert_int_equal(in_flight(pool, "a"), 1);
    assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
    old[n_old++] = t;
  }
  assert_int_equal(in_flight(pool, "a"), 0);
  assert_int_equal(get_info(pool, "a").completed, 8);
  free_pool(pool);
}

static void ticket_table_exhaustion(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  add_replica(pool, "b", 1, 0, NULL);
  assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAX_IN_FLIGHT, 64), ILB_OK);
  /* one thread: the shared table plus its private entries */
  enum { CAP = 64 + ILB_THREAD_TICKETS };
  uint64_t t[CAP];
  for (int i = 0; i < CAP; i++)
    t[i] = pick_ok(pool, NULL);
  assert_int_equal(in_flight(pool, "a") + in_flight(pool, "b"), CAP);

  pick_fails(pool, ILB_ETICKETS);
  pick_fails(pool, ILB_ETICKETS);
  /* A refused pick is not counted in flight. */
  assert_int_equal(in_flight(pool, "a") + in_flight(pool, "b"), CAP);

  assert_rc(ilb_complete(pool, t[10], NULL), ILB_OK);
  t[10] = pick_ok(pool, NULL);
  pick_fails(pool, ILB_ETICKETS);

  for (int i = 0; i < CAP; i++)
    assert_rc(ilb_complete(pool, t[i], NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "a") + in_flight(pool, "b"), 0);
  uint64_t again = pick_ok(pool, NULL);
  assert_rc(ilb_complete(pool, again, NULL), ILB_OK);
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* Outcomes                                                                  */
/* ------------------------------------------------------------------------ */

static void outcome_validation(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  uint64_t t = pick_ok(pool, NULL);

  ilb_outcome out;
  const int32_t bad_status[] = {99, -1, 6, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof bad_status / sizeof bad_status[0]; i++) {
    assert_rc(ilb_outcome_init(&out), ILB_OK);
    out.status = bad_status[i];
    assert_rc(ilb_complete(pool, t, &out), ILB_EINVAL);
  }
  const int32_t bad_http[] = {42, 600, 99, 1, -1, 1000, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof bad_http / sizeof bad_http[0]; i++) {
    assert_rc(ilb_outcome_init(&out), ILB_OK);
    out.status = ILB_OUTCOME_HTTP_ERROR;
    out.http_status = bad_http[i];
    assert_rc(ilb_complete(pool, t, &out), ILB_EINVAL);
  }
  /* Refused completions did not release the ticket. */
  ilb_replica_info info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 1);
  assert_int_equal(info.completed, 0);
  assert_int_equal(info.failed, 0);

  /* Valid http statuses, each on a fresh ticket. */
  const int32_t good_http[] = {0, 100, 200, 404, 503, 599};
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  out.http_status = good_http[0];
  assert_rc(ilb_complete(pool, t, &out), ILB_OK);
  for (size_t i = 1; i < sizeof good_http / sizeof good_http[0]; i++) {
    t = pick_ok(pool, NULL);
    assert_rc(ilb_outcome_init(&out), ILB_OK);
    out.http_status = good_http[i];
    out.latency_ns = 123456789;
    out.ttft_ns = 1234;
    out.prompt_tokens = 100;
    out.output_tokens = 200;
    assert_rc(ilb_complete(pool, t, &out), ILB_OK);
  }
  info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 6);
  assert_int_equal(info.failed, 0);
  free_pool(pool);
}

static void outcome_struct_size(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  uint64_t t = pick_ok(pool, NULL);
  ilb_outcome out;
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  out.struct_size = 0;
  assert_rc(ilb_complete(pool, t, &out), ILB_ESIZE);
  assert_int_equal(in_flight(pool, "a"), 1);

  struct {
    ilb_outcome out;
    unsigned char tail[16];
  } big;
  memset(&big, 0, sizeof big);
  assert_rc(ilb_outcome_init(&big.out), ILB_OK);
  big.out.struct_size = sizeof big;
  big.tail[0] = 1;
  assert_rc(ilb_complete(pool, t, &big.out), ILB_ESIZE);
  assert_int_equal(in_flight(pool, "a"), 1);
  big.tail[0] = 0;
  big.out.status = ILB_OUTCOME_TIMEOUT;
  assert_rc(ilb_complete(pool, t, &big.out), ILB_OK);
  ilb_replica_info info = get_info(pool, "a");
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(info.completed, 1);
  assert_int_equal(info.failed, 1);
  free_pool(pool);
}

static void outcome_counts(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 0, NULL);
  ilb_outcome out;
  uint64_t completed = 0, failed = 0;

  /* NULL outcome = OK. */
  uint64_t t = pick_ok(pool, NULL);
  assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
  completed++;
  ilb_replica_info info = get_info(pool, "a");
  assert_int_equal(info.completed, completed);
  assert_int_equal(info.failed, failed);

  /* Explicit OK. */
  t = pick_ok(pool, NULL);
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  out.http_status = 200;
  assert_rc(ilb_complete(pool, t, &out), ILB_OK);
  completed++;
  info = get_info(pool, "a");
  assert_int_equal(info.completed, completed);
  assert_int_equal(info.failed, failed);

  /* ilb_replica_info.failed counts CONNECT_ERROR, TIMEOUT and HTTP_ERROR;
   * CANCELLED (the client went away) is not the replica's failure. */
  const int32_t failures[] = {ILB_OUTCOME_CONNECT_ERROR, ILB_OUTCOME_TIMEOUT,
                              ILB_OUTCOME_HTTP_ERROR};
  for (size_t i = 0; i < sizeof failures / sizeof failures[0]; i++) {
    t = pick_ok(pool, NULL);
    assert_rc(ilb_outcome_init(&out), ILB_OK);
    out.status = failures[i];
    if (failures[i] == ILB_OUTCOME_HTTP_ERROR)
      out.http_status = 503;
    assert_rc(ilb_complete(pool, t, &out), ILB_OK);
    completed++;
    failed++;
    info = get_info(pool, "a");
    assert_int_equal(info.completed, completed);
    assert_int_equal(info.failed, failed);
    assert_int_equal(info.in_flight, 0);
  }
  t = pick_ok(pool, NULL);
  assert_rc(ilb_outcome_init(&out), ILB_OK);
  out.status = ILB_OUTCOME_CANCELLED;
  assert_rc(ilb_complete(pool, t, &out), ILB_OK);
  info = get_info(pool, "a");
  assert_int_equal(info.completed, completed + 1);
  assert_int_equal(info.failed, failed);
  free_pool(pool);
}

/* ------------------------------------------------------------------------ */
/* Capacity                                                                  */
/* ------------------------------------------------------------------------ */

static void capacity_never_exceeded(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    ilb_pool *pool = new_pool_policy(all_policies[p]);
    /* "small" is heavily weighted so the policies want it most. */
    add_replica(pool, "small", 100, 2, NULL);
    add_replica(pool, "big", 1, 0, NULL);
    enum { N = 500 };
    uint64_t t[N];
    for (int i = 0; i < N; i++) {
      t[i] = pick_ok(pool, NULL);
      int64_t s = in_flight(pool, "small");
      if (s > 2)
        fail_msg("policy %s: capacity 2 but %lld in flight",
                 ilb_policy_name(all_policies[p]), (long long)s);
    }
    assert_int_equal(in_flight(pool, "small"), 2);
    assert_int_equal(in_flight(pool, "big"), N - 2);
    for (int i = 0; i < N; i++)
      assert_rc(ilb_complete(pool, t[i], NULL), ILB_OK);
    assert_int_equal(in_flight(pool, "small"), 0);
    assert_int_equal(in_flight(pool, "big"), 0);
    free_pool(pool);
  }
}

static void capacity_saturated_and_over_capacity(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    ilb_pool *pool = new_pool_policy(all_policies[p]);
    add_replica(pool, "a", 1, 2, NULL);
    add_replica(pool, "b", 3, 1, NULL);
    uint64_t t[5];
    for (int i = 0; i < 3; i++)
      t[i] = pick_ok(pool, NULL);
    assert_int_equal(in_flight(pool, "a"), 2);
    assert_int_equal(in_flight(pool, "b"), 1);

    pick_fails(pool, ILB_ESATURATED);
    pick_fails(pool, ILB_ESATURATED);
    assert_int_equal(in_flight(pool, "a"), 2);
    assert_int_equal(in_flight(pool, "b"), 1);

    assert_rc(
        ilb_pool_set_option(pool, ILB_OPT_ALLOW_OVER_CAPACITY, 1), ILB_OK);
    t[3] = pick_ok(pool, NULL);
    t[4] = pick_ok(pool, NULL);
    assert_int_equal(in_flight(pool, "a") + in_flight(pool, "b"), 5);

    assert_rc(
        ilb_pool_set_option(pool, ILB_OPT_ALLOW_OVER_CAPACITY, 0), ILB_OK);
    pick_fails(pool, ILB_ESATURATED);
    for (int i = 0; i < 5; i++)
      assert_rc(ilb_complete(pool, t[i], NULL), ILB_OK);
    assert_int_equal(in_flight(pool, "a"), 0);
    assert_int_equal(in_flight(pool, "b"), 0);
    free_pool(pool);
  }
}

static void capacity_freed_slot_is_used(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    ilb_pool *pool = new_pool_policy(all_policies[p]);
    add_replica(pool, "a", 1, 1, NULL);
    add_replica(pool, "b", 1, 1, NULL);
    ilb_pick_result ra, rb;
    uint64_t t1 = pick_ok(pool, &ra);
    uint64_t t2 = pick_ok(pool, &rb);
    assert_string_not_equal(ra.replica_id, rb.replica_id);
    pick_fails(pool, ILB_ESATURATED);

    /* Completing the request on "a" makes "a" the only choice. */
    uint64_t ta = strcmp(ra.replica_id, "a") == 0 ? t1 : t2;
    uint64_t tb = ta == t1 ? t2 : t1;
    assert_rc(ilb_complete(pool, ta, NULL), ILB_OK);
    for (int i = 0; i < 20; i++) {
      ilb_pick_result r;
      uint64_t t = pick_ok(pool, &r);
      assert_string_equal(r.replica_id, "a");
      pick_fails(pool, ILB_ESATURATED);
      assert_rc(ilb_complete(pool, t, NULL), ILB_OK);
    }
    assert_rc(ilb_complete(pool, tb, NULL), ILB_OK);
    free_pool(pool);
  }
}

static void capacity_one_replica_over_capacity(void **state) {
  (void)state;
  ilb_pool *pool = new_pool();
  add_replica(pool, "a", 1, 2, NULL);
  uint64_t t1 = pick_ok(pool, NULL);
  uint64_t t2 = pick_ok(pool, NULL);
  pick_fails(pool, ILB_ESATURATED);
  assert_int_equal(in_flight(pool, "a"), 2);

  assert_rc(ilb_pool_set_option(pool, ILB_OPT_ALLOW_OVER_CAPACITY, 1), ILB_OK);
  uint64_t t3 = pick_ok(pool, NULL);
  assert_int_equal(in_flight(pool, "a"), 3);
  assert_rc(ilb_complete(pool, t1, NULL), ILB_OK);
  assert_rc(ilb_complete(pool, t2, NULL), ILB_OK);
  assert_rc(ilb_complete(pool, t3, NULL), ILB_OK);
  assert_int_equal(in_flight(pool, "a"), 0);
  free_pool(pool);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(init_functions),
      cmocka_unit_test(pick_empty_pool),
      cmocka_unit_test(pick_empty_pool_every_policy),
      cmocka_unit_test(pick_null_args),
      cmocka_unit_test(pick_req_null_or_init),
      cmocka_unit_test(pick_result_struct_size),
      cmocka_unit_test(pick_result_smaller_struct_prefix),
      cmocka_unit_test(pick_request_struct_size),
      cmocka_unit_test(pick_returns_real_replica),
      cmocka_unit_test(in_flight_lifecycle),
      cmocka_unit_test(complete_twice_is_stale),
      cmocka_unit_test(garbage_tickets_are_stale),
      cmocka_unit_test(removed_replica_ticket),
      cmocka_unit_test(removed_tickets_release_slots),
      cmocka_unit_test(removed_replica_never_picked),
      cmocka_unit_test(tickets_unique_and_slot_reuse),
      cmocka_unit_test(stale_ticket_after_table_resize),
      cmocka_unit_test(ticket_table_exhaustion),
      cmocka_unit_test(outcome_validation),
      cmocka_unit_test(outcome_struct_size),
      cmocka_unit_test(outcome_counts),
      cmocka_unit_test(capacity_never_exceeded),
      cmocka_unit_test(capacity_saturated_and_over_capacity),
      cmocka_unit_test(capacity_freed_slot_is_used),
      cmocka_unit_test(capacity_one_replica_over_capacity),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
