/* The fleet simulator's replica model (bench/sim/replica.c) against cases
 * computed by hand from the semantics in bench/sim/replica.h: one request,
 * a cached prefix, a full KV cache, a full batch, a request too large, the
 * jump over identical iterations cut by an arrival, its /metrics page
 * read back through the library's own parser, and its KV-cache events.
 * SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <inferlb/inferlb.h>

#include "replica.h"
#include "testutil.h"

#define MS UINT64_C(1000000)
#define SEC UINT64_C(1000000000)

/* 1000 prompt tokens a second; a decode iteration takes 10 ms + 1 ms per
 * decoding request; 4 requests at most; 10 blocks of KV cache. */
static const sim_gpu toy = {"toy", 1000.0, 0.010, 0.001, 4, 10, 1};

static sim_job job(uint32_t in, uint32_t out, const uint64_t *blocks,
                   uint32_t n) {
  sim_job j;
  memset(&j, 0, sizeof j);
  j.input_tokens = in;
  j.output_tokens = out;
  j.blocks = blocks;
  j.n_blocks = n;
  return j;
}

/* Run until idle; returns the number of jobs finished. */
static size_t drain(sim_replica *r) {
  size_t total = 0;
  for (uint64_t t; (t = sim_replica_next(r)) != UINT64_MAX;) {
    sim_job *done[8];
    size_t n;
    while (sim_replica_advance(r, t, done, 8, &n) || n)
      total += n;
  }
  return total;
}

static void one_request(void **state) {
  (void)state;
  sim_replica *r = sim_replica_new(&toy);
  assert_non_null(r);
  static const uint64_t b[] = {1, 2};
  sim_job j = job(1000, 3, b, 2);
  assert_int_equal(sim_replica_submit(r, &j, 0), 1);
  /* prefill 1000 tokens: 1 s, first token then; two decode iterations of
   * 11 ms each (one decoding request) */
  assert_int_equal(sim_replica_next(r), 1 * SEC);
  assert_int_equal(drain(r), 1);
  assert_int_equal(j.admitted_ns, 0);
  assert_int_equal(j.first_token_ns, 1 * SEC);
  assert_int_equal(j.done_ns, 1 * SEC + 22 * MS);
  assert_int_equal(j.hit_blocks, 0);
  sim_replica_stats st;
  sim_replica_stats_get(r, &st);
  assert_int_equal(st.gen_tokens, 3);
  assert_int_equal(st.prefix_queries, 2);
  assert_int_equal(st.prefix_hits, 0);
  assert_int_equal(st.running, 0);
  assert_int_equal(st.kv_pinned, 0);
  assert_int_equal(st.kv_used, 2); /* its prompt blocks stay cached */
  sim_replica_free(r);
}

static void cached_prefix(void **state) {
  (void)state;
  sim_replica *r = sim_replica_new(&toy);
  static const uint64_t b1[] = {1, 2}, b2[] = {1, 2, 3}, b3[] = {9, 2};
  sim_job j1 = job(1024, 1, b1, 2);
  assert_int_equal(sim_replica_submit(r, &j1, 0), 1);
  drain(r);
  assert_int_equal(j1.done_ns, 1024 * MS); /* 1024 tokens at 1000/s */
  /* shares the first two blocks: 1024 tokens cached, 476 prefilled */
  sim_job j2 = job(1500, 1, b2, 3);
  uint64_t t0 = 2 * SEC;
  assert_int_equal(sim_replica_submit(r, &j2, t0), 1);
  drain(r);
  assert_int_equal(j2.hit_blocks, 2);
  assert_int_equal(j2.first_token_ns, t0 + 476 * MS);
  /* block 2 is cached but block 9 before it is not: no prefix */
  sim_job j3 = job(1024, 1, b3, 2);
  assert_int_equal(sim_replica_submit(r, &j3, 3 * SEC), 1);
  drain(r);
  assert_int_equal(j3.hit_blocks, 0);
  assert_int_equal(j3.first_token_ns, 3 * SEC + 1024 * MS);
  sim_replica_free(r);
}

static void kv_full_waits(void **state) {
  (void)state;
  /* a uses 8 of the 10 blocks (2048 + 2048 tokens), b needs 4: it waits
   * until a has finished */
  static const uint64_t ba[] = {1, 2, 3, 4}, bb[] = {5, 6};
  sim_replica *r = sim_replica_new(&toy);
  sim_job a = job(2048, 2048, ba, 4);
  sim_job bj = job(1024, 1024, bb, 2);
  assert_int_equal(sim_replica_submit(r, &a, 0), 1);
  assert_int_equal(sim_replica_submit(r, &bj, 1 * MS), 1);
  drain(r);
  /* a: 2.048 s prefill, then 2047 iterations of 11 ms */
  assert_int_equal(a.done_ns, 2048 * MS + 2047 * 11 * MS);
  assert_int_equal(bj.admitted_ns, a.done_ns);
  assert_int_equal(bj.first_token_ns, a.done_ns + 1024 * MS);
  sim_replica_free(r);
}

static void batch_full_and_too_large(void **state) {
  (void)state;
  sim_gpu one = toy;
  one.max_batch = 1;
  sim_replica *r = sim_replica_new(&one);
  sim_job a = job(100, 2, NULL, 0), b = job(100, 1, NULL, 0);
  assert_int_equal(sim_replica_submit(r, &a, 0), 1);
  assert_int_equal(sim_replica_submit(r, &b, 0), 1);
  drain(r);
  /* a: 100 ms prefill, one 11 ms iteration; b after it */
  assert_int_equal(a.done_ns, 111 * MS);
  assert_int_equal(b.admitted_ns, 111 * MS);
  assert_int_equal(b.done_ns, 211 * MS);
  /* 10 blocks of KV: 5121 tokens need 11 */
  sim_job big = job(5121, 1, NULL, 0);
  assert_int_equal(sim_replica_submit(r, &big, 0), 0);
  sim_replica_free(r);
}

static void arrival_cuts_jump(void **state) {
  (void)state;
  sim_replica *r = sim_replica_new(&toy);
  sim_job a = job(1000, 101, NULL, 0), b = job(1000, 1, NULL, 0);
  assert_int_equal(sim_replica_submit(r, &a, 0), 1);
  sim_job *done[4];
  size_t n;
  sim_replica_advance(r, 1 * SEC, done, 4, &n); /* first token of a */
  /* now 100 identical iterations of 11 ms, in one event */
  assert_int_equal(sim_replica_next(r), 1 * SEC + 100 * 11 * MS);
  /* b arrives in the 3rd of them: admitted at its end, 1 s + 33 ms */
  assert_int_equal(sim_replica_submit(r, &b, 1 * SEC + 25 * MS), 1);
  assert_int_equal(sim_replica_next(r), 1 * SEC + 33 * MS);
  drain(r);
  assert_int_equal(b.admitted_ns, 1 * SEC + 33 * MS);
  /* its prefill iteration: 1 s of prefill + 11 ms for decoding a */
  assert_int_equal(b.first_token_ns, 1 * SEC + 33 * MS + 1011 * MS);
  sim_replica_free(r);
}

static void metrics_page_parses(void **state) {
  (void)state;
  sim_replica *r = sim_replica_new(&toy);
  sim_job a = job(1000, 50, NULL, 0), b = job(1000, 50, NULL, 0),
          c = job(4000, 50, NULL, 0);
  /* a starts at once; b and c wait for the end of its prefill iteration,
   * then b (3 blocks) is admitted and c (8 more) waits for the KV cache */
  sim_replica_submit(r, &a, 0);
  sim_replica_submit(r, &b, 0);
  sim_replica_submit(r, &c, 0);
  ilb_scrape *sc;
  assert_rc(ilb_scrape_new(&sc, NULL, NULL), ILB_OK);
  const struct {
    uint64_t at;
    double running, waiting, kv;
  } want[] = {{1 * MS, 1, 2, 0.3}, {1 * SEC + 1 * MS, 2, 1, 0.6}};
  for (size_t k = 0; k < 2; k++) {
    sim_job *done[4];
    size_t n;
    sim_replica_advance(r, want[k].at, done, 4, &n);
    char page[4096];
    size_t len = sim_replica_metrics(r, "m", page, sizeof page);
    assert_true(len > 0 && len < sizeof page);
    ilb_telemetry t;
    assert_rc(ilb_telemetry_init(&t), ILB_OK);
    assert_rc(ilb_telemetry_parse(&t, sc, page, len, want[k].at), ILB_OK);
    int32_t d;
    assert_rc(ilb_scrape_dialect(&d, sc), ILB_OK);
    assert_int_equal(d, ILB_DIALECT_VLLM);
    assert_true(t.requests_running == want[k].running);
    assert_true(t.requests_waiting == want[k].waiting);
    assert_true(t.kv_cache_usage > want[k].kv - 0.01 &&
                t.kv_cache_usage < want[k].kv + 0.01);
    assert_true(t.kv_block_size == 512.0);
    assert_true(t.kv_blocks_total == 10.0);
  }
  ilb_scrape_free(sc);
  sim_replica_free(r);
}

static void crash_and_slowdown(void **state) {
  (void)state;
  sim_replica *r = sim_replica_new(&toy);
  static const uint64_t ba[] = {1, 2};
  sim_job a = job(1024, 10, ba, 2), b = job(100, 1, NULL, 0);
  sim_replica_submit(r, &a, 0);
  sim_replica_submit(r, &b, 0); /* waits for a's prefill iteration */
  sim_job **lost;
  size_t n_lost;
  assert_int_equal(sim_replica_crash(r, &lost, &n_lost), 0);
  assert_int_equal(n_lost, 2); /* a running, b waiting: both lost */
  assert_true((lost[0] == &a && lost[1] == &b) ||
              (lost[0] == &b && lost[1] == &a));
  free(lost);
  assert_int_equal(sim_replica_next(r), UINT64_MAX); /* idle */
  sim_replica_stats st;
  sim_replica_stats_get(r, &st);
  assert_int_equal(st.kv_used, 0); /* the cache died with it */
  assert_int_equal(st.running + st.waiting, 0);
  /* restarted cold and 10x slower: a's blocks are no longer cached */
  sim_replica_set_slowdown(r, 10.0, 5 * SEC);
  sim_job c = job(1024, 1, ba, 2);
  sim_replica_submit(r, &c, 5 * SEC);
  drain(r);
  assert_int_equal(c.hit_blocks, 0);
  assert_int_equal(c.first_token_ns, 5 * SEC + 10240 * MS);
  sim_replica_free(r);
}

/* KV events (what --kv-events feeds the prefix index): a block stored when
 * its request is admitted, removed when evicted (a prefix's tail first),
 * everything cleared by a crash. */
struct kv_log {
  int type[64];
  uint64_t block[64];
  int n;
};

static void kv_record(void *ud, int type, uint64_t block) {
  struct kv_log *l = ud;
  if (type == 0)
    return; /* end of an admission's stored blocks */
  assert_true(l->n < 64);
  l->type[l->n] = type;
  l->block[l->n++] = block;
}

static void kv_events(void **state) {
  (void)state;
  struct kv_log log = {{0}, {0}, 0};
  sim_replica *r = sim_replica_new(&toy);
  sim_replica_on_kv(r, kv_record, &log);
  static const uint64_t ba[] = {1, 2, 3, 4};
  static const uint64_t bb[] = {5, 6, 7, 8, 9, 10, 11, 12};
  sim_job a = job(2048, 1, ba, 4);
  sim_replica_submit(r, &a, 0);
  drain(r);
  assert_int_equal(log.n, 4);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(log.type[i], 1);
    assert_int_equal(log.block[i], ba[i]);
  }
  /* b needs 8 prompt blocks and one for its output: 10 - 4 cached free,
   * so three of a's blocks go, its tail first: 4, 3, 2 */
  sim_job b = job(4096, 1, bb, 8);
  sim_replica_submit(r, &b, 10 * SEC);
  drain(r);
  int stored = 0, removed = 0;
  uint64_t gone = 0;
  for (int i = 4; i < log.n; i++) {
    if (log.type[i] == 1) {
      assert_int_equal(log.block[i], bb[stored]);
      stored++;
    } else {
      assert_int_equal(log.type[i], 2);
      assert_true(log.block[i] >= 2 && log.block[i] <= 4);
      gone |= UINT64_C(1) << log.block[i];
      removed++;
    }
  }
  assert_int_equal(stored, 8);
  assert_int_equal(removed, 3);
  assert_int_equal(gone, 0x1c); /* 2, 3 and 4; block 1 stays */
  sim_job **lost;
  size_t n_lost;
  int before = log.n;
  assert_int_equal(sim_replica_crash(r, &lost, &n_lost), 0);
  free(lost);
  assert_int_equal(log.n, before + 1);
  assert_int_equal(log.type[before], 3);
  sim_replica_free(r);
}

/* Its cached prefix is pinned before room is made, and counts against
 * the KV cache: no overfill, no hit on an evicted block. */
static void cached_prefix_counts_against_kv(void **state) {
  (void)state;
  sim_gpu g = toy;
  g.kv_blocks = 12;
  sim_replica *r = sim_replica_new(&g);
  static const uint64_t ba[] = {1, 2, 3, 4, 5}, bc[] = {1, 2, 3, 4, 5, 6};
  sim_job a = job(2560, 1, ba, 5);      /* 5 blocks + 1 anonymous */
  sim_job b = job(3000, 500, NULL, 0);  /* 7 anonymous blocks */
  sim_job c = job(3072, 1, bc, 6);      /* 5 cached + 1 new + 1 anon */
  sim_replica_submit(r, &a, 0);
  drain(r);
  assert_int_equal(a.done_ns, 2560 * MS);
  sim_replica_submit(r, &b, 3 * SEC);
  sim_replica_submit(r, &c, 3500 * MS);
  /* c needs 7 pinned + its 5 idle cached + 2 = 14 > 12: it waits for b */
  for (uint64_t t; (t = sim_replica_next(r)) != UINT64_MAX;) {
    sim_job *done[4];
    size_t n;
    while (sim_replica_advance(r, t, done, 4, &n) || n)
      ;
    sim_replica_stats st;
    sim_replica_stats_get(r, &st);
    assert_true(st.kv_pinned <= 12);
    assert_true(st.kv_used <= 12);
  }
  /* b: 3 s of prefill from 3 s, then 499 iterations of 11 ms */
  assert_int_equal(b.done_ns, 6 * SEC + 499 * 11 * MS);
  assert_int_equal(c.admitted_ns, b.done_ns);
  assert_int_equal(c.hit_blocks, 5);
  assert_int_equal(c.first_token_ns, b.done_ns + 512 * MS);
  sim_replica_free(r);
}

/* A slowdown set in the middle of a jump applies from the next iteration;
 * an arrival exactly on an iteration boundary is admitted there. */
static void slowdown_and_boundary(void **state) {
  (void)state;
  sim_replica *r = sim_replica_new(&toy);
  sim_job a = job(1000, 1001, NULL, 0);
  sim_replica_submit(r, &a, 0);
  sim_job *done[4];
  size_t n;
  sim_replica_advance(r, 1 * SEC, done, 4, &n); /* first token at 1 s */
  /* 1.2 s: the 19th iteration (ending 1.209 s) finishes at normal speed,
   * the remaining 981 take 110 ms each */
  sim_replica_set_slowdown(r, 10.0, 1200 * MS);
  assert_int_equal(sim_replica_next(r), 1209 * MS);
  drain(r);
  assert_int_equal(a.done_ns, 1209 * MS + 981 * 110 * MS);
  sim_replica_free(r);

  r = sim_replica_new(&toy);
  sim_job x = job(1000, 101, NULL, 0), y = job(1000, 1, NULL, 0);
  sim_replica_submit(r, &x, 0);
  sim_replica_advance(r, 1 * SEC, done, 4, &n);
  sim_replica_submit(r, &y, 1 * SEC + 33 * MS); /* exactly 3 iterations */
  assert_int_equal(sim_replica_next(r), 1 * SEC + 33 * MS);
  drain(r);
  assert_int_equal(y.admitted_ns, 1 * SEC + 33 * MS);
  sim_replica_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(one_request),
      cmocka_unit_test(cached_prefix),
      cmocka_unit_test(kv_full_waits),
      cmocka_unit_test(batch_full_and_too_large),
      cmocka_unit_test(arrival_cuts_jump),
      cmocka_unit_test(metrics_page_parses),
      cmocka_unit_test(crash_and_slowdown),
      cmocka_unit_test(cached_prefix_counts_against_kv),
      cmocka_unit_test(slowdown_and_boundary),
      cmocka_unit_test(kv_events),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
