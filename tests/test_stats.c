/*
 * The stats export (ilb_stats_prometheus, since 0.6), through the public
 * API only:
 *   - the exact text of a lone pool of two replicas after picks, a
 *     success, a failure with a retry, a shed pick and a replica taken out;
 *     the values agree with ilb_replica_get and ilb_pool_health;
 *   - every page is well formed (checked line by line: one # HELP and
 *     # TYPE per family, before its samples, samples grouped) and the
 *     library's own /metrics parser reads it without ILB_EPARSE;
 *   - label values escaped (quote, backslash, line feed);
 *   - ILB_ENOSPC: the exact size needed, no byte written past buf_size,
 *     an empty string left behind, and the retry with that size + 1 gives
 *     the same text; buf NULL with size 0 asks for the size;
 *   - the prefix families only under the prefix policy, equal to
 *     ilb_pool_prefix_stats; a call from an event callback (the pool mutex
 *     already held) works;
 *   - bad arguments: both or neither of router and pool, buf NULL with a
 *     size;
 *   - a router's pools (model and version labels; a role label on the
 *     halves of a prefill/decode pair, which share both; removed pools
 *     left out), routes (backend = its index), rate limits and counters,
 *     escaped, with the same size protocol.
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

#define SEED UINT64_C(0x57a75eed00000006)

static ilb_pool *new_pool(int32_t policy) {
  ilb_pool *p = fake_pool(SEED, NULL);
  SET_OPT(p, ILB_OPT_POLICY, policy);
  return p;
}

/* The page of pool or router, asserting the size protocol: asked with no
 * buffer it is ILB_ENOSPC with the length, and a buffer of length + 1
 * takes it. Free the result. */
static char *page(ilb_router *router, ilb_pool *pool, size_t *len_out) {
  size_t len = 7;
  assert_rc(ilb_stats_prometheus(NULL, 0, &len, router, pool), ILB_ENOSPC);
  char *buf = malloc(len + 1);
  assert_non_null(buf);
  size_t len2 = 7;
  assert_rc(ilb_stats_prometheus(buf, len + 1, &len2, router, pool), ILB_OK);
  assert_int_equal(len2, len);
  assert_int_equal(strlen(buf), len);
  if (len_out)
    *len_out = len;
  return buf;
}

/* ---- the page's shape ------------------------------------------------------
 */

static int name_char(char c, int first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         c == ':' || (!first && c >= '0' && c <= '9');
}

/* Check the exposition format line by line: "# HELP name text", then
 * "# TYPE name counter|gauge", then samples of that name only, each
 * name{k="v",...} <digits>; a family never comes back; the page ends
 * with a line feed. */
static void check_shape(const char *text) {
  char fams[64][64];
  size_t n_fams = 0;
  char cur[64] = "";
  const char *seen[256]; /* this family's samples, up to their value */
  size_t seen_len[256], n_seen = 0;
  int state = 0; /* 0: want HELP, 1: want TYPE, 2: samples or HELP */
  size_t line = 0;
  assert_true(text[0] != '\0');
  assert_true(text[strlen(text) - 1] == '\n');
  for (const char *s = text; *s;) {
    const char *end = strchr(s, '\n');
    assert_non_null(end);
    line++;
    size_t n = (size_t)(end - s);
    if (n > 7 && !strncmp(s, "# HELP ", 7)) {
      assert_true(state != 1);
      const char *nm = s + 7, *sp = memchr(nm, ' ', (size_t)(end - nm));
      if (!sp || (size_t)(sp - nm) >= sizeof cur)
        fail_msg("line %zu: bad HELP", line);
      memcpy(cur, nm, (size_t)(sp - nm));
      cur[sp - nm] = '\0';
      for (size_t i = 0; i < n_fams; i++)
        if (!strcmp(fams[i], cur))
          fail_msg("line %zu: family %s again", line, cur);
      assert_true(n_fams < 64);
      strcpy(fams[n_fams++], cur);
      n_seen = 0;
      assert_true(sp + 1 < end); /* a text */
      state = 1;
    } else if (n > 7 && !strncmp(s, "# TYPE ", 7)) {
      assert_int_equal(state, 1);
      size_t l = strlen(cur);
      if (strncmp(s + 7, cur, l) || s[7 + l] != ' ')
        fail_msg("line %zu: TYPE of another family", line);
      const char *ty = s + 8 + l;
      size_t tl = (size_t)(end - ty);
      assert_true((tl == 7 && !strncmp(ty, "counter", 7)) ||
                  (tl == 5 && !strncmp(ty, "gauge", 5)));
      state = 2;
    } else {
      if (state != 2)
        fail_msg("line %zu: a sample before HELP and TYPE", line);
      size_t l = strlen(cur);
      if (strncmp(s, cur, l) || (s[l] != '{' && s[l] != ' '))
        fail_msg("line %zu: sample of another family: %.*s", line, (int)n, s);
      const char *q = s + l;
      if (*q == '{') {
        q++;
        for (;;) {
          assert_true(name_char(*q, 1));
          while (name_char(*q, 0))
            q++;
          assert_true(q[0] == '=' && q[1] == '"');
          for (q += 2; *q != '"'; q++) {
            assert_true(*q != '\n' && *q != '\0');
            if (*q == '\\') {
              q++;
              assert_true(*q == '\\' || *q == '"' || *q == 'n');
            }
          }
          q++;
          if (*q == '}')
            break;
          assert_true(*q == ',');
          q++;
        }
        q++;
      }
      assert_true(*q == ' ');
      for (size_t i = 0; i < n_seen; i++)
        if (seen_len[i] == (size_t)(q - s) && !memcmp(seen[i], s, seen_len[i]))
          fail_msg("line %zu: series again: %.*s", line, (int)n, s);
      assert_true(n_seen < 256);
      seen[n_seen] = s;
      seen_len[n_seen++] = (size_t)(q - s);
      q++;
      assert_true(q < end);
      for (; q < end; q++)
        if (*q < '0' || *q > '9')
          fail_msg("line %zu: value not an integer", line);
    }
    s = end + 1;
  }
  assert_int_equal(state, 2);
}

/* The library's own parser reads the page: no ILB_EPARSE; none of its
 * dialects' metrics, so finishing says ILB_ENOENT. */
static void check_parses(const char *text, size_t len) {
  ilb_scrape *sc = NULL;
  assert_rc(ilb_scrape_new(&sc, NULL, NULL), ILB_OK);
  assert_rc(ilb_scrape_feed(sc, text, len), ILB_OK);
  ilb_telemetry t;
  assert_rc(ilb_telemetry_init(&t), ILB_OK);
  assert_rc(ilb_scrape_finish(&t, sc, 1), ILB_ENOENT);
  uint64_t line = 0;
  assert_rc(ilb_scrape_error(&line, NULL, sc), ILB_ENOENT); /* none */
  ilb_scrape_free(sc);
}

static void check_page(const char *text, size_t len) {
  check_shape(text);
  check_parses(text, len);
}

/* The value of one series, given as it is written (name{labels}). */
static uint64_t value_of(const char *text, const char *series) {
  size_t l = strlen(series);
  for (const char *s = text; s; s = strchr(s, '\n'), s = s ? s + 1 : s) {
    if (!strncmp(s, series, l) && s[l] == ' ')
      return strtoull(s + l + 1, NULL, 10);
  }
  fail_msg("no series %s", series);
  return 0;
}

static uint64_t replica_value(const char *text, const char *fam,
                              const char *id) {
  char series[2048];
  int n = snprintf(series, sizeof series,
                   "%s{model=\"\",version=\"\",replica=\"%s\"}", fam, id);
  assert_true(n > 0 && (size_t)n < sizeof series);
  return value_of(text, series);
}

/* ---- a lone pool -----------------------------------------------------------
 */

/* r0 and r1 (host_data 1, 2); r0: 2 picks, one completed, one in flight;
 * r1: 1 pick, failed and retried on r0; a sheddable pick shed; r1 taken
 * out by the host. */
static ilb_pool *two_replicas(void) {
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 4);
  SET_OPT(p, ILB_OPT_SHED_PERCENT, 25);
  add_replica(p, "r0", 1, 0, (void *)(uintptr_t)1);
  add_replica(p, "r1", 1, 0, (void *)(uintptr_t)2);
  uint64_t t[2];
  int idx[2];
  for (int k = 0; k < 2; k++)
    assert_rc(try_pick(p, NULL, &idx[k], &t[k]), ILB_OK);
  assert_true(idx[0] != idx[1]);
  uint64_t t0 = idx[0] == 0 ? t[0] : t[1], t1 = idx[0] == 0 ? t[1] : t[0];
  ilb_outcome ok = oc(ILB_OUTCOME_OK, 200);
  ok.latency_ns = 100 * MS;
  assert_rc(ilb_complete(p, t0, &ok), ILB_OK);
  ilb_retry_state st;
  assert_rc(ilb_retry_state_init(&st), ILB_OK);
  ilb_retry_result rr;
  assert_rc(ilb_retry_result_init(&rr), ILB_OK);
  ilb_outcome bad = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_rc(ilb_retry(&rr, p, &st, NULL, t1, &bad), ILB_OK);
  assert_int_equal(rr.verdict, ILB_RETRY_YES);
  assert_true(rr.ticket != 0);
  assert_string_equal(rr.replica_id, "r0");
  ilb_request shed;
  assert_rc(ilb_request_init(&shed), ILB_OK);
  shed.priority = ILB_PRIORITY_SHEDDABLE;
  int i;
  uint64_t tt;
  assert_rc(try_pick(p, &shed, &i, &tt), ILB_ESHED);
  assert_rc(ilb_replica_set_available(p, "r1", 0), ILB_OK);
  return p;
}

static const char two_replicas_text[] =
    "# HELP inferlb_picks_total Requests picked for the replica (completed "
    "plus in flight).\n"
    "# TYPE inferlb_picks_total counter\n"
    "inferlb_picks_total{model=\"\",version=\"\",replica=\"r0\"} 2\n"
    "inferlb_picks_total{model=\"\",version=\"\",replica=\"r1\"} 1\n"
    "# HELP inferlb_in_flight Requests picked for the replica and not "
    "completed yet.\n"
    "# TYPE inferlb_in_flight gauge\n"
    "inferlb_in_flight{model=\"\",version=\"\",replica=\"r0\"} 1\n"
    "inferlb_in_flight{model=\"\",version=\"\",replica=\"r1\"} 0\n"
    "# HELP inferlb_completions_total Requests completed on the replica, any "
    "outcome.\n"
    "# TYPE inferlb_completions_total counter\n"
    "inferlb_completions_total{model=\"\",version=\"\",replica=\"r0\"} 1\n"
    "inferlb_completions_total{model=\"\",version=\"\",replica=\"r1\"} 1\n"
    "# HELP inferlb_failures_total Completions that failed: connect error, "
    "timeout, refused or HTTP error.\n"
    "# TYPE inferlb_failures_total counter\n"
    "inferlb_failures_total{model=\"\",version=\"\",replica=\"r0\"} 0\n"
    "inferlb_failures_total{model=\"\",version=\"\",replica=\"r1\"} 1\n"
    "# HELP inferlb_ejections_total Outlier ejections of the replica.\n"
    "# TYPE inferlb_ejections_total counter\n"
    "inferlb_ejections_total{model=\"\",version=\"\",replica=\"r0\"} 0\n"
    "inferlb_ejections_total{model=\"\",version=\"\",replica=\"r1\"} 0\n"
    "# HELP inferlb_breaker_state Circuit breaker of the replica: 0 closed, 1 "
    "open, 2 half-open.\n"
    "# TYPE inferlb_breaker_state gauge\n"
    "inferlb_breaker_state{model=\"\",version=\"\",replica=\"r0\"} 0\n"
    "inferlb_breaker_state{model=\"\",version=\"\",replica=\"r1\"} 0\n"
    "# HELP inferlb_replica_excluded What keeps the replica out of picks, "
    "ILB_EXCLUDED_* bits: 0 eligible, 1 host, 2 health, 4 ejected, 8 "
    "breaker, 16 draining.\n"
    "# TYPE inferlb_replica_excluded gauge\n"
    "inferlb_replica_excluded{model=\"\",version=\"\",replica=\"r0\"} 0\n"
    "inferlb_replica_excluded{model=\"\",version=\"\",replica=\"r1\"} 1\n"
    "# HELP inferlb_shed_total Picks refused by load shedding (ILB_ESHED).\n"
    "# TYPE inferlb_shed_total counter\n"
    "inferlb_shed_total{model=\"\",version=\"\"} 1\n"
    "# HELP inferlb_retries_total Retries granted by ilb_retry.\n"
    "# TYPE inferlb_retries_total counter\n"
    "inferlb_retries_total{model=\"\",version=\"\"} 1\n";

static void test_two_replicas_text(void **state) {
  (void)state;
  ilb_pool *p = two_replicas();
  size_t len;
  char *text = page(NULL, p, &len);
  if (strcmp(text, two_replicas_text))
    fail_msg("page differs; got:\n%s", text);
  check_page(text, len);
  free(text);
  free_pool(p);
}

/* The values are the ones the rest of the API reports. */
static void test_values_match(void **state) {
  (void)state;
  ilb_pool *p = two_replicas();
  /* more traffic, so the numbers are not all 0 and 1 */
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 0);
  uint64_t held[20];
  for (int k = 0; k < 20; k++) {
    int i;
    assert_rc(try_pick(p, NULL, &i, &held[k]), ILB_OK);
  }
  for (int k = 0; k < 12; k++) {
    ilb_outcome o = oc(k % 3 ? ILB_OUTCOME_OK : ILB_OUTCOME_TIMEOUT, 0);
    assert_rc(ilb_complete(p, held[k], &o), ILB_OK);
  }
  size_t len;
  char *text = page(NULL, p, &len);
  check_page(text, len);
  for (int r = 0; r < 2; r++) {
    ilb_replica_info in = get_info(p, rname(r));
    assert_u64(replica_value(text, "inferlb_picks_total", rname(r)),
               in.completed + (uint64_t)in.in_flight);
    assert_u64(replica_value(text, "inferlb_in_flight", rname(r)),
               (uint64_t)in.in_flight);
    assert_u64(replica_value(text, "inferlb_completions_total", rname(r)),
               in.completed);
    assert_u64(replica_value(text, "inferlb_failures_total", rname(r)),
               in.failed);
    assert_u64(replica_value(text, "inferlb_ejections_total", rname(r)),
               in.ejections);
    assert_u64(replica_value(text, "inferlb_breaker_state", rname(r)),
               (uint64_t)in.breaker);
    assert_u64(replica_value(text, "inferlb_replica_excluded", rname(r)),
               in.excluded);
  }
  /* r1 is out: everything went to r0 */
  assert_u64(replica_value(text, "inferlb_picks_total", "r0"), 22);
  assert_u64(replica_value(text, "inferlb_failures_total", "r0"), 4);
  ilb_pool_status ps = pstat(p);
  assert_u64(value_of(text, "inferlb_shed_total{model=\"\",version=\"\"}"),
             ps.shed);
  assert_u64(value_of(text, "inferlb_retries_total{model=\"\",version=\"\"}"),
             ps.retries);
  assert_null(strstr(text, "prefix"));
  free(text);
  for (int k = 12; k < 20; k++)
    assert_rc(ilb_complete(p, held[k], NULL), ILB_OK);
  free_pool(p);
}

/* An empty pool: only the pool-wide families. */
static void test_empty_pool(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  size_t len;
  char *text = page(NULL, p, &len);
  check_page(text, len);
  assert_null(strstr(text, "replica="));
  assert_null(strstr(text, "inferlb_picks_total"));
  assert_u64(value_of(text, "inferlb_shed_total{model=\"\",version=\"\"}"), 0);
  assert_u64(value_of(text, "inferlb_retries_total{model=\"\",version=\"\"}"),
             0);
  free(text);
  free_pool(p);
}

static void test_escaping(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  add_replica(p, "q\"uote", 1, 0, NULL);
  add_replica(p, "back\\slash", 1, 0, NULL);
  add_replica(p, "line\nfeed", 1, 0, NULL);
  add_replica(p, "\\\"\n\\", 1, 0, NULL);
  for (int k = 0; k < 4; k++) {
    int i;
    uint64_t t;
    assert_rc(try_pick(p, NULL, &i, &t), ILB_OK);
  }
  size_t len;
  char *text = page(NULL, p, &len);
  check_page(text, len);
  assert_u64(replica_value(text, "inferlb_in_flight", "q\\\"uote"), 1);
  assert_u64(replica_value(text, "inferlb_in_flight", "back\\\\slash"), 1);
  assert_u64(replica_value(text, "inferlb_in_flight", "line\\nfeed"), 1);
  assert_u64(replica_value(text, "inferlb_in_flight", "\\\\\\\"\\n\\\\"), 1);
  free(text);
  free_pool(p);
}

/* ILB_ENOSPC at every size up to the length, the exact length reported,
 * nothing written at or past buf_size, an empty string left behind;
 * length + 1 and more: the text, the same each time. */
static void check_sizes(ilb_router *router, ilb_pool *pool) {
  size_t len;
  char *ref = page(router, pool, &len);
  enum { CANARY = 64 };
  char *buf = malloc(len + 1 + 2 * CANARY);
  assert_non_null(buf);
  for (size_t size = 0; size <= len + CANARY; size++) {
    if (size > 40 && size + 40 < len && size % 97)
      continue; /* every small and large size, a sample of the middle */
    memset(buf, 0x7E, len + 1 + 2 * CANARY);
    size_t got = 0;
    int rc = ilb_stats_prometheus(size ? buf : NULL, size, &got, router, pool);
    assert_int_equal(got, len);
    if (size <= len) {
      assert_rc(rc, ILB_ENOSPC);
      if (size)
        assert_int_equal(buf[0], '\0');
    } else {
      assert_rc(rc, ILB_OK);
      assert_string_equal(buf, ref);
    }
    for (size_t k = size > len + 1 ? len + 1 : size; k < len + 1 + 2 * CANARY;
         k++)
      if (buf[k] != 0x7E)
        fail_msg("size %zu: byte %zu written", size, k);
  }
  /* len_out may be NULL */
  assert_rc(ilb_stats_prometheus(buf, len + 1, NULL, router, pool), ILB_OK);
  assert_string_equal(buf, ref);
  assert_rc(ilb_stats_prometheus(buf, len, NULL, router, pool), ILB_ENOSPC);
  free(buf);
  free(ref);
}

static void test_enospc(void **state) {
  (void)state;
  ilb_pool *p = two_replicas();
  check_sizes(NULL, p);
  free_pool(p);
}

static void test_bad_args(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  char buf[64];
  size_t len = 12345;
  /* never dereferenced: both given is refused first */
  ilb_router *not_a_router = (ilb_router *)(void *)buf;
  assert_rc(ilb_stats_prometheus(buf, sizeof buf, &len, NULL, NULL),
            ILB_EINVAL);
  assert_rc(ilb_stats_prometheus(buf, sizeof buf, &len, not_a_router, p),
            ILB_EINVAL);
  assert_rc(ilb_stats_prometheus(NULL, 1, &len, NULL, p), ILB_EINVAL);
  assert_int_equal(len, 12345);
  assert_rc(ilb_stats_prometheus(NULL, 0, &len, NULL, p), ILB_ENOSPC);
  assert_true(len > 0 && len != 12345);
  assert_rc(ilb_stats_prometheus(NULL, 0, NULL, NULL, p), ILB_ENOSPC);
  free_pool(p);
}

/* Under the prefix policy, the stripes' lookup counters, equal to
 * ilb_pool_prefix_stats'. */
static void test_prefix(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_PREFIX);
  add_replica(p, "r0", 1, 0, NULL);
  add_replica(p, "r1", 1, 0, NULL);
  uint64_t blocks[8];
  for (int k = 0; k < 8; k++)
    blocks[k] = UINT64_C(0x1000) + (uint64_t)k;
  ilb_request req;
  assert_rc(ilb_request_init(&req), ILB_OK);
  req.block_hashes = blocks;
  for (int k = 0; k < 5; k++) {
    req.n_blocks = (size_t)(4 + k % 5);
    int i;
    uint64_t t;
    assert_rc(try_pick(p, &req, &i, &t), ILB_OK);
    assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  }
  ilb_prefix_stats ps;
  memset(&ps, 0, sizeof ps);
  ps.struct_size = sizeof ps;
  assert_rc(ilb_pool_prefix_stats(&ps, p), ILB_OK);
  assert_true(ps.blocks == 4 + 5 + 6 + 7 + 8);
  assert_true(ps.matched_blocks > 0);
  size_t len;
  char *text = page(NULL, p, &len);
  check_page(text, len);
  assert_u64(value_of(text, "inferlb_prefix_lookup_blocks_total{model=\"\","
                            "version=\"\"}"),
             ps.blocks);
  assert_u64(value_of(text, "inferlb_prefix_matched_blocks_total{model=\"\","
                            "version=\"\"}"),
             ps.matched_blocks);
  free(text);
  /* another policy: no prefix families */
  SET_OPT(p, ILB_OPT_POLICY, ILB_POLICY_ROUND_ROBIN);
  text = page(NULL, p, &len);
  assert_null(strstr(text, "prefix"));
  free(text);
  free_pool(p);
}

/* From an event callback, with the pool mutex held by this thread. */
static ilb_pool *cb_pool;
static int cb_rc = 1;
static size_t cb_len;

static void on_event_stats(const ilb_event *ev, void *user_data) {
  (void)user_data;
  if (ev->type == ILB_EVENT_REPLICA_ADDED && cb_pool)
    cb_rc = ilb_stats_prometheus(NULL, 0, &cb_len, NULL, cb_pool);
}

static void test_from_callback(void **state) {
  (void)state;
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.on_event = on_event_stats;
  ilb_pool *p = fake_pool(SEED, &h);
  cb_pool = p;
  add_replica(p, "r0", 1, 0, NULL);
  cb_pool = NULL;
  assert_rc(cb_rc, ILB_ENOSPC);
  size_t len;
  char *text = page(NULL, p, &len);
  assert_int_equal(cb_len, len); /* the replica was in, as now */
  free(text);
  free_pool(p);
}

/* ---- a router --------------------------------------------------------------
 */

static ilb_router *new_router(void) {
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.clock_ns = fake_clock;
  h.seed = SEED;
  h.log_level = ILB_LOG_NONE;
  ilb_router *r = NULL;
  assert_rc(ilb_router_new(&r, &h), ILB_OK);
  return r;
}

/* A pool of n replicas "<name>-<i>" under (model, version, role). */
static ilb_pool *router_pool(ilb_router *r, const char *model,
                             const char *version, int32_t role,
                             const char *name, int n) {
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  for (int i = 0; i < n; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%d", name, i);
    add_replica(p, id, 1, 0, NULL);
  }
  ilb_router_pool_spec ps;
  assert_rc(ilb_router_pool_spec_init(&ps), ILB_OK);
  ps.model = model;
  ps.version = version;
  ps.role = role;
  assert_rc(ilb_router_add_pool(r, &ps, p), ILB_OK);
  return p;
}

static int rpick(ilb_router *r, const char *model, const char *tenant,
                 const char *session, uint64_t *ticket) {
  ilb_label attrs[2];
  size_t n = 0;
  if (model)
    attrs[n++] = (ilb_label){"model", model};
  if (tenant)
    attrs[n++] = (ilb_label){"x-tenant", tenant};
  ilb_request req;
  assert_rc(ilb_request_init(&req), ILB_OK);
  req.attrs = attrs;
  req.n_attrs = n;
  if (session) {
    req.key = session;
    req.key_len = strlen(session);
  }
  ilb_route_result res;
  assert_rc(ilb_route_result_init(&res), ILB_OK);
  int rc = ilb_router_pick(&res, r, &req);
  *ticket = res.ticket;
  return rc;
}

static uint64_t rvalue(const char *text, const char *fam, const char *labels) {
  char series[512];
  int n = snprintf(series, sizeof series, "%s{%s}", fam, labels);
  assert_true(n > 0 && (size_t)n < sizeof series);
  return value_of(text, series);
}

/* Every pool's series under its model and version (and, for the halves
 * of a prefill/decode pair, which share both, its role), escaped; the
 * routes' backends by index; the rate limits; the router's counters; a
 * removed pool left out; exact sizes as for a pool. */
static void test_router(void **state) {
  (void)state;
  ilb_router *r = new_router();
  ilb_pool *v1 = router_pool(r, "llama", "v1", ILB_ROLE_BOTH, "a", 2);
  ilb_pool *v2 = router_pool(r, "llama", "v2", ILB_ROLE_BOTH, "b", 1);
  ilb_pool *dec = router_pool(r, "mistral", NULL, ILB_ROLE_DECODE, "d", 1);
  ilb_pool *pre = router_pool(r, "mistral", NULL, ILB_ROLE_PREFILL, "p", 1);
  ilb_pool *odd = router_pool(r, "we\"ird", "x\\y", ILB_ROLE_BOTH, "w", 1);

  ilb_match m = {"model", "llama", ILB_MATCH_EXACT, 0};
  ilb_backend b[2] = {{"llama", "v1", 1, 0}, {"llama", "v2", 0, 0}};
  ilb_route rt;
  assert_rc(ilb_route_init(&rt), ILB_OK);
  rt.name = "llama-split";
  rt.matches = &m;
  rt.n_matches = 1;
  rt.backends = b;
  rt.n_backends = 2;
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  ilb_rate_limit lim;
  assert_rc(ilb_rate_limit_init(&lim), ILB_OK);
  lim.name = "per-tenant";
  lim.key_attr = "x-tenant";
  lim.rate = 1;
  lim.period_ms = 86400000;
  lim.burst = 1;
  assert_rc(ilb_router_set_rate_limits(r, &lim, 1), ILB_OK);

  uint64_t t, held;
  assert_rc(rpick(r, "llama", "t1", NULL, &t), ILB_OK);
  assert_rc(ilb_router_complete(r, t, NULL), ILB_OK);
  assert_rc(rpick(r, "llama", "t1", NULL, &t), ILB_ERATELIMIT);
  assert_rc(rpick(r, "llama", NULL, NULL, &held), ILB_OK);
  assert_rc(rpick(r, "mistral", NULL, NULL, &t), ILB_OK);
  assert_rc(ilb_router_complete(r, t, NULL), ILB_OK);
  assert_rc(rpick(r, "we\"ird", NULL, NULL, &t), ILB_OK);
  assert_rc(ilb_router_complete(r, t, NULL), ILB_OK);
  assert_rc(rpick(r, "nope", NULL, NULL, &t), ILB_ENOMODEL);

  size_t len;
  char *text = page(r, NULL, &len);
  check_page(text, len);
  /* pool series, equal to the pools' own numbers */
  const char *ids[2] = {"a-0", "a-1"};
  uint64_t sum = 0;
  for (int k = 0; k < 2; k++) {
    ilb_replica_info in = get_info(v1, ids[k]);
    char l[128];
    snprintf(l, sizeof l, "model=\"llama\",version=\"v1\",replica=\"%s\"",
             ids[k]);
    assert_u64(rvalue(text, "inferlb_picks_total", l),
               in.completed + (uint64_t)in.in_flight);
    assert_u64(rvalue(text, "inferlb_in_flight", l), (uint64_t)in.in_flight);
    sum += in.completed + (uint64_t)in.in_flight;
  }
  assert_u64(sum, 2);
  assert_u64(rvalue(text, "inferlb_picks_total",
                    "model=\"llama\",version=\"v2\",replica=\"b-0\""),
             0);
  assert_u64(rvalue(text, "inferlb_completions_total",
                    "model=\"mistral\",version=\"\",role=\"decode\","
                    "replica=\"d-0\""),
             1);
  assert_u64(rvalue(text, "inferlb_completions_total",
                    "model=\"mistral\",version=\"\",role=\"prefill\","
                    "replica=\"p-0\""),
             1);
  assert_u64(rvalue(text, "inferlb_shed_total",
                    "model=\"mistral\",version=\"\",role=\"prefill\""),
             0);
  assert_u64(rvalue(text, "inferlb_completions_total",
                    "model=\"we\\\"ird\",version=\"x\\\\y\",replica=\"w-0\""),
             1);
  /* router series */
  assert_u64(rvalue(text, "inferlb_route_picks_total",
                    "route=\"llama-split\",backend=\"1\",model=\"llama\","
                    "version=\"v2\""),
             0);
  uint64_t b0 = rvalue(text, "inferlb_route_picks_total",
                       "route=\"llama-split\",backend=\"0\",model=\"llama\","
                       "version=\"v1\"");
  assert_true(b0 >= 2 && b0 <= 3); /* the refused one counted or not */
  assert_u64(rvalue(text, "inferlb_rate_limited_total", "limit=\"per-tenant\""),
             1);
  assert_u64(rvalue(text, "inferlb_rate_limit_evictions_total",
                    "limit=\"per-tenant\""),
             0);
  assert_u64(value_of(text, "inferlb_no_model_total"), 1);
  assert_u64(value_of(text, "inferlb_mirrored_total"), 0);
  (void)value_of(text, "inferlb_sticky_hits_total");
  (void)value_of(text, "inferlb_sticky_moves_total");
  free(text);
  check_sizes(r, NULL);

  /* a removed pool is left out (a new one may take its name) */
  assert_rc(ilb_router_remove_pool(r, "llama", "v2"), ILB_OK);
  text = page(r, NULL, &len);
  check_page(text, len);
  assert_null(strstr(text, "replica=\"b-0\""));
  assert_non_null(strstr(text, "backend=\"1\"")); /* the route stays */
  free(text);

  assert_rc(ilb_router_complete(r, held, NULL), ILB_OK);
  ilb_router_free(r);
  free_pool(v1);
  free_pool(v2);
  free_pool(dec);
  free_pool(pre);
  free_pool(odd);
}

/* A router without pools, routes or limits: its counters only. */
static void test_router_empty(void **state) {
  (void)state;
  ilb_router *r = new_router();
  size_t len;
  char *text = page(r, NULL, &len);
  check_page(text, len);
  assert_null(strstr(text, "inferlb_picks_total"));
  assert_null(strstr(text, "route"));
  assert_u64(value_of(text, "inferlb_no_model_total"), 0);
  free(text);
  ilb_router_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_replicas_text),
      cmocka_unit_test(test_values_match),
      cmocka_unit_test(test_empty_pool),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_enospc),
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_prefix),
      cmocka_unit_test(test_from_callback),
      cmocka_unit_test(test_router),
      cmocka_unit_test(test_router_empty),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
