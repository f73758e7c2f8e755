/* The stats export (ilb_stats_prometheus): the library's counters and
 * gauges as Prometheus text, exposition format 0.0.4, into the caller's
 * buffer.
 *
 * The format wants every sample of a metric family in one group under its
 * # HELP and # TYPE lines, so the text is written family by family: a lone
 * pool is read under its mutex once, a router's pools are visited once per
 * family (each pool's mutex taken in turn, the router's held by the
 * visit). Nothing is allocated: the text goes straight into buf, and once
 * it no longer fits it is still measured, so the caller learns the size to
 * retry with. Numbers are integers written by hand, so the locale
 * (LC_NUMERIC) never changes the text.
 * SPDX-License-Identifier: MIT */
#include <stddef.h>

#include "traffic/traffic.h"

/* ---- output: write what fits, count everything ----------------------- */

struct out {
  char *buf;
  size_t size;
  size_t len; /* the text's length so far, fitting or not */
};

static void put(struct out *o, const char *s, size_t n) {
  if (o->len < o->size) {
    size_t room = o->size - o->len;
    memcpy(o->buf + o->len, s, n < room ? n : room);
  }
  o->len = n > SIZE_MAX - o->len ? SIZE_MAX : o->len + n;
}

static void put_str(struct out *o, const char *s) { put(o, s, strlen(s)); }

static void put_u64(struct out *o, uint64_t v) {
  char d[20];
  size_t i = sizeof(d);
  do {
    d[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  put(o, d + i, sizeof(d) - i);
}

/* A label value: backslash, double quote and line feed escaped as the
 * format requires; every other byte as is. */
static void put_escaped(struct out *o, const char *s) {
  const char *run = s;
  for (; *s; s++) {
    const char *esc = *s == '\\'   ? "\\\\"
                      : *s == '"'  ? "\\\""
                      : *s == '\n' ? "\\n"
                                   : NULL;
    if (!esc)
      continue;
    put(o, run, (size_t)(s - run));
    put(o, esc, 2);
    run = s + 1;
  }
  put(o, run, (size_t)(s - run));
}

/* ---- families ------------------------------------------------------------ */

enum fam {
  /* per replica */
  F_PICKS,
  F_IN_FLIGHT,
  F_COMPLETIONS,
  F_FAILURES,
  F_EJECTIONS,
  F_BREAKER,
  F_EXCLUDED,
  /* per pool */
  F_SHED,
  F_RETRIES,
  F_PFX_BLOCKS,
  F_PFX_MATCHED,
  /* per router */
  F_ROUTE_PICKS,
  F_RATE_LIMITED,
  F_RATE_EVICTED,
  F_NO_MODEL,
  F_STICKY_HITS,
  F_STICKY_MOVES,
  F_MIRRORED,
  F_COUNT
};
#define F_LAST_REPLICA F_EXCLUDED
#define F_LAST_POOL F_PFX_MATCHED

static const struct {
  const char *name, *type, *help;
} fams[F_COUNT] = {
    [F_PICKS] = {"inferlb_picks_total", "counter",
                 "Requests picked for the replica (completed plus in flight)."},
    [F_IN_FLIGHT] = {"inferlb_in_flight", "gauge",
                     "Requests picked for the replica and not completed yet."},
    [F_COMPLETIONS] = {"inferlb_completions_total", "counter",
                       "Requests completed on the replica, any outcome."},
    [F_FAILURES] = {"inferlb_failures_total", "counter",
                    "Completions that failed: connect error, timeout, "
                    "refused or HTTP error."},
    [F_EJECTIONS] = {"inferlb_ejections_total", "counter",
                     "Outlier ejections of the replica."},
    [F_BREAKER] = {"inferlb_breaker_state", "gauge",
                   "Circuit breaker of the replica: 0 closed, 1 open, "
                   "2 half-open."},
    [F_EXCLUDED] = {"inferlb_replica_excluded", "gauge",
                    "What keeps the replica out of picks, ILB_EXCLUDED_* bits: "
                    "0 eligible, 1 host, 2 health, 4 ejected, 8 breaker, "
                    "16 draining."},
    [F_SHED] = {"inferlb_shed_total", "counter",
                "Picks refused by load shedding (ILB_ESHED)."},
    [F_RETRIES] = {"inferlb_retries_total", "counter",
                   "Retries granted by ilb_retry."},
    [F_PFX_BLOCKS] = {"inferlb_prefix_lookup_blocks_total", "counter",
                      "Prompt blocks picks looked up in the prefix index."},
    [F_PFX_MATCHED] = {"inferlb_prefix_matched_blocks_total", "counter",
                       "Looked-up blocks in the matched prefix of the replica "
                       "picked (over lookup blocks: the predicted hit rate)."},
    [F_ROUTE_PICKS] = {"inferlb_route_picks_total", "counter",
                       "Requests a route sent to its backend (backend: its "
                       "index in the route)."},
    [F_RATE_LIMITED] = {"inferlb_rate_limited_total", "counter",
                        "Requests refused by the rate limit."},
    [F_RATE_EVICTED] = {"inferlb_rate_limit_evictions_total", "counter",
                        "Keys the rate limit forgot before their bucket was "
                        "full again."},
    [F_NO_MODEL] = {"inferlb_no_model_total", "counter",
                    "Requests refused because no pool serves their model "
                    "(ILB_ENOMODEL)."},
    [F_STICKY_HITS] = {"inferlb_sticky_hits_total", "counter",
                       "Requests that went to their session's replica."},
    [F_STICKY_MOVES] = {"inferlb_sticky_moves_total", "counter",
                        "Sessions moved away from their replica."},
    [F_MIRRORED] = {"inferlb_mirrored_total", "counter",
                    "Requests copied to a mirror pool."},
};

/* The router-wide counters of struct ilb__rvisit, by name. */
static const char *const counter_names[] = {"no_model", "sticky_hits",
                                            "sticky_moves", "mirrored"};
#define N_COUNTERS (sizeof(counter_names) / sizeof(counter_names[0]))
_Static_assert(F_NO_MODEL + N_COUNTERS == F_COUNT, "one family per counter");

struct label {
  const char *key, *value;
};

/* One family being written: its # HELP and # TYPE come with its first
 * sample, so a family without samples (no prefix policy, no routes) is
 * left out rather than announced empty. */
struct emit {
  struct out *o;
  enum fam fam;
  int started;
};

static void sample(struct emit *e, const struct label *l, size_t n,
                   uint64_t value) {
  struct out *o = e->o;
  const char *name = fams[e->fam].name;
  if (!e->started) {
    e->started = 1;
    put_str(o, "# HELP ");
    put_str(o, name);
    put_str(o, " ");
    put_str(o, fams[e->fam].help);
    put_str(o, "\n# TYPE ");
    put_str(o, name);
    put_str(o, " ");
    put_str(o, fams[e->fam].type);
    put_str(o, "\n");
  }
  put_str(o, name);
  for (size_t i = 0; i < n; i++) {
    put_str(o, i ? "," : "{");
    put_str(o, l[i].key);
    put_str(o, "=\"");
    put_escaped(o, l[i].value);
    put_str(o, "\"");
  }
  put_str(o, n ? "} " : " ");
  put_u64(o, value);
  put_str(o, "\n");
}

/* ---- a pool's families ----------------------------------------------------
 */

/* What names a pool's series: model and version ("" for a lone pool), and
 * for the halves of a prefill/decode split, which share both, a role. */
struct pool_id {
  const char *model, *version, *role; /* role NULL: none */
};

/* Completions and requests in flight of one slot from one load word, so
 * that picks_total = completed + in flight never runs backwards between
 * two reads (ilb__completed re-reads the word). */
static void slot_counts(struct ilb__slot *s, uint64_t *completed,
                        uint64_t *in_flight) {
  uint64_t w, hi;
  do {
    hi = atomic_load(&s->completed_hi);
    w = atomic_load(&s->load);
  } while (hi != atomic_load(&s->completed_hi));
  *completed = (hi << 32) | (w >> 32);
  *in_flight = ILB__INFLIGHT(w);
}

static uint64_t replica_value(enum fam f, const struct ilb__replica *r,
                              struct ilb__slot *s) {
  uint64_t done, busy;
  uint32_t why = atomic_load(&s->why), brk = atomic_load(&s->brk);
  uint32_t excl = ilb__excluded(why, brk);
  switch (f) {
  case F_PICKS:
  case F_IN_FLIGHT:
  case F_COMPLETIONS:
    slot_counts(s, &done, &busy);
    return f == F_PICKS ? done + busy : f == F_IN_FLIGHT ? busy : done;
  case F_FAILURES:
    return atomic_load(&s->failed);
  case F_EJECTIONS: /* as ilb_replica_get: an ejection not yet seen by the
                       writer counts already */
    return r->h.eject_total +
           ((excl & ILB_EXCLUDED_EJECTED) && !r->h.eject_seen);
  case F_BREAKER:
    return brk & ILB__BRK_STATE;
  default: /* F_EXCLUDED */
    return excl;
  }
}

/* One family's samples of pool p. Takes its mutex (recursive: a lone
 * pool's caller may hold it already, and so may an event callback). */
static void pool_family(struct emit *e, struct ilb_pool *p,
                        const struct pool_id *id) {
  struct label l[4] = {{"model", id->model}, {"version", id->version}};
  size_t n = 2;
  if (id->role)
    l[n++] = (struct label){"role", id->role};
  pthread_mutex_lock(&p->mu);
  if (e->fam <= F_LAST_REPLICA) {
    for (uint32_t i = 0; i < p->n_reps; i++) {
      const struct ilb__replica *r = p->reps[i];
      l[n] = (struct label){"replica", r->id};
      sample(e, l, n + 1, replica_value(e->fam, r, ilb__slot_at(p, r->slot)));
    }
  } else if (e->fam == F_SHED) {
    sample(e, l, n, atomic_load(&p->n_shed));
  } else if (e->fam == F_RETRIES) {
    sample(e, l, n, atomic_load(&p->n_retries));
  } else if (atomic_load(&p->opt_policy) == ILB_POLICY_PREFIX) {
    /* the stripes' counters only: ilb_pool_prefix_stats would also scan
     * the whole index for its entry count */
    uint64_t v = 0;
    for (uint32_t i = 0; i < ILB__STRIPES; i++)
      v += atomic_load(e->fam == F_PFX_BLOCKS ? &p->stripes[i].pfx_blocks
                                              : &p->stripes[i].pfx_matched);
    sample(e, l, n, v);
  }
  pthread_mutex_unlock(&p->mu);
}

static int lone_pool(struct out *o, struct ilb_pool *p) {
  static const struct pool_id id = {"", "", NULL};
  /* one hold of the mutex for the whole page: one consistent registry */
  pthread_mutex_lock(&p->mu);
  for (int f = 0; f <= F_LAST_POOL; f++) {
    struct emit e = {o, (enum fam)f, 0};
    pool_family(&e, p, &id);
  }
  pthread_mutex_unlock(&p->mu);
  return 0;
}

/* ---- a router -------------------------------------------------------------
 */

struct rctx {
  struct emit e;
  const char *route; /* the route of the previous backend visited */
  uint64_t backend;  /* that backend's index in its route */
  uint64_t counter[N_COUNTERS];
  int have[N_COUNTERS];
};

static int on_pool(void *ctx, ilb_pool *pool, const char *model,
                   const char *version, int32_t role, int active) {
  struct rctx *c = ctx;
  /* A removed pool is still referenced (its tickets may be out), but a
   * pool serving the same model and version may have replaced it: two
   * series with one label set would make the page invalid. */
  if (c->e.fam > F_LAST_POOL || !active)
    return 0;
  struct pool_id id = {model, version ? version : "",
                       role == ILB_ROLE_PREFILL  ? "prefill"
                       : role == ILB_ROLE_DECODE ? "decode"
                                                 : NULL};
  pool_family(&c->e, pool, &id);
  return 0;
}

/* Backends come route by route, in order: the index restarts at each new
 * route name (names are unique). */
static int on_route(void *ctx, const char *route, const char *model,
                    const char *version, uint64_t picks) {
  struct rctx *c = ctx;
  if (c->e.fam != F_ROUTE_PICKS)
    return 0;
  if (c->route && strcmp(c->route, route) == 0)
    c->backend++;
  else
    c->backend = 0;
  c->route = route;
  char idx[21];
  size_t i = sizeof(idx) - 1;
  idx[i] = '\0';
  uint64_t b = c->backend;
  do {
    idx[--i] = (char)('0' + b % 10);
    b /= 10;
  } while (b);
  /* model NULL: the request's own model */
  const struct label l[4] = {{"route", route},
                             {"backend", idx + i},
                             {"model", model ? model : ""},
                             {"version", version ? version : ""}};
  sample(&c->e, l, 4, picks);
  return 0;
}

static int on_limit(void *ctx, const char *name, uint64_t limited,
                    uint64_t evicted) {
  struct rctx *c = ctx;
  if (c->e.fam != F_RATE_LIMITED && c->e.fam != F_RATE_EVICTED)
    return 0;
  const struct label l = {"limit", name};
  sample(&c->e, &l, 1, c->e.fam == F_RATE_LIMITED ? limited : evicted);
  return 0;
}

/* Collected, then written in a fixed order whatever the visit's. */
static int on_counter(void *ctx, const char *name, uint64_t value) {
  struct rctx *c = ctx;
  if (c->e.fam != F_NO_MODEL)
    return 0;
  for (size_t i = 0; i < N_COUNTERS; i++)
    if (strcmp(name, counter_names[i]) == 0) {
      c->counter[i] = value;
      c->have[i] = 1;
    }
  return 0;
}

static int routed(struct out *o, ilb_router *router) {
  struct rctx c;
  memset(&c, 0, sizeof(c));
  const struct ilb__rvisit v = {&c, on_pool, on_route, on_limit, on_counter};
  /* One visit per family: the format groups a family's samples, and the
   * router's strings are only valid while it holds its mutex. */
  for (int f = 0; f <= F_NO_MODEL; f++) {
    c.e = (struct emit){o, (enum fam)f, 0};
    c.route = NULL;
    int rc = ilb__router_visit(router, &v);
    if (rc)
      return rc;
  }
  for (size_t i = 0; i < N_COUNTERS; i++) {
    struct emit e = {o, (enum fam)(F_NO_MODEL + (int)i), 0};
    if (c.have[i])
      sample(&e, NULL, 0, c.counter[i]);
  }
  return 0;
}

/* ---- entry point ----------------------------------------------------------
 */

int ilb_stats_prometheus(char *buf, size_t buf_size, size_t *len_out,
                         ilb_router *router, ilb_pool *pool) {
  if (!router == !pool || (!buf && buf_size))
    return ILB_EINVAL;
  struct out o = {buf, buf_size, 0};
  int rc = pool ? lone_pool(&o, pool) : routed(&o, router);
  if (rc) {
    if (buf_size)
      buf[0] = '\0';
    return rc;
  }
  if (len_out)
    *len_out = o.len;
  if (o.len >= buf_size) {
    /* A caller that ignores the error reads an empty page, not one cut
     * short that silently lacks series. */
    if (buf_size)
      buf[0] = '\0';
    return ILB_ENOSPC;
  }
  buf[o.len] = '\0';
  return 0;
}
