/*
 * Prefix-cache-aware routing (ILB_POLICY_PREFIX, since 0.5), through the
 * public API only:
 *   1. matching and chaining: a shared system prompt followed by different
 *      questions, with host block hashes and with prompt bytes (the chain
 *      seeded by the "model" attribute, partial blocks, MAX_BLOCKS, the
 *      header's hashing formula reproduced with ilb_hash64);
 *   2. chain semantics: matching stops at the first block nobody holds, a
 *      replica's match is its deepest held block;
 *   3. per-replica LRU: oldest records forgotten first, the C/4 refresh rule
 *      ("a block lives at least 3C/4 and at most C records after its last
 *      use"), a prompt's tail expires before its prefix, entries <= C;
 *   4. the memory bound under 10^6 distinct blocks (picks and KV events),
 *      memory_bytes against the header's formula;
 *   5. a hot prefix under the load bound (BOUND_MIN 0, c = 1.25) spreads;
 *      a large factor keeps it on few replicas; BOUND_MIN keeps a
 *      conversation on its replica at low load;
 *   6. cold prompts: the least-loaded replica with room, never a full one;
 *   7. the cost model: the holder / idle crossover, PREFILL and LOAD
 *      weights, weight dividing the cost, holders compared when the pool
 *      is sampled;
 *   8. removal, re-adding and active health forget a replica's records;
 *   9. KV events (STORED, REMOVED, CLEARED, sequence numbers, RESTART),
 *      ILB_PREFIX_EVENTS mode, bad arguments of ilb_replica_kv_event and
 *      ilb_pool_prefix_stats, ILB_EDEADLK from callbacks;
 *  10. request validation under every policy (blocks, prompt, attributes);
 *  11. option bounds and defaults, TABLE_BLOCKS and policy changes empty
 *      the index, KV capacity by telemetry;
 *  12. queue depth by telemetry, and its expiry on the fake clock;
 *  13. determinism: same seed, same operations, same picks;
 *  14. threads: pickers, a KV-event feeder and a remover at once (TSan);
 *  15. allocation: none on the pick path; out of memory choosing the
 *      policy or resizing the index.
 *
 * The host clock is fake (healthutil.h); pools are seeded; every assertion
 * is on counts, replicas and statistics, none on wall-clock time. Most
 * pools use a small index (SMALL_TABLE) so that statistics stay cheap.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inferlb/inferlb.h>

#include "testutil.h"
#include "healthutil.h"

#define SEED UINT64_C(0x70f1c5eed0050001)
#define SMALL_TABLE 4096 /* ILB_OPT_PREFIX_TABLE_BLOCKS of most pools */
#define DEF_TOKEN_COST 512 /* ILB_OPT_TOKEN_DEFAULT_COST */
#define BUCKET_BYTES 320   /* documented */
#define BUCKET_WAYS 7


/* ------------------------------------------------------------------------ */
/* Pools, requests, picks                                                    */
/* ------------------------------------------------------------------------ */

static ilb_pool *new_pool_host(int32_t policy, const ilb_host *extra) {
  ilb_pool *p = fake_pool(SEED, extra);
  /* the small index first: choosing the policy allocates it */
  SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, SMALL_TABLE);
  /* The cost arithmetic of these tests takes LOAD_WEIGHT 100% (a token in
   * flight weighs as much as a token to prefill); test_option_bounds
   * checks the default (25) itself. */
  SET_OPT(p, ILB_OPT_PREFIX_LOAD_WEIGHT, 100);
  SET_OPT(p, ILB_OPT_POLICY, policy);
  return p;
}

static ilb_pool *new_pool(int32_t policy) {
  return new_pool_host(policy, NULL);
}

/* Replicas r0..r(n-1), weight 1, no capacity limit, host_data i + 1. */
static void add_n(ilb_pool *p, int n) {
  for (int i = 0; i < n; i++)
    add_replica(p, rname(i), 1, 0, (void *)(uintptr_t)(i + 1));
}

static ilb_pool *prefix_pool(int n) {
  ilb_pool *p = new_pool(ILB_POLICY_PREFIX);
  add_n(p, n);
  return p;
}

static ilb_prefix_stats pstats(ilb_pool *p) {
  ilb_prefix_stats s;
  memset(&s, 0x5A, sizeof s);
  s.struct_size = sizeof s;
  assert_rc(ilb_pool_prefix_stats(&s, p), ILB_OK);
  assert_int_equal(s.struct_size, sizeof s);
  if (s.entries > s.capacity)
    fail_msg("entries %llu above capacity %llu",
             (unsigned long long)s.entries, (unsigned long long)s.capacity);
  return s;
}

static uint64_t entries(ilb_pool *p) { return pstats(p).entries; }

static ilb_request blocks_req(const uint64_t *h, size_t n) {
  ilb_request r;
  assert_rc(ilb_request_init(&r), ILB_OK);
  r.block_hashes = h;
  r.n_blocks = n;
  return r;
}

/* A prompt request; with model non-NULL, *attr (the caller's, alive
 * during the pick) is its "model" attribute. */
static ilb_request prompt_req(const char *text, size_t len, ilb_label *attr,
                              const char *model) {
  ilb_request r;
  assert_rc(ilb_request_init(&r), ILB_OK);
  r.prompt = text;
  r.prompt_len = len;
  if (model) {
    attr->key = "model";
    attr->value = model;
    r.attrs = attr;
    r.n_attrs = 1;
  }
  return r;
}

/* A request without blocks that costs `tokens` while in flight. */
static ilb_request tokens_req(uint32_t tokens) {
  ilb_request r;
  assert_rc(ilb_request_init(&r), ILB_OK);
  r.prompt_tokens = tokens;
  return r;
}

/* h[i] = base + i: distinct host hashes (any 64-bit values name blocks). */
static void seq_hashes(uint64_t *h, size_t n, uint64_t base) {
  for (size_t i = 0; i < n; i++)
    h[i] = base + i;
}

/* A pick that must succeed: the replica's index; the ticket in *ticket. */
static int pick(ilb_pool *p, const ilb_request *req, uint64_t *ticket) {
  int i = -1;
  uint64_t t = 0;
  assert_rc(try_pick(p, req, &i, &t), ILB_OK);
  *ticket = t;
  return i;
}

static void done(ilb_pool *p, uint64_t t) {
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
}

/* Pick and complete at once; the replica's index. */
static int pick_done(ilb_pool *p, const ilb_request *req) {
  uint64_t t;
  int i = pick(p, req, &t);
  done(p, t);
  return i;
}

/* Pick (and complete) req: how many blocks the pick matched on the replica
 * it chose (ilb_prefix_stats.matched_blocks), the replica in *idx. */
static uint64_t matched_by(ilb_pool *p, const ilb_request *req, int *idx) {
  uint64_t before = pstats(p).matched_blocks;
  int i = pick_done(p, req);
  if (idx)
    *idx = i;
  return pstats(p).matched_blocks - before;
}

static uint64_t matched_hashes(ilb_pool *p, const uint64_t *h, size_t n,
                               int *idx) {
  ilb_request r = blocks_req(h, n);
  return matched_by(p, &r, idx);
}

static int64_t in_flight(ilb_pool *p, int i) {
  return get_info(p, rname(i)).in_flight;
}

static uint64_t tokens_of(ilb_pool *p, int i) {
  return get_info(p, rname(i)).tokens_in_flight;
}

static void set_avail(ilb_pool *p, int i, int on) {
  assert_rc(ilb_replica_set_available(p, rname(i), on), ILB_OK);
}

/* Leave `count` requests of `tokens` each in flight on replica i of an
 * n-replica pool (the others made unavailable meanwhile); their tickets
 * into out[] when out is not NULL. */
static void load_on(ilb_pool *p, int n, int i, int count, uint32_t tokens,
                    uint64_t *out) {
  for (int k = 0; k < n; k++)
    if (k != i)
      set_avail(p, k, 0);
  ilb_request r = tokens_req(tokens);
  for (int c = 0; c < count; c++) {
    uint64_t t;
    assert_int_equal(pick(p, &r, &t), i);
    if (out)
      out[c] = t;
  }
  for (int k = 0; k < n; k++)
    if (k != i)
      set_avail(p, k, 1);
}

/* Route req to replica i (the others unavailable meanwhile) and complete
 * it: in ILB_PREFIX_ROUTED mode this makes i a holder of its blocks. */
static void route_to(ilb_pool *p, int n, int i, const ilb_request *req) {
  for (int k = 0; k < n; k++)
    if (k != i)
      set_avail(p, k, 0);
  assert_int_equal(pick_done(p, req), i);
  for (int k = 0; k < n; k++)
    if (k != i)
      set_avail(p, k, 1);
}

static int kv(ilb_pool *p, const char *id, int32_t type, uint64_t seq,
              uint32_t flags, const uint64_t *h, size_t n) {
  ilb_kv_event ev;
  assert_rc(ilb_kv_event_init(&ev), ILB_OK);
  ev.type = type;
  ev.seq = seq;
  ev.flags = flags;
  ev.block_hashes = h;
  ev.n_blocks = n;
  return ilb_replica_kv_event(p, id, &ev);
}

#define KV_OK(p, id, type, seq, flags, h, n)                                 \
  assert_rc(kv((p), (id), (type), (seq), (flags), (h), (n)), ILB_OK)

static void store1(ilb_pool *p, int i, uint64_t h) {
  KV_OK(p, rname(i), ILB_KV_STORED, 0, 0, &h, 1);
}

/* Telemetry: a KV cache of blocks x block_size tokens. */
static void report_kv(ilb_pool *p, int i, double block_size, double blocks) {
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  t.present = ILB_SIGNAL_BIT(ILB_SIGNAL_KV_BLOCK_SIZE) |
              ILB_SIGNAL_BIT(ILB_SIGNAL_KV_BLOCKS_TOTAL);
  t.kv_block_size = block_size;
  t.kv_blocks_total = blocks;
  assert_rc(ilb_replica_report(p, rname(i), &t), ILB_OK);
}

/* ------------------------------------------------------------------------ */
/* 1. Matching and chaining                                                  */
/* ------------------------------------------------------------------------ */

#define SYS_BLOCKS 8
#define Q_BLOCKS 4

/* System prompt of 8 blocks, then question q's 4 blocks. */
static void conversation(uint64_t *h, uint64_t q) {
  seq_hashes(h, SYS_BLOCKS, 1000);
  seq_hashes(h + SYS_BLOCKS, Q_BLOCKS, 2000 + 100 * q);
}

static void test_match_shared_system_hashes(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(4);
  const size_t n = SYS_BLOCKS + Q_BLOCKS;
  uint64_t a[SYS_BLOCKS + Q_BLOCKS], b[SYS_BLOCKS + Q_BLOCKS];
  conversation(a, 1);
  conversation(b, 2);
  ilb_request ra = blocks_req(a, n), rb = blocks_req(b, n);

  ilb_prefix_stats s0 = pstats(p);
  assert_u64(s0.entries, 0);
  assert_u64(s0.lookups, 0);
  int r = pick_done(p, &ra);
  ilb_prefix_stats s1 = pstats(p);
  assert_u64(s1.lookups, 1);
  assert_u64(s1.blocks, n);
  assert_u64(s1.matched_blocks, 0);
  assert_u64(s1.recorded, n);
  assert_u64(s1.entries, n);

  /* B shares the system prompt: exactly its 8 blocks match, on R */
  int rb_i;
  assert_u64(matched_by(p, &rb, &rb_i), SYS_BLOCKS);
  assert_int_equal(rb_i, r);
  ilb_prefix_stats s2 = pstats(p);
  assert_u64(s2.lookups, 2);
  assert_u64(s2.blocks, 2 * n);
  /* the shared, recently recorded blocks cost no new record */
  assert_u64(s2.recorded - s1.recorded, Q_BLOCKS);
  assert_u64(s2.entries, n + Q_BLOCKS);

  /* A again: all of it, on R */
  int ra_i;
  assert_u64(matched_by(p, &ra, &ra_i), n);
  assert_int_equal(ra_i, r);
  /* a prefix of A (the system prompt alone) matches all its blocks */
  assert_u64(matched_hashes(p, a, SYS_BLOCKS, &ra_i), SYS_BLOCKS);
  assert_int_equal(ra_i, r);
  /* and a request without blocks is no lookup */
  pick_done(p, NULL);
  assert_u64(pstats(p).lookups, 4);
  /* host hashes win over a prompt given too */
  ilb_request both = blocks_req(a, 2);
  static const char text[1024] = {0};
  both.prompt = text;
  both.prompt_len = sizeof text;
  uint64_t blocks_before = pstats(p).blocks;
  pick_done(p, &both);
  assert_u64(pstats(p).blocks - blocks_before, 2);
  free_pool(p);
}

/* Prompt text: n bytes from a seed, letters only. */
static void fill_text(char *out, size_t n, unsigned seed) {
  uint32_t x = seed * 2654435761u + 12345u;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    out[i] = (char)('a' + (x >> 16) % 26);
  }
}

#define BB 16 /* ILB_OPT_PREFIX_BLOCK_BYTES in the prompt tests */

/* The header's chain: h[0] = XXH64(block 0, seed XXH64(model)),
 * h[i] = XXH64(block i, seed h[i-1]). */
static size_t host_chain(uint64_t *h, const char *text, size_t len,
                         const char *model) {
  uint64_t seed;
  assert_rc(ilb_hash64(&seed, model, strlen(model), 0), ILB_OK);
  size_t n = len / BB;
  for (size_t i = 0; i < n; i++) {
    assert_rc(ilb_hash64(&h[i], text + i * BB, BB, seed), ILB_OK);
    seed = h[i];
  }
  return n;
}

static void test_match_prompt_bytes(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(4);
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_BYTES, BB);
  /* A = system (8 blocks) + q1 (4 blocks); B = system + q2 + 5 bytes */
  char a[12 * BB], b[12 * BB + 5];
  fill_text(a, sizeof a, 1);
  memcpy(b, a, SYS_BLOCKS * BB);
  fill_text(b + SYS_BLOCKS * BB, sizeof b - SYS_BLOCKS * BB, 2);
  ilb_label la, lb;
  ilb_request ra = prompt_req(a, sizeof a, &la, "m1");
  ilb_request rb = prompt_req(b, sizeof b, &lb, "m1");

  int r = pick_done(p, &ra);
  ilb_prefix_stats s1 = pstats(p);
  assert_u64(s1.lookups, 1);
  assert_u64(s1.blocks, 12);
  assert_u64(s1.entries, 12);

  /* B: its partial last block is not a block; the system prompt matches */
  int i;
  assert_u64(matched_by(p, &rb, &i), SYS_BLOCKS);
  assert_int_equal(i, r);
  assert_u64(pstats(p).blocks, 24);

  /* the same text under another model, or none, matches nothing */
  ilb_label lm;
  ilb_request other = prompt_req(a, sizeof a, &lm, "m2");
  assert_u64(matched_by(p, &other, NULL), 0);
  ilb_request nomodel = prompt_req(a, sizeof a, NULL, NULL);
  assert_u64(matched_by(p, &nomodel, NULL), 0);
  assert_u64(pstats(p).blocks, 48);
  /* "model" among other attributes (and ones without a key) */
  ilb_label several[3] = {{NULL, "x"}, {"user", "m2"}, {"model", "m1"}};
  ilb_request withattrs = prompt_req(a, sizeof a, NULL, NULL);
  withattrs.attrs = several;
  withattrs.n_attrs = 3;
  assert_u64(matched_by(p, &withattrs, &i), 12);
  assert_int_equal(i, r);

  /* the chain is the header's: host hashes computed with ilb_hash64 as
   * documented match the library's hashing of the prompt, on R */
  uint64_t h[12];
  assert_int_equal(host_chain(h, a, sizeof a, "m1"), 12);
  assert_u64(matched_hashes(p, h, 12, &i), 12);
  assert_int_equal(i, r);
  uint64_t hn[12];
  host_chain(hn, a, sizeof a, "");
  assert_u64(matched_hashes(p, hn, 12, &i), 12); /* "no model" is "" */

  /* a prompt shorter than one block has no blocks: no lookup */
  ilb_prefix_stats s2 = pstats(p);
  ilb_request tiny = prompt_req(a, BB - 1, &la, "m1");
  pick_done(p, &tiny);
  ilb_prefix_stats s3 = pstats(p);
  assert_u64(s3.lookups, s2.lookups);
  assert_u64(s3.blocks, s2.blocks);
  /* 3 blocks and 15 bytes: 3 blocks, all held by R */
  ilb_request part = prompt_req(a, 3 * BB + BB - 1, &la, "m1");
  assert_u64(matched_by(p, &part, &i), 3);
  assert_int_equal(i, r);
  assert_u64(pstats(p).blocks - s3.blocks, 3);

  /* at most MAX_BLOCKS count */
  SET_OPT(p, ILB_OPT_PREFIX_MAX_BLOCKS, 5);
  uint64_t bl = pstats(p).blocks;
  assert_u64(matched_by(p, &ra, &i), 5);
  assert_int_equal(i, r);
  assert_u64(matched_hashes(p, h, 12, NULL), 5);
  assert_u64(pstats(p).blocks - bl, 10);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 2. Chain semantics (KV events make exact holders; picks do not record)   */
/* ------------------------------------------------------------------------ */

static ilb_pool *events_pool(int n) {
  ilb_pool *p = prefix_pool(n);
  SET_OPT(p, ILB_OPT_PREFIX_MODE, ILB_PREFIX_EVENTS);
  return p;
}

static void test_chain_stops_at_gap(void **state) {
  (void)state;
  ilb_pool *p = events_pool(3);
  uint64_t b[5];
  seq_hashes(b, 5, 7000);
  uint64_t held[4] = {b[0], b[1], b[3], b[4]}; /* not b[2] */
  KV_OK(p, "r0", ILB_KV_STORED, 0, 0, held, 4);
  ilb_prefix_stats s0 = pstats(p);
  int i;
  /* r0 matches b0, b1 only: nobody holds b2, so b3, b4 do not count */
  assert_u64(matched_hashes(p, b, 5, &i), 2);
  assert_int_equal(i, 0);
  /* the pick recorded nothing (ILB_PREFIX_EVENTS) */
  ilb_prefix_stats s1 = pstats(p);
  assert_u64(s1.recorded, s0.recorded);
  assert_u64(s1.entries, s0.entries);
  /* nobody holds the first block: nothing matches, though r0 and r1 hold
   * the rest */
  KV_OK(p, "r1", ILB_KV_STORED, 0, 0, b + 1, 4);
  uint64_t c[5] = {6999, b[1], b[2], b[3], b[4]};
  assert_u64(matched_hashes(p, c, 5, NULL), 0);
  assert_u64(entries(p), 5);
  free_pool(p);
}

static void test_chain_deepest_held_block(void **state) {
  (void)state;
  ilb_pool *p = events_pool(3);
  uint64_t b[4];
  seq_hashes(b, 4, 7100);
  uint64_t x[2] = {b[0], b[1]}, y[2] = {b[0], b[2]};
  KV_OK(p, "r0", ILB_KV_STORED, 0, 0, x, 2);
  KV_OK(p, "r1", ILB_KV_STORED, 0, 0, y, 2);
  /* chain: b0 (r0, r1), b1 (r0), b2 (r1), b3 (none): r0 matches 2, r1 3
   * (its deepest held block, though it lacks b1); r1 is cheapest */
  int i;
  assert_u64(matched_hashes(p, b, 4, &i), 3);
  assert_int_equal(i, 1);
  /* with r1 out, r0 and its 2 blocks */
  set_avail(p, 1, 0);
  assert_u64(matched_hashes(p, b, 4, &i), 2);
  assert_int_equal(i, 0);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 3. Per-replica LRU                                                        */
/* ------------------------------------------------------------------------ */

#define LRU_C 64 /* blocks per replica: REPLICA_TOKENS / BLOCK_TOKENS */
#define LRU_BT 16

/* One replica holding LRU_C blocks. */
static ilb_pool *lru_pool(int32_t mode) {
  ilb_pool *p = prefix_pool(1);
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, LRU_BT);
  SET_OPT(p, ILB_OPT_PREFIX_REPLICA_TOKENS, LRU_BT * LRU_C);
  SET_OPT(p, ILB_OPT_PREFIX_MODE, mode);
  return p;
}

/* Does the (only) replica hold block h? (ILB_PREFIX_EVENTS: the probe
 * records nothing.) */
static int held1(ilb_pool *p, uint64_t h) {
  uint64_t m = matched_hashes(p, &h, 1, NULL);
  assert_true(m <= 1);
  return (int)m;
}

static void test_lru_oldest_first(void **state) {
  (void)state;
  ilb_pool *p = lru_pool(ILB_PREFIX_EVENTS);
  const int extra = 10;
  for (int k = 0; k < LRU_C + extra; k++) {
    store1(p, 0, 500 + (uint64_t)k);
    uint64_t want = (uint64_t)(k + 1 < LRU_C ? k + 1 : LRU_C);
    assert_u64(entries(p), want); /* never more than C */
  }
  for (int k = 0; k < LRU_C + extra; k++)
    if (held1(p, 500 + (uint64_t)k) != (k >= extra))
      fail_msg("block %d of %d: held %d", k, LRU_C + extra, !(k >= extra));
  ilb_prefix_stats s = pstats(p);
  assert_u64(s.events, (uint64_t)(LRU_C + extra));
  assert_u64(s.evicted, 0); /* the LRU forgot them, not the global cap */
  free_pool(p);
}

/* Store b, then age_at_use - 1 fillers (b's age is then age_at_use), use b
 * again (by a STORED event, or by a pick in ROUTED mode), store
 * `fillers` more: is b still held? */
static int lru_alive_after(int use_by_pick, int age_at_use, int fillers) {
  ilb_pool *p =
      lru_pool(use_by_pick ? ILB_PREFIX_ROUTED : ILB_PREFIX_EVENTS);
  const uint64_t b = 42;
  uint64_t f = 100000;
  store1(p, 0, b);
  for (int k = 1; k < age_at_use; k++)
    store1(p, 0, f++);
  if (use_by_pick) {
    assert_u64(matched_hashes(p, &b, 1, NULL), 1);
  } else {
    store1(p, 0, b);
  }
  for (int k = 0; k < fillers; k++)
    store1(p, 0, f++);
  uint64_t e = entries(p);
  assert_true(e <= LRU_C);
  int alive = held1(p, b); /* in ROUTED mode this records: the last step */
  free_pool(p);
  return alive;
}

static void test_lru_refresh_rule(void **state) {
  (void)state;
  const int C = LRU_C, Q = LRU_C / 4;
  const int ages[] = {1, Q / 2, Q, Q + 1, C / 2, C};
  for (int by_pick = 0; by_pick < 2; by_pick++) {
    for (size_t k = 0; k < sizeof ages / sizeof ages[0]; k++) {
      int a = ages[k];
      /* the documented bounds, for a use by a request or a STORED event:
       * alive 3C/4 records after its last use, gone C records after it */
      if (!lru_alive_after(by_pick, a, 3 * C / 4))
        fail_msg("by_pick %d, age %d at use: gone after 3C/4 records",
                 by_pick, a);
      if (lru_alive_after(by_pick, a, C))
        fail_msg("by_pick %d, age %d at use: alive after C records",
                 by_pick, a);
      if (!by_pick)
        continue;
      /* a request moves it to the front only when older than C/4 */
      int last = a > Q ? C - 1 : C - a; /* still alive after this many */
      if (!lru_alive_after(by_pick, a, last))
        fail_msg("age %d at a request's use: gone after %d records", a,
                 last);
      if (lru_alive_after(by_pick, a, last + 1))
        fail_msg("age %d at a request's use: alive after %d records", a,
                 last + 1);
    }
  }
}

/* A pick records the prompt's first block as the newest: the tail expires
 * first, and the match shrinks from the end (servers evict a sequence's
 * tail first). */
static void test_lru_tail_expires_first(void **state) {
  (void)state;
  /* a fresh pool per step: in EVENTS mode a matching pick refreshes the
   * prefix it matched (the server touched it), so each is probed once */
  for (int k = 0; k <= 8; k++) {
    ilb_pool *p = lru_pool(ILB_PREFIX_ROUTED);
    uint64_t a[8];
    seq_hashes(a, 8, 3000);
    assert_u64(matched_hashes(p, a, 8, NULL), 0); /* records a on r0 */
    SET_OPT(p, ILB_OPT_PREFIX_MODE, ILB_PREFIX_EVENTS);
    uint64_t f = 90000;
    for (int j = 0; j < LRU_C - 8 + k; j++)
      store1(p, 0, f++);
    assert_u64(matched_hashes(p, a, 8, NULL), (uint64_t)(8 - k));
    free_pool(p);
  }
}

/* In EVENTS mode a pick's refresh never creates a record: a replica's
 * match counts up to its deepest held block, but a block between that it
 * does not hold (REMOVED) stays unheld. */
static void test_events_refresh_adds_nothing(void **state) {
  (void)state;
  ilb_pool *p = events_pool(2);
  uint64_t h[3] = {0xA0, 0xA1, 0xA2};
  KV_OK(p, "r0", ILB_KV_STORED, 0, 0, h, 3);
  KV_OK(p, "r1", ILB_KV_STORED, 0, 0, h, 2);
  KV_OK(p, "r0", ILB_KV_REMOVED, 0, 0, &h[1], 1);
  uint64_t rec = pstats(p).recorded;
  int i;
  assert_u64(matched_hashes(p, h, 3, &i), 3); /* r0: deepest block 2 */
  assert_int_equal(i, 0);
  assert_u64(pstats(p).recorded, rec); /* young records: nothing moved */
  KV_OK(p, "r1", ILB_KV_CLEARED, 0, 0, NULL, 0);
  /* r0 still holds h0 and h2, not h1: [h0, h1] matches one block */
  assert_u64(matched_hashes(p, h, 2, &i), 1);
  assert_int_equal(i, 0);
  free_pool(p);
}

/* Raising a replica's capacity keeps expired records expired: a record
 * expires once C newer ones were made, whatever C becomes later. */
static void test_capacity_growth_revives_nothing(void **state) {
  (void)state;
  /* C = 8, 40 records: the last 8 live, the newest with 7 records of life
   * left. The capacity grows (by option, then by telemetry) to 1000; the
   * 32 expired stay expired and the newest still dies after 8 more. */
  for (int more = 7; more <= 8; more++) {
    ilb_pool *p = events_pool(1);
    SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, 16);
    SET_OPT(p, ILB_OPT_PREFIX_REPLICA_TOKENS, 16 * 8);
    for (uint64_t k = 0; k < 40; k++)
      store1(p, 0, 0xC000 + k);
    assert_u64(entries(p), 8);
    SET_OPT(p, ILB_OPT_PREFIX_REPLICA_TOKENS, 16 * 64);
    assert_u64(entries(p), 8);
    report_kv(p, 0, 16, 1000);
    assert_u64(entries(p), 8);
    for (int k = 0; k < more; k++)
      store1(p, 0, 0xD000 + (uint64_t)k);
    uint64_t last = 0xC000 + 39;
    assert_u64(matched_hashes(p, &last, 1, NULL), more == 7 ? 1 : 0);
    free_pool(p);
  }
}

/* In EVENTS mode a pick records no new block but refreshes the prefix it
 * matched: reused, it outlives blocks stored after it. */
static void test_events_pick_refreshes_matched(void **state) {
  (void)state;
  ilb_pool *p = lru_pool(ILB_PREFIX_EVENTS);
  uint64_t a[8];
  seq_hashes(a, 8, 5000);
  KV_OK(p, "r0", ILB_KV_STORED, 0, 0, a, 8);
  uint64_t f = 70000;
  for (int j = 0; j < LRU_C - 8; j++) /* a is now older than C/4 */
    store1(p, 0, f++);
  assert_u64(matched_hashes(p, a, 8, NULL), 8); /* reused: refreshed */
  for (int j = 0; j < LRU_C / 2; j++) /* would have expired without it */
    store1(p, 0, f++);
  assert_u64(matched_hashes(p, a, 8, NULL), 8);
  /* and a new block of a request is not recorded in EVENTS mode */
  uint64_t b[9];
  memcpy(b, a, sizeof a);
  b[8] = 123456789;
  assert_u64(matched_hashes(p, b, 9, NULL), 8);
  assert_u64(matched_hashes(p, b, 9, NULL), 8);
  free_pool(p);
}

/* The same for a STORED event longer than 256 blocks (a long prompt's
 * vLLM BlockStored): its first blocks must outlive its tail. */
static void test_lru_long_stored_event_keeps_prefix(void **state) {
  (void)state;
  enum { N = 300, C = 300, BT = 16 };
  ilb_pool *p = prefix_pool(1);
  SET_OPT(p, ILB_OPT_PREFIX_MODE, ILB_PREFIX_EVENTS);
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, BT);
  SET_OPT(p, ILB_OPT_PREFIX_REPLICA_TOKENS, BT * C);
  SET_OPT(p, ILB_OPT_PREFIX_MAX_BLOCKS, 256);
  uint64_t *h = malloc(N * sizeof *h);
  assert_non_null(h);
  seq_hashes(h, N, 1u << 20);
  KV_OK(p, "r0", ILB_KV_STORED, 0, 0, h, N);
  assert_u64(entries(p), N);
  assert_u64(matched_hashes(p, h, 256, NULL), 256);
  /* one newer record: the oldest one goes, which must be the tail's
   * (block 299), not block 255 */
  store1(p, 0, 7);
  uint64_t m = matched_hashes(p, h, 256, NULL);
  free(h);
  if (m != 256)
    fail_msg("after a 300-block STORED event and one more record, the "
             "prompt's first 256 blocks match %llu: the event's blocks "
             "past 256 were recorded as newer than its first ones",
             (unsigned long long)m);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 4. Memory bound                                                           */
/* ------------------------------------------------------------------------ */

/* The header's formula: 320 * 2^ceil(log2(ceil(TABLE_BLOCKS / 7))). */
static uint64_t formula_bytes(uint64_t table_blocks) {
  uint64_t need = (table_blocks + BUCKET_WAYS - 1) / BUCKET_WAYS, n = 1;
  while (n < need)
    n <<= 1;
  return BUCKET_BYTES * n;
}

static void assert_memory_formula(const ilb_prefix_stats *s,
                                  uint64_t table_blocks) {
  uint64_t f = formula_bytes(table_blocks);
  if (s->memory_bytes < f || s->memory_bytes > f + 256)
    fail_msg("TABLE_BLOCKS %llu: memory_bytes %llu, formula %llu",
             (unsigned long long)table_blocks,
             (unsigned long long)s->memory_bytes, (unsigned long long)f);
  assert_u64(s->capacity, f / BUCKET_BYTES * BUCKET_WAYS);
  assert_true(s->capacity >= table_blocks);
}

static void test_memory_formula(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(1);
  const uint64_t sizes[] = {1024, 1792, 1793, 4096, 5000, 100000};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, (int64_t)sizes[k]);
    ilb_prefix_stats s = pstats(p);
    assert_memory_formula(&s, sizes[k]);
  }
  /* 1024 entries: 147 buckets rounded up to 256, 1792 entries */
  SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, 1024);
  assert_u64(pstats(p).capacity, 1792);
  free_pool(p);
  /* the default (262144 entries: 65536 buckets) */
  ilb_pool *d = NULL;
  assert_rc(ilb_pool_new(&d, NULL), ILB_OK);
  track_pool(d);
  SET_OPT(d, ILB_OPT_POLICY, ILB_POLICY_PREFIX);
  ilb_prefix_stats s = pstats(d);
  assert_memory_formula(&s, 262144);
  free_pool(d);
}

/* r0 holds 64 long-lived blocks (its capacity by telemetry: 10^6), then
 * r1 floods the 1792-entry index with 5000 blocks. A full bucket reuses a
 * dead entry first: with r1's capacity 1 (one r1 entry alive at a time)
 * r0 must lose nothing. With r1's capacity 8000 every entry is alive and
 * a bucket evicts the sooner-expiring of two drawn (r1's before r0's): r0
 * loses a block only when both drawn are r0's -- a few of its 64 here
 * (6 when this was written); weighing one drawn entry alone loses 56. */
static int keep_lost(uint32_t r1_cap_blocks) {
  enum { KEEP = 64, FLOOD = 5000 };
  ilb_pool *p = events_pool(2);
  SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, 1024);
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, 16);
  report_kv(p, 0, 16, 1e6);
  report_kv(p, 1, 16, r1_cap_blocks);
  uint64_t keep[KEEP];
  seq_hashes(keep, KEEP, UINT64_C(0x4B00000000));
  for (int k = 0; k < KEEP; k++)
    store1(p, 0, keep[k]);
  assert_u64(entries(p), KEEP);
  for (int k = 0; k < FLOOD; k++)
    store1(p, 1, UINT64_C(0x5F00000000) + (uint64_t)k);
  ilb_prefix_stats s = pstats(p);
  assert_true(s.entries <= s.capacity);
  int lost = 0, i;
  for (int k = 0; k < KEEP; k++) {
    uint64_t m = matched_hashes(p, &keep[k], 1, &i);
    if (m)
      assert_int_equal(i, 0);
    lost += m == 0;
  }
  free_pool(p);
  return lost;
}

static void test_memory_evicts_soonest_expiring(void **state) {
  (void)state;
  int dead = keep_lost(1), live = keep_lost(8000);
  print_message("prefix: long-lived blocks evicted: %d with dead entries "
                "around, %d of 64 among live ones\n", dead, live);
  if (dead != 0)
    fail_msg("%d long-lived blocks evicted while dead entries shared "
             "their buckets", dead);
  if (live > 8)
    fail_msg("%d of 64 long-lived blocks evicted by entries expiring "
             "sooner (at most 8 expected from the two-way choice)", live);
}

#define MILLION 1000000
#define FEED_BLOCKS 32

static void test_memory_bound_picks(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(4);
  SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, 1024);
  ilb_prefix_stats s0 = pstats(p);
  assert_memory_formula(&s0, 1024);
  uint64_t h[FEED_BLOCKS], next = UINT64_C(0x100000000);
  const int picks = MILLION / FEED_BLOCKS;
  for (int k = 0; k < picks; k++) {
    seq_hashes(h, FEED_BLOCKS, next);
    next += FEED_BLOCKS;
    ilb_request r = blocks_req(h, FEED_BLOCKS);
    pick_done(p, &r);
    if (k % 2000 == 0) {
      ilb_prefix_stats s = pstats(p);
      assert_u64(s.capacity, s0.capacity);
      assert_u64(s.memory_bytes, s0.memory_bytes);
    }
  }
  ilb_prefix_stats s = pstats(p);
  assert_u64(s.capacity, s0.capacity);
  assert_u64(s.memory_bytes, s0.memory_bytes);
  assert_true(s.entries <= s.capacity);
  assert_true(s.entries > s.capacity / 2); /* the index is in use */
  assert_u64(s.lookups, (uint64_t)picks);
  assert_u64(s.blocks, (uint64_t)picks * FEED_BLOCKS);
  assert_u64(s.recorded + s.dropped, (uint64_t)picks * FEED_BLOCKS);
  assert_true(s.evicted > 0);
  /* the newest prompt is still there */
  int i;
  assert_u64(matched_hashes(p, h, FEED_BLOCKS, &i), FEED_BLOCKS);
  free_pool(p);
}

static void test_memory_bound_events(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(4);
  SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, 1024);
  SET_OPT(p, ILB_OPT_PREFIX_MODE, ILB_PREFIX_EVENTS);
  ilb_prefix_stats s0 = pstats(p);
  enum { BATCH = 1000 };
  uint64_t *h = malloc(BATCH * sizeof *h);
  assert_non_null(h);
  uint64_t next = UINT64_C(0x200000000);
  for (int k = 0; k < MILLION / BATCH; k++) {
    seq_hashes(h, BATCH, next);
    next += BATCH;
    KV_OK(p, rname(k % 4), ILB_KV_STORED, (uint64_t)k + 1, 0, h, BATCH);
    if (k % 100 == 0) {
      ilb_prefix_stats s = pstats(p);
      assert_u64(s.capacity, s0.capacity);
      assert_u64(s.memory_bytes, s0.memory_bytes);
    }
  }
  ilb_prefix_stats s = pstats(p);
  assert_u64(s.capacity, s0.capacity);
  assert_u64(s.memory_bytes, s0.memory_bytes);
  assert_true(s.entries <= s.capacity);
  assert_true(s.entries > s.capacity / 2);
  assert_u64(s.events, MILLION / BATCH);
  free(h);
  /* still an index: blocks stored now are found */
  uint64_t last[4];
  seq_hashes(last, 4, 0x1A57);
  KV_OK(p, "r3", ILB_KV_STORED, 0, 0, last, 4);
  int i;
  assert_u64(matched_hashes(p, last, 4, &i), 4);
  assert_int_equal(i, 3);
  /* a million records by events went through a 1792-entry index: entries
   * were evicted by the global cap, and records were written */
  if (s.evicted == 0 || s.recorded == 0)
    fail_msg("after 10^6 blocks stored by KV events into %llu entries: "
             "evicted %llu, recorded %llu (events' records and evictions "
             "are not counted)",
             (unsigned long long)s.capacity, (unsigned long long)s.evicted,
             (unsigned long long)s.recorded);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 5. Hot prefix and the load bound                                          */
/* ------------------------------------------------------------------------ */

#define HOT_N 8

/* `count` picks of one hot prompt (32 blocks of 256 tokens), none
 * completed, on HOT_N replicas with balance factor `factor` and BOUND_MIN
 * 0. With check_bound, after every pick no replica's in-flight count may
 * exceed ceil(c * T / N) (T counts the new one). Returns how many
 * replicas got at least one. */
static int hot_prefix(int64_t factor, int count, int check_bound) {
  ilb_pool *p = prefix_pool(HOT_N);
  SET_OPT(p, ILB_OPT_HASH_BALANCE_FACTOR, factor);
  SET_OPT(p, ILB_OPT_PREFIX_BOUND_MIN, 0);
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, 256);
  uint64_t h[32];
  seq_hashes(h, 32, 0xC0FFEE);
  ilb_request r = blocks_req(h, 32);
  uint64_t *t = calloc((size_t)count, sizeof *t);
  assert_non_null(t);
  int per[HOT_N] = {0};
  for (int k = 1; k <= count; k++) {
    per[pick(p, &r, &t[k - 1])]++;
    if (!check_bound)
      continue;
    int64_t bound = (factor * k + 100 * HOT_N - 1) / (100 * HOT_N);
    for (int i = 0; i < HOT_N; i++) {
      int64_t f = in_flight(p, i);
      assert_int_equal(f, per[i]);
      if (f > bound)
        fail_msg("pick %d: r%d has %lld in flight, bound %lld", k, i,
                 (long long)f, (long long)bound);
    }
  }
  int used = 0;
  for (int i = 0; i < HOT_N; i++)
    used += per[i] > 0;
  for (int k = 0; k < count; k++)
    done(p, t[k]);
  free(t);
  for (int i = 0; i < HOT_N; i++)
    assert_int_equal(in_flight(p, i), 0);
  free_pool(p);
  return used;
}

static void test_hot_prefix_bound_spreads(void **state) {
  (void)state;
  /* c = 1.25: at most ceil(1.25 * T / 8) each, so the load spreads */
  int used = hot_prefix(125, 200, 1);
  assert_int_equal(used, HOT_N);
  /* 48 requests: at most 8 each, so at least 6 replicas */
  assert_true(hot_prefix(125, 48, 1) >= 6);
}

static void test_hot_prefix_large_factor_stays(void **state) {
  (void)state;
  /* c = 100: the bound never binds; the cost model keeps the prefix on a
   * holder until its load (512 tokens a request) reaches the 8192 tokens
   * of prefill it saves: at least 16 requests on each replica used but
   * the last, so 48 requests use at most 3 replicas */
  int few = hot_prefix(10000, 48, 0);
  int many = hot_prefix(125, 48, 1);
  assert_in(few, 1, 3);
  assert_true(few < many);
}

/* A conversation of 6 turns, each adding 4 blocks to a 32-block history,
 * with `bg` cheap requests (1 token each) left in flight on its replica.
 * Returns how many of turns 2..6 stayed on the replica of turn 1. */
static int conversation_turns(int64_t bound_min, int bg) {
  enum { N = 4 };
  ilb_pool *p = prefix_pool(N);
  SET_OPT(p, ILB_OPT_PREFIX_BOUND_MIN, bound_min);
  uint64_t h[32 + 4 * 5];
  seq_hashes(h, sizeof h / sizeof h[0], 0xCAFE00);
  ilb_request r = blocks_req(h, 32);
  int home = pick_done(p, &r);
  uint64_t t[16];
  assert_true(bg <= 16);
  load_on(p, N, home, bg, 1, t);
  int stayed = 0;
  for (int turn = 2; turn <= 6; turn++) {
    r = blocks_req(h, 32 + 4 * (size_t)(turn - 1));
    int i;
    uint64_t m = matched_by(p, &r, &i);
    if (i == home) {
      stayed++;
      assert_u64(m, 32 + 4 * (uint64_t)(turn - 2));
    }
  }
  for (int k = 0; k < bg; k++)
    done(p, t[k]);
  free_pool(p);
  return stayed;
}

static void test_bound_min_keeps_conversation(void **state) {
  (void)state;
  /* BOUND_MIN 8 (default): with 2 or 7 requests in flight on the home
   * replica (bound ceil(1.25 * (T + 1) / 4) = 1 or 3) every turn stays */
  assert_int_equal(conversation_turns(8, 2), 5);
  assert_int_equal(conversation_turns(8, 7), 5);
  /* at 8 in flight the floor no longer covers it: the bound moves it */
  assert_int_equal(conversation_turns(8, 8), 0);
  /* the bound alone (BOUND_MIN 0) moves it at 2 */
  assert_int_equal(conversation_turns(0, 2), 0);
  /* and the default is 8 */
  ilb_pool *p = prefix_pool(1);
  int64_t v;
  assert_rc(ilb_pool_get_option(&v, p, ILB_OPT_PREFIX_BOUND_MIN), ILB_OK);
  assert_int_equal(v, 8);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 6. Cold prompts                                                           */
/* ------------------------------------------------------------------------ */

static void test_cold_prompt_least_loaded(void **state) {
  (void)state;
  enum { N = 4 };
  ilb_pool *p = new_pool(ILB_POLICY_PREFIX);
  for (int i = 0; i < N; i++) /* r3 takes one request at most */
    add_replica(p, rname(i), 1, i == 3 ? 1 : 0, (void *)(uintptr_t)(i + 1));
  uint64_t held[16];
  size_t nh = 0;
  /* tokens in flight: r0 1536, r1 512, r2 1024, r3 1 but full */
  load_on(p, N, 0, 3, 0, held + nh);
  nh += 3;
  load_on(p, N, 1, 1, 0, held + nh);
  nh += 1;
  load_on(p, N, 2, 2, 0, held + nh);
  nh += 2;
  load_on(p, N, 3, 1, 1, held + nh);
  nh += 1;
  assert_u64(tokens_of(p, 0), 3 * DEF_TOKEN_COST);
  assert_u64(tokens_of(p, 3), 1);
  uint64_t cold[8];
  for (int k = 0; k < 8; k++) {
    uint64_t tok[N], min = UINT64_MAX;
    for (int i = 0; i < N; i++) {
      tok[i] = tokens_of(p, i);
      if (i != 3 && tok[i] < min)
        min = tok[i];
    }
    uint64_t h[8];
    seq_hashes(h, 8, 0xD00D0000 + 100 * (uint64_t)k); /* matches nowhere */
    ilb_request r = blocks_req(h, 8);
    uint64_t m0 = pstats(p).matched_blocks;
    int i = pick(p, &r, &cold[k]);
    assert_u64(pstats(p).matched_blocks, m0);
    if (i == 3)
      fail_msg("cold prompt %d went to the full replica", k);
    if (tok[i] != min)
      fail_msg("cold prompt %d went to r%d (%llu tokens), least is %llu", k,
               i, (unsigned long long)tok[i], (unsigned long long)min);
  }
  assert_int_equal(in_flight(p, 3), 1);
  /* water-filling: the three with room end within one request */
  uint64_t lo = UINT64_MAX, hi = 0;
  for (int i = 0; i < 3; i++) {
    uint64_t v = tokens_of(p, i);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  assert_true(hi - lo <= DEF_TOKEN_COST);
  for (int k = 0; k < 8; k++)
    done(p, cold[k]);
  for (size_t k = 0; k < nh; k++)
    done(p, held[k]);
  free_pool(p);
}

/* A holder that is full is skipped too; with every replica full the pick
 * fails ILB_ESATURATED and nothing is counted. */
static void test_cold_prompt_never_full(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_PREFIX);
  add_replica(p, "r0", 1, 1, (void *)(uintptr_t)1);
  add_replica(p, "r1", 1, 1, (void *)(uintptr_t)2);
  uint64_t h[8];
  seq_hashes(h, 8, 0xF011);
  ilb_request r = blocks_req(h, 8);
  uint64_t t0, t1;
  int a = pick(p, &r, &t0);
  int b = pick(p, &r, &t1); /* the holder is full: the other one */
  assert_int_not_equal(a, b);
  int i;
  uint64_t t;
  ilb_prefix_stats s0 = pstats(p);
  assert_rc(try_pick(p, &r, &i, &t), ILB_ESATURATED);
  assert_int_equal(in_flight(p, 0), 1);
  assert_int_equal(in_flight(p, 1), 1);
  assert_u64(pstats(p).lookups, s0.lookups); /* a failed pick is no lookup */
  done(p, t0);
  assert_int_equal(pick(p, &r, &t), a);
  done(p, t);
  done(p, t1);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 7. Cost model                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
  int64_t prefill, load;   /* PREFIX_PREFILL_WEIGHT, LOAD_WEIGHT */
  uint32_t w_holder, w_idle;
  uint32_t load_tokens;    /* in flight on the holder */
  int want;                /* 0: the holder (r0), 1: the idle one (r1) */
} cost_case;

/* r0 holds a 16-block prompt (1024 tokens of prefill) and has one request
 * of load_tokens in flight; r1 is idle. Where does the prompt go? Costs:
 * holder PREFILL% * 0 + LOAD% * load, idle PREFILL% * 1024, each divided
 * by the replica's weight. */
static void test_cost_crossover(void **state) {
  (void)state;
  static const cost_case cases[] = {
      {100, 100, 1, 1, 1000, 0}, /* 1000 < 1024 */
      {100, 100, 1, 1, 1100, 1}, /* 1100 > 1024 */
      {200, 100, 1, 1, 2000, 0}, /* 2000 < 2048 */
      {200, 100, 1, 1, 2100, 1},
      {100, 50, 1, 1, 2000, 0},  /* 1000 < 1024 */
      {100, 50, 1, 1, 2100, 1},  /* 1050 > 1024 */
      {100, 100, 2, 1, 2000, 0}, /* 2000 / 2 < 1024 */
      {100, 100, 2, 1, 2100, 1}, /* 2100 / 2 > 1024 */
      {100, 100, 1, 4, 200, 0},  /* 200 < 1024 / 4 */
      {100, 100, 1, 4, 300, 1},  /* 300 > 256 */
      {100, 0, 1, 1, 100000, 0}, /* load costs nothing */
      {0, 100, 1, 1, 1, 1},      /* prefill costs nothing: 1 > 0 */
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    const cost_case *c = &cases[k];
    ilb_pool *p = new_pool(ILB_POLICY_PREFIX);
    SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
    SET_OPT(p, ILB_OPT_PREFIX_PREFILL_WEIGHT, c->prefill);
    SET_OPT(p, ILB_OPT_PREFIX_LOAD_WEIGHT, c->load);
    add_replica(p, "r0", c->w_holder, 0, (void *)(uintptr_t)1);
    add_replica(p, "r1", c->w_idle, 0, (void *)(uintptr_t)2);
    uint64_t h[16];
    seq_hashes(h, 16, 0xB10C);
    ilb_request r = blocks_req(h, 16);
    route_to(p, 2, 0, &r);
    uint64_t t;
    load_on(p, 2, 0, 1, c->load_tokens, &t);
    assert_u64(tokens_of(p, 0), c->load_tokens);
    int i;
    uint64_t m = matched_by(p, &r, &i);
    if (i != c->want)
      fail_msg("case %zu (prefill %lld%%, load %lld%%, weights %u/%u, load "
               "%u tokens): went to r%d, expected r%d",
               k, (long long)c->prefill, (long long)c->load, c->w_holder,
               c->w_idle, c->load_tokens, i, c->want);
    assert_u64(m, i == 0 ? 16 : 0);
    done(p, t);
    free_pool(p);
  }
}

/* The prompt's token count comes from prompt_tokens when given (else
 * blocks x BLOCK_TOKENS): a 4-block match saves 4 x BLOCK_TOKENS. */
static void test_cost_prompt_tokens(void **state) {
  (void)state;
  for (int big = 0; big < 2; big++) {
    ilb_pool *p = prefix_pool(2);
    SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
    uint64_t h[4];
    seq_hashes(h, 4, 0x7070);
    ilb_request r = blocks_req(h, 4);
    route_to(p, 2, 0, &r);
    uint64_t t;
    load_on(p, 2, 0, 1, 300, &t);
    /* holder: (P - 256) + 300; idle: P. The holder wins exactly when the
     * saving (256) beats its load (300): never, whatever P */
    r.prompt_tokens = big ? 100000 : 400;
    int i;
    matched_by(p, &r, &i);
    assert_int_equal(i, 1);
    done(p, t);
    free_pool(p);
  }
  /* with BLOCK_TOKENS 128 the same 4 blocks save 512 > 300 */
  ilb_pool *p = prefix_pool(2);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, 128);
  uint64_t h[4];
  seq_hashes(h, 4, 0x7070);
  ilb_request r = blocks_req(h, 4);
  route_to(p, 2, 0, &r);
  uint64_t t;
  load_on(p, 2, 0, 1, 300, &t);
  r.prompt_tokens = 5000;
  int i;
  assert_u64(matched_by(p, &r, &i), 4);
  assert_int_equal(i, 0);
  done(p, t);
  free_pool(p);
  /* prompt_tokens below the blocks' worth: the saving is capped by it.
   * 4 blocks of 64 tokens, the holder carries 200 in flight: without
   * prompt_tokens the prompt counts 256 (holder 200 < idle 256: holder);
   * with prompt_tokens 100 (holder 200 > idle 100: the idle one). */
  for (int given = 0; given < 2; given++) {
    p = prefix_pool(2);
    SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
    seq_hashes(h, 4, 0x7171);
    r = blocks_req(h, 4);
    route_to(p, 2, 0, &r);
    load_on(p, 2, 0, 1, 200, &t);
    r.prompt_tokens = given ? 100 : 0;
    matched_by(p, &r, &i);
    assert_int_equal(i, given ? 1 : 0);
    done(p, t);
    free_pool(p);
  }
}

/* Larger pools are sampled (ILB_OPT_SCAN_MAX), but the holders found are
 * compared too: a prefix held by one replica of 12 is found every time,
 * and a full holder is passed over. */
static void test_cost_sampling_offers_holders(void **state) {
  (void)state;
  enum { N = 12 };
  ilb_pool *p = events_pool(N);
  SET_OPT(p, ILB_OPT_SCAN_MAX, 0);
  SET_OPT(p, ILB_OPT_P2C_CHOICES, 2);
  uint64_t a[16];
  seq_hashes(a, 16, 0x5A3B);
  KV_OK(p, rname(7), ILB_KV_STORED, 0, 0, a, 16);
  for (int k = 0; k < 50; k++) {
    int i;
    assert_u64(matched_hashes(p, a, 16, &i), 16);
    assert_int_equal(i, 7);
  }
  free_pool(p);
  /* the holder at its capacity: never chosen */
  p = new_pool(ILB_POLICY_PREFIX);
  SET_OPT(p, ILB_OPT_PREFIX_MODE, ILB_PREFIX_EVENTS);
  SET_OPT(p, ILB_OPT_SCAN_MAX, 0);
  for (int i = 0; i < N; i++)
    add_replica(p, rname(i), 1, i == 7 ? 1 : 0, (void *)(uintptr_t)(i + 1));
  KV_OK(p, rname(7), ILB_KV_STORED, 0, 0, a, 16);
  uint64_t t;
  load_on(p, N, 7, 1, 1, &t);
  for (int k = 0; k < 50; k++) {
    int i;
    assert_u64(matched_hashes(p, a, 16, &i), 0);
    assert_int_not_equal(i, 7);
  }
  done(p, t);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 8. Removal, re-adding, active health                                      */
/* ------------------------------------------------------------------------ */

static void test_remove_forgets(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(3);
  uint64_t a[12];
  conversation(a, 7);
  ilb_request r = blocks_req(a, 12);
  route_to(p, 3, 0, &r);
  assert_u64(entries(p), 12);
  int i;
  assert_u64(matched_by(p, &r, &i), 12); /* sanity: r0 holds it */
  assert_int_equal(i, 0);
  assert_rc(ilb_replica_remove(p, "r0"), ILB_OK);
  assert_u64(entries(p), 0);
  assert_u64(matched_by(p, &r, &i), 0);
  assert_true(i == 1 || i == 2);
  free_pool(p);
}

/* Removed inside a batch: picks keep seeing the replica until the commit
 * (and may record on it); once the removal is published its records are
 * gone all the same. */
static void test_remove_in_batch_forgets(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(2);
  uint64_t a[12];
  conversation(a, 6);
  ilb_request r = blocks_req(a, 12);
  route_to(p, 2, 0, &r);
  assert_u64(entries(p), 12);
  set_avail(p, 1, 0);
  assert_rc(ilb_pool_batch_begin(p), ILB_OK);
  assert_rc(ilb_replica_remove(p, "r0"), ILB_OK);
  uint64_t t;
  int i = pick(p, &r, &t); /* the previous snapshot: r0 */
  assert_int_equal(i, 0);
  assert_rc(ilb_pool_batch_commit(p), ILB_OK);
  set_avail(p, 1, 1);
  assert_rc(ilb_complete(p, t, NULL), ILB_EREMOVED);
  uint64_t e = entries(p);
  if (e != 0)
    fail_msg("r0 removed (in a batch): the index still has %llu entries "
             "with a live holder",
             (unsigned long long)e);
  assert_u64(matched_by(p, &r, &i), 0);
  assert_int_equal(i, 1);
  free_pool(p);
}

static void test_readd_starts_empty(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(1);
  uint64_t a[12];
  conversation(a, 8);
  ilb_request r = blocks_req(a, 12);
  assert_u64(matched_by(p, &r, NULL), 0);
  assert_u64(matched_by(p, &r, NULL), 12);
  assert_rc(ilb_replica_remove(p, "r0"), ILB_OK);
  add_replica(p, "r0", 1, 0, (void *)(uintptr_t)1);
  assert_u64(entries(p), 0);
  assert_u64(matched_by(p, &r, NULL), 0);
  assert_u64(matched_by(p, &r, NULL), 12);
  /* removed and re-added in one batch */
  assert_rc(ilb_pool_batch_begin(p), ILB_OK);
  assert_rc(ilb_replica_remove(p, "r0"), ILB_OK);
  add_replica(p, "r0", 1, 0, (void *)(uintptr_t)1);
  assert_rc(ilb_pool_batch_commit(p), ILB_OK);
  assert_u64(entries(p), 0);
  assert_u64(matched_by(p, &r, NULL), 0);
  /* while a request of the old incarnation is still in flight */
  uint64_t t;
  pick(p, &r, &t);
  assert_rc(ilb_replica_remove(p, "r0"), ILB_OK);
  add_replica(p, "r0", 1, 0, (void *)(uintptr_t)1);
  assert_rc(ilb_complete(p, t, NULL), ILB_EREMOVED);
  assert_u64(matched_by(p, &r, NULL), 0);
  free_pool(p);
}

/* Active health takes r0 out with `result` probes (FALL of them); its
 * records are forgotten; back healthy, it starts empty. */
static void health_forgets(int32_t result, int32_t want_health) {
  ilb_pool *p = prefix_pool(2);
  uint64_t a[12];
  conversation(a, 9);
  ilb_request r = blocks_req(a, 12);
  route_to(p, 2, 0, &r);
  assert_u64(entries(p), 12);
  int64_t fall;
  assert_rc(ilb_pool_get_option(&fall, p, ILB_OPT_HEALTH_FALL), ILB_OK);
  assert_int_equal(fall, 3);
  for (int k = 0; k < fall - 1; k++)
    assert_rc(ilb_health_report(p, "r0", result), ILB_OK);
  /* not out yet: still held */
  assert_int_equal(get_info(p, "r0").health, ILB_HEALTH_HEALTHY);
  assert_u64(entries(p), 12);
  assert_rc(ilb_health_report(p, "r0", result), ILB_OK);
  assert_int_equal(get_info(p, "r0").health, want_health);
  assert_u64(entries(p), 0);
  int64_t rise;
  assert_rc(ilb_pool_get_option(&rise, p, ILB_OPT_HEALTH_RISE), ILB_OK);
  for (int k = 0; k < rise; k++)
    assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_OK);
  assert_int_equal(get_info(p, "r0").health, ILB_HEALTH_HEALTHY);
  set_avail(p, 1, 0);
  int i;
  assert_u64(matched_by(p, &r, &i), 0);
  assert_int_equal(i, 0);
  free_pool(p);
}

static void test_health_fail_forgets(void **state) {
  (void)state;
  health_forgets(ILB_PROBE_FAIL, ILB_HEALTH_UNHEALTHY);
}

static void test_health_not_ready_forgets(void **state) {
  (void)state;
  health_forgets(ILB_PROBE_NOT_READY, ILB_HEALTH_STARTING);
}

/* ------------------------------------------------------------------------ */
/* 9. KV events                                                              */
/* ------------------------------------------------------------------------ */

static void test_kv_events_mode(void **state) {
  (void)state;
  ilb_pool *p = events_pool(3);
  uint64_t a[8];
  seq_hashes(a, 8, 0xAAA0);
  /* picks do not record in ILB_PREFIX_EVENTS */
  assert_u64(matched_hashes(p, a, 8, NULL), 0);
  assert_u64(matched_hashes(p, a, 8, NULL), 0);
  ilb_prefix_stats s = pstats(p);
  assert_u64(s.entries, 0);
  assert_u64(s.recorded, 0);
  assert_u64(s.lookups, 2);
  /* STORED makes r1 a holder */
  KV_OK(p, "r1", ILB_KV_STORED, 0, 0, a, 8);
  assert_u64(entries(p), 8);
  assert_u64(pstats(p).events, 1);
  int i;
  assert_u64(matched_hashes(p, a, 8, &i), 8);
  assert_int_equal(i, 1);
  /* r2 holds the first half: r1 is still the better holder */
  KV_OK(p, "r2", ILB_KV_STORED, 0, 0, a, 4);
  assert_u64(entries(p), 8);
  assert_u64(matched_hashes(p, a, 8, &i), 8);
  assert_int_equal(i, 1);
  /* REMOVED drops r1's records of those blocks only */
  KV_OK(p, "r1", ILB_KV_REMOVED, 0, 0, a, 8);
  assert_u64(entries(p), 4);
  assert_u64(matched_hashes(p, a, 8, &i), 4);
  assert_int_equal(i, 2);
  /* REMOVED of blocks a replica does not hold changes nothing */
  KV_OK(p, "r0", ILB_KV_REMOVED, 0, 0, a, 8);
  assert_u64(entries(p), 4);
  /* CLEARED drops everything of r2 */
  uint64_t other[3] = {1, 2, 3};
  KV_OK(p, "r2", ILB_KV_STORED, 0, 0, other, 3);
  KV_OK(p, "r0", ILB_KV_STORED, 0, 0, a + 7, 1);
  assert_u64(entries(p), 8);
  KV_OK(p, "r2", ILB_KV_CLEARED, 0, 0, NULL, 0);
  assert_u64(entries(p), 1); /* r0's a[7] */
  assert_u64(matched_hashes(p, a, 8, NULL), 0);
  assert_u64(pstats(p).events, 7);
  free_pool(p);

  /* in ILB_PREFIX_ROUTED mode events apply too */
  p = prefix_pool(3);
  KV_OK(p, "r2", ILB_KV_STORED, 0, 0, a, 8);
  assert_u64(matched_hashes(p, a, 8, &i), 8);
  assert_int_equal(i, 2);
  free_pool(p);
}

static void test_kv_sequence_numbers(void **state) {
  (void)state;
  ilb_pool *p = events_pool(2);
  const uint64_t a = 11, b = 12, c = 13, d = 14, e = 15, f = 16;
  uint64_t applied = 0, stale = 0;
#define APPLIED(rc_expr)                                                     \
  do {                                                                       \
    assert_rc(rc_expr, ILB_OK);                                              \
    applied++;                                                               \
  } while (0)
#define STALE(rc_expr)                                                       \
  do {                                                                       \
    assert_rc(rc_expr, ILB_ESTALE);                                          \
    stale++;                                                                 \
  } while (0)
#define COUNTS()                                                             \
  do {                                                                       \
    ilb_prefix_stats s_ = pstats(p);                                         \
    assert_u64(s_.events, applied);                                          \
    assert_u64(s_.stale_events, stale);                                      \
  } while (0)

  APPLIED(kv(p, "r0", ILB_KV_STORED, 5, 0, &a, 1));
  /* below the last applied: refused, nothing changes */
  STALE(kv(p, "r0", ILB_KV_CLEARED, 3, 0, NULL, 0));
  STALE(kv(p, "r0", ILB_KV_STORED, 4, 0, &b, 1));
  STALE(kv(p, "r0", ILB_KV_REMOVED, 1, 0, &a, 1));
  COUNTS();
  assert_u64(entries(p), 1);
  assert_u64(matched_hashes(p, &a, 1, NULL), 1);
  assert_u64(matched_hashes(p, &b, 1, NULL), 0);
  /* equal: the same batch */
  APPLIED(kv(p, "r0", ILB_KV_STORED, 5, 0, &b, 1));
  assert_u64(entries(p), 2);
  /* 0: unordered, always applied, and not a new baseline */
  APPLIED(kv(p, "r0", ILB_KV_STORED, 0, 0, &c, 1));
  assert_u64(entries(p), 3);
  STALE(kv(p, "r0", ILB_KV_STORED, 4, 0, &d, 1));
  /* each replica has its own baseline */
  APPLIED(kv(p, "r1", ILB_KV_STORED, 1, 0, &e, 1));
  APPLIED(kv(p, "r0", ILB_KV_STORED, 9, 0, &d, 1));
  COUNTS();
  assert_u64(entries(p), 5);
  /* RESTART: a lower seq accepted, and what r0 had is forgotten first */
  APPLIED(kv(p, "r0", ILB_KV_STORED, 2, ILB_KV_RESTART, &f, 1));
  assert_u64(entries(p), 2); /* r0: f; r1: e */
  assert_u64(matched_hashes(p, &a, 1, NULL), 0);
  assert_u64(matched_hashes(p, &f, 1, NULL), 1);
  /* the new baseline is 2 */
  APPLIED(kv(p, "r0", ILB_KV_STORED, 2, 0, &a, 1));
  STALE(kv(p, "r0", ILB_KV_STORED, 1, 0, &b, 1));
  APPLIED(kv(p, "r0", ILB_KV_STORED, 3, 0, &b, 1));
  /* RESTART with CLEARED, seq 0 */
  APPLIED(kv(p, "r0", ILB_KV_CLEARED, 0, ILB_KV_RESTART, NULL, 0));
  assert_u64(entries(p), 1); /* r1's e */
  APPLIED(kv(p, "r0", ILB_KV_STORED, 1, 0, &a, 1)); /* baseline 0 now */
  COUNTS();
  /* a removed and re-added replica starts a new sequence */
  APPLIED(kv(p, "r1", ILB_KV_STORED, 100, 0, &e, 1));
  assert_rc(ilb_replica_remove(p, "r1"), ILB_OK);
  add_replica(p, "r1", 1, 0, (void *)(uintptr_t)2);
  APPLIED(kv(p, "r1", ILB_KV_STORED, 1, 0, &e, 1));
  COUNTS();
#undef APPLIED
#undef STALE
#undef COUNTS
  free_pool(p);
}

static void test_kv_event_bad_args(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(2);
  uint64_t h[2] = {1, 2};
  ilb_kv_event ev;
  assert_rc(ilb_kv_event_init(NULL), ILB_EINVAL);
  memset(&ev, 0x5A, sizeof ev);
  assert_rc(ilb_kv_event_init(&ev), ILB_OK);
  assert_int_equal(ev.struct_size, sizeof ev);
  assert_int_equal(ev.type, 0);
  assert_int_equal(ev.flags, 0);
  assert_u64(ev.seq, 0);
  assert_null(ev.block_hashes);
  assert_int_equal(ev.n_blocks, 0);

  ev.type = ILB_KV_STORED;
  ev.block_hashes = h;
  ev.n_blocks = 2;
  assert_rc(ilb_replica_kv_event(NULL, "r0", &ev), ILB_EINVAL);
  assert_rc(ilb_replica_kv_event(p, NULL, &ev), ILB_EINVAL);
  assert_rc(ilb_replica_kv_event(p, "r0", NULL), ILB_EINVAL);
  const int32_t bad_types[] = {0, 4, -1, 1000};
  for (size_t k = 0; k < sizeof bad_types / sizeof bad_types[0]; k++) {
    ilb_kv_event e = ev;
    e.type = bad_types[k];
    assert_rc(ilb_replica_kv_event(p, "r0", &e), ILB_EINVAL);
  }
  ilb_kv_event e = ev;
  e.flags = 2;
  assert_rc(ilb_replica_kv_event(p, "r0", &e), ILB_EINVAL);
  e.flags = ILB_KV_RESTART | 0x80000000u;
  assert_rc(ilb_replica_kv_event(p, "r0", &e), ILB_EINVAL);
  e = ev;
  e.block_hashes = NULL;
  assert_rc(ilb_replica_kv_event(p, "r0", &e), ILB_EINVAL);
  e = ev;
  e.struct_size = 0;
  assert_rc(ilb_replica_kv_event(p, "r0", &e), ILB_ESIZE);
  e.struct_size = sizeof e - 1;
  assert_rc(ilb_replica_kv_event(p, "r0", &e), ILB_ESIZE);
  /* a newer caller's larger struct: a zero tail is fine, else ESIZE */
  struct {
    ilb_kv_event ev;
    unsigned char tail[16];
  } big;
  memset(&big, 0, sizeof big);
  big.ev = ev;
  big.ev.struct_size = sizeof big;
  big.tail[5] = 1;
  assert_rc(ilb_replica_kv_event(p, "r0", &big.ev), ILB_ESIZE);
  assert_rc(ilb_replica_kv_event(p, "nope", &ev), ILB_ENOENT);
  /* none of these changed anything */
  ilb_prefix_stats s = pstats(p);
  assert_u64(s.events, 0);
  assert_u64(s.entries, 0);
  big.tail[5] = 0;
  assert_rc(ilb_replica_kv_event(p, "r0", &big.ev), ILB_OK);
  assert_u64(entries(p), 2);
  /* no blocks: a valid (empty) STORED */
  e = ev;
  e.block_hashes = NULL;
  e.n_blocks = 0;
  assert_rc(ilb_replica_kv_event(p, "r0", &e), ILB_OK);
  assert_u64(pstats(p).events, 2);
  free_pool(p);

  /* a pool whose policy is not prefix has no index */
  p = new_pool(ILB_POLICY_P2C);
  add_n(p, 1);
  assert_rc(ilb_replica_kv_event(p, "r0", &ev), ILB_EINVAL);
  free_pool(p);
}

static void test_stats_bad_args(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(1);
  ilb_prefix_stats s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  assert_rc(ilb_pool_prefix_stats(NULL, p), ILB_EINVAL);
  assert_rc(ilb_pool_prefix_stats(&s, NULL), ILB_EINVAL);
  s.struct_size = 0;
  assert_rc(ilb_pool_prefix_stats(&s, p), ILB_ESIZE);
  s.struct_size = sizeof(size_t);
  assert_rc(ilb_pool_prefix_stats(&s, p), ILB_ESIZE);
  s.struct_size = offsetof(ilb_prefix_stats, entries) + sizeof(uint64_t) - 1;
  assert_rc(ilb_pool_prefix_stats(&s, p), ILB_ESIZE);
  /* the smallest accepted: up to entries; nothing written past it */
  uint64_t a[3] = {1, 2, 3};
  KV_OK(p, "r0", ILB_KV_STORED, 0, 0, a, 3);
  memset(&s, 0x5A, sizeof s);
  size_t small = offsetof(ilb_prefix_stats, entries) + sizeof(uint64_t);
  s.struct_size = small;
  assert_rc(ilb_pool_prefix_stats(&s, p), ILB_OK);
  assert_int_equal(s.struct_size, small);
  assert_u64(s.entries, 3);
  unsigned char poison[sizeof s];
  memset(poison, 0x5A, sizeof poison);
  assert_memory_equal((unsigned char *)&s + small, poison + small,
                      sizeof s - small);
  /* a larger (newer) struct: filled to the library's size */
  struct {
    ilb_prefix_stats st;
    uint64_t more[4];
  } big;
  memset(&big, 0, sizeof big);
  big.st.struct_size = sizeof big;
  assert_rc(ilb_pool_prefix_stats(&big.st, p), ILB_OK);
  assert_int_equal(big.st.struct_size, sizeof(ilb_prefix_stats));
  assert_u64(big.st.entries, 3);
  assert_u64(big.st.events, 1);
  free_pool(p);
  /* not prefix */
  p = new_pool(ILB_POLICY_LEAST_TOKENS);
  s.struct_size = sizeof s;
  assert_rc(ilb_pool_prefix_stats(&s, p), ILB_EINVAL);
  free_pool(p);
}

/* From a callback of the same pool both calls are ILB_EDEADLK. */
typedef struct {
  ilb_pool *pool;
  int calls, kv_rc, stats_rc;
} cb_state;

static void deadlock_cb(const ilb_event *e, void *user_data) {
  cb_state *c = user_data;
  if (!c->pool || e->type != ILB_EVENT_REPLICA_ADDED)
    return;
  uint64_t h = 1;
  ilb_kv_event ev;
  ilb_kv_event_init(&ev);
  ev.type = ILB_KV_STORED;
  ev.block_hashes = &h;
  ev.n_blocks = 1;
  ilb_prefix_stats s;
  s.struct_size = sizeof s;
  c->calls++;
  c->kv_rc = ilb_replica_kv_event(c->pool, "r0", &ev);
  c->stats_rc = ilb_pool_prefix_stats(&s, c->pool);
}

static void test_callbacks_edeadlk(void **state) {
  (void)state;
  cb_state c = {NULL, 0, 0, 0};
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.on_event = deadlock_cb;
  h.user_data = &c;
  ilb_pool *p = new_pool_host(ILB_POLICY_PREFIX, &h);
  add_n(p, 1);
  c.pool = p;
  add_replica(p, "r1", 1, 0, (void *)(uintptr_t)2);
  assert_int_equal(c.calls, 1);
  assert_rc(c.kv_rc, ILB_EDEADLK);
  assert_rc(c.stats_rc, ILB_EDEADLK);
  ilb_prefix_stats s = pstats(p);
  assert_u64(s.events, 0);
  assert_u64(s.entries, 0);
  c.pool = NULL;
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 10. Request validation                                                    */
/* ------------------------------------------------------------------------ */

static void test_request_validation_all_policies(void **state) {
  (void)state;
  uint64_t h[4] = {1, 2, 3, 4};
  static const char text[600] = "x";
  for (size_t k = 0; k < N_POLICIES; k++) {
    ilb_pool *p = new_pool(all_policies[k]);
    add_n(p, 2);
    ilb_request bad[3];
    bad[0] = blocks_req(NULL, 3);
    bad[1] = prompt_req(NULL, 5, NULL, NULL);
    bad[2] = prompt_req(text, sizeof text, NULL, NULL);
    bad[2].n_attrs = 1; /* attrs NULL */
    for (int b = 0; b < 3; b++) {
      int i;
      uint64_t t;
      int rc = try_pick(p, &bad[b], &i, &t);
      if (rc != ILB_EINVAL)
        fail_msg("policy %s, bad request %d: %s, expected EINVAL",
                 ilb_policy_name(all_policies[k]), b, ilb_err_name(rc));
    }
    for (int i = 0; i < 2; i++) {
      ilb_replica_info in = get_info(p, rname(i));
      assert_int_equal(in.in_flight, 0);
      assert_u64(in.tokens_in_flight, 0);
    }
    assert_u64(pstat(p).in_flight, 0);
    if (all_policies[k] == ILB_POLICY_PREFIX)
      assert_u64(pstats(p).lookups, 0);
    /* valid blocks and prompt: accepted (ignored by the others) */
    ilb_request ok = blocks_req(h, 4);
    ok.prompt = text;
    ok.prompt_len = sizeof text;
    ilb_request key = ok;
    key.key = "session";
    key.key_len = 7;
    pick_done(p, &ok);
    pick_done(p, &key);
    assert_u64(pstat(p).in_flight, 0);
    free_pool(p);
  }
}

/* ------------------------------------------------------------------------ */
/* 11. Options                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
  int32_t opt;
  int64_t min, max, def;
} bound_row;

static void test_option_bounds(void **state) {
  (void)state;
  static const bound_row rows[] = {
      {ILB_OPT_PREFIX_BLOCK_BYTES, 16, 1048576, 256},
      {ILB_OPT_PREFIX_BLOCK_TOKENS, 1, 1048576, 64},
      {ILB_OPT_PREFIX_MAX_BLOCKS, 1, 256, 128},
      {ILB_OPT_PREFIX_TABLE_BLOCKS, 1024, 16777216, 262144},
      {ILB_OPT_PREFIX_REPLICA_TOKENS, 1, INT64_C(1) << 40, 262144},
      {ILB_OPT_PREFIX_MODE, ILB_PREFIX_ROUTED, ILB_PREFIX_EVENTS,
       ILB_PREFIX_ROUTED},
      {ILB_OPT_PREFIX_PREFILL_WEIGHT, 0, 100000, 100},
      {ILB_OPT_PREFIX_LOAD_WEIGHT, 0, 100000, 25},
      {ILB_OPT_PREFIX_QUEUE_WEIGHT, 0, 100000, 100},
      {ILB_OPT_PREFIX_BOUND_MIN, 0, 16777216, 8},
  };
  assert_int_equal(sizeof rows / sizeof rows[0], 10);
  ilb_pool *fresh = NULL;
  assert_rc(ilb_pool_new(&fresh, NULL), ILB_OK);
  track_pool(fresh);
  ilb_pool *p = prefix_pool(1);
  for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
    const bound_row *b = &rows[k];
    assert_int_equal(b->opt, ILB_OPT_PREFIX_BLOCK_BYTES + (int32_t)k);
    int64_t v = -7;
    assert_option_doc(fresh, b->opt, b->min, b->max, b->def);
    if (b->opt != ILB_OPT_PREFIX_TABLE_BLOCKS) { /* max: a 1.25 GiB index */
      SET_OPT(p, b->opt, b->max);
      assert_rc(ilb_pool_get_option(&v, p, b->opt), ILB_OK);
      assert_int_equal(v, b->max);
    }
    SET_OPT(p, b->opt, b->min);
  }
  int64_t mx;
  assert_rc(ilb_option_bounds(NULL, &mx, NULL, ILB_OPT_POLICY), ILB_OK);
  assert_int_equal(mx, ILB_POLICY_PREFIX);
  assert_string_equal(ilb_policy_name(ILB_POLICY_PREFIX), "prefix");
  int32_t id;
  assert_rc(ilb_policy_from_name(&id, "prefix"), ILB_OK);
  assert_int_equal(id, ILB_POLICY_PREFIX);
  free_pool(p);
  free_pool(fresh);
}

static void test_table_change_empties(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(2);
  uint64_t a[12];
  conversation(a, 3);
  int i;
  matched_hashes(p, a, 12, &i);
  assert_u64(matched_hashes(p, a, 12, NULL), 12);
  KV_OK(p, "r1", ILB_KV_STORED, 0, 0, a, 2);
  ilb_prefix_stats s0 = pstats(p);
  assert_true(s0.entries > 0 && s0.lookups == 2 && s0.events == 1);
  /* another option keeps the index */
  SET_OPT(p, ILB_OPT_PREFIX_BOUND_MIN, 4);
  SET_OPT(p, ILB_OPT_PREFIX_MODE, ILB_PREFIX_EVENTS);
  assert_u64(pstats(p).entries, s0.entries);
  SET_OPT(p, ILB_OPT_PREFIX_MODE, ILB_PREFIX_ROUTED);
  /* TABLE_BLOCKS empties it, counters included */
  SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, 2 * SMALL_TABLE);
  ilb_prefix_stats s1 = pstats(p);
  assert_u64(s1.entries, 0);
  assert_true(s1.capacity > s0.capacity);
  assert_memory_formula(&s1, 2 * SMALL_TABLE);
  assert_u64(s1.lookups, 0);
  assert_u64(s1.blocks, 0);
  assert_u64(s1.matched_blocks, 0);
  assert_u64(s1.recorded, 0);
  assert_u64(s1.events, 0);
  assert_u64(matched_hashes(p, a, 12, NULL), 0);
  /* setting the same value again is no change */
  assert_u64(matched_hashes(p, a, 12, NULL), 12);
  SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, 2 * SMALL_TABLE);
  assert_u64(matched_hashes(p, a, 12, NULL), 12);
  free_pool(p);
}

static void test_policy_switch_empties(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(2);
  uint64_t a[12];
  conversation(a, 4);
  matched_hashes(p, a, 12, NULL);
  assert_u64(matched_hashes(p, a, 12, NULL), 12);
  SET_OPT(p, ILB_OPT_POLICY, ILB_POLICY_P2C);
  ilb_prefix_stats s;
  s.struct_size = sizeof s;
  assert_rc(ilb_pool_prefix_stats(&s, p), ILB_EINVAL);
  assert_rc(kv(p, "r0", ILB_KV_CLEARED, 0, 0, NULL, 0), ILB_EINVAL);
  ilb_request r = blocks_req(a, 12);
  pick_done(p, &r); /* ignored by p2c */
  SET_OPT(p, ILB_OPT_POLICY, ILB_POLICY_PREFIX);
  s = pstats(p);
  assert_u64(s.entries, 0);
  assert_u64(s.lookups, 0);
  assert_memory_formula(&s, SMALL_TABLE);
  assert_u64(matched_hashes(p, a, 12, NULL), 0);
  assert_u64(matched_hashes(p, a, 12, NULL), 12);
  free_pool(p);
}

/* KV capacity by telemetry (4 x 16 = 64 tokens = 4 blocks of 16 tokens)
 * overrides REPLICA_TOKENS for that replica only. */
static void test_telemetry_kv_capacity(void **state) {
  (void)state;
  ilb_pool *p = events_pool(2);
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, 16);
  report_kv(p, 0, 16, 4);
  uint64_t a[8], b[8];
  seq_hashes(a, 8, 0xA000);
  seq_hashes(b, 8, 0xB000);
  for (int k = 0; k < 8; k++) {
    store1(p, 0, a[k]);
    store1(p, 1, b[k]);
  }
  assert_u64(entries(p), 4 + 8);
  int i;
  for (int k = 0; k < 8; k++) {
    uint64_t m = matched_hashes(p, &a[k], 1, &i);
    assert_u64(m, k >= 4 ? 1 : 0); /* r0 kept its 4 newest */
    if (m)
      assert_int_equal(i, 0);
    assert_u64(matched_hashes(p, &b[k], 1, &i), 1); /* r1 all 8 */
    assert_int_equal(i, 1);
  }
  /* a larger KV cache reported later: r0 keeps more */
  report_kv(p, 0, 16, 100);
  for (int k = 0; k < 8; k++)
    store1(p, 0, a[k]);
  assert_u64(entries(p), 16);
  /* BLOCK_TOKENS counts: 1600 tokens are 25 blocks of 64 */
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, 64);
  report_kv(p, 1, 16, 1); /* r1: 16 tokens, less than a block: 1 block */
  for (int k = 0; k < 8; k++)
    store1(p, 1, b[k]);
  assert_u64(entries(p), 8 + 1);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 12. Queue telemetry                                                       */
/* ------------------------------------------------------------------------ */

static void report_waiting(ilb_pool *p, int i, double waiting) {
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  t.present = ILB_SIGNAL_BIT(ILB_SIGNAL_REQUESTS_WAITING);
  t.requests_waiting = waiting;
  assert_rc(ilb_replica_report(p, rname(i), &t), ILB_OK);
}

static void test_queue_telemetry(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(2);
  SET_OPT(p, ILB_OPT_TIE_PERCENT, 0);
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 1000);
  uint64_t t;
  load_on(p, 2, 1, 1, 0, &t); /* r1: 512 tokens in flight */
  /* r0: 5 waiting = 5 x 512 tokens at QUEUE 100% */
  report_waiting(p, 0, 5);
  uint64_t h[8];
  seq_hashes(h, 8, 0x9000);
  ilb_request r = blocks_req(h, 8);
  ilb_request none = tokens_req(0);
  assert_int_equal(pick_done(p, &none), 1);
  assert_int_equal(pick_done(p, &r), 1);
  /* just before the maximum age: still counts */
  advance(1000 * MS - 1);
  h[0] = 0x9100;
  assert_int_equal(pick_done(p, &r), 1);
  /* at the maximum age it is unknown: r0 is idle again */
  advance(1);
  h[0] = 0x9200;
  assert_int_equal(pick_done(p, &r), 0);
  assert_int_equal(pick_done(p, &none), 0);
  /* fresh again; QUEUE_WEIGHT 0 ignores it */
  report_waiting(p, 0, 5);
  assert_int_equal(pick_done(p, &none), 1);
  SET_OPT(p, ILB_OPT_PREFIX_QUEUE_WEIGHT, 0);
  assert_int_equal(pick_done(p, &none), 0);
  /* weight 100: 1 waiting (512) equals r1's load; 2 waiting is more */
  SET_OPT(p, ILB_OPT_PREFIX_QUEUE_WEIGHT, 100);
  SET_OPT(p, ILB_OPT_TOKEN_DEFAULT_COST, 256); /* a waiting request: 256 */
  report_waiting(p, 0, 1);
  assert_int_equal(pick_done(p, &none), 0); /* 256 < 512 */
  report_waiting(p, 0, 3);
  assert_int_equal(pick_done(p, &none), 1); /* 768 > 512 */
  /* a longer maximum age makes the report fresh again */
  advance(1000 * MS);
  assert_int_equal(pick_done(p, &none), 0);
  SET_OPT(p, ILB_OPT_TELEMETRY_MAX_AGE_MS, 5000);
  assert_int_equal(pick_done(p, &none), 1);
  done(p, t);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 13. Determinism                                                           */
/* ------------------------------------------------------------------------ */

static uint64_t lcg(uint64_t *s) {
  *s = *s * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
  return *s >> 33;
}

/* 600 operations: picks of prompts sharing one of 5 system prefixes (some
 * by host hashes, some by prompt text), up to 12 left in flight. Records
 * the replica of each pick into out[]. */
#define DET_OPS 600
static void det_run(ilb_pool *p, int *out) {
  uint64_t s = 12345, held[12];
  size_t nh = 0;
  char text[20 * BB];
  ilb_label lab;
  for (int k = 0; k < DET_OPS; k++) {
    uint64_t sys = lcg(&s) % 5, h[14];
    seq_hashes(h, 10, 0x5E0000 + 100 * sys);
    seq_hashes(h + 10, 4, lcg(&s) << 8);
    ilb_request r;
    if (k % 3 == 0) {
      fill_text(text, sizeof text, (unsigned)(sys + 1));
      fill_text(text + 12 * BB, 8 * BB, (unsigned)lcg(&s));
      r = prompt_req(text, sizeof text, &lab, sys & 1 ? "a" : "b");
    } else {
      r = blocks_req(h, 14);
    }
    if (nh == 12) {
      size_t v = lcg(&s) % nh;
      done(p, held[v]);
      held[v] = held[--nh];
    }
    out[k] = pick(p, &r, &held[nh++]);
  }
  while (nh)
    done(p, held[--nh]);
}

static void test_determinism(void **state) {
  (void)state;
  int *x = calloc(DET_OPS, sizeof *x), *y = calloc(DET_OPS, sizeof *y);
  assert_non_null(x);
  assert_non_null(y);
  ilb_pool *p1 = prefix_pool(6);
  SET_OPT(p1, ILB_OPT_PREFIX_BLOCK_BYTES, BB);
  SET_OPT(p1, ILB_OPT_PREFIX_BOUND_MIN, 2);
  ilb_pool *p2 = prefix_pool(6);
  SET_OPT(p2, ILB_OPT_PREFIX_BLOCK_BYTES, BB);
  SET_OPT(p2, ILB_OPT_PREFIX_BOUND_MIN, 2);
  det_run(p1, x);
  det_run(p2, y);
  int used[6] = {0};
  for (int k = 0; k < DET_OPS; k++) {
    if (x[k] != y[k])
      fail_msg("pick %d: r%d in one pool, r%d in the other", k, x[k], y[k]);
    used[x[k]]++;
  }
  ilb_prefix_stats a = pstats(p1), b = pstats(p2);
  assert_u64(a.entries, b.entries);
  assert_u64(a.matched_blocks, b.matched_blocks);
  assert_u64(a.recorded, b.recorded);
  assert_true(a.matched_blocks > 0);
  for (int i = 0; i < 6; i++) /* the run spread, so choices were made */
    assert_true(used[i] > 0);
  free(x);
  free(y);
  free_pool(p1);
  free_pool(p2);
}

/* ------------------------------------------------------------------------ */
/* 14. Threads                                                               */
/* ------------------------------------------------------------------------ */

#define TH_PICKERS 4
#define TH_ITERS 6000
#define TH_N 6 /* r5 is removed and re-added */
#define TH_HELD 8

typedef struct {
  ilb_pool *p;
  int me;
  _Atomic long *picks, *completes, *errors;
  _Atomic int *stop;
  _Atomic long *events, *cycles;
} th_arg;

static void *th_picker(void *arg) {
  th_arg *a = arg;
  uint64_t held[TH_HELD], h[10];
  int nh = 0;
  for (int k = 0; k < TH_ITERS; k++) {
    int sys = (k + a->me) % 4;
    seq_hashes(h, 8, 0x5100 + 100 * (uint64_t)sys);
    h[8] = ((uint64_t)a->me << 40) | ((uint64_t)k << 1);
    h[9] = h[8] | 1;
    ilb_request r;
    ilb_request_init(&r);
    r.block_hashes = h;
    r.n_blocks = 10;
    if (k % 5 == 0)
      r.prompt_tokens = 100;
    ilb_pick_result res;
    ilb_pick_result_init(&res);
    if (ilb_pick(&res, a->p, &r) != ILB_OK) {
      atomic_fetch_add(a->errors, 1);
      continue;
    }
    atomic_fetch_add(a->picks, 1);
    if (nh == TH_HELD) {
      int rc = ilb_complete(a->p, held[0], NULL);
      if (rc == ILB_OK || rc == ILB_EREMOVED)
        atomic_fetch_add(a->completes, 1);
      else
        atomic_fetch_add(a->errors, 1);
      memmove(held, held + 1, sizeof held[0] * (TH_HELD - 1));
      nh--;
    }
    held[nh++] = res.ticket;
  }
  for (int k = 0; k < nh; k++) {
    int rc = ilb_complete(a->p, held[k], NULL);
    if (rc == ILB_OK || rc == ILB_EREMOVED)
      atomic_fetch_add(a->completes, 1);
    else
      atomic_fetch_add(a->errors, 1);
  }
  return NULL;
}

static void *th_events(void *arg) {
  th_arg *a = arg;
  uint64_t seq[TH_N] = {0}, h[8];
  for (unsigned k = 0; !atomic_load(a->stop) || k < 200; k++) {
    int i = (int)(k % TH_N);
    seq_hashes(h, 8, 0x5100 + 100 * (uint64_t)(k / TH_N % 4));
    ilb_kv_event ev;
    ilb_kv_event_init(&ev);
    ev.type = k % 7 == 6 ? ILB_KV_CLEARED
              : k % 7 == 5 ? ILB_KV_REMOVED
                           : ILB_KV_STORED;
    if (ev.type != ILB_KV_CLEARED) {
      ev.block_hashes = h;
      ev.n_blocks = 8;
    }
    ev.seq = ++seq[i];
    int rc = ilb_replica_kv_event(a->p, rname(i), &ev);
    if (rc == ILB_OK)
      atomic_fetch_add(a->events, 1);
    else if (!(rc == ILB_ENOENT && i == TH_N - 1))
      atomic_fetch_add(a->errors, 1);
    if (k % 64 == 0) {
      ilb_prefix_stats s;
      s.struct_size = sizeof s;
      if (ilb_pool_prefix_stats(&s, a->p) != ILB_OK ||
          s.entries > s.capacity)
        atomic_fetch_add(a->errors, 1);
    }
  }
  return NULL;
}

static void *th_remover(void *arg) {
  th_arg *a = arg;
  for (long k = 0; !atomic_load(a->stop) || k < 20; k++) {
    ilb_replica_spec spec;
    ilb_replica_spec_init(&spec);
    spec.id = rname(TH_N - 1);
    spec.host_data = (void *)(uintptr_t)TH_N;
    if (ilb_replica_remove(a->p, spec.id) != ILB_OK ||
        ilb_replica_add(a->p, &spec) != ILB_OK)
      atomic_fetch_add(a->errors, 1);
    atomic_fetch_add(a->cycles, 1);
  }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  ilb_pool *p = prefix_pool(TH_N);
  SET_OPT(p, ILB_OPT_PREFIX_BOUND_MIN, 2);
  _Atomic long picks = 0, completes = 0, errors = 0, events = 0, cycles = 0;
  _Atomic int stop = 0;
  th_arg args[TH_PICKERS + 2];
  pthread_t th[TH_PICKERS + 2];
  for (int k = 0; k < TH_PICKERS + 2; k++) {
    args[k] = (th_arg){p, k, &picks, &completes, &errors, &stop, &events,
                       &cycles};
    void *(*fn)(void *) = k < TH_PICKERS    ? th_picker
                          : k == TH_PICKERS ? th_events
                                            : th_remover;
    assert_int_equal(pthread_create(&th[k], NULL, fn, &args[k]), 0);
  }
  for (int k = 0; k < TH_PICKERS; k++)
    assert_int_equal(pthread_join(th[k], NULL), 0);
  atomic_store(&stop, 1);
  for (int k = TH_PICKERS; k < TH_PICKERS + 2; k++)
    assert_int_equal(pthread_join(th[k], NULL), 0);

  assert_int_equal(atomic_load(&errors), 0);
  assert_int_equal(atomic_load(&picks), TH_PICKERS * TH_ITERS);
  assert_int_equal(atomic_load(&completes), atomic_load(&picks));
  assert_true(atomic_load(&events) > 0);
  assert_true(atomic_load(&cycles) > 0);
  for (int i = 0; i < TH_N; i++) {
    ilb_replica_info in = get_info(p, rname(i));
    if (in.in_flight != 0 || in.tokens_in_flight != 0)
      fail_msg("r%d: in flight %lld, tokens %llu", i,
               (long long)in.in_flight,
               (unsigned long long)in.tokens_in_flight);
  }
  assert_u64(pstat(p).in_flight, 0);
  ilb_prefix_stats s = pstats(p);
  assert_true(s.entries <= s.capacity);
  assert_u64(s.lookups, (uint64_t)TH_PICKERS * TH_ITERS);
  assert_u64(s.blocks, (uint64_t)TH_PICKERS * TH_ITERS * 10);
  assert_true(s.matched_blocks <= s.blocks);
  assert_true(s.recorded > 0);
  /* still routing on prefixes: a system prompt's holder is found */
  uint64_t h[8];
  seq_hashes(h, 8, 0x5100);
  matched_hashes(p, h, 8, NULL);
  assert_u64(matched_hashes(p, h, 8, NULL), 8);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 15. Out of memory                                                         */
/* ------------------------------------------------------------------------ */

static long oom_calls, oom_live, oom_fail_at = -1;

static void *oom_alloc(size_t size, void *user_data) {
  (void)user_data;
  if (++oom_calls == oom_fail_at)
    return NULL;
  void *q = malloc(size ? size : 1);
  if (q)
    oom_live++;
  return q;
}

static void oom_free(void *q, void *user_data) {
  (void)user_data;
  if (q) {
    oom_live--;
    free(q);
  }
}

static ilb_pool *oom_pool(int32_t policy) {
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.alloc = oom_alloc;
  h.free = oom_free;
  oom_calls = 0;
  oom_live = 0;
  oom_fail_at = -1;
  ilb_pool *p = new_pool_host(policy, &h);
  add_n(p, 3);
  return p;
}

/* The k-th allocation from now fails (until disarm()). */
static void arm(long k) { oom_fail_at = oom_calls + k; }
static void disarm(void) { oom_fail_at = -1; }

/* The pick path allocates nothing: picks with host hashes, with prompt
 * text (hashed on the thread's stack), matching, recording and evicting
 * (a small table), and their completions, through the host allocator. */
static void test_pick_path_allocates_nothing(void **state) {
  (void)state;
  ilb_pool *p = oom_pool(ILB_POLICY_PREFIX);
  SET_OPT(p, ILB_OPT_PREFIX_TABLE_BLOCKS, 1024); /* evictions too */
  SET_OPT(p, ILB_OPT_PREFIX_BLOCK_BYTES, 16);
  long before = oom_calls;
  char text[64 * 16];
  uint64_t h[64];
  for (int k = 0; k < 3000; k++) {
    seq_hashes(h, 64, (uint64_t)(k % 50) << 20); /* 50 prompts, reused */
    ilb_request r = blocks_req(h, 64);
    if (k & 1) {
      memset(&r, 0, sizeof r);
      assert_rc(ilb_request_init(&r), ILB_OK);
      for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char)('a' + (k * 7 + i / 16) % 26);
      r.prompt = text;
      r.prompt_len = sizeof text;
    }
    pick_done(p, &r);
  }
  assert_int_equal(oom_calls, before);
  ilb_prefix_stats s = pstats(p);
  assert_true(s.evicted > 0 && s.matched_blocks > 0);
  free_pool(p);
}

static void test_oom_choose_prefix(void **state) {
  (void)state;
  int failures = 0;
  for (long k = 1; k < 100; k++) {
    ilb_pool *p = oom_pool(ILB_POLICY_P2C);
    uint64_t t;
    pick(p, NULL, &t); /* a request in flight across the change */
    arm(k);
    int rc = ilb_pool_set_option(p, ILB_OPT_POLICY, ILB_POLICY_PREFIX);
    disarm();
    if (rc == ILB_OK) {
      assert_true(failures > 0);
      assert_u64(pstats(p).entries, 0);
      uint64_t h[4] = {1, 2, 3, 4};
      matched_hashes(p, h, 4, NULL);
      assert_u64(matched_hashes(p, h, 4, NULL), 4);
      done(p, t);
      free_pool(p);
      assert_int_equal(oom_live, 0);
      return;
    }
    assert_rc(rc, ILB_ENOMEM);
    failures++;
    /* the old policy, no index, picks fine */
    int64_t v;
    assert_rc(ilb_pool_get_option(&v, p, ILB_OPT_POLICY), ILB_OK);
    assert_int_equal(v, ILB_POLICY_P2C);
    ilb_prefix_stats s;
    s.struct_size = sizeof s;
    assert_rc(ilb_pool_prefix_stats(&s, p), ILB_EINVAL);
    assert_rc(kv(p, "r0", ILB_KV_CLEARED, 0, 0, NULL, 0), ILB_EINVAL);
    for (int n = 0; n < 6; n++)
      pick_done(p, NULL);
    assert_u64(pstat(p).in_flight, 1);
    done(p, t);
    free_pool(p);
    assert_int_equal(oom_live, 0);
  }
  fail_msg("setting the policy still failed at allocation 100");
}

/* A failed TABLE_BLOCKS change leaves the index as it was (the header:
 * "on error nothing observable changes"). */
static void test_oom_table_change_keeps_index(void **state) {
  (void)state;
  int failures = 0;
  for (long k = 1; k < 100; k++) {
    ilb_pool *p = oom_pool(ILB_POLICY_PREFIX);
    uint64_t a[12];
    conversation(a, 5);
    matched_hashes(p, a, 12, NULL);
    ilb_prefix_stats s0 = pstats(p);
    assert_u64(s0.entries, 12);
    arm(k);
    int rc = ilb_pool_set_option(p, ILB_OPT_PREFIX_TABLE_BLOCKS, 8192);
    disarm();
    if (rc == ILB_OK) {
      assert_true(failures > 0);
      assert_u64(pstats(p).entries, 0);
      free_pool(p);
      assert_int_equal(oom_live, 0);
      return;
    }
    assert_rc(rc, ILB_ENOMEM);
    failures++;
    int64_t v;
    assert_rc(ilb_pool_get_option(&v, p, ILB_OPT_PREFIX_TABLE_BLOCKS),
              ILB_OK);
    assert_int_equal(v, SMALL_TABLE);
    ilb_prefix_stats s1 = pstats(p);
    if (s1.entries != s0.entries || s1.lookups != s0.lookups ||
        s1.capacity != s0.capacity)
      fail_msg("allocation %ld of the TABLE_BLOCKS change failed "
               "(ILB_ENOMEM), yet the index changed: entries %llu -> %llu, "
               "lookups %llu -> %llu, capacity %llu -> %llu",
               k, (unsigned long long)s0.entries,
               (unsigned long long)s1.entries,
               (unsigned long long)s0.lookups,
               (unsigned long long)s1.lookups,
               (unsigned long long)s0.capacity,
               (unsigned long long)s1.capacity);
    int i;
    assert_u64(matched_hashes(p, a, 12, &i), 12);
    free_pool(p);
    assert_int_equal(oom_live, 0);
  }
  fail_msg("the TABLE_BLOCKS change still failed at allocation 100");
}

/* A capacity change that fails (its publish runs out of memory) leaves
 * every record as it was: shrinking then growing back must not have
 * happened at all. */
static void test_oom_capacity_change_keeps_records(void **state) {
  (void)state;
  static const int32_t opts[] = {ILB_OPT_PREFIX_REPLICA_TOKENS,
                                 ILB_OPT_PREFIX_BLOCK_TOKENS};
  for (size_t o = 0; o < 2; o++) {
    int failures = 0;
    for (long k = 1; k < 100; k++) {
      ilb_pool *p = oom_pool(ILB_POLICY_PREFIX);
      SET_OPT(p, ILB_OPT_PREFIX_BLOCK_TOKENS, 16);
      SET_OPT(p, ILB_OPT_PREFIX_REPLICA_TOKENS, 16 * 64);
      for (uint64_t b = 0; b < 40; b++) /* C = 64: all 40 live */
        store1(p, 0, 0xE000 + b);
      assert_u64(entries(p), 40);
      arm(k);
      /* to C = 8: would expire 32 of them */
      int rc = ilb_pool_set_option(p, opts[o], o == 0 ? 16 * 8 : 128);
      disarm();
      if (rc == ILB_OK) {
        assert_true(failures > 0);
        assert_u64(entries(p), 8);
        free_pool(p);
        break;
      }
      assert_rc(rc, ILB_ENOMEM);
      failures++;
      assert_u64(entries(p), 40);
      free_pool(p);
      assert_true(k < 99);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      /* 1 */
      cmocka_unit_test(test_match_shared_system_hashes),
      cmocka_unit_test(test_match_prompt_bytes),
      /* 2 */
      cmocka_unit_test(test_chain_stops_at_gap),
      cmocka_unit_test(test_chain_deepest_held_block),
      /* 3 */
      cmocka_unit_test(test_lru_oldest_first),
      cmocka_unit_test(test_lru_refresh_rule),
      cmocka_unit_test(test_lru_tail_expires_first),
      cmocka_unit_test(test_lru_long_stored_event_keeps_prefix),
      /* 4 */
      cmocka_unit_test(test_memory_formula),
      cmocka_unit_test(test_memory_evicts_soonest_expiring),
      cmocka_unit_test(test_events_pick_refreshes_matched),
      cmocka_unit_test(test_events_refresh_adds_nothing),
      cmocka_unit_test(test_capacity_growth_revives_nothing),
      cmocka_unit_test(test_memory_bound_picks),
      cmocka_unit_test(test_memory_bound_events),
      /* 5 */
      cmocka_unit_test(test_hot_prefix_bound_spreads),
      cmocka_unit_test(test_hot_prefix_large_factor_stays),
      cmocka_unit_test(test_bound_min_keeps_conversation),
      /* 6 */
      cmocka_unit_test(test_cold_prompt_least_loaded),
      cmocka_unit_test(test_cold_prompt_never_full),
      /* 7 */
      cmocka_unit_test(test_cost_crossover),
      cmocka_unit_test(test_cost_prompt_tokens),
      cmocka_unit_test(test_cost_sampling_offers_holders),
      /* 8 */
      cmocka_unit_test(test_remove_forgets),
      cmocka_unit_test(test_remove_in_batch_forgets),
      cmocka_unit_test(test_readd_starts_empty),
      cmocka_unit_test(test_health_fail_forgets),
      cmocka_unit_test(test_health_not_ready_forgets),
      /* 9 */
      cmocka_unit_test(test_kv_events_mode),
      cmocka_unit_test(test_kv_sequence_numbers),
      cmocka_unit_test(test_kv_event_bad_args),
      cmocka_unit_test(test_stats_bad_args),
      cmocka_unit_test(test_callbacks_edeadlk),
      /* 10 */
      cmocka_unit_test(test_request_validation_all_policies),
      /* 11 */
      cmocka_unit_test(test_option_bounds),
      cmocka_unit_test(test_table_change_empties),
      cmocka_unit_test(test_policy_switch_empties),
      cmocka_unit_test(test_telemetry_kv_capacity),
      /* 12 */
      cmocka_unit_test(test_queue_telemetry),
      /* 13 */
      cmocka_unit_test(test_determinism),
      /* 14 */
      cmocka_unit_test(test_threads),
      /* 15 */
      cmocka_unit_test(test_pick_path_allocates_nothing),
      cmocka_unit_test(test_oom_choose_prefix),
      cmocka_unit_test(test_oom_table_change_keeps_index),
      cmocka_unit_test(test_oom_capacity_change_keeps_records),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
