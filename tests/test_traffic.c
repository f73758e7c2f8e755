/*
 * The router over pools (since 0.6), through the public API only, against
 * the header's "Traffic: a router over pools" section and the
 * ILB_OPT_LOCALITY* and ILB_OPT_ROUTER_* options:
 *   1. weighted splits: shares within 5 binomial standard deviations
 *      (95/5, 90/10, three ways, a zero weight), keyed and keyless;
 *   2. cohorts: a key keeps its backend (and replica) while the weights
 *      stay, moving weight moves keys across that boundary only;
 *   3. rules: first match wins, EXACT / PREFIX / PRESENT / ABSENT, all
 *      matches of a route, model routing by pool weight, ENOMODEL, a
 *      backend without a model, routes naming pools that come and go;
 *   4. tickets: router and pool completion, ESTALE for a second one, for
 *      another pool's or router's, pools and routers freed in any order;
 *   5. sticky sessions: reuse, unavailable / drained / full / over the
 *      bound (exact), TTL on the fake clock, pins, off, the table's size,
 *      a removed replica's place taken by a new one, what counts as a
 *      move (inferlb_sticky_moves_total);
 *   6. locality: zone preference (idle and loaded pools), health and load
 *      spillover, a full zone (also with ALLOW_OVER_CAPACITY), chwbl's
 *      bound by the zone's load, no zone, off, 0.5- and 0.3-sized
 *      requests;
 *   7. rate limits (GCRA): exact admissions and retry_after_ns, keys,
 *      global, affinity key, the routed model, tokens given back,
 *      replaced definitions, the key table's size;
 *   8. prefill/decode pairs (one ticket, per-half outcomes, a too short
 *      outcome, a removed half, the pair table); 9. mirroring; 10. bad
 *      input (also match_size and backend_size), options, the host
 *      allocator and out of memory;
 *   11. threads (pickers against a writer; route counters across table
 *      replacements; weight sets never mixed; also run under TSan);
 *   12. determinism.
 *
 * The host clock is fake (healthutil.h) and so is the router's random
 * generator where shares are measured (fake_rand below); every pool is
 * seeded. Each test makes its own router and pools.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <inferlb/inferlb.h>

#include "testutil.h"
#include "healthutil.h"

#define SEED UINT64_C(0x7aff1c0de5eed006)

/* ------------------------------------------------------------------------ */
/* Fake random generator, routers, pools                                    */
/* ------------------------------------------------------------------------ */

/* splitmix64 over one atomic counter: the router's host rand. */
static _Atomic uint64_t rand_state;

static uint64_t splitmix(uint64_t x) {
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static uint64_t fake_rand(void *user_data) {
  (void)user_data;
  return splitmix(atomic_fetch_add(&rand_state, UINT64_C(0x9e3779b97f4a7c15)) +
                  UINT64_C(0x9e3779b97f4a7c15));
}

/* Routers still open when a test fails are freed by the group teardown. */
#define MAX_ROUTERS 8
static ilb_router *routers[MAX_ROUTERS];

static void track_router(ilb_router *r) {
  for (size_t i = 0; i < MAX_ROUTERS; i++)
    if (!routers[i]) {
      routers[i] = r;
      return;
    }
  fail_msg("too many routers open at once");
}

static void free_router(ilb_router *r) {
  for (size_t i = 0; i < MAX_ROUTERS; i++)
    if (routers[i] == r)
      routers[i] = NULL;
  ilb_router_free(r);
}

static int teardown_all(void **state) {
  for (size_t i = 0; i < MAX_ROUTERS; i++) {
    ilb_router_free(routers[i]);
    routers[i] = NULL;
  }
  return free_leftover_pools(state);
}

/* A router on the fake clock (reset to T0); host_rand: the seeded fake
 * generator instead of the built-in one. */
static ilb_router *new_router(uint64_t seed, int host_rand) {
  set_now(T0);
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.clock_ns = fake_clock;
  h.seed = seed;
  h.log_level = ILB_LOG_NONE;
  if (host_rand) {
    h.rand = fake_rand;
    atomic_store(&rand_state, seed);
  }
  ilb_router *r = NULL;
  assert_rc(ilb_router_new(&r, &h), ILB_OK);
  assert_non_null(r);
  track_router(r);
  return r;
}

#define SET_ROPT(r, opt, val)                                                \
  assert_rc(ilb_router_set_option((r), (opt), (val)), ILB_OK)

/* A pool as the tests know it: its handle, name and replica ids. */
#define TP_REPS 16
typedef struct tpool {
  ilb_pool *p;
  char model[32], version[32];
  int n;
  char ids[TP_REPS][80];
} tpool;

static uint64_t fnv(const char *s) {
  uint64_t h = UINT64_C(1469598103934665603);
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
  return h;
}

/* A pool (not yet in a router) on the fake clock, seeded by its name,
 * with n replicas "<model>/<version>#<i>" of weight 1. */
static void tp_new(tpool *t, const char *model, const char *version, int n,
                   int32_t policy) {
  memset(t, 0, sizeof *t);
  snprintf(t->model, sizeof t->model, "%s", model);
  snprintf(t->version, sizeof t->version, "%s", version ? version : "");
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.clock_ns = fake_clock;
  h.seed = SEED ^ fnv(t->model) ^ (fnv(t->version) << 1);
  h.log_level = ILB_LOG_NONE;
  assert_rc(ilb_pool_new(&t->p, &h), ILB_OK);
  track_pool(t->p);
  if (policy)
    SET_OPT(t->p, ILB_OPT_POLICY, policy);
  for (int i = 0; i < n; i++) {
    assert_true(t->n < TP_REPS);
    snprintf(t->ids[t->n], sizeof t->ids[0], "%s/%s#%d", t->model,
             t->version, t->n);
    add_replica(t->p, t->ids[t->n], 1, 0, NULL);
    t->n++;
  }
}

/* One more replica with a zone, weight and capacity. */
static void tp_rep(tpool *t, const char *zone, uint32_t weight,
                   uint32_t capacity) {
  assert_true(t->n < TP_REPS);
  snprintf(t->ids[t->n], sizeof t->ids[0], "%s/%s#%d", t->model, t->version,
           t->n);
  ilb_replica_spec spec;
  assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
  spec.id = t->ids[t->n];
  spec.weight = weight;
  spec.capacity = capacity;
  spec.zone = zone;
  assert_rc(ilb_replica_add(t->p, &spec), ILB_OK);
  t->n++;
}

static int tp_join_rc(tpool *t, ilb_router *r, int32_t role,
                      uint32_t weight) {
  ilb_router_pool_spec spec;
  assert_rc(ilb_router_pool_spec_init(&spec), ILB_OK);
  spec.model = t->model;
  spec.version = t->version;
  spec.role = role;
  spec.weight = weight;
  return ilb_router_add_pool(r, &spec, t->p);
}

static void tp_join(tpool *t, ilb_router *r, int32_t role, uint32_t weight) {
  assert_rc(tp_join_rc(t, r, role, weight), ILB_OK);
}

/* tp_new + tp_join as ILB_ROLE_BOTH of weight 1. */
static void tp_make(tpool *t, ilb_router *r, const char *model,
                    const char *version, int n, int32_t policy) {
  tp_new(t, model, version, n, policy);
  tp_join(t, r, ILB_ROLE_BOTH, 1);
}

static int rep_idx(const tpool *t, const char *id) {
  for (int i = 0; id && i < t->n; i++)
    if (strcmp(t->ids[i], id) == 0)
      return i;
  return -1;
}

static uint64_t pool_in_flight(const tpool *t) { return pstat(t->p).in_flight; }

static ilb_replica_info rinfo(const tpool *t, int i) {
  return get_info(t->p, t->ids[i]);
}

static void set_avail(const tpool *t, int i, int32_t on) {
  assert_rc(ilb_replica_set_available(t->p, t->ids[i], on), ILB_OK);
}

/* Put k requests in flight on replica i of t, tickets into out[]: every
 * other replica (but removed ones: empty ids) is taken out for the picks
 * (ilb_pick on the pool), then made available again. */
static void hold_on(const tpool *t, int i, int k, uint64_t *out) {
  for (int j = 0; j < t->n; j++)
    if (j != i && t->ids[j][0])
      set_avail(t, j, 0);
  for (int j = 0; j < k; j++) {
    ilb_pick_result pr;
    assert_rc(ilb_pick_result_init(&pr), ILB_OK);
    assert_rc(ilb_pick(&pr, t->p, NULL), ILB_OK);
    assert_string_equal(pr.replica_id, t->ids[i]);
    out[j] = pr.ticket;
  }
  for (int j = 0; j < t->n; j++)
    if (j != i && t->ids[j][0])
      set_avail(t, j, 1);
}

static void release(const tpool *t, const uint64_t *tk, int k) {
  for (int j = 0; j < k; j++)
    assert_rc(ilb_complete(t->p, tk[j], NULL), ILB_OK);
}

/* ------------------------------------------------------------------------ */
/* Requests, routes, picks                                                  */
/* ------------------------------------------------------------------------ */

typedef struct rq_t {
  ilb_request req;
  ilb_label a[8];
} rq_t;

static void rq_init(rq_t *q) {
  assert_rc(ilb_request_init(&q->req), ILB_OK);
  q->req.attrs = q->a;
}

static void rq_set(rq_t *q, const char *key, const char *value) {
  assert_true(q->req.n_attrs < 8);
  q->a[q->req.n_attrs].key = key;
  q->a[q->req.n_attrs].value = value;
  q->req.n_attrs++;
}

static void rq_key(rq_t *q, const char *key) {
  q->req.key = key;
  q->req.key_len = strlen(key);
}

/* A request of key/value pairs (NULL-terminated list) and an optional key
 * (NULL: none). */
static void rq_make(rq_t *q, const char *const *kv, const char *key) {
  rq_init(q);
  for (size_t i = 0; kv && kv[i]; i += 2)
    rq_set(q, kv[i], kv[i + 1]);
  if (key)
    rq_key(q, key);
}

#define KV(...) ((const char *const[]){__VA_ARGS__, NULL})

#define BK(m, v, w) {(m), (v), (w), 0}
#define MT(k, kind, v) {(k), (v), (kind), 0}

static ilb_route mkroute(const char *name, const ilb_match *m, size_t nm,
                         const ilb_backend *b, size_t nb) {
  ilb_route rt;
  assert_rc(ilb_route_init(&rt), ILB_OK);
  rt.name = name;
  rt.matches = m;
  rt.n_matches = nm;
  rt.backends = b;
  rt.n_backends = nb;
  return rt;
}

/* One default route to one pool. */
static void route_to(ilb_router *r, const char *model, const char *version) {
  ilb_backend b[] = {BK(model, version, 1)};
  ilb_route rt = mkroute("default", NULL, 0, b, 1);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
}

/* ilb_router_pick with a poisoned result; on success the result names a
 * replica and a pool, on error its ticket is 0. */
static int rpick(ilb_route_result *res, ilb_router *r, const ilb_request *req) {
  memset(res, 0x5A, sizeof *res);
  assert_rc(ilb_route_result_init(res), ILB_OK);
  int rc = ilb_router_pick(res, r, req);
  if (rc == ILB_OK) {
    assert_true(res->ticket != 0);
    assert_non_null(res->replica_id);
    assert_non_null(res->pool);
    assert_non_null(res->model);
    assert_non_null(res->version);
  } else {
    assert_u64(res->ticket, 0);
  }
  return rc;
}

static void rdone(ilb_router *r, uint64_t ticket) {
  assert_rc(ilb_router_complete(r, ticket, NULL), ILB_OK);
}

/* Pick and complete at once; returns the error, *id_idx the replica's
 * index in t (or -1 when not in t), *sticky the result's flag. */
static int pick_done(ilb_router *r, const ilb_request *req, const tpool *t,
                     int *id_idx, int *sticky) {
  ilb_route_result res;
  int rc = rpick(&res, r, req);
  if (id_idx)
    *id_idx = rc ? -1 : rep_idx(t, res.replica_id);
  if (sticky)
    *sticky = rc ? -1 : res.sticky;
  if (!rc)
    rdone(r, res.ticket);
  return rc;
}

/* got is within 5 standard deviations (+1) of a binomial(n, p) mean. */
static void assert_binomial(uint64_t got, uint64_t n, double p,
                            const char *what) {
  double mean = (double)n * p;
  double tol = 5.0 * sqrt_d((double)n * p * (1.0 - p)) + 1.0;
  if ((double)got < mean - tol || (double)got > mean + tol)
    fail_msg("%s: %llu of %llu, expected %.1f +- %.1f", what,
             (unsigned long long)got, (unsigned long long)n, mean, tol);
}

/* The value of one series in the router's ilb_stats_prometheus text: the
 * first sample line that begins with series (the name and a space, or the
 * name and its first labels, e.g. `x_total{route="a",backend="0",`).
 * UINT64_MAX when there is none, or on an error (*rc_out, may be NULL;
 * callable from threads: it asserts nothing). */
static uint64_t prom_value_rc(ilb_router *r, const char *series, int *rc_out) {
  size_t len = 0, n = strlen(series);
  int rc = ilb_stats_prometheus(NULL, 0, &len, r, NULL);
  uint64_t v = UINT64_MAX;
  char *buf = rc == ILB_ENOSPC ? malloc(len + 4096) : NULL;
  if (buf && !(rc = ilb_stats_prometheus(buf, len + 4096, &len, r, NULL)))
    for (const char *l = buf; *l;) {
      const char *e = strchr(l, '\n');
      if (!e)
        e = l + strlen(l);
      if ((size_t)(e - l) > n && strncmp(l, series, n) == 0) {
        const char *sp = e;
        while (sp > l && sp[-1] != ' ')
          sp--;
        v = strtoull(sp, NULL, 10);
        break;
      }
      l = *e ? e + 1 : e;
    }
  free(buf);
  if (rc_out)
    *rc_out = rc;
  return v;
}

static uint64_t prom_value(ilb_router *r, const char *series) {
  int rc;
  uint64_t v = prom_value_rc(r, series, &rc);
  assert_rc(rc, ILB_OK);
  if (v == UINT64_MAX)
    fail_msg("no series \"%s\" in ilb_stats_prometheus", series);
  return v;
}

#define PROM_STICKY_MOVES "inferlb_sticky_moves_total "
#define PROM_STICKY_HITS "inferlb_sticky_hits_total "

/* ------------------------------------------------------------------------ */
/* 1. Weighted splits                                                       */
/* ------------------------------------------------------------------------ */

#define SPLIT_N 20000

/* n picks through route 0 whose backends are tp[0..nb-1] with weights w:
 * keyed (a distinct key each) or keyless; each backend's share within 5
 * binomial sd, a weight-0 backend never. */
static void split_run(ilb_router *r, tpool *const *tp, const uint32_t *w,
                      int nb, int keyed, uint32_t salt) {
  uint64_t cnt[4] = {0}, total = 0;
  for (int b = 0; b < nb; b++)
    total += w[b];
  char key[48];
  for (int i = 0; i < SPLIT_N; i++) {
    rq_t q;
    rq_init(&q);
    if (keyed) {
      snprintf(key, sizeof key, "user-%u-%d", salt, i);
      rq_key(&q, key);
    }
    ilb_route_result res;
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    assert_int_equal(res.route, 0);
    assert_in(res.backend, 0, nb - 1);
    assert_ptr_equal(res.pool, tp[res.backend]->p);
    assert_string_equal(res.model, tp[res.backend]->model);
    assert_string_equal(res.version, tp[res.backend]->version);
    assert_true(rep_idx(tp[res.backend], res.replica_id) >= 0);
    cnt[res.backend]++;
    rdone(r, res.ticket);
  }
  char what[96];
  for (int b = 0; b < nb; b++) {
    snprintf(what, sizeof what, "%s backend %d (weight %u of %llu)",
             keyed ? "keyed" : "keyless", b, w[b], (unsigned long long)total);
    if (w[b] == 0)
      assert_u64(cnt[b], 0);
    else
      assert_binomial(cnt[b], SPLIT_N, (double)w[b] / (double)total, what);
  }
  for (int b = 0; b < nb; b++)
    assert_u64(pool_in_flight(tp[b]), 0);
}

static void test_split_shares(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool v1, v2, v3;
  tp_make(&v1, r, "llama", "v1", 2, 0);
  tp_make(&v2, r, "llama", "v2", 2, 0);
  tp_make(&v3, r, "llama", "v3", 2, 0);
  tpool *tp[] = {&v1, &v2, &v3};

  ilb_backend b2[] = {BK("llama", "v1", 95), BK("llama", "v2", 5)};
  ilb_route rt = mkroute("canary", NULL, 0, b2, 2);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  const uint32_t w95[] = {95, 5}, w90[] = {90, 10};
  split_run(r, tp, w95, 2, 0, 1);
  split_run(r, tp, w95, 2, 1, 2);
  assert_rc(ilb_router_set_weights(r, "canary", w90, 2), ILB_OK);
  split_run(r, tp, w90, 2, 0, 3);
  split_run(r, tp, w90, 2, 1, 4);

  /* three ways, then one of them at weight 0 */
  ilb_backend b3[] = {BK("llama", "v1", 50), BK("llama", "v2", 30),
                      BK("llama", "v3", 20)};
  rt = mkroute("three", NULL, 0, b3, 3);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  const uint32_t w3[] = {50, 30, 20}, w3z[] = {70, 0, 30};
  split_run(r, tp, w3, 3, 0, 5);
  split_run(r, tp, w3, 3, 1, 6);
  assert_rc(ilb_router_set_weights(r, "three", w3z, 3), ILB_OK);
  split_run(r, tp, w3z, 3, 0, 7);
  split_run(r, tp, w3z, 3, 1, 8);
}

/* ------------------------------------------------------------------------ */
/* 2. Cohorts                                                               */
/* ------------------------------------------------------------------------ */

#define COHORT_KEYS 1000

/* Five picks of key k: the same backend and replica every time. */
static int cohort_pick(ilb_router *r, int k, char *replica_out) {
  char key[32];
  snprintf(key, sizeof key, "conv-%d", k);
  int backend = -1;
  for (int j = 0; j < 5; j++) {
    rq_t q;
    rq_make(&q, NULL, key);
    ilb_route_result res;
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    if (j == 0) {
      backend = res.backend;
      snprintf(replica_out, 48, "%s", res.replica_id);
    } else {
      if (res.backend != backend)
        fail_msg("key %d: backend %d, then %d", k, backend, res.backend);
      assert_string_equal(res.replica_id, replica_out);
    }
    rdone(r, res.ticket);
  }
  return backend;
}

static void test_split_cohorts(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool v1, v2;
  tp_make(&v1, r, "llama", "v1", 3, 0);
  tp_make(&v2, r, "llama", "v2", 3, 0);
  ilb_backend b[] = {BK("llama", "v1", 95), BK("llama", "v2", 5)};
  ilb_route rt = mkroute("canary", NULL, 0, b, 2);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);

  static int before[COHORT_KEYS], after[COHORT_KEYS];
  static char rep_before[COHORT_KEYS][48], rep_after[COHORT_KEYS][48];
  uint64_t on_v2 = 0;
  for (int k = 0; k < COHORT_KEYS; k++) {
    before[k] = cohort_pick(r, k, rep_before[k]);
    on_v2 += before[k] == 1;
  }
  assert_binomial(on_v2, COHORT_KEYS, 0.05, "keys on v2 at 95/5");

  const uint32_t w80[] = {80, 20};
  assert_rc(ilb_router_set_weights(r, "canary", w80, 2), ILB_OK);
  uint64_t moved = 0, back = 0;
  on_v2 = 0;
  for (int k = 0; k < COHORT_KEYS; k++) {
    after[k] = cohort_pick(r, k, rep_after[k]);
    on_v2 += after[k] == 1;
    if (before[k] == 1 && after[k] != 1)
      back++;
    if (before[k] == 0 && after[k] == 1)
      moved++;
    if (before[k] == after[k]) /* a conversation stays on its replica */
      assert_string_equal(rep_after[k], rep_before[k]);
  }
  if (back)
    fail_msg("%llu keys moved from v2 back to v1 when v2's weight grew",
             (unsigned long long)back);
  assert_binomial(moved, COHORT_KEYS, 0.15, "keys moved v1 -> v2");
  assert_binomial(on_v2, COHORT_KEYS, 0.20, "keys on v2 at 80/20");

  /* the same weights again: every key back where it was, on its replica */
  const uint32_t w95[] = {95, 5};
  assert_rc(ilb_router_set_weights(r, "canary", w95, 2), ILB_OK);
  for (int k = 0; k < COHORT_KEYS; k++) {
    char rep[48];
    int b3 = cohort_pick(r, k, rep);
    if (b3 != before[k])
      fail_msg("key %d: backend %d at 95/5, %d at 95/5 again", k, before[k],
               b3);
    assert_string_equal(rep, rep_before[k]);
  }
  assert_u64(pool_in_flight(&v1), 0);
  assert_u64(pool_in_flight(&v2), 0);
}

/* ------------------------------------------------------------------------ */
/* 3. Rules: route order, matches, model routing                            */
/* ------------------------------------------------------------------------ */

/* A pick of the attributes kv: expect route `route` (-1: by model) to pool
 * (model, version), or the error want_rc. */
static void expect_route(ilb_router *r, const char *const *kv, int want_rc,
                         int32_t route, const char *model,
                         const char *version) {
  rq_t q;
  rq_make(&q, kv, NULL);
  ilb_route_result res;
  int rc = rpick(&res, r, &q.req);
  char what[256] = "";
  for (size_t i = 0; kv && kv[i]; i += 2) {
    size_t n = strlen(what);
    snprintf(what + n, sizeof what - n, "%s=%s ", kv[i], kv[i + 1]);
  }
  if (rc != want_rc)
    fail_msg("{%s}: %s, expected %s", what, ilb_err_name(rc),
             ilb_err_name(want_rc));
  if (rc)
    return;
  if (res.route != route || strcmp(res.model, model) != 0 ||
      strcmp(res.version, version) != 0)
    fail_msg("{%s}: route %d to %s/%s, expected route %d to %s/%s", what,
             res.route, res.model, res.version, route, model, version);
  if (route < 0)
    assert_int_equal(res.backend, -1);
  rdone(r, res.ticket);
}

static void test_routes_first_match_wins(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool ll1, ll2, mi, g1, g2;
  tp_make(&ll1, r, "llama", "v1", 2, 0);
  tp_make(&ll2, r, "llama", "v2", 2, 0);
  tp_make(&mi, r, "mistral", "v1", 2, 0);
  tp_make(&g1, r, "gemma", "v1", 2, 0);
  tp_make(&g2, r, "gemma", "v2", 2, 0);

  ilb_match m0[] = {MT("x-model-version", ILB_MATCH_EXACT, "v2")};
  ilb_match m1[] = {MT(":path", ILB_MATCH_PREFIX, "/v1/models/mistral")};
  ilb_match m2[] = {MT("x-tenant", ILB_MATCH_PRESENT, NULL),
                    MT("x-debug", ILB_MATCH_ABSENT, NULL)};
  ilb_match m3[] = {MT("a", ILB_MATCH_EXACT, "1"),
                    MT("b", ILB_MATCH_EXACT, "2")};
  ilb_backend b0[] = {BK("llama", "v2", 1)};
  ilb_backend b1[] = {BK("mistral", "v1", 1)};
  ilb_backend b2[] = {BK("gemma", "v1", 1)};
  ilb_backend b3[] = {BK("gemma", "v2", 1)};
  ilb_backend b4[] = {BK("llama", "v1", 1)};
  ilb_route rt[] = {
      mkroute("ab-header", m0, 1, b0, 1), mkroute("path", m1, 1, b1, 1),
      mkroute("tenant", m2, 2, b2, 1),    mkroute("all-of", m3, 2, b3, 1),
      mkroute("default", NULL, 0, b4, 1),
  };
  assert_rc(ilb_router_set_routes(r, rt, 5), ILB_OK);

  expect_route(r, KV("x-model-version", "v2"), 0, 0, "llama", "v2");
  /* the default route matches too, and more routes: the first one wins */
  expect_route(r, KV(":path", "/v1/models/mistral/chat", "x-model-version",
                     "v2", "x-tenant", "t"),
               0, 0, "llama", "v2");
  /* exact is byte for byte */
  expect_route(r, KV("x-model-version", "V2"), 0, 4, "llama", "v1");
  expect_route(r, KV("x-model-version", "v2x"), 0, 4, "llama", "v1");
  expect_route(r, KV("x-model-version", ""), 0, 4, "llama", "v1");
  /* prefix */
  expect_route(r, KV(":path", "/v1/models/mistral/chat/completions"), 0, 1,
               "mistral", "v1");
  expect_route(r, KV(":path", "/v1/models/mistral"), 0, 1, "mistral", "v1");
  expect_route(r, KV(":path", "/v1/models/mistra"), 0, 4, "llama", "v1");
  expect_route(r, KV(":path", "/v2/models/mistral"), 0, 4, "llama", "v1");
  expect_route(r, KV(":PATH", "/v1/models/mistral"), 0, 4, "llama", "v1");
  /* present / absent, both needed */
  expect_route(r, KV("x-tenant", "acme"), 0, 2, "gemma", "v1");
  expect_route(r, KV("x-tenant", ""), 0, 2, "gemma", "v1");
  expect_route(r, KV("x-tenant", "acme", "x-debug", "1"), 0, 4, "llama",
               "v1");
  expect_route(r, KV("x-debug", "1"), 0, 4, "llama", "v1");
  /* every match of a route must hold, in any attribute order */
  expect_route(r, KV("a", "1"), 0, 4, "llama", "v1");
  expect_route(r, KV("b", "2"), 0, 4, "llama", "v1");
  expect_route(r, KV("a", "1", "b", "3"), 0, 4, "llama", "v1");
  expect_route(r, KV("a", "1", "b", "2"), 0, 3, "gemma", "v2");
  expect_route(r, KV("b", "2", "x", "y", "a", "1"), 0, 3, "gemma", "v2");
  /* the first attribute with the key counts */
  expect_route(r, KV("a", "0", "a", "1", "b", "2"), 0, 4, "llama", "v1");
  expect_route(r, KV("a", "1", "a", "0", "b", "2"), 0, 3, "gemma", "v2");
  /* routes come before the model attribute */
  expect_route(r, KV("model", "mistral"), 0, 4, "llama", "v1");
  /* no attributes, and no request at all: the default route */
  expect_route(r, NULL, 0, 4, "llama", "v1");
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_int_equal(res.route, 4);
  assert_int_equal(res.backend, 0);
  assert_ptr_equal(res.pool, ll1.p);
  rdone(r, res.ticket);

  /* without the default route, unmatched requests are routed by model */
  assert_rc(ilb_router_set_routes(r, rt, 4), ILB_OK);
  expect_route(r, KV("model", "mistral"), 0, -1, "mistral", "v1");
  expect_route(r, KV("model", "mistral", "x-model-version", "v2"), 0, 0,
               "llama", "v2");
  assert_rc(rpick(&res, r, NULL), ILB_ENOMODEL);
  tpool *all[] = {&ll1, &ll2, &mi, &g1, &g2};
  for (int i = 0; i < 5; i++)
    assert_u64(pool_in_flight(all[i]), 0);
}

static void test_routes_model_routing(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool ll1, ll2, ll0, mi, qw;
  tp_new(&ll1, "llama", "v1", 2, 0);
  tp_join(&ll1, r, ILB_ROLE_BOTH, 3);
  tp_new(&ll2, "llama", "v2", 2, 0);
  tp_join(&ll2, r, ILB_ROLE_BOTH, 1);
  tp_new(&ll0, "llama", "v0", 2, 0); /* weight 0: takes nothing */
  tp_join(&ll0, r, ILB_ROLE_BOTH, 0);
  tp_make(&mi, r, "mistral", "", 2, 0);
  tp_new(&qw, "qwen", "v1", 2, 0); /* a PREFILL pool is never a target */
  tp_join(&qw, r, ILB_ROLE_PREFILL, 1);

  /* no routes at all: model routing only */
  expect_route(r, KV("model", "mistral"), 0, -1, "mistral", "");
  uint64_t n2 = 0;
  for (int i = 0; i < 4000; i++) {
    rq_t q;
    rq_make(&q, KV("model", "llama"), NULL);
    ilb_route_result res;
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    assert_int_equal(res.route, -1);
    assert_int_equal(res.backend, -1);
    assert_string_equal(res.model, "llama");
    assert_true(res.pool == ll1.p || res.pool == ll2.p);
    n2 += res.pool == ll2.p;
    rdone(r, res.ticket);
  }
  assert_binomial(n2, 4000, 0.25, "llama v2 (pool weight 1 of 4)");
  assert_u64(pstat(ll0.p).in_flight + rinfo(&ll0, 0).completed +
                 rinfo(&ll0, 1).completed,
             0);

  /* unknown model, no model, a PREFILL-only model: ENOMODEL, no ticket,
   * nothing in flight */
  expect_route(r, KV("model", "gpt"), ILB_ENOMODEL, 0, NULL, NULL);
  expect_route(r, KV("model", "LLAMA"), ILB_ENOMODEL, 0, NULL, NULL);
  expect_route(r, KV("x-model", "llama"), ILB_ENOMODEL, 0, NULL, NULL);
  expect_route(r, NULL, ILB_ENOMODEL, 0, NULL, NULL);
  expect_route(r, KV("model", "qwen"), ILB_ENOMODEL, 0, NULL, NULL);
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_ENOMODEL);
  tpool *all[] = {&ll1, &ll2, &ll0, &mi, &qw};
  for (int i = 0; i < 5; i++)
    assert_u64(pool_in_flight(all[i]), 0);
}

static void test_routes_backend_request_model(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool ll1, ll2, g2, mi, phi;
  tp_make(&ll1, r, "llama", "v1", 1, 0);
  tp_make(&ll2, r, "llama", "v2", 1, 0);
  tp_make(&g2, r, "gemma", "v2", 1, 0);
  tp_make(&mi, r, "mistral", "v1", 1, 0);
  tp_make(&phi, r, "phi", "", 1, 0);
  ilb_match m0[] = {MT("x-canary", ILB_MATCH_PRESENT, NULL)};
  ilb_match m1[] = {MT("x-plain", ILB_MATCH_PRESENT, NULL)};
  ilb_backend b0[] = {BK(NULL, "v2", 1)};
  ilb_backend b1[] = {BK(NULL, NULL, 1)};
  ilb_route rt[] = {mkroute("v2-any", m0, 1, b0, 1),
                    mkroute("plain", m1, 1, b1, 1)};
  assert_rc(ilb_router_set_routes(r, rt, 2), ILB_OK);

  expect_route(r, KV("model", "llama", "x-canary", "1"), 0, 0, "llama", "v2");
  expect_route(r, KV("x-canary", "1", "model", "gemma"), 0, 0, "gemma", "v2");
  /* the route matched: no fallback to model routing */
  expect_route(r, KV("model", "mistral", "x-canary", "1"), ILB_ENOMODEL, 0,
               NULL, NULL);
  expect_route(r, KV("x-canary", "1"), ILB_ENOMODEL, 0, NULL, NULL);
  /* version NULL = "" */
  expect_route(r, KV("model", "phi", "x-plain", "1"), 0, 1, "phi", "");
  expect_route(r, KV("model", "llama", "x-plain", "1"), ILB_ENOMODEL, 0,
               NULL, NULL);
  /* unmatched: by model */
  expect_route(r, KV("model", "mistral"), 0, -1, "mistral", "v1");
}

static void test_routes_pool_lifecycle(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool ll1, late, other;
  tp_make(&ll1, r, "llama", "v1", 2, 0);
  ilb_backend b[] = {BK("llama", "v9", 1)};
  ilb_route rt = mkroute("future", NULL, 0, b, 1);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  /* a route may name a pool not added yet */
  expect_route(r, NULL, ILB_ENOMODEL, 0, NULL, NULL);
  tp_make(&late, r, "llama", "v9", 2, 0);
  expect_route(r, NULL, 0, 0, "llama", "v9");

  /* removed: ENOMODEL, its requests in flight complete through the router */
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  const char *model = res.model, *version = res.version;
  assert_rc(ilb_router_remove_pool(r, "llama", "v9"), ILB_OK);
  assert_rc(ilb_router_remove_pool(r, "llama", "v9"), ILB_ENOENT);
  expect_route(r, NULL, ILB_ENOMODEL, 0, NULL, NULL);
  expect_route(r, KV("model", "llama"), ILB_ENOMODEL, 0, NULL, NULL);
  assert_u64(pool_in_flight(&late), 1);
  rdone(r, res.ticket);
  assert_u64(pool_in_flight(&late), 0);
  /* the result's model and version stay valid until ilb_router_free */
  assert_string_equal(model, "llama");
  assert_string_equal(version, "v9");
  /* model routing no longer sees it either */
  assert_rc(ilb_router_set_routes(r, NULL, 0), ILB_OK);
  for (int i = 0; i < 50; i++)
    expect_route(r, KV("model", "llama"), 0, -1, "llama", "v1");
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);

  /* back under its own name only */
  assert_rc(tp_join_rc(&late, r, ILB_ROLE_BOTH, 1), ILB_OK);
  expect_route(r, NULL, 0, 0, "llama", "v9");
  assert_rc(ilb_router_remove_pool(r, "llama", "v9"), ILB_OK);
  snprintf(late.version, sizeof late.version, "v10");
  assert_rc(tp_join_rc(&late, r, ILB_ROLE_BOTH, 1), ILB_EBUSY);
  snprintf(late.version, sizeof late.version, "v9");
  /* another pool may take the removed name */
  tp_new(&other, "llama", "v9", 1, 0);
  assert_rc(tp_join_rc(&other, r, ILB_ROLE_BOTH, 1), ILB_OK);
  expect_route(r, NULL, 0, 0, "llama", "v9");
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_ptr_equal(res.pool, other.p);
  rdone(r, res.ticket);
  /* and then the old one cannot come back: the name is taken */
  assert_rc(tp_join_rc(&late, r, ILB_ROLE_BOTH, 1), ILB_EEXIST);
}

/* ------------------------------------------------------------------------ */
/* 4. Tickets                                                               */
/* ------------------------------------------------------------------------ */

static void test_tickets_complete_paths(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool a, b;
  tp_new(&a, "llama", "v1", 2, 0);
  /* a ticket the pool issued before it joined: only the pool completes it */
  ilb_pick_result pr;
  assert_rc(ilb_pick_result_init(&pr), ILB_OK);
  assert_rc(ilb_pick(&pr, a.p, NULL), ILB_OK);
  uint64_t before_join = pr.ticket;
  tp_join(&a, r, ILB_ROLE_BOTH, 1);
  tp_make(&b, r, "llama", "v2", 2, 0);
  route_to(r, "llama", "v1");
  assert_rc(ilb_router_complete(r, before_join, NULL), ILB_ESTALE);
  assert_u64(pool_in_flight(&a), 1);
  assert_rc(ilb_complete(a.p, before_join, NULL), ILB_OK);
  assert_u64(pool_in_flight(&a), 0);

  /* through the router, then again either way */
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_ptr_equal(res.pool, a.p);
  assert_u64(pool_in_flight(&a), 1);
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_OK);
  assert_u64(pool_in_flight(&a), 0);
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(a.p, res.ticket, NULL), ILB_ESTALE);

  /* through the pool, then again either way */
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_rc(ilb_complete(res.pool, res.ticket, NULL), ILB_OK);
  assert_u64(pool_in_flight(&a), 0);
  assert_rc(ilb_complete(res.pool, res.ticket, NULL), ILB_ESTALE);
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_ESTALE);

  /* another pool of the same router: ESTALE, the ticket stays valid */
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_rc(ilb_complete(b.p, res.ticket, NULL), ILB_ESTALE);
  assert_u64(pool_in_flight(&a), 1);
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_OK);

  /* a pool in a router stamps its direct picks too: the router completes
   * them */
  assert_rc(ilb_pick(&pr, b.p, NULL), ILB_OK);
  assert_rc(ilb_router_complete(r, pr.ticket, NULL), ILB_OK);
  assert_u64(pool_in_flight(&b), 0);

  /* made-up tickets */
  assert_rc(ilb_router_complete(r, 0, NULL), ILB_ESTALE);
  assert_rc(ilb_router_complete(r, UINT64_MAX, NULL), ILB_ESTALE);
  assert_rc(ilb_router_complete(r, UINT64_C(0x0000000102000005), NULL),
            ILB_ESTALE);
  assert_rc(ilb_router_complete(r, UINT64_C(0x12345678fe000001), NULL),
            ILB_ESTALE);

  /* a ticket of another router's pool (the same position there): ESTALE
   * here, valid there */
  ilb_router *r2 = new_router(SEED + 1, 1);
  tpool c;
  tp_make(&c, r2, "llama", "v1", 2, 0);
  route_to(r2, "llama", "v1");
  ilb_route_result res2;
  assert_rc(rpick(&res2, r2, NULL), ILB_OK);
  assert_rc(ilb_router_complete(r, res2.ticket, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(a.p, res2.ticket, NULL), ILB_ESTALE);
  assert_u64(pool_in_flight(&c), 1);
  assert_rc(ilb_router_complete(r2, res2.ticket, NULL), ILB_OK);
  assert_u64(pool_in_flight(&c), 0);
  assert_u64(pool_in_flight(&a), 0);
  /* and the other way */
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_rc(ilb_router_complete(r2, res.ticket, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(c.p, res.ticket, NULL), ILB_ESTALE);
  rdone(r, res.ticket);
  /* a pool of one router cannot join another (under a free name) */
  snprintf(c.version, sizeof c.version, "other");
  assert_rc(tp_join_rc(&c, r, ILB_ROLE_BOTH, 1), ILB_EBUSY);
}

/* The host frees its pool first: the router keeps it (picks work) and
 * frees it with itself. Under ASan: no leak, no use after free. */
static void test_tickets_pool_freed_first(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool a;
  tp_make(&a, r, "llama", "v1", 3, 0);
  route_to(r, "llama", "v1");
  ilb_route_result held;
  assert_rc(rpick(&held, r, NULL), ILB_OK);
  free_pool(a.p);
  for (int i = 0; i < 20; i++) {
    ilb_route_result res;
    assert_rc(rpick(&res, r, NULL), ILB_OK);
    assert_ptr_equal(res.pool, a.p);
    assert_true(rep_idx(&a, res.replica_id) >= 0);
    rdone(r, res.ticket);
  }
  rdone(r, held.ticket);
  assert_rc(ilb_router_complete(r, held.ticket, NULL), ILB_ESTALE);
  /* a pick left in flight when the router goes: freed with it */
  assert_rc(rpick(&held, r, NULL), ILB_OK);
  free_router(r);
}

/* The router goes first: the host's pool lives on. */
static void test_tickets_router_freed_first(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool a;
  tp_make(&a, r, "llama", "v1", 2, 0);
  route_to(r, "llama", "v1");
  ilb_route_result held;
  assert_rc(rpick(&held, r, NULL), ILB_OK);
  free_router(r);
  /* the router's ticket is the pool's: it still completes there */
  assert_rc(ilb_complete(a.p, held.ticket, NULL), ILB_OK);
  for (int i = 0; i < 10; i++) {
    int idx;
    uint64_t t;
    assert_rc(try_pick(a.p, NULL, &idx, &t), ILB_OK);
    assert_rc(ilb_complete(a.p, t, NULL), ILB_OK);
  }
  assert_u64(pool_in_flight(&a), 0);
  free_pool(a.p);
}

/* ------------------------------------------------------------------------ */
/* 5. Sticky sessions                                                       */
/* ------------------------------------------------------------------------ */

/* A router with one pool of n replicas (p2c) behind a default route. */
static ilb_router *sticky_setup(tpool *t, int n) {
  ilb_router *r = new_router(SEED, 1);
  tp_make(t, r, "llama", "v1", n, 0);
  route_to(r, "llama", "v1");
  return r;
}

/* A pick of session key, completed; *sticky the result's flag. */
static int session_pick(ilb_router *r, const tpool *t, const char *key,
                        int *sticky) {
  rq_t q;
  rq_make(&q, NULL, key);
  int idx = -1;
  assert_rc(pick_done(r, &q.req, t, &idx, sticky), ILB_OK);
  assert_true(idx >= 0);
  return idx;
}

static void test_sticky_session_reuses_replica(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 4);
  int s;
  int x = session_pick(r, &t, "sess-A", &s);
  assert_int_equal(s, 0);
  for (int i = 0; i < 20; i++) {
    assert_int_equal(session_pick(r, &t, "sess-A", &s), x);
    assert_int_equal(s, 1);
  }
  /* sessions spread over the replicas; a keyless pick is never sticky */
  int seen[TP_REPS] = {0}, distinct = 0;
  char key[32];
  for (int k = 0; k < 200; k++) {
    snprintf(key, sizeof key, "s-%d", k);
    int i = session_pick(r, &t, key, &s);
    assert_int_equal(s, 0);
    distinct += !seen[i]++;
  }
  assert_int_equal(distinct, 4);
  for (int i = 0; i < 20; i++) {
    assert_rc(pick_done(r, NULL, &t, NULL, &s), ILB_OK);
    assert_int_equal(s, 0);
  }
}

static void test_sticky_moves_when_excluded(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 4);
  int s;
  int x = session_pick(r, &t, "sess-B", &s);
  /* unavailable: the session moves, and stays on its new replica */
  set_avail(&t, x, 0);
  int y = session_pick(r, &t, "sess-B", &s);
  assert_int_equal(s, 0);
  assert_int_not_equal(y, x);
  set_avail(&t, x, 1);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(session_pick(r, &t, "sess-B", &s), y);
    assert_int_equal(s, 1);
  }
  /* drained: the same */
  assert_rc(ilb_replica_drain(t.p, t.ids[y], 1, 0), ILB_OK);
  int z = session_pick(r, &t, "sess-B", &s);
  assert_int_equal(s, 0);
  assert_int_not_equal(z, y);
  assert_rc(ilb_replica_drain(t.p, t.ids[y], 0, 0), ILB_OK);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(session_pick(r, &t, "sess-B", &s), z);
    assert_int_equal(s, 1);
  }
}

/* inferlb_sticky_moves_total counts sessions moved away from their
 * replica: not a sticky hit, and not a session whose replica is over the
 * bound when the fresh pick lands on that same replica again (a ring pool:
 * the key's home, whatever its load); a session whose replica is taken out
 * does count. */
static void test_sticky_moves_counted(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool t;
  tp_make(&t, r, "llama", "v1", 3, ILB_POLICY_RING);
  route_to(r, "llama", "v1");
  int s;
  int x = session_pick(r, &t, "sess-M", &s);
  assert_int_equal(s, 0);
  assert_u64(prom_value(r, PROM_STICKY_MOVES), 0);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(session_pick(r, &t, "sess-M", &s), x);
    assert_int_equal(s, 1);
  }
  assert_u64(prom_value(r, PROM_STICKY_HITS), 10);
  assert_u64(prom_value(r, PROM_STICKY_MOVES), 0);
  /* 3 in flight on x, none elsewhere: the bound ceil(200% * 4 / 3) = 3
   * refuses x, and the ring sends the key home to x again: not a move */
  uint64_t tk[3];
  hold_on(&t, x, 3, tk);
  assert_int_equal(session_pick(r, &t, "sess-M", &s), x);
  assert_int_equal(s, 0);
  if (prom_value(r, PROM_STICKY_MOVES) != 0)
    fail_msg("the session stayed on %s (over the bound, the ring's fresh "
             "pick is the same replica), yet inferlb_sticky_moves_total = "
             "%llu",
             t.ids[x], (unsigned long long)prom_value(r, PROM_STICKY_MOVES));
  release(&t, tk, 3);
  assert_int_equal(session_pick(r, &t, "sess-M", &s), x);
  assert_int_equal(s, 1);
  /* taken out: the session moves, once */
  set_avail(&t, x, 0);
  int y = session_pick(r, &t, "sess-M", &s);
  assert_int_not_equal(y, x);
  assert_int_equal(s, 0);
  assert_u64(prom_value(r, PROM_STICKY_MOVES), 1);
  set_avail(&t, x, 1);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(session_pick(r, &t, "sess-M", &s), y);
    assert_int_equal(s, 1);
  }
  assert_u64(prom_value(r, PROM_STICKY_MOVES), 1);
  assert_u64(prom_value(r, PROM_STICKY_HITS), 16);
  assert_u64(pool_in_flight(&t), 0);
}

/* The bound: in flight reaching ceil(200% * (in flight of the available
 * replicas + 1) / available replicas) moves the session. */
static void test_sticky_bound(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 4);
  int s;
  int x = session_pick(r, &t, "sess-C", &s);
  /* two in flight on each replica, four more on x: x holds 6 of 12;
   * bound ceil(2 * 13 / 4) = 7: it stays */
  uint64_t bg[4][2], extra[64];
  for (int i = 0; i < 4; i++)
    hold_on(&t, i, 2, bg[i]);
  hold_on(&t, x, 4, extra);
  assert_int_equal(session_pick(r, &t, "sess-C", &s), x);
  assert_int_equal(s, 1);
  /* one more: 7 of 13, bound ceil(2 * 14 / 4) = 7: it moves */
  hold_on(&t, x, 1, extra + 4);
  int y = session_pick(r, &t, "sess-C", &s);
  assert_int_equal(s, 0);
  assert_int_not_equal(y, x);
  /* and stays there (2 of 13) */
  assert_int_equal(session_pick(r, &t, "sess-C", &s), y);
  assert_int_equal(s, 1);
  /* bound 100000%: only a full replica moves it */
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_BOUND_PERCENT, 100000);
  hold_on(&t, y, 30, extra + 5);
  assert_int_equal(session_pick(r, &t, "sess-C", &s), y);
  assert_int_equal(s, 1);
  release(&t, extra, 35);
  for (int i = 0; i < 4; i++)
    release(&t, bg[i], 2);
  assert_u64(pool_in_flight(&t), 0);
}

static void test_sticky_full_replica(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool t;
  tp_new(&t, "llama", "v1", 0, 0);
  for (int i = 0; i < 3; i++)
    tp_rep(&t, NULL, 1, 1); /* capacity 1 */
  tp_join(&t, r, ILB_ROLE_BOTH, 1);
  route_to(r, "llama", "v1");
  int s;
  int x = session_pick(r, &t, "sess-F", &s);
  uint64_t tk;
  hold_on(&t, x, 1, &tk);
  int y = session_pick(r, &t, "sess-F", &s);
  assert_int_equal(s, 0);
  assert_int_not_equal(y, x);
  release(&t, &tk, 1);
  assert_int_equal(session_pick(r, &t, "sess-F", &s), y);
  assert_int_equal(s, 1);
}

static void test_sticky_ttl(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 4);
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_TTL_MS, 1000);
  int s;
  int x = session_pick(r, &t, "sess-T", &s);
  assert_int_equal(s, 0);
  /* each use renews the lease */
  advance(999 * MS);
  assert_int_equal(session_pick(r, &t, "sess-T", &s), x);
  assert_int_equal(s, 1);
  advance(999 * MS);
  assert_int_equal(session_pick(r, &t, "sess-T", &s), x);
  assert_int_equal(s, 1);
  /* 1000 ms without a use: forgotten */
  advance(1000 * MS);
  int y = session_pick(r, &t, "sess-T", &s);
  assert_int_equal(s, 0);
  /* remembered anew from there */
  assert_int_equal(session_pick(r, &t, "sess-T", &s), y);
  assert_int_equal(s, 1);
  /* a long idle time, once more */
  advance(3600 * SEC);
  session_pick(r, &t, "sess-T", &s);
  assert_int_equal(s, 0);
}

static void test_sticky_pin(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 4);
  const char *key = "sess-P";
  int s;
  assert_rc(ilb_router_pin(r, key, strlen(key), "llama", "v1", t.ids[2], 0),
            ILB_OK);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(session_pick(r, &t, key, &s), 2);
    assert_int_equal(s, 1);
  }
  /* the bound does not apply to a pin: 10 in flight on it, none elsewhere */
  uint64_t tk[10];
  hold_on(&t, 2, 10, tk);
  assert_int_equal(session_pick(r, &t, key, &s), 2);
  assert_int_equal(s, 1);
  release(&t, tk, 10);
  /* when it cannot take the request, the session moves */
  set_avail(&t, 2, 0);
  int y = session_pick(r, &t, key, &s);
  assert_int_equal(s, 0);
  assert_int_not_equal(y, 2);
  set_avail(&t, 2, 1);
  /* pinned again, then unpinned: forgotten */
  assert_rc(ilb_router_pin(r, key, strlen(key), "llama", "v1", t.ids[2], 0),
            ILB_OK);
  assert_int_equal(session_pick(r, &t, key, &s), 2);
  assert_int_equal(s, 1);
  assert_rc(ilb_router_pin(r, key, strlen(key), "llama", "v1", NULL, 0),
            ILB_OK);
  session_pick(r, &t, key, &s);
  assert_int_equal(s, 0);
  /* unpinning a session that is not there */
  assert_rc(ilb_router_pin(r, "none", 4, "llama", "v1", NULL, 0), ILB_OK);

  /* a pin's own lease: uses do not renew it */
  assert_rc(ilb_router_pin(r, "sess-Q", 6, "llama", "v1", t.ids[3], 500),
            ILB_OK);
  advance(300 * MS);
  assert_int_equal(session_pick(r, &t, "sess-Q", &s), 3);
  assert_int_equal(s, 1);
  advance(199 * MS);
  assert_int_equal(session_pick(r, &t, "sess-Q", &s), 3);
  assert_int_equal(s, 1);
  advance(1 * MS);
  session_pick(r, &t, "sess-Q", &s);
  assert_int_equal(s, 0);
  /* ttl 0: the TTL option */
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_TTL_MS, 2000);
  assert_rc(ilb_router_pin(r, "sess-R", 6, "llama", "v1", t.ids[0], 0),
            ILB_OK);
  advance(1999 * MS);
  assert_int_equal(session_pick(r, &t, "sess-R", &s), 0);
  assert_int_equal(s, 1);
  advance(1 * MS);
  session_pick(r, &t, "sess-R", &s);
  assert_int_equal(s, 0);

  /* errors */
  assert_rc(ilb_router_pin(NULL, key, 6, "llama", "v1", t.ids[0], 0),
            ILB_EINVAL);
  assert_rc(ilb_router_pin(r, NULL, 6, "llama", "v1", t.ids[0], 0),
            ILB_EINVAL);
  assert_rc(ilb_router_pin(r, key, 0, "llama", "v1", t.ids[0], 0),
            ILB_EINVAL);
  assert_rc(ilb_router_pin(r, key, 6, NULL, "v1", t.ids[0], 0), ILB_EINVAL);
  assert_rc(ilb_router_pin(r, key, 6, "llama", "v2", t.ids[0], 0),
            ILB_ENOMODEL);
  assert_rc(ilb_router_pin(r, key, 6, "gpt", NULL, t.ids[0], 0),
            ILB_ENOMODEL);
  assert_rc(ilb_router_pin(r, key, 6, "llama", "v1", "nobody", 0),
            ILB_ENOENT);
  assert_rc(ilb_router_pin(r, key, 6, "llama", "v1", t.ids[0], 604800001),
            ILB_ERANGE);
  assert_rc(ilb_router_pin(r, key, 6, "llama", "v1", t.ids[0], 604800000),
            ILB_OK);
  assert_u64(pool_in_flight(&t), 0);
}

static void test_sticky_off(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 4);
  int64_t v = -1;
  assert_rc(ilb_router_get_option(&v, r, ILB_OPT_ROUTER_STICKY_ENTRIES),
            ILB_OK);
  assert_int_equal(v, 65536);
  int s;
  session_pick(r, &t, "sess-O", &s);
  session_pick(r, &t, "sess-O", &s);
  assert_int_equal(s, 1);
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 0);
  assert_rc(ilb_router_get_option(&v, r, ILB_OPT_ROUTER_STICKY_ENTRIES),
            ILB_OK);
  assert_int_equal(v, 0);
  for (int i = 0; i < 50; i++) {
    session_pick(r, &t, "sess-O", &s);
    assert_int_equal(s, 0);
  }
  assert_rc(ilb_router_pin(r, "sess-O", 6, "llama", "v1", t.ids[0], 0),
            ILB_EINVAL);
  assert_rc(ilb_router_pin(r, "sess-O", 6, "llama", "v1", NULL, 0),
            ILB_EINVAL);
  /* on again: a new, empty table */
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 1000);
  session_pick(r, &t, "sess-O", &s);
  assert_int_equal(s, 0);
  session_pick(r, &t, "sess-O", &s);
  assert_int_equal(s, 1);
  /* a change of size forgets every session; setting the same size does
   * nothing */
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 1000);
  session_pick(r, &t, "sess-O", &s);
  assert_int_equal(s, 1);
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 4096);
  session_pick(r, &t, "sess-O", &s);
  assert_int_equal(s, 0);
}

/* The session's replica is removed and a new one added (which takes its
 * place in the pool's records): the session's replica is gone, so the pick
 * is not a sticky hit. */
static void test_sticky_replica_replaced(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 2);
  int s;
  int x = session_pick(r, &t, "sess-X", &s);
  session_pick(r, &t, "sess-X", &s);
  assert_int_equal(s, 1);
  assert_rc(ilb_replica_remove(t.p, t.ids[x]), ILB_OK);
  tp_rep(&t, NULL, 1, 0); /* t.ids[2] */
  session_pick(r, &t, "sess-X", &s);
  if (s != 0)
    fail_msg("the session's replica %s was removed, yet the next pick "
             "reports sticky = 1 (the new replica %s inherited the session)",
             t.ids[x], t.ids[2]);
}

/* The same for a pin: a pin names a replica, not its place. */
static void test_pin_replica_replaced(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 2);
  int s;
  assert_rc(ilb_router_pin(r, "sess-Y", 6, "llama", "v1", t.ids[0], 0),
            ILB_OK);
  assert_int_equal(session_pick(r, &t, "sess-Y", &s), 0);
  assert_int_equal(s, 1);
  char gone[80];
  snprintf(gone, sizeof gone, "%s", t.ids[0]);
  assert_rc(ilb_replica_remove(t.p, t.ids[0]), ILB_OK);
  t.ids[0][0] = 0; /* removed */
  tp_rep(&t, NULL, 1, 0); /* t.ids[2] */
  /* the new replica is loaded far over the bound: a pin to it would still
   * send the session there, an ordinary pick would not */
  uint64_t tk[12];
  hold_on(&t, 2, 12, tk);
  int i = session_pick(r, &t, "sess-Y", &s);
  release(&t, tk, 12);
  if (s != 0 || i == 2)
    fail_msg("the pinned replica %s was removed, yet the session went to "
             "the new replica %s (sticky = %d, 12 in flight on it, 0 on "
             "the other)",
             gone, i >= 0 ? t.ids[i] : "?", s);
}

/* ILB_OPT_ROUTER_STICKY_ENTRIES 5: five sessions remembered; a sixth
 * takes the place of the least recently used. */
static void test_sticky_table_capacity(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = sticky_setup(&t, 4);
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 5);
  const char *keys[] = {"s0", "s1", "s2", "s3", "s4", "s5"};
  int at[6], s;
  for (int i = 0; i < 5; i++) {
    advance(1 * MS);
    at[i] = session_pick(r, &t, keys[i], &s);
    assert_int_equal(s, 0);
  }
  for (int i = 0; i < 5; i++) {
    advance(1 * MS);
    assert_int_equal(session_pick(r, &t, keys[i], &s), at[i]);
    assert_int_equal(s, 1);
  }
  advance(1 * MS);
  at[5] = session_pick(r, &t, keys[5], &s); /* s0 is the oldest now */
  for (int i = 5; i >= 1; i--) {
    advance(1 * MS);
    assert_int_equal(session_pick(r, &t, keys[i], &s), at[i]);
    assert_int_equal(s, 1);
  }
  advance(1 * MS);
  session_pick(r, &t, keys[0], &s);
  assert_int_equal(s, 0);
  /* the same key in another pool is another session */
  tpool u;
  tp_make(&u, r, "llama", "v2", 4, 0);
  ilb_match m[] = {MT("x-v", ILB_MATCH_EXACT, "2")};
  ilb_backend b2[] = {BK("llama", "v2", 1)}, b1[] = {BK("llama", "v1", 1)};
  ilb_route rt[] = {mkroute("v2", m, 1, b2, 1),
                    mkroute("default", NULL, 0, b1, 1)};
  assert_rc(ilb_router_set_routes(r, rt, 2), ILB_OK);
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 1000);
  int x = session_pick(r, &t, "k", &s);
  rq_t q;
  rq_make(&q, KV("x-v", "2"), "k");
  int y;
  assert_rc(pick_done(r, &q.req, &u, &y, &s), ILB_OK);
  assert_int_equal(s, 0);
  assert_rc(pick_done(r, &q.req, &u, &y, &s), ILB_OK);
  assert_int_equal(s, 1);
  assert_int_equal(session_pick(r, &t, "k", &s), x);
  assert_int_equal(s, 1);
}

/* ------------------------------------------------------------------------ */
/* 6. Locality                                                              */
/* ------------------------------------------------------------------------ */

/* Pool "geo": replicas 0 and 1 in zone a, 2 and 3 in zone b, round robin,
 * behind a default route. */
static ilb_router *geo_setup(tpool *t) {
  ilb_router *r = new_router(SEED, 1);
  tp_new(t, "geo", "", 0, ILB_POLICY_ROUND_ROBIN);
  tp_rep(t, "a", 1, 0);
  tp_rep(t, "a", 1, 0);
  tp_rep(t, "b", 1, 0);
  tp_rep(t, "b", 1, 0);
  tp_join(t, r, ILB_ROLE_BOTH, 1);
  route_to(r, "geo", NULL);
  return r;
}

/* n picks from zone (NULL: none), each completed: how many went to each
 * replica (cnt[4]). */
static void zone_picks(ilb_router *r, const tpool *t, const char *zone, int n,
                       int *cnt) {
  for (int i = 0; i < 4; i++)
    cnt[i] = 0;
  for (int i = 0; i < n; i++) {
    rq_t q;
    rq_init(&q);
    q.req.zone = zone;
    int idx;
    assert_rc(pick_done(r, &q.req, t, &idx, NULL), ILB_OK);
    assert_in(idx, 0, 3);
    cnt[idx]++;
  }
}

/* An idle pool: a request from zone a stays in zone a. */
static void test_locality_idle_pool(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = geo_setup(&t);
  int cnt[4];
  zone_picks(r, &t, "a", 200, cnt);
  if (cnt[2] + cnt[3])
    fail_msg("idle pool, healthy zone a: %d of 200 zone-a requests went to "
             "zone b",
             cnt[2] + cnt[3]);
  assert_true(cnt[0] > 0 && cnt[1] > 0);
  zone_picks(r, &t, "b", 200, cnt);
  assert_int_equal(cnt[0] + cnt[1], 0);
}

/* Both zones busy alike: zone-a requests stay in zone a. */
static void test_locality_balanced_load(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = geo_setup(&t);
  uint64_t bg[4][4];
  for (int i = 0; i < 4; i++)
    hold_on(&t, i, 4, bg[i]);
  int cnt[4];
  zone_picks(r, &t, "a", 200, cnt);
  assert_int_equal(cnt[2] + cnt[3], 0);
  assert_true(cnt[0] > 0 && cnt[1] > 0);
  zone_picks(r, &t, "b", 200, cnt);
  assert_int_equal(cnt[0] + cnt[1], 0);
  for (int i = 0; i < 4; i++)
    release(&t, bg[i], 4);
}

/* Health: below ILB_OPT_LOCALITY_MIN_HEALTHY_PERCENT of its weight
 * available, a zone spills over. Load is even, so only health decides. */
static void test_locality_health_spill(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = geo_setup(&t);
  uint64_t bg[4][2];
  for (int i = 0; i < 4; i++)
    hold_on(&t, i, 2, bg[i]);
  set_avail(&t, 0, 0); /* zone a: 50% available, below 70% */
  int cnt[4];
  zone_picks(r, &t, "a", 300, cnt);
  assert_int_equal(cnt[0], 0);
  if (cnt[2] + cnt[3] < 100)
    fail_msg("zone a half available (< 70%%): only %d of 300 requests "
             "spilled to zone b",
             cnt[2] + cnt[3]);
  /* 50% is not below 50% */
  SET_OPT(t.p, ILB_OPT_LOCALITY_MIN_HEALTHY_PERCENT, 50);
  zone_picks(r, &t, "a", 300, cnt);
  assert_int_equal(cnt[1], 300);
  /* 0: never spill for health while any replica of the zone is there */
  SET_OPT(t.p, ILB_OPT_LOCALITY_MIN_HEALTHY_PERCENT, 0);
  zone_picks(r, &t, "a", 100, cnt);
  assert_int_equal(cnt[1], 100);
  /* none available in the zone: spill */
  set_avail(&t, 1, 0);
  zone_picks(r, &t, "a", 100, cnt);
  assert_int_equal(cnt[0] + cnt[1], 0);
  assert_int_equal(cnt[2] + cnt[3], 100);
  /* back */
  set_avail(&t, 0, 1);
  set_avail(&t, 1, 1);
  SET_OPT(t.p, ILB_OPT_LOCALITY_MIN_HEALTHY_PERCENT, 70);
  zone_picks(r, &t, "a", 100, cnt);
  assert_int_equal(cnt[0] + cnt[1], 100);
  for (int i = 0; i < 4; i++)
    release(&t, bg[i], 2);
}

/* Load: zone a's in flight per weight over 150% of the pool's spills. */
static void test_locality_load_spill(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = geo_setup(&t);
  uint64_t held[2][10];
  hold_on(&t, 0, 10, held[0]);
  hold_on(&t, 1, 10, held[1]);
  int cnt[4];
  zone_picks(r, &t, "a", 200, cnt);
  if (cnt[2] + cnt[3] < 50)
    fail_msg("zone a at 20 in flight, zone b idle: only %d of 200 zone-a "
             "requests spilled",
             cnt[2] + cnt[3]);
  /* 100000% never spills for load */
  SET_OPT(t.p, ILB_OPT_LOCALITY_SPILL_PERCENT, 100000);
  zone_picks(r, &t, "a", 200, cnt);
  assert_int_equal(cnt[0] + cnt[1], 200);
  release(&t, held[0], 10);
  release(&t, held[1], 10);
}

/* No room in the zone (capacity): spill over, whatever the load check. */
static void test_locality_zone_full(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool t;
  tp_new(&t, "geo", "", 0, ILB_POLICY_ROUND_ROBIN);
  tp_rep(&t, "a", 1, 1);
  tp_rep(&t, "b", 1, 0);
  tp_rep(&t, "b", 1, 0);
  tp_rep(&t, "b", 1, 0);
  tp_join(&t, r, ILB_ROLE_BOTH, 1);
  route_to(r, "geo", NULL);
  SET_OPT(t.p, ILB_OPT_LOCALITY_SPILL_PERCENT, 100000);
  uint64_t tk;
  hold_on(&t, 0, 1, &tk);
  rq_t q;
  rq_init(&q);
  q.req.zone = "a";
  int idx;
  assert_rc(pick_done(r, &q.req, &t, &idx, NULL), ILB_OK);
  assert_in(idx, 1, 3);
  release(&t, &tk, 1);
}

/* The same with ILB_OPT_ALLOW_OVER_CAPACITY: a zone without room spills
 * over ("when no replica of its zone has room") rather than putting its
 * replica over capacity; over capacity only when no replica of the pool
 * has room. */
static void test_locality_zone_full_over_capacity(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool t;
  tp_new(&t, "geo", "", 0, ILB_POLICY_ROUND_ROBIN);
  tp_rep(&t, "a", 1, 1);
  tp_rep(&t, "b", 1, 1);
  tp_join(&t, r, ILB_ROLE_BOTH, 1);
  route_to(r, "geo", NULL);
  SET_OPT(t.p, ILB_OPT_ALLOW_OVER_CAPACITY, 1);
  SET_OPT(t.p, ILB_OPT_LOCALITY_SPILL_PERCENT, 100000);
  uint64_t tk;
  hold_on(&t, 0, 1, &tk);
  rq_t q;
  rq_init(&q);
  q.req.zone = "a";
  ilb_route_result res;
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  int idx = rep_idx(&t, res.replica_id);
  if (idx != 1)
    fail_msg("zone a's one replica full (capacity 1), zone b's free, "
             "ALLOW_OVER_CAPACITY 1: the zone-a request went to %s (%lld in "
             "flight there now) instead of spilling to zone b",
             res.replica_id, (long long)rinfo(&t, 0).in_flight);
  assert_int_equal(rinfo(&t, 0).in_flight, 1);
  assert_int_equal(rinfo(&t, 1).in_flight, 1);
  /* both full: over capacity on one of them */
  ilb_route_result res2;
  assert_rc(rpick(&res2, r, &q.req), ILB_OK);
  assert_int_equal(rinfo(&t, 0).in_flight + rinfo(&t, 1).in_flight, 3);
  rdone(r, res2.ticket);
  rdone(r, res.ticket);
  release(&t, &tk, 1);
  /* room in zone a again: it stays there */
  int cnt[4];
  zone_picks(r, &t, "a", 20, cnt);
  assert_int_equal(cnt[0], 20);
  assert_u64(pool_in_flight(&t), 0);
}

/* chwbl inside a zone: a zone-a request's bound counts zone a's requests
 * in flight, not the pool's. Zones b and c carry 200 requests, zone a
 * none; then 20 requests of one key from zone a, held open. With the
 * header's bound (ILB_OPT_HASH_BALANCE_FACTOR), a replica of weight 1 of
 * the zone's W = 2 takes the (T+1)-th request while its in flight is
 * below ceil(1.25 * (T + 1) / 2), T the zone's in flight before it: so
 * after the k-th request (T + 1 = k) the busier zone-a replica holds at
 * most ceil(1.25 * k / 2) (13 after 20), and the other the rest. Counting
 * the pool's 200 instead would loosen the bound to about 139: all 20 on
 * the key's home. */
static void test_locality_chwbl_zone_bound(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 0); /* the policy's choice */
  tpool t;
  tp_new(&t, "geo", "", 0, ILB_POLICY_CHWBL);
  const char *zones[] = {"a", "a", "b", "b", "c", "c"};
  for (int i = 0; i < 6; i++)
    tp_rep(&t, zones[i], 1, 0);
  tp_join(&t, r, ILB_ROLE_BOTH, 1);
  route_to(r, "geo", NULL);
  SET_OPT(t.p, ILB_OPT_HASH_BALANCE_FACTOR, 125);
  SET_OPT(t.p, ILB_OPT_LOCALITY_SPILL_PERCENT, 100000); /* b, c stay */
  enum { BG = 200, N = 20 };
  static uint64_t bg[BG];
  for (int i = 0; i < BG; i++) {
    rq_t q;
    rq_init(&q);
    q.req.zone = i & 1 ? "c" : "b";
    ilb_route_result res;
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    assert_in(rep_idx(&t, res.replica_id), i & 1 ? 4 : 2, i & 1 ? 5 : 3);
    bg[i] = res.ticket;
  }
  uint64_t held[N];
  int cnt[2] = {0, 0};
  for (int k = 1; k <= N; k++) {
    rq_t q;
    rq_make(&q, NULL, "conv-hot");
    q.req.zone = "a";
    ilb_route_result res;
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    int idx = rep_idx(&t, res.replica_id);
    assert_in(idx, 0, 1);
    cnt[idx]++;
    held[k - 1] = res.ticket;
    int busier = cnt[0] > cnt[1] ? cnt[0] : cnt[1];
    int bound = (125 * k + 199) / 200; /* ceil(1.25 * k / 2) */
    if (busier > bound)
      fail_msg("zone a, chwbl c = 1.25: after %d requests of one key a "
               "zone-a replica holds %d (%d and %d), over the bound "
               "ceil(1.25 * %d / 2) = %d of the zone's load (zones b and c "
               "hold %d)",
               k, busier, cnt[0], cnt[1], k, bound, BG);
  }
  assert_int_equal(cnt[0] > cnt[1] ? cnt[0] : cnt[1], 13);
  for (int i = 0; i < N; i++)
    rdone(r, held[i]);
  for (int i = 0; i < BG; i++)
    rdone(r, bg[i]);
  assert_u64(pool_in_flight(&t), 0);
}

static void test_locality_no_zone_and_off(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = geo_setup(&t);
  uint64_t bg[4][2];
  for (int i = 0; i < 4; i++)
    hold_on(&t, i, 2, bg[i]);
  int cnt[4];
  /* no zone, or one no replica has: all replicas */
  zone_picks(r, &t, NULL, 200, cnt);
  for (int i = 0; i < 4; i++)
    assert_in(cnt[i], 30, 70);
  zone_picks(r, &t, "c", 200, cnt);
  for (int i = 0; i < 4; i++)
    assert_in(cnt[i], 30, 70);
  zone_picks(r, &t, "", 200, cnt);
  for (int i = 0; i < 4; i++)
    assert_in(cnt[i], 30, 70);
  /* locality off: no preference */
  zone_picks(r, &t, "a", 200, cnt);
  assert_int_equal(cnt[2] + cnt[3], 0);
  SET_OPT(t.p, ILB_OPT_LOCALITY, 0);
  zone_picks(r, &t, "a", 200, cnt);
  for (int i = 0; i < 4; i++)
    assert_in(cnt[i], 30, 70);
  SET_OPT(t.p, ILB_OPT_LOCALITY, 1);
  zone_picks(r, &t, "a", 200, cnt);
  assert_int_equal(cnt[2] + cnt[3], 0);
  for (int i = 0; i < 4; i++)
    release(&t, bg[i], 2);
}

/* A request of 0.5's size has no zone field: a zone beyond its size is not
 * read. A 0.3-sized one works too. */
static void test_locality_old_request_sizes(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = geo_setup(&t);
  uint64_t bg[4][2];
  for (int i = 0; i < 4; i++)
    hold_on(&t, i, 2, bg[i]);
  size_t sizes[] = {offsetof(ilb_request, zone),
                    offsetof(ilb_request, priority)};
  for (int k = 0; k < 2; k++) {
    int cnt[4] = {0};
    for (int i = 0; i < 200; i++) {
      rq_t q;
      rq_init(&q);
      q.req.zone = "a"; /* past struct_size: not the request's */
      q.req.struct_size = sizes[k];
      int idx;
      assert_rc(pick_done(r, &q.req, &t, &idx, NULL), ILB_OK);
      cnt[idx]++;
    }
    for (int i = 0; i < 4; i++)
      assert_in(cnt[i], 30, 70);
  }
  for (int i = 0; i < 4; i++)
    release(&t, bg[i], 2);
}

/* ------------------------------------------------------------------------ */
/* 7. Rate limits                                                           */
/* ------------------------------------------------------------------------ */

static ilb_rate_limit mklimit(const char *name, const char *key_attr,
                              uint64_t rate, uint64_t period_ms,
                              uint64_t burst) {
  ilb_rate_limit l;
  assert_rc(ilb_rate_limit_init(&l), ILB_OK);
  l.name = name;
  l.key_attr = key_attr;
  l.rate = rate;
  l.period_ms = period_ms;
  l.burst = burst;
  return l;
}

static void set_limit(ilb_router *r, const char *name, const char *key_attr,
                      uint64_t rate, uint64_t period_ms, uint64_t burst) {
  ilb_rate_limit l = mklimit(name, key_attr, rate, period_ms, burst);
  assert_rc(ilb_router_set_rate_limits(r, &l, 1), ILB_OK);
}

/* A pick with attribute x-api-key = api (NULL: none) and affinity key
 * (NULL: none), completed when admitted. Returns the error; *after the
 * result's retry_after_ns. */
static int limited_pick(ilb_router *r, const char *api, const char *key,
                        uint64_t *after) {
  rq_t q;
  rq_init(&q);
  if (api)
    rq_set(&q, "x-api-key", api);
  if (key)
    rq_key(&q, key);
  ilb_route_result res;
  int rc = rpick(&res, r, &q.req);
  if (after)
    *after = res.retry_after_ns;
  if (rc == ILB_OK) {
    rdone(r, res.ticket);
    assert_u64(res.retry_after_ns, 0);
  }
  return rc;
}

/* Admitted picks in a row (at most max) before the first ERATELIMIT. */
static int admitted(ilb_router *r, const char *api, const char *key,
                    int max) {
  for (int i = 0; i < max; i++) {
    int rc = limited_pick(r, api, key, NULL);
    if (rc == ILB_ERATELIMIT)
      return i;
    assert_rc(rc, ILB_OK);
  }
  return max;
}

static void test_ratelimit_gcra(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = new_router(SEED, 1);
  tp_make(&t, r, "llama", "v1", 3, 0);
  route_to(r, "llama", "v1");
  set_limit(r, "per-key", "x-api-key", 10, 1000, 3);
  uint64_t after = 0;
  for (int i = 0; i < 3; i++)
    assert_rc(limited_pick(r, "k1", NULL, &after), ILB_OK);
  assert_rc(limited_pick(r, "k1", NULL, &after), ILB_ERATELIMIT);
  assert_u64(after, 100 * MS);
  assert_u64(pool_in_flight(&t), 0);
  /* another key has its own bucket; no attribute: not limited */
  assert_int_equal(admitted(r, "k2", NULL, 10), 3);
  assert_int_equal(admitted(r, NULL, NULL, 50), 50);
  assert_int_equal(admitted(r, NULL, "k1", 50), 50);
  /* the next token, to the nanosecond */
  advance(99 * MS);
  assert_rc(limited_pick(r, "k1", NULL, &after), ILB_ERATELIMIT);
  assert_u64(after, 1 * MS);
  advance(1 * MS - 1);
  assert_rc(limited_pick(r, "k1", NULL, &after), ILB_ERATELIMIT);
  assert_u64(after, 1);
  advance(1);
  assert_rc(limited_pick(r, "k1", NULL, &after), ILB_OK);
  assert_rc(limited_pick(r, "k1", NULL, &after), ILB_ERATELIMIT);
  assert_u64(after, 100 * MS);
  /* a long pause refills the burst, no more */
  advance(10 * SEC);
  assert_int_equal(admitted(r, "k1", NULL, 10), 3);
  /* the sustained rate: 10 per second */
  int ok = 0;
  for (int i = 0; i < 1000; i++) {
    advance(10 * MS);
    int rc = limited_pick(r, "k1", NULL, NULL);
    if (rc == ILB_OK)
      ok++;
    else
      assert_rc(rc, ILB_ERATELIMIT);
  }
  assert_in(ok, 99, 101);
}

static void test_ratelimit_global_and_affinity(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = new_router(SEED, 1);
  tp_make(&t, r, "llama", "v1", 3, 0);
  route_to(r, "llama", "v1");
  /* "": one bucket for every request, even without attributes */
  set_limit(r, "global", "", 10, 1000, 3);
  assert_rc(limited_pick(r, "k1", NULL, NULL), ILB_OK);
  assert_rc(limited_pick(r, NULL, "s1", NULL), ILB_OK);
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  rdone(r, res.ticket);
  assert_rc(limited_pick(r, "k2", "s2", NULL), ILB_ERATELIMIT);
  assert_rc(rpick(&res, r, NULL), ILB_ERATELIMIT);
  assert_u64(res.retry_after_ns, 100 * MS);

  /* NULL: the affinity key; none: not limited */
  set_limit(r, "session", NULL, 10, 1000, 3);
  assert_int_equal(admitted(r, "k1", "s1", 10), 3);
  assert_int_equal(admitted(r, "k1", "s2", 10), 3);
  assert_int_equal(admitted(r, "k1", NULL, 50), 50);
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  rdone(r, res.ticket);
  assert_u64(pool_in_flight(&t), 0);
}

/* Tokens come back when the pick is refused later: by the pool, or by a
 * later limit. */
static void test_ratelimit_gives_back(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = new_router(SEED, 1);
  tp_new(&t, "llama", "v1", 0, 0);
  tp_rep(&t, NULL, 1, 1);
  tp_rep(&t, NULL, 1, 1);
  tp_join(&t, r, ILB_ROLE_BOTH, 1);
  route_to(r, "llama", "v1");
  set_limit(r, "per-key", "x-api-key", 10, 1000, 3);
  /* no replica available */
  set_avail(&t, 0, 0);
  set_avail(&t, 1, 0);
  for (int i = 0; i < 5; i++)
    assert_rc(limited_pick(r, "k1", NULL, NULL), ILB_ENOREPLICA);
  set_avail(&t, 0, 1);
  set_avail(&t, 1, 1);
  assert_int_equal(admitted(r, "k1", NULL, 10), 3);
  /* every replica full (capacity 1) */
  uint64_t h0, h1;
  hold_on(&t, 0, 1, &h0);
  hold_on(&t, 1, 1, &h1);
  for (int i = 0; i < 5; i++)
    assert_rc(limited_pick(r, "k2", NULL, NULL), ILB_ESATURATED);
  release(&t, &h0, 1);
  release(&t, &h1, 1);
  assert_int_equal(admitted(r, "k2", NULL, 10), 3);

  /* a later limit refuses: the earlier one's token comes back */
  ilb_rate_limit two[] = {mklimit("global", "", 10, 1000, 5),
                          mklimit("per-key", "x-api-key", 10, 1000, 1)};
  assert_rc(ilb_router_set_rate_limits(r, two, 2), ILB_OK);
  assert_rc(limited_pick(r, "a", NULL, NULL), ILB_OK);
  for (int i = 0; i < 5; i++)
    assert_rc(limited_pick(r, "a", NULL, NULL), ILB_ERATELIMIT);
  /* the global bucket had 5: "a" took one, 4 are left */
  const char *keys[] = {"b", "c", "d", "e"};
  for (int i = 0; i < 4; i++)
    assert_rc(limited_pick(r, keys[i], NULL, NULL), ILB_OK);
  assert_rc(limited_pick(r, "f", NULL, NULL), ILB_ERATELIMIT);
  assert_u64(pool_in_flight(&t), 0);
}

static void test_ratelimit_replace(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = new_router(SEED, 1);
  tp_make(&t, r, "llama", "v1", 3, 0);
  route_to(r, "llama", "v1");
  SET_ROPT(r, ILB_OPT_ROUTER_RATE_KEYS, 64); /* small tables: fast */
  set_limit(r, "per-key", "x-api-key", 10, 1000, 3);
  assert_int_equal(admitted(r, "k1", NULL, 10), 3);
  /* the same definition keeps its buckets */
  set_limit(r, "per-key", "x-api-key", 10, 1000, 3);
  assert_int_equal(admitted(r, "k1", NULL, 10), 0);
  /* also next to a new limit, in another place of the list */
  ilb_rate_limit two[] = {mklimit("other", "tenant", 1, 1000, 1),
                          mklimit("per-key", "x-api-key", 10, 1000, 3)};
  assert_rc(ilb_router_set_rate_limits(r, two, 2), ILB_OK);
  assert_int_equal(admitted(r, "k1", NULL, 10), 0);
  /* changed: starts full (burst, rate, period, key, name) */
  set_limit(r, "per-key", "x-api-key", 10, 1000, 4);
  assert_int_equal(admitted(r, "k1", NULL, 10), 4);
  set_limit(r, "per-key", "x-api-key", 20, 1000, 4);
  assert_int_equal(admitted(r, "k1", NULL, 10), 4);
  set_limit(r, "per-key", "x-api-key", 20, 2000, 4);
  assert_int_equal(admitted(r, "k1", NULL, 10), 4);
  set_limit(r, "per-key", "x-user", 20, 2000, 4);
  assert_int_equal(admitted(r, "k1", NULL, 10), 10); /* not this attribute */
  set_limit(r, "per-key", "x-api-key", 20, 2000, 4);
  assert_int_equal(admitted(r, "k1", NULL, 10), 4);
  set_limit(r, "renamed", "x-api-key", 20, 2000, 4);
  assert_int_equal(admitted(r, "k1", NULL, 10), 4);
  /* none: unlimited */
  assert_rc(ilb_router_set_rate_limits(r, NULL, 0), ILB_OK);
  assert_int_equal(admitted(r, "k1", NULL, 50), 50);
}

/* "after its pool is resolved, so a "model" key sees the routed model" */
static void test_ratelimit_routed_model(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = new_router(SEED, 1);
  tp_make(&t, r, "llama", "v1", 2, 0);
  ilb_match m[] = {MT("x-alias", ILB_MATCH_EXACT, "fast")};
  ilb_backend b[] = {BK("llama", "v1", 1)};
  ilb_route rt = mkroute("alias", m, 1, b, 1);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  set_limit(r, "per-model", "model", 1, 1000, 1);
  rq_t q;
  rq_make(&q, KV("model", "llama"), NULL);
  assert_rc(pick_done(r, &q.req, &t, NULL, NULL), ILB_OK);
  assert_rc(pick_done(r, &q.req, &t, NULL, NULL), ILB_ERATELIMIT);
  /* routed to llama by a route: llama's bucket, which is empty */
  rq_make(&q, KV("x-alias", "fast"), NULL);
  int rc = pick_done(r, &q.req, &t, NULL, NULL);
  if (rc != ILB_ERATELIMIT)
    fail_msg("a request routed to model llama (without a model attribute) "
             "was not limited by the exhausted \"model\" limit: %s",
             ilb_err_name(rc));
  rq_make(&q, KV("x-alias", "fast", "model", "gpt"), NULL);
  assert_rc(pick_done(r, &q.req, &t, NULL, NULL), ILB_ERATELIMIT);
}

/* ILB_OPT_ROUTER_RATE_KEYS: the keys a limit remembers, for limits made
 * afterwards. A forgotten key starts again with a full burst. */
static void test_ratelimit_keys_option(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = new_router(SEED, 1);
  tp_make(&t, r, "llama", "v1", 2, 0);
  route_to(r, "llama", "v1");
  set_limit(r, "daily", "x-api-key", 1, 86400000, 1);
  char key[16];
  int again = 0;
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    assert_rc(limited_pick(r, key, NULL, NULL), ILB_OK);
  }
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    again += limited_pick(r, key, NULL, NULL) == ILB_OK;
  }
  assert_int_equal(again, 0); /* 65536 keys: all remembered */
  SET_ROPT(r, ILB_OPT_ROUTER_RATE_KEYS, 64);
  set_limit(r, "daily", "x-api-key", 1, 86400000, 1); /* kept as it was */
  again = 0;
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    again += limited_pick(r, key, NULL, NULL) == ILB_OK;
  }
  assert_int_equal(again, 0);
  /* a new limit remembers 64 keys: most of 1000 are forgotten */
  set_limit(r, "daily2", "x-api-key", 1, 86400000, 1);
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    assert_rc(limited_pick(r, key, NULL, NULL), ILB_OK);
  }
  again = 0;
  for (int i = 0; i < 1000; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    again += limited_pick(r, key, NULL, NULL) == ILB_OK;
  }
  if (again < 800)
    fail_msg("64 keys remembered, 1000 used: only %d got a fresh burst",
             again);
  /* 64 keys in use fit */
  set_limit(r, "daily3", "x-api-key", 1, 86400000, 1);
  int fit = 0;
  for (int i = 0; i < 40; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    assert_rc(limited_pick(r, key, NULL, NULL), ILB_OK);
  }
  for (int i = 0; i < 40; i++) {
    snprintf(key, sizeof key, "key-%d", i);
    fit += limited_pick(r, key, NULL, NULL) == ILB_ERATELIMIT;
  }
  assert_in(fit, 30, 40);
}

/* ------------------------------------------------------------------------ */
/* 8. Prefill/decode pairs                                                  */
/* ------------------------------------------------------------------------ */

/* (llama, v1) as a PREFILL pool pf and a DECODE pool dc of 2 replicas
 * each (set pairs_max first when not 0); no routes. */
static ilb_router *pd_setup(tpool *pf, tpool *dc, int64_t pairs_max,
                            int n_decode) {
  ilb_router *r = new_router(SEED, 1);
  if (pairs_max)
    SET_ROPT(r, ILB_OPT_ROUTER_PAIRS_MAX, pairs_max);
  tp_new(pf, "llama", "v1", 0, ILB_POLICY_ROUND_ROBIN);
  tp_new(dc, "llama", "v1", 0, ILB_POLICY_ROUND_ROBIN);
  for (int i = 0; i < 2; i++) {
    snprintf(pf->ids[i], sizeof pf->ids[0], "prefill-%d", i);
    add_replica(pf->p, pf->ids[i], 1, 0, NULL);
  }
  pf->n = 2;
  for (int i = 0; i < n_decode; i++) {
    snprintf(dc->ids[i], sizeof dc->ids[0], "decode-%d", i);
    add_replica(dc->p, dc->ids[i], 1, 0, NULL);
  }
  dc->n = n_decode;
  tp_join(pf, r, ILB_ROLE_PREFILL, 1);
  int rc = tp_join_rc(dc, r, ILB_ROLE_DECODE, 1);
  if (rc)
    fail_msg("a DECODE pool under the (model, version) of its PREFILL pool "
             "(the pairing the header describes) was refused: %s",
             ilb_err_name(rc));
  return r;
}

static int64_t in_flight_of(const tpool *t, int i) {
  return rinfo(t, i).in_flight;
}

static void test_pd_pair(void **state) {
  (void)state;
  tpool pf, dc;
  ilb_router *r = pd_setup(&pf, &dc, 0, 2);
  rq_t q;
  rq_make(&q, KV("model", "llama"), NULL);
  ilb_route_result res;
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  assert_ptr_equal(res.pool, dc.p);
  assert_ptr_equal(res.prefill_pool, pf.p);
  assert_string_equal(res.model, "llama");
  assert_string_equal(res.version, "v1");
  int d = rep_idx(&dc, res.replica_id), p = rep_idx(&pf, res.prefill_replica_id);
  assert_true(d >= 0 && p >= 0);
  assert_int_equal(in_flight_of(&dc, d), 1);
  assert_int_equal(in_flight_of(&pf, p), 1);
  assert_u64(pool_in_flight(&dc) + pool_in_flight(&pf), 2);
  /* a pool does not complete a pair's ticket: nothing changes */
  assert_rc(ilb_complete(dc.p, res.ticket, NULL), ILB_ESTALE);
  assert_rc(ilb_complete(pf.p, res.ticket, NULL), ILB_ESTALE);
  assert_int_equal(in_flight_of(&dc, d), 1);
  assert_int_equal(in_flight_of(&pf, p), 1);
  /* the router completes both halves, once */
  uint64_t dcomp = rinfo(&dc, d).completed, pcomp = rinfo(&pf, p).completed;
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_OK);
  assert_int_equal(in_flight_of(&dc, d), 0);
  assert_int_equal(in_flight_of(&pf, p), 0);
  assert_u64(rinfo(&dc, d).completed, dcomp + 1);
  assert_u64(rinfo(&pf, p).completed, pcomp + 1);
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_ESTALE);
  assert_rc(ilb_router_complete_pair(r, res.ticket, NULL, NULL), ILB_ESTALE);

  /* an outcome per half: the failing prefill replica is charged alone */
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  d = rep_idx(&dc, res.replica_id);
  p = rep_idx(&pf, res.prefill_replica_id);
  ilb_outcome bad = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  ilb_outcome worse = oc(99, 0);
  /* a bad outcome changes nothing: the ticket stays valid */
  assert_rc(ilb_router_complete_pair(r, res.ticket, &worse, NULL),
            ILB_EINVAL);
  assert_rc(ilb_router_complete_pair(r, res.ticket, NULL, &worse),
            ILB_EINVAL);
  assert_rc(ilb_router_complete(r, res.ticket, &worse), ILB_EINVAL);
  assert_int_equal(in_flight_of(&pf, p), 1);
  assert_rc(ilb_router_complete_pair(r, res.ticket, &bad, NULL), ILB_OK);
  assert_u64(rinfo(&pf, p).failed, 1);
  assert_u64(rinfo(&dc, d).failed, 0);
  assert_int_equal(in_flight_of(&pf, p), 0);
  assert_int_equal(in_flight_of(&dc, d), 0);
  assert_rc(ilb_router_complete_pair(r, res.ticket, &bad, NULL), ILB_ESTALE);
  assert_u64(rinfo(&pf, p).failed, 1);

  /* not a pair's ticket: EINVAL, and it stays valid */
  tpool solo;
  tp_make(&solo, r, "mistral", "v1", 1, 0);
  rq_make(&q, KV("model", "mistral"), NULL);
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  assert_null(res.prefill_replica_id);
  assert_null(res.prefill_pool);
  assert_rc(ilb_router_complete_pair(r, res.ticket, NULL, NULL), ILB_EINVAL);
  assert_u64(pool_in_flight(&solo), 1);
  rdone(r, res.ticket);
  assert_u64(pool_in_flight(&dc) + pool_in_flight(&pf), 0);
}

/* A pair's outcome too short for ilb_complete (one that ends before
 * latency_ns): ILB_ESIZE from either completion, and nothing changes --
 * both halves stay in flight and the ticket stays valid. */
static void test_pd_short_outcome(void **state) {
  (void)state;
  tpool pf, dc;
  ilb_router *r = pd_setup(&pf, &dc, 0, 2);
  rq_t q;
  rq_make(&q, KV("model", "llama"), NULL);
  ilb_route_result res;
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  int d = rep_idx(&dc, res.replica_id),
      p = rep_idx(&pf, res.prefill_replica_id);
  assert_true(d >= 0 && p >= 0);
  ilb_outcome good = oc(ILB_OUTCOME_OK, 200);
  ilb_outcome shrt = good;
  shrt.struct_size = offsetof(ilb_outcome, latency_ns);
#define SHORT_CASE(call)                                                     \
  do {                                                                       \
    assert_rc((call), ILB_ESIZE);                                            \
    if (in_flight_of(&pf, p) != 1 || in_flight_of(&dc, d) != 1)             \
      fail_msg("%s: ILB_ESIZE, yet in flight now prefill %lld, decode "     \
               "%lld (expected 1 and 1: nothing changes)",                   \
               #call, (long long)in_flight_of(&pf, p),                       \
               (long long)in_flight_of(&dc, d));                             \
  } while (0)
  SHORT_CASE(ilb_router_complete(r, res.ticket, &shrt));
  SHORT_CASE(ilb_router_complete_pair(r, res.ticket, &shrt, NULL));
  SHORT_CASE(ilb_router_complete_pair(r, res.ticket, NULL, &shrt));
  SHORT_CASE(ilb_router_complete_pair(r, res.ticket, &good, &shrt));
  SHORT_CASE(ilb_router_complete_pair(r, res.ticket, &shrt, &good));
#undef SHORT_CASE
  /* the ticket is still the pair's: a proper completion ends both */
  assert_rc(ilb_router_complete_pair(r, res.ticket, &good, &good), ILB_OK);
  assert_int_equal(in_flight_of(&pf, p), 0);
  assert_int_equal(in_flight_of(&dc, d), 0);
  assert_u64(pool_in_flight(&dc) + pool_in_flight(&pf), 0);
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_ESTALE);
  /* the same through ilb_router_complete */
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  d = rep_idx(&dc, res.replica_id);
  p = rep_idx(&pf, res.prefill_replica_id);
  assert_rc(ilb_router_complete(r, res.ticket, &shrt), ILB_ESIZE);
  assert_int_equal(in_flight_of(&pf, p), 1);
  assert_int_equal(in_flight_of(&dc, d), 1);
  assert_rc(ilb_router_complete(r, res.ticket, &good), ILB_OK);
  assert_int_equal(in_flight_of(&pf, p), 0);
  assert_int_equal(in_flight_of(&dc, d), 0);
}

/* A route naming (llama, v1) and a pin in it reach the DECODE pool. */
static void test_pd_route_and_sticky(void **state) {
  (void)state;
  tpool pf, dc;
  ilb_router *r = pd_setup(&pf, &dc, 0, 2);
  route_to(r, "llama", "v1");
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_ptr_equal(res.pool, dc.p);
  assert_ptr_equal(res.prefill_pool, pf.p);
  rdone(r, res.ticket);
  /* sticky sessions apply to the decode half */
  rq_t q;
  rq_make(&q, NULL, "sess-PD");
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  int d = rep_idx(&dc, res.replica_id);
  assert_int_equal(res.sticky, 0);
  rdone(r, res.ticket);
  for (int i = 0; i < 5; i++) {
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    assert_int_equal(rep_idx(&dc, res.replica_id), d);
    assert_int_equal(res.sticky, 1);
    rdone(r, res.ticket);
  }
  assert_rc(ilb_router_pin(r, "sess-PD", 7, "llama", "v1", dc.ids[1 - d], 0),
            ILB_OK);
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  assert_int_equal(rep_idx(&dc, res.replica_id), 1 - d);
  assert_int_equal(res.sticky, 1);
  rdone(r, res.ticket);
  assert_u64(pool_in_flight(&dc) + pool_in_flight(&pf), 0);
}

static void test_pd_failures(void **state) {
  (void)state;
  /* DECODE without a PREFILL pool */
  ilb_router *r = new_router(SEED, 1);
  tpool dc0;
  tp_new(&dc0, "mistral", "v1", 2, 0);
  tp_join(&dc0, r, ILB_ROLE_DECODE, 1);
  rq_t q;
  rq_make(&q, KV("model", "mistral"), NULL);
  ilb_route_result res;
  assert_rc(rpick(&res, r, &q.req), ILB_ENOMODEL);
  assert_u64(pool_in_flight(&dc0), 0);
  free_router(r);

  /* the decode half fails: nothing stays in flight on the prefill pool */
  tpool pf, dc;
  r = pd_setup(&pf, &dc, 0, 0);
  rq_make(&q, KV("model", "llama"), NULL);
  for (int i = 0; i < 5; i++)
    assert_rc(rpick(&res, r, &q.req), ILB_ENOREPLICA);
  assert_u64(pool_in_flight(&pf), 0);
  assert_int_equal(in_flight_of(&pf, 0) + in_flight_of(&pf, 1), 0);
  /* the prefill half fails: nothing on the decode pool */
  add_replica(dc.p, "decode-0", 1, 0, NULL);
  set_avail(&pf, 0, 0);
  set_avail(&pf, 1, 0);
  assert_rc(rpick(&res, r, &q.req), ILB_ENOREPLICA);
  assert_u64(pool_in_flight(&dc), 0);
  set_avail(&pf, 0, 1);
  set_avail(&pf, 1, 1);
  /* the pair table was not used up by the failures */
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  rdone(r, res.ticket);
}

static void test_pd_pair_table_full(void **state) {
  (void)state;
  tpool pf, dc;
  ilb_router *r = pd_setup(&pf, &dc, 64, 2);
  rq_t q;
  rq_make(&q, KV("model", "llama"), NULL);
  uint64_t tk[64];
  ilb_route_result res;
  for (int i = 0; i < 64; i++) {
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    tk[i] = res.ticket;
  }
  assert_rc(rpick(&res, r, &q.req), ILB_ETICKETS);
  assert_u64(pool_in_flight(&pf), 64);
  assert_u64(pool_in_flight(&dc), 64);
  /* a pick refused for want of a pair entry gives its token back */
  set_limit(r, "per-key", "x-api-key", 1, 86400000, 1);
  rq_t lq;
  rq_make(&lq, KV("model", "llama", "x-api-key", "z"), NULL);
  for (int i = 0; i < 3; i++)
    assert_rc(rpick(&res, r, &lq.req), ILB_ETICKETS);
  /* fixed once the table exists */
  assert_rc(ilb_router_set_option(r, ILB_OPT_ROUTER_PAIRS_MAX, 128),
            ILB_EBUSY);
  int64_t v = 0;
  assert_rc(ilb_router_get_option(&v, r, ILB_OPT_ROUTER_PAIRS_MAX), ILB_OK);
  assert_int_equal(v, 64);
  assert_rc(rpick(&res, r, &q.req), ILB_ETICKETS);
  rdone(r, tk[17]);
  assert_rc(rpick(&res, r, &lq.req), ILB_OK);
  tk[17] = res.ticket;
  assert_rc(rpick(&res, r, &q.req), ILB_ETICKETS);
  assert_rc(rpick(&res, r, &lq.req), ILB_ERATELIMIT);
  for (int i = 0; i < 64; i++)
    rdone(r, tk[i]);
  assert_u64(pool_in_flight(&pf) + pool_in_flight(&dc), 0);
}

/* A half's replica removed while the pair is in flight: EREMOVED, both
 * halves released, the other one recorded. Removing the name removes
 * both pools; they come back under it. */
static void test_pd_removed(void **state) {
  (void)state;
  tpool pf, dc;
  ilb_router *r = pd_setup(&pf, &dc, 0, 2);
  rq_t q;
  rq_make(&q, KV("model", "llama"), NULL);
  ilb_route_result res;
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  int d = rep_idx(&dc, res.replica_id), p = rep_idx(&pf, res.prefill_replica_id);
  uint64_t dcomp = rinfo(&dc, d).completed;
  assert_rc(ilb_replica_remove(pf.p, pf.ids[p]), ILB_OK);
  pf.ids[p][0] = 0;
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_EREMOVED);
  assert_int_equal(in_flight_of(&dc, d), 0);
  assert_u64(rinfo(&dc, d).completed, dcomp + 1);
  assert_u64(pool_in_flight(&pf), 0);
  assert_rc(ilb_router_complete(r, res.ticket, NULL), ILB_ESTALE);
  /* the other prefill replica serves on */
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  assert_int_equal(rep_idx(&pf, res.prefill_replica_id), 1 - p);
  const char *model = res.model;
  uint64_t keep = res.ticket;
  /* the name of a pair removes both pools */
  assert_rc(ilb_router_remove_pool(r, "llama", "v1"), ILB_OK);
  assert_rc(ilb_router_remove_pool(r, "llama", "v1"), ILB_ENOENT);
  assert_rc(rpick(&res, r, &q.req), ILB_ENOMODEL);
  /* its pair in flight completes through the router; the result's
   * strings outlive the removal */
  assert_u64(pool_in_flight(&pf) + pool_in_flight(&dc), 2);
  rdone(r, keep);
  assert_u64(pool_in_flight(&pf) + pool_in_flight(&dc), 0);
  assert_string_equal(model, "llama");
  tp_join(&pf, r, ILB_ROLE_PREFILL, 1);
  tp_join(&dc, r, ILB_ROLE_DECODE, 1);
  assert_rc(rpick(&res, r, &q.req), ILB_OK);
  assert_ptr_equal(res.prefill_pool, pf.p);
  rdone(r, res.ticket);
  assert_u64(pool_in_flight(&pf) + pool_in_flight(&dc), 0);
}

/* ILB_OPT_ROUTER_PAIRS_MAX is rounded up to a power of two. */
static void test_pd_pairs_rounded(void **state) {
  (void)state;
  tpool pf, dc;
  ilb_router *r = pd_setup(&pf, &dc, 100, 2);
  rq_t q;
  rq_make(&q, KV("model", "llama"), NULL);
  static uint64_t tk[128];
  ilb_route_result res;
  for (int i = 0; i < 128; i++) {
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    tk[i] = res.ticket;
  }
  assert_rc(rpick(&res, r, &q.req), ILB_ETICKETS);
  for (int i = 0; i < 128; i++)
    rdone(r, tk[i]);
}

/* ------------------------------------------------------------------------ */
/* 9. Mirroring                                                             */
/* ------------------------------------------------------------------------ */

static void set_mirror_route(ilb_router *r, const char *mmodel,
                             const char *mversion, uint32_t pct) {
  ilb_backend b[] = {BK("llama", "v1", 1)};
  ilb_route rt = mkroute("mirrored", NULL, 0, b, 1);
  rt.mirror_model = mmodel;
  rt.mirror_version = mversion;
  rt.mirror_percent = pct;
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
}

static void test_mirror(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool v1, sh, bare;
  tp_make(&v1, r, "llama", "v1", 2, 0);
  tp_make(&sh, r, "llama", "shadow", 2, 0);
  tp_make(&bare, r, "llama", "", 0, 0); /* no replicas */
  set_mirror_route(r, "llama", "shadow", 100);
  for (int i = 0; i < 50; i++) {
    ilb_route_result res;
    assert_rc(rpick(&res, r, NULL), ILB_OK);
    assert_ptr_equal(res.pool, v1.p);
    assert_true(res.mirror_ticket != 0);
    assert_ptr_equal(res.mirror_pool, sh.p);
    assert_true(rep_idx(&sh, res.mirror_replica_id) >= 0);
    assert_u64(pool_in_flight(&sh), 1);
    assert_u64(pool_in_flight(&v1), 1);
    rdone(r, res.ticket);
    if (i & 1)
      assert_rc(ilb_complete(res.mirror_pool, res.mirror_ticket, NULL),
                ILB_OK);
    else
      assert_rc(ilb_router_complete(r, res.mirror_ticket, NULL), ILB_OK);
    assert_rc(ilb_router_complete(r, res.mirror_ticket, NULL), ILB_ESTALE);
    assert_u64(pool_in_flight(&sh), 0);
  }
  /* 0%: none */
  set_mirror_route(r, "llama", "shadow", 0);
  for (int i = 0; i < 50; i++) {
    ilb_route_result res;
    assert_rc(rpick(&res, r, NULL), ILB_OK);
    assert_u64(res.mirror_ticket, 0);
    assert_null(res.mirror_pool);
    assert_null(res.mirror_replica_id);
    rdone(r, res.ticket);
  }
  /* 50% */
  set_mirror_route(r, "llama", "shadow", 50);
  uint64_t n = 0;
  for (int i = 0; i < 4000; i++) {
    ilb_route_result res;
    assert_rc(rpick(&res, r, NULL), ILB_OK);
    if (res.mirror_ticket) {
      n++;
      rdone(r, res.mirror_ticket);
    }
    rdone(r, res.ticket);
  }
  assert_binomial(n, 4000, 0.5, "mirrored at 50%");
  /* the mirror pool is missing, or has no replica: the request succeeds
   * without a mirror */
  set_mirror_route(r, "llama", "nope", 100);
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_u64(res.mirror_ticket, 0);
  assert_null(res.mirror_pool);
  rdone(r, res.ticket);
  set_mirror_route(r, "llama", NULL, 100); /* (llama, ""): empty */
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_u64(res.mirror_ticket, 0);
  rdone(r, res.ticket);
  /* the request fails: no mirror is left in flight */
  set_mirror_route(r, "llama", "shadow", 100);
  set_avail(&v1, 0, 0);
  set_avail(&v1, 1, 0);
  assert_rc(rpick(&res, r, NULL), ILB_ENOREPLICA);
  assert_u64(res.mirror_ticket, 0);
  assert_u64(pool_in_flight(&sh), 0);
  assert_u64(pool_in_flight(&v1), 0);
}

/* ------------------------------------------------------------------------ */
/* 10. Bad input and options                                                */
/* ------------------------------------------------------------------------ */

static void no_free(void *ptr, void *user_data) {
  (void)ptr;
  (void)user_data;
}

static void test_bad_router_new(void **state) {
  (void)state;
  ilb_router *r = (ilb_router *)(uintptr_t)1;
  assert_rc(ilb_router_new(NULL, NULL), ILB_EINVAL);
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.struct_size = 8;
  assert_rc(ilb_router_new(&r, &h), ILB_ESIZE);
  assert_null(r);
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.reserved0 = 1;
  assert_rc(ilb_router_new(&r, &h), ILB_EINVAL);
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.log_level = 9;
  assert_rc(ilb_router_new(&r, &h), ILB_EINVAL);
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.free = no_free; /* without alloc */
  assert_rc(ilb_router_new(&r, &h), ILB_EINVAL);
  assert_rc(ilb_router_new(&r, NULL), ILB_OK);
  ilb_router_free(r);
  ilb_router_free(NULL);
  /* the init functions */
  assert_rc(ilb_router_pool_spec_init(NULL), ILB_EINVAL);
  assert_rc(ilb_route_init(NULL), ILB_EINVAL);
  assert_rc(ilb_rate_limit_init(NULL), ILB_EINVAL);
  assert_rc(ilb_route_result_init(NULL), ILB_EINVAL);
  ilb_router_pool_spec ps;
  memset(&ps, 0x5A, sizeof ps);
  assert_rc(ilb_router_pool_spec_init(&ps), ILB_OK);
  assert_int_equal(ps.struct_size, sizeof ps);
  assert_int_equal(ps.weight, 1);
  assert_int_equal(ps.role, ILB_ROLE_BOTH);
  assert_null(ps.model);
  ilb_rate_limit rl;
  memset(&rl, 0x5A, sizeof rl);
  assert_rc(ilb_rate_limit_init(&rl), ILB_OK);
  assert_int_equal(rl.struct_size, sizeof rl);
  assert_u64(rl.period_ms, 1000);
  assert_u64(rl.burst, 1);
  assert_u64(rl.rate, 0);
  ilb_route rt;
  memset(&rt, 0x5A, sizeof rt);
  assert_rc(ilb_route_init(&rt), ILB_OK);
  assert_int_equal(rt.struct_size, sizeof rt);
  assert_null(rt.name);
  assert_int_equal(rt.n_backends, 0);
  assert_int_equal(rt.mirror_percent, 0);
}

static char long_str[ILB_ID_MAX + 2];
static char max_str[ILB_ID_MAX + 1];
static void make_long_strings(void) {
  memset(long_str, 'x', ILB_ID_MAX + 1);
  long_str[ILB_ID_MAX + 1] = 0;
  memset(max_str, 'm', ILB_ID_MAX);
  max_str[ILB_ID_MAX] = 0;
}

static void test_bad_add_remove_pool(void **state) {
  (void)state;
  make_long_strings();
  ilb_router *r = new_router(SEED, 1);
  tpool t, u;
  tp_new(&t, "llama", "v1", 1, 0);
  ilb_router_pool_spec spec;
  assert_rc(ilb_router_pool_spec_init(&spec), ILB_OK);
  spec.model = "llama";
  spec.version = "v1";
  assert_rc(ilb_router_add_pool(NULL, &spec, t.p), ILB_EINVAL);
  assert_rc(ilb_router_add_pool(r, NULL, t.p), ILB_EINVAL);
  assert_rc(ilb_router_add_pool(r, &spec, NULL), ILB_EINVAL);
  ilb_router_pool_spec bad = spec;
  bad.struct_size = 8;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_ESIZE);
  struct {
    ilb_router_pool_spec s;
    uint64_t tail;
  } big;
  memset(&big, 0, sizeof big);
  big.s = spec;
  big.s.struct_size = sizeof big;
  big.tail = 1;
  assert_rc(ilb_router_add_pool(r, &big.s, t.p), ILB_ESIZE);
  bad = spec;
  bad.model = NULL;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_EINVAL);
  bad.model = "";
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_EINVAL);
  bad.model = long_str;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_ETOOBIG);
  bad = spec;
  bad.version = long_str;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_ETOOBIG);
  bad = spec;
  bad.role = 3;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_EINVAL);
  bad.role = -1;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_EINVAL);
  bad = spec;
  bad.weight = ILB_WEIGHT_MAX + 1;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_ERANGE);
  bad = spec;
  bad.n_labels = 1;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_EINVAL);
  ilb_label lb[ILB_LABELS_MAX + 1];
  for (int i = 0; i <= ILB_LABELS_MAX; i++) {
    lb[i].key = "k";
    lb[i].value = "v";
  }
  bad.labels = lb;
  bad.n_labels = ILB_LABELS_MAX + 1;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_ETOOBIG);
  bad.n_labels = 1;
  lb[0].key = NULL;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_EINVAL);
  lb[0].key = "";
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_EINVAL);
  lb[0].key = long_str;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_ETOOBIG);
  lb[0].key = "k";
  lb[0].value = NULL;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_EINVAL);
  lb[0].value = long_str;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_ETOOBIG);
  lb[0].value = "";
  /* none of that left a trace: the pool joins, with its labels */
  bad.n_labels = ILB_LABELS_MAX;
  bad.model = max_str;
  bad.version = max_str;
  assert_rc(ilb_router_add_pool(r, &bad, t.p), ILB_OK);
  route_to(r, max_str, max_str);
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_string_equal(res.model, max_str);
  rdone(r, res.ticket);
  /* taken names, pools already in */
  tp_new(&u, "llama", "v1", 1, 0);
  spec.model = max_str;
  spec.version = max_str;
  assert_rc(ilb_router_add_pool(r, &spec, u.p), ILB_EEXIST);
  assert_rc(ilb_router_add_pool(r, &spec, t.p), ILB_EEXIST);
  spec.model = "other";
  assert_rc(ilb_router_add_pool(r, &spec, t.p), ILB_EBUSY);
  spec.version = NULL; /* = "" */
  assert_rc(ilb_router_add_pool(r, &spec, u.p), ILB_OK);
  spec.version = "";
  tpool w;
  tp_new(&w, "x", "", 1, 0);
  assert_rc(ilb_router_add_pool(r, &spec, w.p), ILB_EEXIST);
  /* removal */
  assert_rc(ilb_router_remove_pool(NULL, "other", NULL), ILB_EINVAL);
  assert_rc(ilb_router_remove_pool(r, NULL, NULL), ILB_EINVAL);
  assert_rc(ilb_router_remove_pool(r, "nobody", NULL), ILB_ENOENT);
  assert_rc(ilb_router_remove_pool(r, "other", "v1"), ILB_ENOENT);
  assert_rc(ilb_router_remove_pool(r, "other", NULL), ILB_OK);
  assert_rc(ilb_router_remove_pool(r, "other", ""), ILB_ENOENT);
  /* the freed name takes another pool */
  assert_rc(ilb_router_add_pool(r, &spec, w.p), ILB_OK);
}

/* ILB_ROUTER_POOLS_MAX pools over the router's life. */
static void test_pools_max(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  ilb_pool *first = NULL;
  char ver[16];
  ilb_router_pool_spec spec;
  assert_rc(ilb_router_pool_spec_init(&spec), ILB_OK);
  spec.model = "m";
  spec.version = ver;
  for (int i = 0; i <= ILB_ROUTER_POOLS_MAX; i++) {
    ilb_pool *p = NULL;
    assert_rc(ilb_pool_new(&p, NULL), ILB_OK);
    snprintf(ver, sizeof ver, "v%d", i);
    int rc = ilb_router_add_pool(r, &spec, p);
    if (i < ILB_ROUTER_POOLS_MAX)
      assert_rc(rc, ILB_OK);
    else
      assert_rc(rc, ILB_ETOOBIG);
    if (i == 0)
      first = p; /* the host keeps this one */
    else
      ilb_pool_free(p); /* the router's reference keeps it */
  }
  /* a removed pool comes back without taking a new place */
  assert_rc(ilb_router_remove_pool(r, "m", "v0"), ILB_OK);
  snprintf(ver, sizeof ver, "v0");
  assert_rc(ilb_router_add_pool(r, &spec, first), ILB_OK);
  /* another pool under the removed name needs a new place */
  assert_rc(ilb_router_remove_pool(r, "m", "v0"), ILB_OK);
  ilb_pool *p = NULL;
  assert_rc(ilb_pool_new(&p, NULL), ILB_OK);
  assert_rc(ilb_router_add_pool(r, &spec, p), ILB_ETOOBIG);
  ilb_pool_free(p);
  ilb_pool_free(first);
}

/* A failing ilb_router_set_routes leaves the old table: check it still
 * routes {x-v: 2} to v2, everything else to v1. */
static void assert_old_routes(ilb_router *r) {
  expect_route(r, KV("x-v", "2"), 0, 0, "llama", "v2");
  expect_route(r, NULL, 0, 1, "llama", "v1");
}

static void test_bad_set_routes(void **state) {
  (void)state;
  make_long_strings();
  ilb_router *r = new_router(SEED, 1);
  tpool v1, v2;
  tp_make(&v1, r, "llama", "v1", 1, 0);
  tp_make(&v2, r, "llama", "v2", 1, 0);
  ilb_match m[] = {MT("x-v", ILB_MATCH_EXACT, "2")};
  ilb_backend b2[] = {BK("llama", "v2", 1)};
  ilb_backend b1[] = {BK("llama", "v1", 1)};
  ilb_route good[] = {mkroute("hdr", m, 1, b2, 1),
                      mkroute("default", NULL, 0, b1, 1)};
  assert_rc(ilb_router_set_routes(r, good, 2), ILB_OK);
  assert_old_routes(r);

  assert_rc(ilb_router_set_routes(NULL, good, 2), ILB_EINVAL);
  assert_rc(ilb_router_set_routes(r, NULL, 1), ILB_EINVAL);
  ilb_route x;
#define BAD_ROUTE(mutate, want)                                              \
  do {                                                                       \
    x = mkroute("bad", m, 1, b1, 1);                                         \
    mutate;                                                                  \
    ilb_route two_[2] = {good[0], x};                                        \
    assert_rc(ilb_router_set_routes(r, two_, 2), (want));                    \
    assert_old_routes(r);                                                    \
  } while (0)
  BAD_ROUTE(x.struct_size = 8, ILB_ESIZE);
  BAD_ROUTE(x.name = NULL, ILB_EINVAL);
  BAD_ROUTE(x.name = "", ILB_EINVAL);
  BAD_ROUTE(x.name = long_str, ILB_ETOOBIG);
  BAD_ROUTE(x.name = "hdr", ILB_EEXIST);
  BAD_ROUTE(x.reserved0 = 1, ILB_EINVAL);
  BAD_ROUTE(x.matches = NULL, ILB_EINVAL);
  BAD_ROUTE(x.n_matches = ILB_ROUTE_MATCHES_MAX + 1, ILB_ETOOBIG);
  BAD_ROUTE(x.backends = NULL, ILB_EINVAL);
  BAD_ROUTE(x.n_backends = 0, ILB_EINVAL);
  BAD_ROUTE(x.n_backends = ILB_ROUTE_BACKENDS_MAX + 1, ILB_ETOOBIG);
  BAD_ROUTE(x.mirror_percent = 101, ILB_EINVAL);
  BAD_ROUTE(x.mirror_version = "v1", ILB_EINVAL);
  BAD_ROUTE((x.mirror_model = long_str, x.mirror_percent = 5), ILB_ETOOBIG);
  BAD_ROUTE((x.mirror_model = "", x.mirror_percent = 5), ILB_EINVAL);
  BAD_ROUTE((x.mirror_model = "llama", x.mirror_version = long_str),
            ILB_ETOOBIG);
  /* matches */
  ilb_match bm[1];
#define BAD_MATCH(k_, kind_, v_, res0_, want)                                \
  do {                                                                       \
    bm[0].key = (k_);                                                        \
    bm[0].value = (v_);                                                      \
    bm[0].kind = (kind_);                                                    \
    bm[0].reserved0 = (res0_);                                               \
    BAD_ROUTE(x.matches = bm, (want));                                       \
  } while (0)
  BAD_MATCH(NULL, ILB_MATCH_EXACT, "a", 0, ILB_EINVAL);
  BAD_MATCH("", ILB_MATCH_EXACT, "a", 0, ILB_EINVAL);
  BAD_MATCH(long_str, ILB_MATCH_EXACT, "a", 0, ILB_ETOOBIG);
  BAD_MATCH("k", 0, "a", 0, ILB_EINVAL);
  BAD_MATCH("k", 5, "a", 0, ILB_EINVAL);
  BAD_MATCH("k", -1, NULL, 0, ILB_EINVAL);
  BAD_MATCH("k", ILB_MATCH_EXACT, NULL, 0, ILB_EINVAL);
  BAD_MATCH("k", ILB_MATCH_PREFIX, NULL, 0, ILB_EINVAL);
  BAD_MATCH("k", ILB_MATCH_PRESENT, "a", 0, ILB_EINVAL);
  BAD_MATCH("k", ILB_MATCH_ABSENT, "", 0, ILB_EINVAL);
  BAD_MATCH("k", ILB_MATCH_EXACT, long_str, 0, ILB_ETOOBIG);
  BAD_MATCH("k", ILB_MATCH_EXACT, "a", 1, ILB_EINVAL);
  /* backends */
  ilb_backend bb[2];
#define BAD_BACKENDS(m0, v0, w0, r0, w1, want)                               \
  do {                                                                       \
    bb[0] = (ilb_backend){(m0), (v0), (w0), (r0)};                           \
    bb[1] = (ilb_backend){"llama", "v2", (w1), 0};                           \
    BAD_ROUTE((x.backends = bb, x.n_backends = 2), (want));                  \
  } while (0)
  BAD_BACKENDS("llama", "v1", 0, 0, 0, ILB_EINVAL);
  BAD_BACKENDS("llama", "v1", ILB_WEIGHT_MAX + 1, 0, 1, ILB_ERANGE);
  BAD_BACKENDS("llama", "v1", 1, 0, ILB_WEIGHT_MAX + 1, ILB_ERANGE);
  BAD_BACKENDS("llama", "v1", 1, 1, 1, ILB_EINVAL);
  BAD_BACKENDS(long_str, "v1", 1, 0, 1, ILB_ETOOBIG);
  BAD_BACKENDS("", "v1", 1, 0, 1, ILB_EINVAL);
  BAD_BACKENDS("llama", long_str, 1, 0, 1, ILB_ETOOBIG);
  /* the largest weights are fine */
  bb[0] = (ilb_backend){"llama", "v1", ILB_WEIGHT_MAX, 0};
  bb[1] = (ilb_backend){"llama", "v2", ILB_WEIGHT_MAX, 0};
  x = mkroute("max", NULL, 0, bb, 2);
  assert_rc(ilb_router_set_routes(r, &x, 1), ILB_OK);
  ilb_route_result res;
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  rdone(r, res.ticket);
  assert_rc(ilb_router_set_routes(r, good, 2), ILB_OK);

  /* the route count */
  ilb_route *many = calloc(ILB_ROUTES_MAX + 1, sizeof *many);
  char(*nm)[16] = calloc(ILB_ROUTES_MAX + 1, sizeof *nm);
  assert_non_null(many);
  assert_non_null(nm);
  for (int i = 0; i <= ILB_ROUTES_MAX; i++) {
    snprintf(nm[i], sizeof nm[i], "r%d", i);
    many[i] = mkroute(nm[i], m, 1, b2, 1);
  }
  many[ILB_ROUTES_MAX - 1] = mkroute(nm[ILB_ROUTES_MAX - 1], NULL, 0, b1, 1);
  assert_rc(ilb_router_set_routes(r, many, ILB_ROUTES_MAX + 1), ILB_ETOOBIG);
  assert_old_routes(r);
  assert_rc(ilb_router_set_routes(r, many, ILB_ROUTES_MAX), ILB_OK);
  expect_route(r, KV("x-v", "2"), 0, 0, "llama", "v2");
  expect_route(r, NULL, 0, ILB_ROUTES_MAX - 1, "llama", "v1");
  free(many);
  free(nm);
  assert_u64(pool_in_flight(&v1) + pool_in_flight(&v2), 0);
}

/* ilb_route.match_size and backend_size (since 0.6): ilb_route_init sets
 * sizeof(ilb_match) and sizeof(ilb_backend); any other value, with or
 * without elements, is ILB_ESIZE and the old table stays. */
static void test_bad_route_element_sizes(void **state) {
  (void)state;
  ilb_route x;
  memset(&x, 0x5A, sizeof x);
  assert_rc(ilb_route_init(&x), ILB_OK);
  assert_u64(x.struct_size, sizeof(ilb_route));
  assert_u64(x.match_size, sizeof(ilb_match));
  assert_u64(x.backend_size, sizeof(ilb_backend));
  assert_null(x.name);
  assert_null(x.matches);
  assert_null(x.backends);
  assert_u64(x.n_matches + x.n_backends + x.mirror_percent + x.reserved0, 0);

  ilb_router *r = new_router(SEED, 1);
  tpool v1, v2;
  tp_make(&v1, r, "llama", "v1", 1, 0);
  tp_make(&v2, r, "llama", "v2", 1, 0);
  ilb_match m[] = {MT("x-v", ILB_MATCH_EXACT, "2"),
                   MT("x-w", ILB_MATCH_ABSENT, NULL)};
  ilb_backend b2[] = {BK("llama", "v2", 1)};
  ilb_backend b1[] = {BK("llama", "v1", 3), BK("llama", "v2", 0)};
  ilb_route good[] = {mkroute("hdr", m, 2, b2, 1),
                      mkroute("default", NULL, 0, b1, 2)};
  assert_rc(ilb_router_set_routes(r, good, 2), ILB_OK);
  assert_old_routes(r);
  const size_t ms = sizeof(ilb_match), bs = sizeof(ilb_backend);
  const size_t bad_m[] = {0, ms - 8, ms + 8, 2 * ms, bs};
  const size_t bad_b[] = {0, bs - 8, bs + 8, 2 * bs, ms};
  for (size_t i = 0; i < sizeof bad_m / sizeof bad_m[0]; i++) {
    for (int which = 0; which < 2; which++) { /* with matches, without */
      ilb_route two[2] = {good[0], good[1]};
      two[which].match_size = bad_m[i];
      if (bad_m[i] != ms) { /* bs may equal ms: then it is right */
        assert_rc(ilb_router_set_routes(r, two, 2), ILB_ESIZE);
        assert_old_routes(r);
      }
    }
  }
  for (size_t i = 0; i < sizeof bad_b / sizeof bad_b[0]; i++) {
    for (int which = 0; which < 2; which++) {
      ilb_route two[2] = {good[0], good[1]};
      two[which].backend_size = bad_b[i];
      if (bad_b[i] != bs) {
        assert_rc(ilb_router_set_routes(r, two, 2), ILB_ESIZE);
        assert_old_routes(r);
      }
    }
  }
  assert_rc(ilb_router_set_routes(r, good, 2), ILB_OK);
  assert_old_routes(r);
  assert_u64(pool_in_flight(&v1) + pool_in_flight(&v2), 0);
}

static void test_bad_set_weights(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 1);
  tpool v1, v2;
  tp_make(&v1, r, "llama", "v1", 1, 0);
  tp_make(&v2, r, "llama", "v2", 1, 0);
  ilb_backend b[] = {BK("llama", "v1", 1), BK("llama", "v2", 0)};
  ilb_route rt = mkroute("canary", NULL, 0, b, 2);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  const uint32_t ok[] = {0, 1}, zero[] = {0, 0},
                 big[] = {1, ILB_WEIGHT_MAX + 1}, three[] = {1, 1, 1};
  assert_rc(ilb_router_set_weights(NULL, "canary", ok, 2), ILB_EINVAL);
  assert_rc(ilb_router_set_weights(r, NULL, ok, 2), ILB_EINVAL);
  assert_rc(ilb_router_set_weights(r, "canary", NULL, 2), ILB_EINVAL);
  assert_rc(ilb_router_set_weights(r, "canary", zero, 2), ILB_EINVAL);
  assert_rc(ilb_router_set_weights(r, "canary", big, 2), ILB_ERANGE);
  assert_rc(ilb_router_set_weights(r, "canary", three, 3), ILB_EINVAL);
  assert_rc(ilb_router_set_weights(r, "canary", ok, 1), ILB_EINVAL);
  assert_rc(ilb_router_set_weights(r, "canary", ok, 0), ILB_EINVAL);
  assert_rc(ilb_router_set_weights(r, "nope", ok, 2), ILB_ENOENT);
  /* none of them changed the weights: everything still on v1 */
  for (int i = 0; i < 200; i++)
    expect_route(r, NULL, 0, 0, "llama", "v1");
  assert_rc(ilb_router_set_weights(r, "canary", ok, 2), ILB_OK);
  for (int i = 0; i < 200; i++)
    expect_route(r, NULL, 0, 0, "llama", "v2");
  /* the weights belong to the table: a new table has its own */
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  for (int i = 0; i < 50; i++)
    expect_route(r, NULL, 0, 0, "llama", "v1");
  assert_rc(ilb_router_set_routes(r, NULL, 0), ILB_OK);
  assert_rc(ilb_router_set_weights(r, "canary", ok, 2), ILB_ENOENT);
}

static void test_bad_rate_limits(void **state) {
  (void)state;
  make_long_strings();
  tpool t;
  ilb_router *r = new_router(SEED, 1);
  tp_make(&t, r, "llama", "v1", 1, 0);
  route_to(r, "llama", "v1");
  SET_ROPT(r, ILB_OPT_ROUTER_RATE_KEYS, 64); /* small tables: fast */
  set_limit(r, "per-key", "x-api-key", 10, 1000, 2);
  assert_rc(ilb_router_set_rate_limits(NULL, NULL, 0), ILB_EINVAL);
  assert_rc(ilb_router_set_rate_limits(r, NULL, 1), ILB_EINVAL);
  ilb_rate_limit l;
#define BAD_LIMIT(mutate, want)                                              \
  do {                                                                       \
    l = mklimit("bad", "tenant", 10, 1000, 2);                               \
    mutate;                                                                  \
    assert_rc(ilb_router_set_rate_limits(r, &l, 1), (want));                 \
  } while (0)
  BAD_LIMIT(l.struct_size = 8, ILB_ESIZE);
  BAD_LIMIT(l.name = NULL, ILB_EINVAL);
  BAD_LIMIT(l.name = "", ILB_EINVAL);
  BAD_LIMIT(l.name = long_str, ILB_ETOOBIG);
  BAD_LIMIT(l.key_attr = long_str, ILB_ETOOBIG);
  BAD_LIMIT(l.rate = 0, ILB_EINVAL);
  BAD_LIMIT(l.period_ms = 0, ILB_EINVAL);
  BAD_LIMIT(l.period_ms = 86400001, ILB_EINVAL);
  BAD_LIMIT(l.burst = 0, ILB_EINVAL);
  BAD_LIMIT(l.burst = 10001, ILB_EINVAL);
  BAD_LIMIT(l.burst = 10000, ILB_OK);
  BAD_LIMIT((l.rate = 1, l.period_ms = 86400000, l.burst = 1000), ILB_OK);
  ilb_rate_limit dup[2] = {mklimit("a", NULL, 1, 1000, 1),
                           mklimit("a", "", 1, 1000, 1)};
  assert_rc(ilb_router_set_rate_limits(r, dup, 2), ILB_EEXIST);
  ilb_rate_limit many[ILB_RATE_LIMITS_MAX + 1];
  char nm[ILB_RATE_LIMITS_MAX + 1][8];
  for (int i = 0; i <= ILB_RATE_LIMITS_MAX; i++) {
    snprintf(nm[i], sizeof nm[i], "l%d", i);
    many[i] = mklimit(nm[i], "tenant", 1, 1000, 1);
  }
  assert_rc(ilb_router_set_rate_limits(r, many, ILB_RATE_LIMITS_MAX + 1),
            ILB_ETOOBIG);
  assert_rc(ilb_router_set_rate_limits(r, many, ILB_RATE_LIMITS_MAX),
            ILB_OK);
  /* a failed call keeps the limits in force */
  set_limit(r, "per-key", "x-api-key", 10, 1000, 2);
  assert_int_equal(admitted(r, "k", NULL, 10), 2);
  BAD_LIMIT(l.rate = 0, ILB_EINVAL);
  assert_int_equal(admitted(r, "k", NULL, 10), 0);
  assert_int_equal(admitted(r, "j", NULL, 10), 2);
}

static void test_bad_pick_and_complete(void **state) {
  (void)state;
  tpool t;
  ilb_router *r = new_router(SEED, 1);
  tp_make(&t, r, "llama", "v1", 2, 0);
  route_to(r, "llama", "v1");
  ilb_route_result res;
  assert_rc(ilb_router_pick(NULL, r, NULL), ILB_EINVAL);
  assert_rc(ilb_route_result_init(&res), ILB_OK);
  res.struct_size = 0;
  assert_rc(ilb_router_pick(&res, r, NULL), ILB_ESIZE);
  res.struct_size = offsetof(ilb_route_result, ticket) + 7;
  assert_rc(ilb_router_pick(&res, r, NULL), ILB_ESIZE);
  assert_rc(rpick(&res, NULL, NULL), ILB_EINVAL);
  /* a result covering only the ticket: filled that far */
  memset(&res, 0x5A, sizeof res);
  res.struct_size = offsetof(ilb_route_result, ticket) + sizeof(uint64_t);
  assert_rc(ilb_router_pick(&res, r, NULL), ILB_OK);
  assert_true(res.ticket != 0);
  const char *poison;
  memset(&poison, 0x5A, sizeof poison);
  assert_ptr_equal(res.replica_id, poison);
  rdone(r, res.ticket);
  /* bad requests */
  rq_t q;
  rq_init(&q);
  q.req.struct_size = 8;
  assert_rc(rpick(&res, r, &q.req), ILB_ESIZE);
  rq_init(&q);
  q.req.key_len = 3;
  assert_rc(rpick(&res, r, &q.req), ILB_EINVAL);
  rq_init(&q);
  q.req.attrs = NULL;
  q.req.n_attrs = 2;
  assert_rc(rpick(&res, r, &q.req), ILB_EINVAL);
  rq_init(&q);
  q.req.priority = 7;
  assert_rc(rpick(&res, r, &q.req), ILB_EINVAL);
  rq_init(&q);
  q.req.reserved0 = 1;
  assert_rc(rpick(&res, r, &q.req), ILB_EINVAL);
  rq_init(&q);
  q.req.prompt_len = 4;
  assert_rc(rpick(&res, r, &q.req), ILB_EINVAL);
  rq_init(&q);
  q.req.n_blocks = 4;
  assert_rc(rpick(&res, r, &q.req), ILB_EINVAL);
  struct {
    ilb_request req;
    uint64_t tail;
  } big;
  memset(&big, 0, sizeof big);
  assert_rc(ilb_request_init(&big.req), ILB_OK);
  big.req.struct_size = sizeof big;
  big.tail = 1;
  assert_rc(rpick(&res, r, &big.req), ILB_ESIZE);
  big.tail = 0;
  assert_rc(rpick(&res, r, &big.req), ILB_OK);
  rdone(r, res.ticket);
  assert_u64(pool_in_flight(&t), 0);

  /* completions */
  assert_rc(rpick(&res, r, NULL), ILB_OK);
  assert_rc(ilb_router_complete(NULL, res.ticket, NULL), ILB_EINVAL);
  assert_rc(ilb_router_complete_pair(NULL, res.ticket, NULL, NULL),
            ILB_EINVAL);
  ilb_outcome o = oc(42, 0);
  assert_rc(ilb_router_complete(r, res.ticket, &o), ILB_EINVAL);
  o = oc(ILB_OUTCOME_HTTP_ERROR, 600);
  assert_rc(ilb_router_complete(r, res.ticket, &o), ILB_EINVAL);
  o = oc(ILB_OUTCOME_OK, 0);
  o.struct_size = 4;
  assert_rc(ilb_router_complete(r, res.ticket, &o), ILB_ESIZE);
  assert_u64(pool_in_flight(&t), 1);
  o = oc(ILB_OUTCOME_HTTP_ERROR, 503);
  assert_rc(ilb_router_complete(r, res.ticket, &o), ILB_OK);
  assert_u64(pool_in_flight(&t), 0);
  assert_rc(ilb_router_complete(r, res.ticket, &o), ILB_ESTALE);
}

/* The router options: bounds, defaults, which object takes which. */
static void test_router_options(void **state) {
  (void)state;
  static const struct {
    int32_t opt;
    int64_t min, max, def, some;
  } ro[] = {
      {ILB_OPT_ROUTER_STICKY_ENTRIES, 0, 16777216, 65536, 1000},
      {ILB_OPT_ROUTER_STICKY_TTL_MS, 1, 604800000, 1800000, 604800000},
      {ILB_OPT_ROUTER_STICKY_BOUND_PERCENT, 100, 100000, 200, 100000},
      {ILB_OPT_ROUTER_PAIRS_MAX, 64, 16777216, 65536, 64},
      {ILB_OPT_ROUTER_RATE_KEYS, 64, 16777216, 65536, 64},
  };
  ilb_router *r = new_router(SEED, 0);
  tpool t;
  tp_new(&t, "llama", "v1", 1, 0);
  for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++) {
    int64_t mn = -7, mx = -7, df = -7, v = -7;
    assert_rc(ilb_option_bounds(&mn, &mx, &df, ro[i].opt), ILB_OK);
    if (mn != ro[i].min || mx != ro[i].max || df != ro[i].def)
      fail_msg("option %d: [%lld, %lld] default %lld, header says [%lld, "
               "%lld] default %lld",
               ro[i].opt, (long long)mn, (long long)mx, (long long)df,
               (long long)ro[i].min, (long long)ro[i].max,
               (long long)ro[i].def);
    assert_rc(ilb_router_get_option(&v, r, ro[i].opt), ILB_OK);
    assert_int_equal(v, ro[i].def);
    assert_rc(ilb_router_set_option(r, ro[i].opt, ro[i].min - 1), ILB_ERANGE);
    assert_rc(ilb_router_set_option(r, ro[i].opt, ro[i].max + 1), ILB_ERANGE);
    assert_rc(ilb_router_get_option(&v, r, ro[i].opt), ILB_OK);
    assert_int_equal(v, ro[i].def);
    assert_rc(ilb_router_set_option(r, ro[i].opt, ro[i].some), ILB_OK);
    assert_rc(ilb_router_get_option(&v, r, ro[i].opt), ILB_OK);
    assert_int_equal(v, ro[i].some);
    /* not a pool option */
    assert_rc(ilb_pool_set_option(t.p, ro[i].opt, ro[i].def), ILB_EUNKNOWN);
    assert_rc(ilb_pool_get_option(&v, t.p, ro[i].opt), ILB_EUNKNOWN);
  }
  /* pool options are not router options */
  const int32_t pool_opts[] = {ILB_OPT_POLICY, ILB_OPT_MAX_IN_FLIGHT,
                               ILB_OPT_LOCALITY,
                               ILB_OPT_LOCALITY_SPILL_PERCENT,
                               ILB_OPT_SCALE_MAX_REPLICAS, 9999, -1};
  for (size_t i = 0; i < sizeof pool_opts / sizeof pool_opts[0]; i++) {
    int64_t v = 0;
    assert_rc(ilb_router_set_option(r, pool_opts[i], 1), ILB_EUNKNOWN);
    assert_rc(ilb_router_get_option(&v, r, pool_opts[i]), ILB_EUNKNOWN);
  }
  int64_t v;
  assert_rc(ilb_router_set_option(NULL, ILB_OPT_ROUTER_STICKY_TTL_MS, 5),
            ILB_EINVAL);
  assert_rc(ilb_router_get_option(NULL, r, ILB_OPT_ROUTER_STICKY_TTL_MS),
            ILB_EINVAL);
  assert_rc(ilb_router_get_option(&v, NULL, ILB_OPT_ROUTER_STICKY_TTL_MS),
            ILB_EINVAL);
  /* the locality options, on a pool */
  assert_option_doc(t.p, ILB_OPT_LOCALITY, 0, 1, 1);
  assert_option_doc(t.p, ILB_OPT_LOCALITY_MIN_HEALTHY_PERCENT, 0, 100, 70);
  assert_option_doc(t.p, ILB_OPT_LOCALITY_SPILL_PERCENT, 100, 100000, 150);
  /* pairs max may change until the pair table exists */
  SET_ROPT(r, ILB_OPT_ROUTER_PAIRS_MAX, 256);
  tp_join(&t, r, ILB_ROLE_PREFILL, 1);
  assert_rc(ilb_router_set_option(r, ILB_OPT_ROUTER_PAIRS_MAX, 512),
            ILB_EBUSY);
  assert_rc(ilb_router_set_option(r, ILB_OPT_ROUTER_PAIRS_MAX, 256), ILB_OK);
  assert_rc(ilb_router_get_option(&v, r, ILB_OPT_ROUTER_PAIRS_MAX), ILB_OK);
  assert_int_equal(v, 256);
}

/* A counting allocator that fails once its budget is spent (-1: never). */
static atomic_long oom_live;
static long oom_budget = -1;
static int oom_failed;

static void *oom_alloc(size_t n, void *user_data) {
  (void)user_data;
  if (oom_budget == 0) {
    oom_failed = 1;
    return NULL;
  }
  if (oom_budget > 0)
    oom_budget--;
  void *p = malloc(n);
  if (p)
    atomic_fetch_add(&oom_live, 1);
  return p;
}

static void oom_free(void *ptr, void *user_data) {
  (void)user_data;
  if (ptr) {
    atomic_fetch_sub(&oom_live, 1);
    free(ptr);
  }
}

/* Step `call` may fail only with ILB_ENOMEM; then `still` must hold (the
 * state before it) and the step is made again with memory. */
#define OOM_STEP(call, still)                                                \
  do {                                                                       \
    int orc_ = (call);                                                       \
    if (orc_ == ILB_ENOMEM) {                                                \
      still;                                                                 \
      oom_budget = -1;                                                       \
      orc_ = (call);                                                         \
    }                                                                        \
    assert_rc(orc_, ILB_OK);                                                 \
  } while (0)

/* The router's memory comes from the host's allocator, all of it goes
 * back, and running out of it at any point is ILB_ENOMEM with the
 * previous state intact. */
static void test_router_allocator_oom(void **state) {
  (void)state;
  int clean_run = 0;
  for (long budget = 0; !clean_run && budget < 200; budget++) {
    set_now(T0);
    oom_failed = 0;
    oom_budget = budget;
    ilb_host h;
    assert_rc(ilb_host_init(&h), ILB_OK);
    h.clock_ns = fake_clock;
    h.alloc = oom_alloc;
    h.free = oom_free;
    h.log_level = ILB_LOG_NONE;
    ilb_router *r = NULL;
    OOM_STEP(ilb_router_new(&r, &h), assert_null(r));
    track_router(r);
    SET_ROPT(r, ILB_OPT_ROUTER_RATE_KEYS, 64); /* small tables: fast */
    tpool v1, pf, dc;
    tp_new(&v1, "llama", "v1", 2, 0);
    tp_new(&pf, "pd", "", 1, 0);
    tp_new(&dc, "pd", "", 1, 0);
    ilb_route_result res;
    OOM_STEP(tp_join_rc(&v1, r, ILB_ROLE_BOTH, 1),
             assert_rc(rpick(&res, r, NULL), ILB_ENOMODEL));
    /* pairs: the table comes with the first PREFILL pool */
    SET_ROPT(r, ILB_OPT_ROUTER_PAIRS_MAX, 64);
    OOM_STEP(tp_join_rc(&pf, r, ILB_ROLE_PREFILL, 1),
             {
               rq_t q_;
               rq_make(&q_, KV("model", "pd"), NULL);
               assert_rc(rpick(&res, r, &q_.req), ILB_ENOMODEL);
             });
    OOM_STEP(tp_join_rc(&dc, r, ILB_ROLE_DECODE, 1), (void)0);
    /* routes */
    ilb_backend b1[] = {BK("llama", "v1", 1)}, b2[] = {BK("pd", NULL, 1)};
    ilb_route r1 = mkroute("one", NULL, 0, b1, 1);
    ilb_route r2 = mkroute("two", NULL, 0, b2, 1);
    OOM_STEP(ilb_router_set_routes(r, &r1, 1),
             assert_rc(rpick(&res, r, NULL), ILB_ENOMODEL));
    OOM_STEP(ilb_router_set_routes(r, &r2, 1),
             expect_route(r, NULL, 0, 0, "llama", "v1"));
    assert_rc(rpick(&res, r, NULL), ILB_OK);
    assert_ptr_equal(res.pool, dc.p);
    assert_ptr_equal(res.prefill_pool, pf.p);
    rdone(r, res.ticket);
    OOM_STEP(ilb_router_set_routes(r, &r1, 1),
             {
               assert_rc(rpick(&res, r, NULL), ILB_OK);
               assert_ptr_equal(res.pool, dc.p);
               rdone(r, res.ticket);
             });
    /* limits */
    ilb_rate_limit l1 = mklimit("a", "x-api-key", 10, 1000, 1);
    ilb_rate_limit l2[] = {mklimit("a", "x-api-key", 10, 1000, 1),
                           mklimit("b", "", 10, 1000, 100)};
    OOM_STEP(ilb_router_set_rate_limits(r, &l1, 1),
             assert_int_equal(admitted(r, "k", NULL, 5), 5));
    assert_int_equal(admitted(r, "k", NULL, 5), 1);
    OOM_STEP(ilb_router_set_rate_limits(r, l2, 2),
             assert_int_equal(admitted(r, "k", NULL, 5), 0));
    assert_int_equal(admitted(r, "k", NULL, 5), 0); /* "a" kept its state */
    assert_int_equal(admitted(r, "j", NULL, 5), 1);
    /* sessions */
    int s;
    session_pick(r, &v1, "sess", &s);
    OOM_STEP(ilb_router_set_option(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 100),
             {
               int64_t v_ = 0;
               assert_rc(ilb_router_get_option(
                             &v_, r, ILB_OPT_ROUTER_STICKY_ENTRIES),
                         ILB_OK);
               assert_int_equal(v_, 65536);
               session_pick(r, &v1, "sess", &s);
               assert_int_equal(s, 1);
             });
    session_pick(r, &v1, "sess", &s);
    assert_int_equal(s, 0); /* a new table */
    clean_run = !oom_failed;
    free_router(r);
    free_pool(v1.p);
    free_pool(pf.p);
    free_pool(dc.p);
    if (atomic_load(&oom_live) != 0)
      fail_msg("budget %ld: %ld allocations not freed", budget,
               (long)atomic_load(&oom_live));
  }
  oom_budget = -1;
  assert_true(clean_run);
}

/* ------------------------------------------------------------------------ */
/* 11. Threads                                                              */
/* ------------------------------------------------------------------------ */

#define TH_PICKERS 4
#define TH_PICKS 20000
#define TH_RING 8

typedef struct th_ctx {
  ilb_router *r;
  int id;
  uint64_t ok, limited, refused, completed, double_ok, errors;
  char err[160];
} th_ctx;

static atomic_int th_done;

static void th_note(th_ctx *c, const char *what, int rc) {
  if (!c->errors++)
    snprintf(c->err, sizeof c->err, "thread %d: %s: %s", c->id, what,
             ilb_err_name(rc));
}

static void th_complete(th_ctx *c, ilb_pool *pool, uint64_t ticket, int via) {
  int rc = via ? ilb_complete(pool, ticket, NULL)
               : ilb_router_complete(c->r, ticket, NULL);
  if (rc)
    th_note(c, "completion", rc);
  else
    c->completed++;
  /* now and then, a second completion: ESTALE */
  if ((ticket & 63) == 7) {
    rc = ilb_router_complete(c->r, ticket, NULL);
    if (rc != ILB_ESTALE) {
      c->double_ok++;
      th_note(c, "second completion", rc);
    }
  }
}

static void *th_picker(void *arg) {
  th_ctx *c = arg;
  uint64_t ring[TH_RING];
  ilb_pool *rpool[TH_RING];
  int n = 0, head = 0;
  uint64_t x = SEED + (uint64_t)c->id;
  static const char *const api[] = {"k0", "k1", "k2", "k3",
                                    "k4", "k5", "k6", "k7"};
  char key[24];
  for (int i = 0; i < TH_PICKS; i++) {
    x = splitmix(x + 1);
    rq_t q;
    rq_init(&q);
    rq_set(&q, "x-api-key", api[x & 7]);
    if ((x >> 8) % 10 == 0)
      rq_set(&q, "x-model-version", "v2");
    if ((x >> 16) & 1) {
      snprintf(key, sizeof key, "sess-%u", (unsigned)((x >> 20) % 300));
      rq_key(&q, key);
    }
    advance(2000); /* 2 us of fake time per pick */
    ilb_route_result res;
    assert_rc(ilb_route_result_init(&res), ILB_OK);
    int rc = ilb_router_pick(&res, c->r, &q.req);
    if (rc == ILB_OK) {
      c->ok++;
      if (n == TH_RING) {
        th_complete(c, rpool[head], ring[head], (int)(ring[head] & 1));
        n--;
        head = (head + 1) % TH_RING;
      }
      int slot = (head + n) % TH_RING;
      ring[slot] = res.ticket;
      rpool[slot] = res.pool;
      n++;
    } else if (rc == ILB_ERATELIMIT) {
      c->limited++;
    } else if (rc == ILB_ESATURATED) {
      c->refused++;
    } else {
      th_note(c, "pick", rc);
    }
  }
  while (n) {
    th_complete(c, rpool[head], ring[head], (int)(ring[head] & 1));
    n--;
    head = (head + 1) % TH_RING;
  }
  return NULL;
}

typedef struct th_writer {
  ilb_router *r;
  uint64_t rounds;
  int rc;
} th_writer;

static void *th_write(void *arg) {
  th_writer *w = arg;
  ilb_match m[] = {MT("x-model-version", ILB_MATCH_EXACT, "v2")};
  ilb_backend hb[] = {BK("llama", "v2", 1)};
  ilb_backend sa[] = {BK("llama", "v1", 95), BK("llama", "v2", 5)};
  ilb_backend sb[] = {BK("llama", "v1", 50), BK("llama", "v2", 50)};
  ilb_route ta[] = {mkroute("hdr", m, 1, hb, 1),
                    mkroute("split", NULL, 0, sa, 2)};
  ilb_route tb[] = {mkroute("split", NULL, 0, sb, 2)};
  ilb_rate_limit lim = mklimit("per-key", "x-api-key", 1000, 1000, 20);
  const uint32_t wa[] = {80, 20}, wb[] = {95, 5};
  do { /* at least once, however late this thread starts */
    uint64_t k = w->rounds++;
    int rc = ilb_router_set_weights(w->r, "split", k & 1 ? wa : wb, 2);
    if (!rc)
      rc = k & 2 ? ilb_router_set_routes(w->r, ta, 2)
                 : ilb_router_set_routes(w->r, tb, 1);
    if (!rc && (k & 15) == 3)
      rc = ilb_router_set_rate_limits(w->r, &lim, 1);
    if (!rc && (k & 63) == 5)
      rc = ilb_router_set_option(w->r, ILB_OPT_ROUTER_STICKY_ENTRIES,
                                 k & 64 ? 4096 : 8192);
    if (rc && !w->rc)
      w->rc = rc;
    sched_yield();
  } while (!atomic_load(&th_done));
  return NULL;
}

static uint64_t completed_sum(const tpool *t) {
  uint64_t s = 0;
  for (int i = 0; i < t->n; i++)
    s += rinfo(t, i).completed;
  return s;
}

static void test_threads(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 0);
  tpool v1, v2;
  tp_new(&v1, "llama", "v1", 0, 0);
  for (int i = 0; i < 3; i++)
    tp_rep(&v1, NULL, 1, 8);
  tp_join(&v1, r, ILB_ROLE_BOTH, 1);
  tp_new(&v2, "llama", "v2", 0, 0);
  for (int i = 0; i < 2; i++)
    tp_rep(&v2, NULL, 1, 4);
  tp_join(&v2, r, ILB_ROLE_BOTH, 1);
  ilb_backend sa[] = {BK("llama", "v1", 95), BK("llama", "v2", 5)};
  ilb_route rt = mkroute("split", NULL, 0, sa, 2);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  set_limit(r, "per-key", "x-api-key", 1000, 1000, 20);

  atomic_store(&th_done, 0);
  th_ctx ctx[TH_PICKERS];
  pthread_t th[TH_PICKERS], wt;
  th_writer w = {r, 0, 0};
  assert_int_equal(pthread_create(&wt, NULL, th_write, &w), 0);
  for (int i = 0; i < TH_PICKERS; i++) {
    memset(&ctx[i], 0, sizeof ctx[i]);
    ctx[i].r = r;
    ctx[i].id = i;
    assert_int_equal(pthread_create(&th[i], NULL, th_picker, &ctx[i]), 0);
  }
  for (int i = 0; i < TH_PICKERS; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);
  atomic_store(&th_done, 1);
  assert_int_equal(pthread_join(wt, NULL), 0);
  assert_rc(w.rc, ILB_OK);
  assert_true(w.rounds > 0);

  uint64_t ok = 0, limited = 0, refused = 0, completed = 0;
  for (int i = 0; i < TH_PICKERS; i++) {
    if (ctx[i].errors)
      fail_msg("%s (%llu errors)", ctx[i].err,
               (unsigned long long)ctx[i].errors);
    ok += ctx[i].ok;
    limited += ctx[i].limited;
    refused += ctx[i].refused;
    completed += ctx[i].completed;
  }
  assert_u64(ok + limited + refused, (uint64_t)TH_PICKERS * TH_PICKS);
  assert_u64(completed, ok);
  assert_true(ok > 0);
  assert_true(limited > 0); /* the limit did something */
  assert_u64(pool_in_flight(&v1), 0);
  assert_u64(pool_in_flight(&v2), 0);
  for (int i = 0; i < v1.n; i++)
    assert_int_equal(rinfo(&v1, i).in_flight, 0);
  for (int i = 0; i < v2.n; i++)
    assert_int_equal(rinfo(&v2, i).in_flight, 0);
  /* every admitted pick completed exactly once, in its own pool */
  assert_u64(completed_sum(&v1) + completed_sum(&v2), ok);
  assert_true(completed_sum(&v2) > 0);
}

/* Pickers for the two tests below: picks of the requests q[0..nq-1] in
 * turn, each completed at once, at least TW_PICKS of them and on until
 * tw_stop (so that the writer gets its TW_ROUNDS in while they pick, however
 * the threads are scheduled); a route's backend outside allowed[i] (a bit
 * mask; 0: any) is counted and the first one noted. */
#define TW_PICKS 20000
#define TW_ROUNDS 200

typedef struct tw_ctx {
  ilb_router *r;
  const rq_t *q;
  const unsigned *allowed;
  int nq;
  uint64_t picks, bad, errors;
  char err[160];
} tw_ctx;

static atomic_int tw_running, tw_stop; /* pickers short of TW_PICKS */

static void *tw_picker(void *arg) {
  tw_ctx *c = arg;
  for (int i = 0;; i++) {
    if (i == TW_PICKS)
      atomic_fetch_sub(&tw_running, 1);
    if (i >= TW_PICKS && atomic_load(&tw_stop))
      break;
    int j = i % c->nq;
    ilb_route_result res;
    ilb_route_result_init(&res);
    int rc = ilb_router_pick(&res, c->r, &c->q[j].req);
    if (rc == ILB_OK)
      rc = ilb_router_complete(c->r, res.ticket, NULL);
    if (rc) {
      if (!c->errors++)
        snprintf(c->err, sizeof c->err, "pick %d: %s", i, ilb_err_name(rc));
      continue;
    }
    c->picks++;
    if (c->allowed[j] && !(c->allowed[j] >> res.backend & 1u) && !c->bad++)
      snprintf(c->err, sizeof c->err,
               "request %d (key %s): backend %d, allowed mask %#x", j,
               c->q[j].req.key ? (const char *)c->q[j].req.key : "-",
               res.backend, c->allowed[j]);
  }
  return NULL;
}

static void tw_start(pthread_t *th, tw_ctx *ctx, int n, ilb_router *r,
                     const rq_t *q, const unsigned *allowed, int nq) {
  atomic_store(&tw_running, n);
  atomic_store(&tw_stop, 0);
  for (int i = 0; i < n; i++) {
    memset(&ctx[i], 0, sizeof ctx[i]);
    ctx[i].r = r;
    ctx[i].q = q;
    ctx[i].allowed = allowed;
    ctx[i].nq = nq;
    assert_int_equal(pthread_create(&th[i], NULL, tw_picker, &ctx[i]), 0);
  }
}

/* Stops and joins the pickers; their picks, failing on any error or bad
 * backend. */
static uint64_t tw_join(pthread_t *th, tw_ctx *ctx, int n) {
  uint64_t picks = 0;
  atomic_store(&tw_stop, 1);
  for (int i = 0; i < n; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);
  for (int i = 0; i < n; i++) {
    if (ctx[i].errors || ctx[i].bad)
      fail_msg("picker %d: %llu errors, %llu bad backends; first: %s", i,
               (unsigned long long)ctx[i].errors,
               (unsigned long long)ctx[i].bad, ctx[i].err);
    picks += ctx[i].picks;
  }
  return picks;
}

#define PROM_ROUTE_ONLY                                                      \
  "inferlb_route_picks_total{route=\"only\",backend=\"0\","

/* inferlb_route_picks_total across ilb_router_set_routes of a route with
 * the same name and backends: every pick made before a replacement is
 * still counted after it, also while picks run during the replacement
 * (the counter never goes down, and ends at the number of picks). */
static void test_threads_route_counters(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 0);
  tpool v1;
  tp_make(&v1, r, "llama", "v1", 2, 0);
  ilb_backend b[] = {BK("llama", "v1", 1)};
  ilb_route rt = mkroute("only", NULL, 0, b, 1);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  for (int i = 0; i < 100; i++)
    assert_rc(pick_done(r, NULL, &v1, NULL, NULL), ILB_OK);
  assert_u64(prom_value(r, PROM_ROUTE_ONLY), 100);
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  assert_u64(prom_value(r, PROM_ROUTE_ONLY), 100);

  enum { P = 2 };
  rq_t q[1];
  rq_init(&q[0]);
  const unsigned any[1] = {0};
  tw_ctx ctx[P];
  pthread_t th[P];
  tw_start(th, ctx, P, r, q, any, 1);
  uint64_t last = 100, rounds = 0, went_down = 0, was = 0, now = 0;
  int rc = 0;
  do {
    if (!rc)
      rc = ilb_router_set_routes(r, &rt, 1);
    int prc = 0;
    uint64_t v = prom_value_rc(r, PROM_ROUTE_ONLY, &prc);
    if (!rc)
      rc = prc;
    if (!rc && v < last && !went_down++) {
      was = last;
      now = v;
    }
    if (!rc && v != UINT64_MAX)
      last = v;
  } while (++rounds < TW_ROUNDS || atomic_load(&tw_running) > 0);
  uint64_t picks = tw_join(th, ctx, P);
  assert_rc(rc, ILB_OK);
  assert_true(picks >= (uint64_t)P * TW_PICKS);
  uint64_t end = prom_value(r, PROM_ROUTE_ONLY);
  if (went_down)
    fail_msg("route \"only\" replaced %llu times while %d threads picked "
             "through it: inferlb_route_picks_total went down %llu times "
             "(first %llu -> %llu)",
             (unsigned long long)rounds, P, (unsigned long long)went_down,
             (unsigned long long)was, (unsigned long long)now);
  if (end != 100 + picks)
    fail_msg("route \"only\" replaced %llu times while %d threads picked "
             "through it: inferlb_route_picks_total ends at %llu, expected "
             "%llu (%lld picks not counted)",
             (unsigned long long)rounds, P, (unsigned long long)end,
             (unsigned long long)(100 + picks),
             (long long)(100 + picks) - (long long)end);
  assert_u64(pool_in_flight(&v1), 0);
}

/* Route's weights set to w, then one pick of q: its backend's index. */
static int weighted_backend(ilb_router *r, const char *route, const uint32_t *w,
                            size_t nb, const rq_t *q) {
  assert_rc(ilb_router_set_weights(r, route, w, nb), ILB_OK);
  ilb_route_result res;
  assert_rc(rpick(&res, r, &q->req), ILB_OK);
  rdone(r, res.ticket);
  return res.backend;
}

/* ilb_router_set_weights against picks: a writer switches 95/5 <-> 5/95
 * while two threads pick with fixed keys; a pick sees one weight set, so a
 * key on v1 (v2) under both sets is always on v1 (v2). Two backends cannot
 * show a mix of the sets (any mix splits a key to v1 or v2), so a third
 * route switches 90/5/5 <-> 5/5/90 with a key on backend 0 under one set,
 * 2 under the other, and 1 only under the mixes 90/5/90 and 5/5/5: it must
 * never land on 1. */
static void test_threads_weights(void **state) {
  (void)state;
  ilb_router *r = new_router(SEED, 0);
  SET_ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES, 0);
  tpool v1, v2, v3;
  tp_make(&v1, r, "llama", "v1", 2, 0);
  tp_make(&v2, r, "llama", "v2", 2, 0);
  tp_make(&v3, r, "llama", "v3", 2, 0);
  ilb_match m3[] = {MT("x-r", ILB_MATCH_EXACT, "3")};
  ilb_backend b2[] = {BK("llama", "v1", 95), BK("llama", "v2", 5)};
  ilb_backend b3[] = {BK("llama", "v1", 90), BK("llama", "v2", 5),
                      BK("llama", "v3", 5)};
  ilb_route rts[] = {mkroute("three", m3, 1, b3, 3),
                     mkroute("canary", NULL, 0, b2, 2)};
  assert_rc(ilb_router_set_routes(r, rts, 2), ILB_OK);
  const uint32_t wa[] = {95, 5}, wb[] = {5, 95};
  const uint32_t a3[] = {90, 5, 5}, b3w[] = {5, 5, 90}, mix1[] = {90, 5, 90},
                 mix2[] = {5, 5, 5};
  /* the keys, found one pick at a time under each weight set */
  static char keys[3][32];
  int found[3] = {0, 0, 0};
  char cand[32];
  for (int k = 0; k < 4000 && !(found[0] && found[1] && found[2]); k++) {
    rq_t q;
    snprintf(cand, sizeof cand, "w-%d", k);
    rq_make(&q, NULL, cand);
    int x = weighted_backend(r, "canary", wa, 2, &q),
        y = weighted_backend(r, "canary", wb, 2, &q);
    if (x == y && !found[x]) {
      found[x] = 1;
      snprintf(keys[x], sizeof keys[x], "%s", cand);
    }
    if (found[2])
      continue;
    rq_set(&q, "x-r", "3");
    if (weighted_backend(r, "three", a3, 3, &q) == 0 &&
        weighted_backend(r, "three", b3w, 3, &q) == 2 &&
        weighted_backend(r, "three", mix1, 3, &q) == 1 &&
        weighted_backend(r, "three", mix2, 3, &q) == 1) {
      found[2] = 1;
      snprintf(keys[2], sizeof keys[2], "%s", cand);
    }
  }
  assert_true(found[0] && found[1] && found[2]);
  rq_t q[3];
  rq_make(&q[0], NULL, keys[0]);
  rq_make(&q[1], NULL, keys[1]);
  rq_make(&q[2], KV("x-r", "3"), keys[2]);
  const unsigned allowed[3] = {1u << 0, 1u << 1, 1u << 0 | 1u << 2};
  /* the search left a mix in place: one of the two sets from here on */
  assert_rc(ilb_router_set_weights(r, "canary", wa, 2), ILB_OK);
  assert_rc(ilb_router_set_weights(r, "three", a3, 3), ILB_OK);

  enum { P = 2 };
  tw_ctx ctx[P];
  pthread_t th[P];
  tw_start(th, ctx, P, r, q, allowed, 3);
  uint64_t rounds = 0;
  int rc = 0;
  do {
    int k = (int)(rounds & 1);
    if (!rc)
      rc = ilb_router_set_weights(r, "canary", k ? wb : wa, 2);
    if (!rc)
      rc = ilb_router_set_weights(r, "three", k ? b3w : a3, 3);
  } while (++rounds < TW_ROUNDS || atomic_load(&tw_running) > 0);
  uint64_t picks = tw_join(th, ctx, P);
  assert_rc(rc, ILB_OK);
  assert_true(picks >= (uint64_t)P * TW_PICKS);
  assert_u64(pool_in_flight(&v1) + pool_in_flight(&v2) + pool_in_flight(&v3),
             0);
}

/* ------------------------------------------------------------------------ */
/* 12. Determinism                                                          */
/* ------------------------------------------------------------------------ */

#define DET_N 3000

/* A fresh router (built-in generator, seed) and pools; DET_N decisions
 * (pool, replica, mirror replica) packed into out[]. */
static void det_run(uint64_t seed, uint32_t *out) {
  ilb_router *r = new_router(seed, 0);
  tpool v1, v2, sh;
  tp_make(&v1, r, "llama", "v1", 4, 0);
  tp_make(&v2, r, "llama", "v2", 3, ILB_POLICY_RANDOM);
  tp_make(&sh, r, "llama", "shadow", 2, 0);
  ilb_match m[] = {MT("x-split", ILB_MATCH_PRESENT, NULL)};
  ilb_backend b[] = {BK("llama", "v1", 70), BK("llama", "v2", 30)};
  ilb_route rt = mkroute("split", m, 1, b, 2);
  rt.mirror_model = "llama";
  rt.mirror_version = "shadow";
  rt.mirror_percent = 50;
  assert_rc(ilb_router_set_routes(r, &rt, 1), ILB_OK);
  static uint64_t held[DET_N];
  static ilb_pool *held_pool[DET_N];
  int n_held = 0;
  char key[24];
  for (int i = 0; i < DET_N; i++) {
    rq_t q;
    rq_init(&q);
    if (i % 3 != 2)
      rq_set(&q, "x-split", "1");
    else
      rq_set(&q, "model", "llama");
    if (i % 2) {
      snprintf(key, sizeof key, "k%d", (i * 7) % 50);
      rq_key(&q, key);
    }
    ilb_route_result res;
    assert_rc(rpick(&res, r, &q.req), ILB_OK);
    int pool = res.pool == v1.p ? 1 : res.pool == v2.p ? 2
                                     : res.pool == sh.p ? 3 : 0;
    const tpool *tp = pool == 1 ? &v1 : pool == 2 ? &v2 : &sh;
    assert_true(pool != 0);
    int rep = rep_idx(tp, res.replica_id);
    assert_true(rep >= 0);
    int mrep = res.mirror_ticket ? rep_idx(&sh, res.mirror_replica_id) : 15;
    out[i] = (uint32_t)(pool << 16 | rep << 8 | mrep);
    if (res.mirror_ticket)
      rdone(r, res.mirror_ticket);
    if (i % 7 == 0) { /* some stay in flight: load matters */
      held[n_held] = res.ticket;
      held_pool[n_held++] = res.pool;
    } else {
      rdone(r, res.ticket);
    }
  }
  for (int i = 0; i < n_held; i++)
    assert_rc(ilb_complete(held_pool[i], held[i], NULL), ILB_OK);
  free_router(r);
  free_pool(v1.p);
  free_pool(v2.p);
  free_pool(sh.p);
}

static void test_determinism(void **state) {
  (void)state;
  static uint32_t a[DET_N], b[DET_N], c[DET_N];
  det_run(SEED, a);
  det_run(SEED, b);
  for (int i = 0; i < DET_N; i++)
    if (a[i] != b[i])
      fail_msg("decision %d differs between two routers of one seed: "
               "%06x, %06x",
               i, a[i], b[i]);
  det_run(SEED + 1, c);
  int differ = 0;
  for (int i = 0; i < DET_N; i++)
    differ += a[i] != c[i];
  assert_true(differ > 0);
}

/* Every test frees what it left open (a failed one too). */
#define T(f) cmocka_unit_test_teardown(f, teardown_all)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_split_shares),
      T(test_split_cohorts),
      T(test_routes_first_match_wins),
      T(test_routes_model_routing),
      T(test_routes_backend_request_model),
      T(test_routes_pool_lifecycle),
      T(test_tickets_complete_paths),
      T(test_tickets_pool_freed_first),
      T(test_tickets_router_freed_first),
      T(test_sticky_session_reuses_replica),
      T(test_sticky_moves_when_excluded),
      T(test_sticky_moves_counted),
      T(test_sticky_bound),
      T(test_sticky_full_replica),
      T(test_sticky_ttl),
      T(test_sticky_pin),
      T(test_sticky_off),
      T(test_sticky_table_capacity),
      T(test_sticky_replica_replaced),
      T(test_pin_replica_replaced),
      T(test_locality_idle_pool),
      T(test_locality_balanced_load),
      T(test_locality_health_spill),
      T(test_locality_load_spill),
      T(test_locality_zone_full),
      T(test_locality_zone_full_over_capacity),
      T(test_locality_chwbl_zone_bound),
      T(test_locality_no_zone_and_off),
      T(test_locality_old_request_sizes),
      T(test_ratelimit_gcra),
      T(test_ratelimit_global_and_affinity),
      T(test_ratelimit_gives_back),
      T(test_ratelimit_replace),
      T(test_ratelimit_keys_option),
      T(test_ratelimit_routed_model),
      T(test_pd_pair),
      T(test_pd_short_outcome),
      T(test_pd_route_and_sticky),
      T(test_pd_failures),
      T(test_pd_removed),
      T(test_pd_pair_table_full),
      T(test_pd_pairs_rounded),
      T(test_mirror),
      T(test_bad_router_new),
      T(test_bad_add_remove_pool),
      T(test_pools_max),
      T(test_bad_set_routes),
      T(test_bad_route_element_sizes),
      T(test_bad_set_weights),
      T(test_bad_rate_limits),
      T(test_bad_pick_and_complete),
      T(test_router_options),
      T(test_router_allocator_oom),
      T(test_threads),
      T(test_threads_route_counters),
      T(test_threads_weights),
      T(test_determinism),
  };
  return cmocka_run_group_tests(tests, NULL, teardown_all);
}
