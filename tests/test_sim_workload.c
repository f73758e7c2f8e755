/*
 * The simulator's generated workloads (bench/sim/workload.c):
 *   1. the name and description lists; unknown names and a too large n,
 *      with their exact error texts;
 *   2. determinism: the same (name, seed, n) twice is identical, another
 *      seed differs; a fingerprint of each default workload at seed 1 is
 *      frozen here, so a platform (or a change) that generates other bits
 *      fails;
 *   3. every workload: sorted by arrival, the first at 0, ceil(input /
 *      512) blocks per request, the default sizes and n given;
 *   4. shared-prefix: the block structure (a group's prompts share
 *      exactly the 11 full system-prompt blocks, groups share nothing),
 *      the sizes, the reuse ceiling against the hand-computed share, the
 *      groups interleaved, the rate;
 *   5. multi-turn: sessions of 2..8 turns, each turn's blocks starting
 *      with the previous turn's full blocks and the rest new, sessions
 *      sharing nothing, the reuse ceiling against the hand-computed
 *      share, the think time;
 *   6. heavy-tail: quantiles of the sizes over 5000 samples within the
 *      bounds stated in workload.h, for three seeds; all blocks unique;
 *   7. bursty: heavy-tail's sizes; the 10 s window counts (busiest >= 5x
 *      the quietest non-empty, overdispersed, mostly empty) against
 *      heavy-tail's Poisson ones.
 * The figures of the default workloads (seed 1) are printed.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"
#include "workload.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static void gen(sim_trace *t, const char *name, uint64_t seed, size_t n) {
  char err[256] = "x";
  int rc = sim_workload(t, name, seed, n, err, sizeof err);
  if (rc != 0)
    fail_msg("%s seed %llu n %zu: rc %d: %s", name, (unsigned long long)seed,
             n, rc, err);
  assert_string_equal(err, "");
}

static const uint64_t *blocks_of(const sim_trace *t, size_t i) {
  return t->blocks + t->req[i].blocks_off;
}

static uint32_t ceil_blocks(uint32_t tokens) {
  return (tokens + SIM_BLOCK_TOKENS - 1) / SIM_BLOCK_TOKENS;
}

/* Leading blocks two requests have in common. */
static uint32_t common_prefix(const sim_trace *t, size_t i, size_t j) {
  uint32_t n = t->req[i].n_blocks < t->req[j].n_blocks ? t->req[i].n_blocks
                                                       : t->req[j].n_blocks;
  uint32_t k = 0;
  while (k < n && blocks_of(t, i)[k] == blocks_of(t, j)[k])
    k++;
  return k;
}

static int same_trace(const sim_trace *a, const sim_trace *b) {
  if (a->n != b->n)
    return 0;
  for (size_t i = 0; i < a->n; i++) {
    const sim_req *x = &a->req[i], *y = &b->req[i];
    if (x->arrival_ns != y->arrival_ns || x->input_tokens != y->input_tokens ||
        x->output_tokens != y->output_tokens || x->n_blocks != y->n_blocks ||
        x->session != y->session)
      return 0;
    if (memcmp(blocks_of(a, i), blocks_of(b, i),
               x->n_blocks * sizeof(uint64_t)) != 0)
      return 0;
  }
  return 1;
}

/* FNV-1a over every field of every request, in order, byte by byte (so
 * the same on every platform). */
static uint64_t fnv_u64(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= UINT64_C(0x100000001b3);
  }
  return h;
}

static uint64_t fingerprint(const sim_trace *t) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < t->n; i++) {
    const sim_req *q = &t->req[i];
    h = fnv_u64(h, q->arrival_ns);
    h = fnv_u64(h, q->input_tokens);
    h = fnv_u64(h, q->output_tokens);
    h = fnv_u64(h, q->session);
    h = fnv_u64(h, q->n_blocks);
    for (uint32_t k = 0; k < q->n_blocks; k++)
      h = fnv_u64(h, blocks_of(t, i)[k]);
  }
  return h;
}

/* The checks every workload passes. */
static void check_common(const sim_trace *t) {
  assert_true(t->n > 0);
  assert_int_equal(t->req[0].arrival_ns, 0);
  size_t blocks = 0;
  for (size_t i = 0; i < t->n; i++) {
    const sim_req *q = &t->req[i];
    if (i > 0)
      assert_true(q->arrival_ns >= t->req[i - 1].arrival_ns);
    assert_true(q->input_tokens >= 1);
    assert_true(q->output_tokens >= 1);
    assert_int_equal(q->n_blocks, ceil_blocks(q->input_tokens));
    assert_true(q->blocks_off + q->n_blocks <= t->n_blocks);
    blocks += q->n_blocks;
  }
  assert_int_equal(blocks, t->n_blocks);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

/* All block ids of t, sorted (caller frees). */
static uint64_t *sorted_ids(const sim_trace *t) {
  uint64_t *ids = malloc((t->n_blocks ? t->n_blocks : 1) * sizeof *ids);
  assert_non_null(ids);
  memcpy(ids, t->blocks, t->n_blocks * sizeof *ids);
  qsort(ids, t->n_blocks, sizeof *ids, cmp_u64);
  return ids;
}

/* How many times id occurs in the sorted ids. */
static size_t occurrences(const uint64_t *ids, size_t n, uint64_t id) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (ids[mid] < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  size_t c = 0;
  while (lo + c < n && ids[lo + c] == id)
    c++;
  return c;
}

/* The q-quantile of v[0..n) sorted: v[round(q (n - 1))]. */
static uint32_t quantile(const uint32_t *v, size_t n, double q) {
  return v[(size_t)(q * (double)(n - 1) + 0.5)];
}

static void assert_share(double got, uint64_t hits, uint64_t total) {
  double want = (double)hits / (double)total;
  if (got != want)
    fail_msg("reuse %.9f, expected %llu/%llu = %.9f", got,
             (unsigned long long)hits, (unsigned long long)total, want);
}

/* ------------------------------------------------------------------------ */
/* 1. Names and errors                                                       */
/* ------------------------------------------------------------------------ */

static void test_names(void **state) {
  (void)state;
  static const char *const want[] = {"shared-prefix", "heavy-tail", "bursty",
                                     "multi-turn"};
  size_t i = 0;
  for (; sim_workload_names[i] != NULL; i++) {
    assert_true(i < 4);
    assert_string_equal(sim_workload_names[i], want[i]);
    const char *d = sim_workload_descriptions[i];
    assert_non_null(d);
    assert_true(strlen(d) > 20 && strlen(d) < 160);
    assert_null(strchr(d, '\n'));
  }
  assert_int_equal(i, 4);
  assert_null(sim_workload_descriptions[4]);
}

static void test_errors(void **state) {
  (void)state;
  sim_trace t;
  char err[256];
  memset(&t, 0x5a, sizeof t); /* an output: overwritten */
  assert_int_equal(sim_workload(&t, "nope", 1, 0, err, sizeof err), -1);
  assert_string_equal(err, "unknown workload \"nope\" (known: shared-prefix, "
                           "heavy-tail, bursty, multi-turn)");
  assert_int_equal(t.n, 0);
  assert_null(t.req);
  assert_null(t.blocks);
  assert_int_equal(sim_workload(&t, "", 1, 0, err, sizeof err), -1);
  assert_string_equal(err, "unknown workload \"\" (known: shared-prefix, "
                           "heavy-tail, bursty, multi-turn)");
  assert_int_equal(sim_workload(&t, "Heavy-Tail", 1, 0, err, sizeof err), -1);
  assert_int_equal(sim_workload(&t, NULL, 1, 0, err, sizeof err), -1);
  assert_string_equal(err, "unknown workload \"(null)\" (known: "
                           "shared-prefix, heavy-tail, bursty, multi-turn)");
  /* Truncated to errlen; no buffer at all. */
  char small[8];
  assert_int_equal(sim_workload(&t, "nope", 1, 0, small, sizeof small), -1);
  assert_string_equal(small, "unknown");
  assert_int_equal(sim_workload(&t, "nope", 1, 0, NULL, 0), -1);
#if SIZE_MAX > UINT32_MAX
  assert_int_equal(sim_workload(&t, "heavy-tail", 1,
                                (size_t)UINT32_MAX + 1, err, sizeof err),
                   -1);
  assert_string_equal(err, "n = 4294967296 is too large (at most "
                           "4294967295)");
  assert_null(t.req);
  assert_int_equal(sim_workload(&t, "multi-turn", 1, SIZE_MAX, err,
                                sizeof err),
                   -1);
#endif
}

/* ------------------------------------------------------------------------ */
/* 2. Determinism                                                            */
/* ------------------------------------------------------------------------ */

static void test_determinism(void **state) {
  (void)state;
  for (size_t w = 0; sim_workload_names[w] != NULL; w++) {
    const char *name = sim_workload_names[w];
    static const size_t sizes[] = {0, 1, 7, 333};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
      sim_trace a, b, c;
      gen(&a, name, 42, sizes[s]);
      gen(&b, name, 42, sizes[s]);
      gen(&c, name, 43, sizes[s]);
      if (!same_trace(&a, &b))
        fail_msg("%s n %zu: same seed, different traces", name, sizes[s]);
      if (sizes[s] != 1 && same_trace(&a, &c))
        fail_msg("%s n %zu: seeds 42 and 43 give the same trace", name,
                 sizes[s]);
      sim_trace_free(&a);
      sim_trace_free(&b);
      sim_trace_free(&c);
    }
  }
  /* n = the default size is the default. */
  sim_trace a, b;
  gen(&a, "multi-turn", 5, 0);
  gen(&b, "multi-turn", 5, a.n);
  assert_true(same_trace(&a, &b));
  sim_trace_free(&a);
  sim_trace_free(&b);
  gen(&a, "shared-prefix", 5, 0);
  gen(&b, "shared-prefix", 5, 750);
  assert_true(same_trace(&a, &b));
  sim_trace_free(&a);
  sim_trace_free(&b);
}

/* The default workloads at seed 1, frozen: integer math only, so these
 * are the same on every platform; a change to a generator changes them
 * (and then the figures quoted for the workloads must be re-measured). */
static void test_fingerprints(void **state) {
  (void)state;
  static const struct {
    const char *name;
    size_t n;
    uint64_t fp;
  } want[] = {
      {"shared-prefix", 750, UINT64_C(0xde3532b1aca3c942)},
      {"heavy-tail", 5000, UINT64_C(0x2bb29e93befca8f3)},
      {"bursty", 5000, UINT64_C(0x3509b0957b14574a)},
      {"multi-turn", 2535, UINT64_C(0x6a77b65f5f5473d4)},
  };
  int bad = 0;
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    sim_trace t;
    gen(&t, want[i].name, 1, 0);
    uint64_t fp = fingerprint(&t);
    double r = sim_reuse_infinite(&t);
    print_message("%-13s seed 1: %zu requests, %zu blocks, reuse ceiling "
                  "(infinite) %.4f, span %.1f s, fingerprint 0x%016llx\n",
                  want[i].name, t.n, t.n_blocks, r,
                  (double)t.req[t.n - 1].arrival_ns / 1e9,
                  (unsigned long long)fp);
    if (want[i].n != 0)
      assert_int_equal(t.n, want[i].n);
    if (fp != want[i].fp) {
      print_error("%s: fingerprint 0x%016llx, expected 0x%016llx\n",
                  want[i].name, (unsigned long long)fp,
                  (unsigned long long)want[i].fp);
      bad++;
    }
    sim_trace_free(&t);
  }
  assert_int_equal(bad, 0);
}

/* ------------------------------------------------------------------------ */
/* 3. Common structure, sizes                                                */
/* ------------------------------------------------------------------------ */

static void test_counts(void **state) {
  (void)state;
  static const struct {
    const char *name;
    size_t n, want;
  } cases[] = {
      {"shared-prefix", 0, 750}, {"shared-prefix", 1, 1},
      {"shared-prefix", 7, 7},   {"shared-prefix", 1000, 1000},
      {"heavy-tail", 0, 5000},   {"heavy-tail", 1, 1},
      {"heavy-tail", 123, 123},  {"bursty", 0, 5000},
      {"bursty", 1, 1},          {"bursty", 123, 123},
      {"multi-turn", 1, 1},      {"multi-turn", 37, 37},
      {"multi-turn", 4000, 4000},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sim_trace t;
    gen(&t, cases[i].name, 9, cases[i].n);
    assert_int_equal(t.n, cases[i].want);
    check_common(&t);
    if (strcmp(cases[i].name, "multi-turn") != 0)
      for (size_t k = 0; k < t.n; k++)
        assert_int_equal(t.req[k].session, 0);
    sim_trace_free(&t);
  }
  /* multi-turn by default: 500 sessions of 2..8 turns, numbered 1..500
   * in order of start. */
  sim_trace t;
  gen(&t, "multi-turn", 9, 0);
  check_common(&t);
  uint32_t turns[501] = {0};
  uint32_t last_first = 0;
  for (size_t k = 0; k < t.n; k++) {
    uint32_t s = t.req[k].session;
    assert_true(s >= 1 && s <= 500);
    if (turns[s]++ == 0) { /* first turns come in session order */
      assert_int_equal(s, last_first + 1);
      last_first = s;
    }
  }
  size_t total = 0;
  for (uint32_t s = 1; s <= 500; s++) {
    assert_true(turns[s] >= 2 && turns[s] <= 8);
    total += turns[s];
  }
  assert_int_equal(total, t.n);
  sim_trace_free(&t);
}

/* ------------------------------------------------------------------------ */
/* 4. shared-prefix                                                          */
/* ------------------------------------------------------------------------ */

static void test_shared_prefix(void **state) {
  (void)state;
  sim_trace t;
  gen(&t, "shared-prefix", 1, 0);
  check_common(&t);
  assert_int_equal(t.n, 750);
  assert_int_equal(t.n_blocks, 750 * 15);
  uint64_t *ids = sorted_ids(&t);
  /* Group of a request: its first block (a system-prompt block). */
  for (size_t i = 0; i < t.n; i++) {
    assert_int_equal(t.req[i].input_tokens, 7200);
    assert_int_equal(t.req[i].output_tokens, 1000);
    assert_int_equal(t.req[i].n_blocks, 15);
    const uint64_t *b = blocks_of(&t, i);
    /* Blocks 0..10: the group's, in its 5 prompts; 11..14: the prompt's
     * alone (11 mixes system prompt and question). */
    for (uint32_t k = 0; k < 15; k++)
      assert_int_equal(occurrences(ids, t.n_blocks, b[k]), k < 11 ? 5 : 1);
  }
  size_t same = 0, adjacent_same = 0;
  for (size_t i = 0; i < t.n; i++) {
    for (size_t j = i + 1; j < t.n; j++) {
      uint32_t c = common_prefix(&t, i, j);
      if (blocks_of(&t, i)[0] == blocks_of(&t, j)[0]) {
        assert_int_equal(c, 11); /* exactly the full system blocks */
        same++;
      } else {
        /* different groups: no block in common anywhere */
        for (uint32_t k = 0; k < 15; k++)
          for (uint32_t l = 0; l < 15; l++)
            assert_true(blocks_of(&t, i)[k] != blocks_of(&t, j)[l]);
      }
    }
    if (i > 0 && blocks_of(&t, i)[0] == blocks_of(&t, i - 1)[0])
      adjacent_same++;
  }
  assert_int_equal(same, 150 * (5 * 4 / 2)); /* 150 groups of 5 */
  /* Shuffled: neighbours in the same group about 750 * 4/749 = 4 times. */
  assert_true(adjacent_same < 20);
  /* Poisson at 1/s: 749 gaps, mean 1 s (sd 27 s on the span). */
  double span = (double)t.req[t.n - 1].arrival_ns / 1e9;
  assert_true(span > 620 && span < 880);
  /* Ceiling: per group, 5 prompts x 15 blocks - (11 + 5 x 4) distinct. */
  assert_share(sim_reuse_infinite(&t), 150 * (5 * 15 - (11 + 5 * 4)),
               750 * 15);
  assert_share(sim_reuse_infinite(&t), 6600, 11250);
  free(ids);
  sim_trace_free(&t);

  /* n = 7: groups of 5 and 2. */
  gen(&t, "shared-prefix", 3, 7);
  check_common(&t);
  assert_share(sim_reuse_infinite(&t), 4 * 11 + 1 * 11, 7 * 15);
  sim_trace_free(&t);
}

/* ------------------------------------------------------------------------ */
/* 5. multi-turn                                                             */
/* ------------------------------------------------------------------------ */

static void check_multi_turn(const sim_trace *t, int full_sessions) {
  check_common(t);
  uint32_t max_s = 0;
  for (size_t i = 0; i < t->n; i++)
    if (t->req[i].session > max_s)
      max_s = t->req[i].session;
  size_t *last = malloc((max_s + 1) * sizeof *last); /* index + 1 */
  assert_non_null(last);
  memset(last, 0, (max_s + 1) * sizeof *last);
  uint64_t *ids = sorted_ids(t);
  uint64_t hits = 0, think_sum = 0, thinks = 0;
  for (size_t i = 0; i < t->n; i++) {
    const sim_req *q = &t->req[i];
    const uint64_t *b = blocks_of(t, i);
    assert_true(q->session >= 1);
    assert_true(q->input_tokens <= 32000);
    assert_true(q->output_tokens <= 4096);
    uint32_t keep = 0;
    if (last[q->session] == 0) {
      assert_true(q->input_tokens <= 8000);
    } else {
      size_t p = last[q->session] - 1;
      const sim_req *pq = &t->req[p];
      /* prompt = previous prompt + its answer + a question (1..2000) */
      uint32_t grown = pq->input_tokens + pq->output_tokens;
      assert_true(q->input_tokens > grown);
      assert_true(q->input_tokens - grown <= 2000);
      assert_true(q->arrival_ns >= pq->arrival_ns);
      think_sum += q->arrival_ns - pq->arrival_ns;
      thinks++;
      /* its blocks start with the previous turn's full blocks ... */
      keep = pq->input_tokens / SIM_BLOCK_TOKENS;
      assert_memory_equal(b, blocks_of(t, p), keep * sizeof *b);
      /* ... and the previous partial block (if any) is replaced. */
      if (pq->n_blocks > keep)
        assert_true(b[keep] != blocks_of(t, p)[keep]);
      hits += keep;
    }
    /* The blocks past those: new, found in this turn and the session's
     * later turns only. */
    for (uint32_t k = keep; k < q->n_blocks; k++) {
      size_t later = 0;
      for (size_t j = i; j < t->n; j++)
        if (t->req[j].session == q->session && t->req[j].n_blocks > k &&
            blocks_of(t, j)[k] == b[k])
          later++;
      assert_int_equal(occurrences(ids, t->n_blocks, b[k]), later);
    }
    last[q->session] = i + 1;
  }
  /* Ceiling: each turn hits exactly the previous turn's full blocks. */
  assert_share(sim_reuse_infinite(t), hits, t->n_blocks);
  if (full_sessions) { /* think time: exponential, mean 10 s */
    double mean = (double)think_sum / (double)thinks / 1e9;
    assert_true(mean > 9.0 && mean < 11.0);
  }
  free(ids);
  free(last);
}

static void test_multi_turn(void **state) {
  (void)state;
  sim_trace t;
  gen(&t, "multi-turn", 1, 0);
  check_multi_turn(&t, 1);
  sim_trace_free(&t);
  gen(&t, "multi-turn", 2, 0);
  check_multi_turn(&t, 1);
  sim_trace_free(&t);
  gen(&t, "multi-turn", 3, 101); /* the last session cut short */
  check_multi_turn(&t, 0);
  sim_trace_free(&t);
}

/* ------------------------------------------------------------------------ */
/* 6. heavy-tail                                                             */
/* ------------------------------------------------------------------------ */

static void test_heavy_tail(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 3; seed++) {
    sim_trace t;
    gen(&t, "heavy-tail", seed, 0);
    check_common(&t);
    assert_int_equal(t.n, 5000);
    uint32_t *in = malloc(t.n * sizeof *in), *out = malloc(t.n * sizeof *out);
    assert_non_null(in);
    assert_non_null(out);
    size_t capped = 0;
    for (size_t i = 0; i < t.n; i++) {
      in[i] = t.req[i].input_tokens;
      out[i] = t.req[i].output_tokens;
      capped += in[i] == 32000;
    }
    qsort(in, t.n, sizeof *in, cmp_u32);
    qsort(out, t.n, sizeof *out, cmp_u32);
    uint32_t i50 = quantile(in, t.n, 0.5), i90 = quantile(in, t.n, 0.9),
             i99 = quantile(in, t.n, 0.99), o50 = quantile(out, t.n, 0.5),
             o99 = quantile(out, t.n, 0.99);
    print_message("heavy-tail seed %llu: input p50 %u p90 %u p99 %u max %u, "
                  "%zu at the cap; output p50 %u p99 %u max %u\n",
                  (unsigned long long)seed, i50, i90, i99, in[t.n - 1],
                  capped, o50, o99, out[t.n - 1]);
    /* log-logistic(1000, 3/5, 32000): p50 1000, p90 3737, p99 15,760,
     * P(cap) 0.31%; bounds about 4 standard errors of 5000 samples. */
    assert_true(in[0] >= 1 && in[t.n - 1] <= 32000);
    assert_true(i50 >= 900 && i50 <= 1110);
    assert_true(i90 >= 3300 && i90 <= 4250);
    assert_true(i99 >= 12000 && i99 <= 21000);
    assert_true(capped >= 5 && capped <= 35);
    /* geometric(200, 4096): p50 200, p99 1329. */
    assert_true(out[0] >= 1 && out[t.n - 1] <= 4096);
    assert_true(o50 >= 180 && o50 <= 220);
    assert_true(o99 >= 1150 && o99 <= 1520);
    /* Nothing shared; Poisson at 1/s (sd 71 s on the span). */
    assert_true(sim_reuse_infinite(&t) == 0.0);
    uint64_t *ids = sorted_ids(&t);
    for (size_t i = 1; i < t.n_blocks; i++)
      assert_true(ids[i] != ids[i - 1]);
    double span = (double)t.req[t.n - 1].arrival_ns / 1e9;
    assert_true(span > 4650 && span < 5350);
    free(ids);
    free(in);
    free(out);
    sim_trace_free(&t);
  }
}

/* ------------------------------------------------------------------------ */
/* 7. bursty                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct windows {
  size_t n, nonempty, empty;
  uint64_t busiest, quietest; /* quietest non-empty */
  double dispersion;          /* variance / mean of the counts */
} windows;

/* Counts of arrivals in the 10 s windows [10 k, 10 (k + 1)) s up to the
 * last arrival. */
static windows count_windows(const sim_trace *t) {
  const uint64_t w = UINT64_C(10000000000);
  windows r;
  memset(&r, 0, sizeof r);
  r.n = (size_t)(t->req[t->n - 1].arrival_ns / w) + 1;
  uint64_t *c = calloc(r.n, sizeof *c);
  assert_non_null(c);
  for (size_t i = 0; i < t->n; i++)
    c[t->req[i].arrival_ns / w]++;
  r.quietest = UINT64_MAX;
  double sum = 0, sq = 0;
  for (size_t k = 0; k < r.n; k++) {
    sum += (double)c[k];
    sq += (double)c[k] * (double)c[k];
    if (c[k] == 0) {
      r.empty++;
      continue;
    }
    r.nonempty++;
    if (c[k] > r.busiest)
      r.busiest = c[k];
    if (c[k] < r.quietest)
      r.quietest = c[k];
  }
  double mean = sum / (double)r.n;
  r.dispersion = (sq / (double)r.n - mean * mean) / mean;
  free(c);
  return r;
}

static void test_bursty(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 3; seed++) {
    sim_trace b, h;
    gen(&b, "bursty", seed, 0);
    gen(&h, "heavy-tail", seed, 0);
    check_common(&b);
    /* heavy-tail's sizes, other block ids. */
    assert_int_equal(b.n, h.n);
    for (size_t i = 0; i < b.n; i++) {
      assert_int_equal(b.req[i].input_tokens, h.req[i].input_tokens);
      assert_int_equal(b.req[i].output_tokens, h.req[i].output_tokens);
      assert_true(blocks_of(&b, i)[0] != blocks_of(&h, i)[0]);
    }
    assert_true(sim_reuse_infinite(&b) == 0.0);
    windows wb = count_windows(&b), wh = count_windows(&h);
    double span = (double)b.req[b.n - 1].arrival_ns / 1e9;
    print_message("bursty seed %llu: span %.0f s (%.2f req/s), 10 s "
                  "windows: %zu, %zu empty, busiest %llu, quietest "
                  "non-empty %llu, dispersion %.1f (heavy-tail: %zu empty, "
                  "%llu / %llu, %.2f)\n",
                  (unsigned long long)seed, span, (double)b.n / span, wb.n,
                  wb.empty, (unsigned long long)wb.busiest,
                  (unsigned long long)wb.quietest, wb.dispersion, wh.empty,
                  (unsigned long long)wh.busiest,
                  (unsigned long long)wh.quietest, wh.dispersion);
    assert_true(wb.busiest >= 5 * wb.quietest);
    /* On 10% of the time: most windows empty, counts overdispersed;
     * Poisson counts have dispersion 1 and (mean 10) no empty window. */
    assert_true(wb.empty * 2 > wb.n);
    assert_true(wb.dispersion > 20);
    assert_true(wh.dispersion < 2);
    assert_true(wh.empty * 100 < wh.n);
    /* 1 request/s in expectation: about 50 on/off cycles. */
    assert_true(span > 2500 && span < 10000);
    sim_trace_free(&b);
    sim_trace_free(&h);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names),         cmocka_unit_test(test_errors),
      cmocka_unit_test(test_determinism),   cmocka_unit_test(test_fingerprints),
      cmocka_unit_test(test_counts),        cmocka_unit_test(test_shared_prefix),
      cmocka_unit_test(test_multi_turn),    cmocka_unit_test(test_heavy_tail),
      cmocka_unit_test(test_bursty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
