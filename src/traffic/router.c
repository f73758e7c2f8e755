/* The router: pools named (model, version), routes with matches and
 * weighted splits, model routing, rate limits, sticky sessions,
 * prefill/decode pairs and mirroring (see "Traffic" in the header).
 *
 * Readers (ilb_router_pick, ilb_router_complete) take no lock. What a
 * writer replaces (the route table, the rate limits, the session table) is
 * published with an atomic pointer and freed once no pick can hold it.
 * A thread that owns a stripe (threads 1..64, see core/thread.c) marks
 * its stripe's sequence word odd with a plain store before it loads the
 * pointers, and even when done; the order of that store before the loads
 * comes from the writer's membarrier(2) (or from the pick's own fence
 * where membarrier is unavailable), as for the pools' private ticket
 * entries. A writer stores the new pointer, issues the barrier, and waits
 * for every odd word to change: either a pick's mark came before (the
 * writer waits for it) or its pointer loads come after the store (it sees
 * the new pointer). Threads without a stripe of their own count
 * themselves in one of two shared counters chosen by an epoch (seq_cst
 * read-modify-writes); the writer flips the epoch twice and waits for the
 * counter it left each time, so new picks never starve it. When
 * membarrier fails after registration, replaced objects are kept until
 * ilb_router_free instead (as pools keep old snapshots).
 * Route weights are two sets: picks read the current one, a writer fills
 * the other, switches, and waits as above before it may write again.
 * SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "traffic/traffic.h"

/* ---- structures ---------------------------------------------------------- */

struct rpool {
  ilb_pool *pool; /* referenced until ilb_router_free */
  void *blk;      /* labels and strings, one allocation */
  char *model, *version;
  uint64_t mh, vh; /* hashes of model and version */
  ilb_label *labels;
  uint32_t n_labels;
  /* may change when a removed pool is added again: atomics */
  _Atomic uint32_t weight;
  _Atomic int32_t role;
  _Atomic int active; /* routed to (0 once removed) */
};

struct rmatch {
  const char *key, *value;
  size_t vlen;
  int32_t kind;
};

struct rbackend {
  const char *model; /* NULL: the request's */
  const char *version;
  uint64_t mh, vh;
  _Atomic uint64_t picks;
};

struct rroute {
  char *name;
  uint64_t salt; /* the name's hash: a route's own cohort split */
  uint32_t n_matches, n_backends;
  struct rmatch m[ILB_ROUTE_MATCHES_MAX];
  struct rbackend b[ILB_ROUTE_BACKENDS_MAX];
  /* The weights: two sets, picks read set widx; ilb_router_set_weights
   * writes the other, switches, then waits until no pick reads the old
   * one (so a pick never spins and never sees a mix). */
  _Atomic uint32_t widx;
  _Atomic uint32_t w[2][ILB_ROUTE_BACKENDS_MAX];
  const char *mirror_model, *mirror_version;
  uint64_t mmh, mvh;
  uint32_t mirror_pct;
};

struct rtable {
  uint32_t n;
  struct rroute *r[];
};

struct rlimit {
  struct ilb__rlimit *l;
  const char *name;
  const char *key_attr; /* NULL: the affinity key; "": global */
  uint64_t salt;
};

struct rlimits {
  uint32_t n;
  struct rlimit x[];
};

/* A prefill/decode pair in flight. */
#define PAIR_FREE 0u
#define PAIR_OUT 1u
#define PAIR_DONE 2u /* being completed */
struct pair {
  _Atomic uint64_t state; /* seq << 32 | kind */
  uint64_t pt, dt;        /* the halves' tickets */
  uint32_t pp, dp;        /* their pools' indexes */
};

#define STRIPES 64
struct rstripe {
  /* odd while the owning thread is in a pick (owner: plain stores) */
  alignas(ILB__CACHELINE) _Atomic uint64_t seq;
  _Atomic uint64_t rng;
  _Atomic uint32_t pcur; /* next pair entry to try */
};

/* Objects a writer replaced while membarrier could not order picks. */
struct retired {
  struct retired *next;
  int kind; /* RET_* */
  void *p;
};
enum { RET_TABLE, RET_MEM, RET_LIMIT, RET_STICKY };

#define N_ROPT (ILB_OPT_ROUTER_RATE_KEYS - ILB_OPT_ROUTER_STICKY_ENTRIES + 1)

struct ilb_router {
  ilb_host host;
  struct ilb__alloc a;
  pthread_mutex_t mu;
  struct rpool pools[ILB_ROUTER_POOLS_MAX];
  _Atomic uint32_t n_pools; /* entries published (never shrinks) */
  _Atomic(struct rtable *) table;
  _Atomic(struct rlimits *) limits;
  _Atomic(struct ilb__sticky *) sticky;
  _Atomic uint32_t epoch;
  _Atomic int64_t opt[N_ROPT];
  _Atomic(struct pair *) pairs; /* pairs_mask + 1 entries, or NULL */
  _Atomic uint32_t pairs_mask;
  _Atomic uint64_t no_model, sticky_hits, sticky_moves, mirrored;
  struct rstripe st[STRIPES];
  /* readers without a stripe of their own, by epoch */
  alignas(ILB__CACHELINE) _Atomic uint64_t shared[2];
  struct retired *retired; /* under mu */
};

#define ROPT(r, id)                                                          \
  atomic_load_explicit(&(r)->opt[(id)-ILB_OPT_ROUTER_STICKY_ENTRIES],       \
                       memory_order_relaxed)

/* ---- small helpers -------------------------------------------------------- */

static uint64_t hstr(const char *s) {
  return ilb__xxh64(s ? s : "", s ? strlen(s) : 0, 0);
}

static uint64_t router_now(const ilb_router *r) {
  if (r->host.clock_ns)
    return r->host.clock_ns(r->host.user_data);
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
    return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
#endif
  return ilb__host_now(&r->host);
}

static struct rstripe *my_stripe(ilb_router *r, uint32_t *tid) {
  uint32_t t = ilb__tl_tid;
  if (!t)
    t = ilb__thread_register();
  *tid = t;
  return &r->st[(t - 1) & (STRIPES - 1)];
}

static uint64_t rnd(ilb_router *r, struct rstripe *st) {
  if (r->host.rand)
    return ilb__mix64(r->host.rand(r->host.user_data));
  /* the stripe's splitmix64 stream (threads sharing a stripe only share
   * randomness: plain load and store) */
  uint64_t x = atomic_load_explicit(&st->rng, memory_order_relaxed) +
               ILB__GOLDEN;
  atomic_store_explicit(&st->rng, x, memory_order_relaxed);
  return ilb__mix64(x);
}

/* Enter a pick: returns what reader_leave needs (2: the stripe's word). */
static ILB__INLINE uint32_t reader_enter(ilb_router *r, uint32_t tid,
                                         struct rstripe *st) {
  uint64_t q = atomic_load_explicit(&st->seq, memory_order_relaxed);
  /* odd already: a pick nested in this thread's pick (a host callback
   * picking): the shared counters, which nest */
  if (ILB__LIKELY(tid <= STRIPES && !(q & 1))) {
    atomic_store_explicit(&st->seq, q + 1, memory_order_relaxed);
    if (ILB__LIKELY(atomic_load_explicit(&ilb__mb_state,
                                         memory_order_relaxed) == ILB__MB_ON))
      atomic_signal_fence(memory_order_seq_cst);
    else
      atomic_thread_fence(memory_order_seq_cst);
    return 2;
  }
  uint32_t e = atomic_load(&r->epoch) & 1u;
  atomic_fetch_add(&r->shared[e], 1);
  return e;
}

static ILB__INLINE void reader_leave(ilb_router *r, struct rstripe *st,
                                     uint32_t e) {
  if (ILB__LIKELY(e == 2))
    atomic_store_explicit(
        &st->seq, atomic_load_explicit(&st->seq, memory_order_relaxed) + 1,
        memory_order_release);
  else
    atomic_fetch_sub_explicit(&r->shared[e], 1, memory_order_release);
}

/* After storing a new pointer: wait until no pick can hold the old one.
 * 0, or -1 when that cannot be known (membarrier failed): then the caller
 * retires the old object instead of freeing it. Router mutex held. */
static int wait_readers(ilb_router *r) {
  int rc = ilb__writer_barrier();
  for (uint32_t i = 0; i < STRIPES; i++) {
    uint64_t q = atomic_load(&r->st[i].seq);
    for (unsigned spins = 0; (q & 1) && atomic_load(&r->st[i].seq) == q;
         spins++)
      if (spins > 64)
        sched_yield();
  }
  for (int flip = 0; flip < 2; flip++) {
    uint32_t e = atomic_fetch_add(&r->epoch, 1) & 1u;
    for (unsigned spins = 0; atomic_load(&r->shared[e]) != 0; spins++)
      if (spins > 64)
        sched_yield();
  }
  return rc;
}

/* Keep p (kind) until ilb_router_free: a late pick may still read it.
 * 1 when kept (the caller must not free it), 0 when it may be freed. */
static int retire(ilb_router *r, int waited, int kind, void *p) {
  if (waited == 0 || !p)
    return 0;
  struct retired *x = ilb__malloc(&r->a, sizeof(*x));
  if (x) { /* without memory for the note, the object is leaked: never
              freed under a pick */
    x->next = r->retired;
    x->kind = kind;
    x->p = p;
    r->retired = x;
  }
  return 1;
}

/* A string the router keeps: 0..ILB_ID_MAX bytes (1.. when !empty_ok). */
static int check_str(const char *s, int empty_ok) {
  if (!s)
    return ILB_EINVAL;
  size_t n = strnlen(s, ILB_ID_MAX + 1);
  if (n > ILB_ID_MAX)
    return ILB_ETOOBIG;
  return n == 0 && !empty_ok ? ILB_EINVAL : 0;
}

/* Bump allocation of a block's strings. */
struct arena {
  char *p, *end;
};
static const char *arena_put(struct arena *ar, const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = ar->p;
  memcpy(d, s, n);
  ar->p += n;
  return d;
}
static size_t slen(const char *s) { return s ? strlen(s) + 1 : 0; }

/* The value of the request's first attribute named key, or NULL. */
static const char *attr(const ilb_request *req, const char *key) {
  if (!req)
    return NULL;
  for (size_t i = 0; i < req->n_attrs; i++)
    if (req->attrs[i].key && strcmp(req->attrs[i].key, key) == 0)
      return req->attrs[i].value ? req->attrs[i].value : "";
  return NULL;
}

/* ---- router -------------------------------------------------------------- */

int ilb_router_pool_spec_init(ilb_router_pool_spec *spec) {
  if (!spec)
    return ILB_EINVAL;
  memset(spec, 0, sizeof(*spec));
  spec->struct_size = sizeof(*spec);
  spec->weight = 1;
  spec->role = ILB_ROLE_BOTH;
  return 0;
}

int ilb_route_init(ilb_route *route) {
  if (!route)
    return ILB_EINVAL;
  memset(route, 0, sizeof(*route));
  route->struct_size = sizeof(*route);
  route->match_size = sizeof(ilb_match);
  route->backend_size = sizeof(ilb_backend);
  return 0;
}

int ilb_rate_limit_init(ilb_rate_limit *limit) {
  if (!limit)
    return ILB_EINVAL;
  memset(limit, 0, sizeof(*limit));
  limit->struct_size = sizeof(*limit);
  limit->period_ms = 1000;
  limit->burst = 1;
  return 0;
}

int ilb_route_result_init(ilb_route_result *res) {
  if (!res)
    return ILB_EINVAL;
  memset(res, 0, sizeof(*res));
  res->struct_size = sizeof(*res);
  res->route = -1;
  res->backend = -1;
  return 0;
}

int ilb_router_new(ilb_router **out, const ilb_host *host) {
  if (!out)
    return ILB_EINVAL;
  *out = NULL;
  ilb__thread_init();
  ilb_host h;
  int rc = ilb__host_copy(&h, host);
  if (rc)
    return rc;
  struct ilb__alloc a = {h.alloc, h.free, h.user_data};
  ilb_router *r = ilb__calloc_aligned(&a, sizeof(*r));
  if (!r)
    return ILB_ENOMEM;
  r->host = h;
  r->a = a;
  if (pthread_mutex_init(&r->mu, NULL)) {
    ilb__free_aligned(&a, r);
    return ILB_ENOMEM;
  }
  for (int32_t id = ILB_OPT_ROUTER_STICKY_ENTRIES;
       id <= ILB_OPT_ROUTER_RATE_KEYS; id++) {
    int64_t def = 0;
    ilb_option_bounds(NULL, NULL, &def, id);
    atomic_init(&r->opt[id - ILB_OPT_ROUTER_STICKY_ENTRIES], def);
  }
  for (uint32_t i = 0; i < STRIPES; i++)
    atomic_init(&r->st[i].rng, ilb__mix64(h.seed ^ ilb__mix64(i + 77)));
  struct ilb__sticky *t = NULL;
  if ((rc = ilb__sticky_new(&t, &a,
                            (uint32_t)ROPT(r, ILB_OPT_ROUTER_STICKY_ENTRIES)))) {
    pthread_mutex_destroy(&r->mu);
    ilb__free_aligned(&a, r);
    return rc;
  }
  atomic_init(&r->sticky, t);
  *out = r;
  return 0;
}

static void table_free(ilb_router *r, struct rtable *t) {
  if (!t)
    return;
  for (uint32_t i = 0; i < t->n; i++)
    ilb__free(&r->a, t->r[i]);
  ilb__free(&r->a, t);
}

static void limits_free(ilb_router *r, struct rlimits *l) {
  if (!l)
    return;
  for (uint32_t i = 0; i < l->n; i++)
    ilb__rl_free(l->x[i].l, &r->a);
  ilb__free(&r->a, l);
}

void ilb_router_free(ilb_router *r) {
  if (!r)
    return;
  struct ilb__alloc a = r->a;
  table_free(r, atomic_load(&r->table));
  limits_free(r, atomic_load(&r->limits));
  ilb__sticky_free(atomic_load(&r->sticky), &a);
  ilb__free(&a, atomic_load(&r->pairs));
  for (struct retired *x = r->retired, *next; x; x = next) {
    next = x->next;
    if (x->kind == RET_TABLE)
      table_free(r, x->p);
    else if (x->kind == RET_LIMIT)
      ilb__rl_free(x->p, &a);
    else if (x->kind == RET_STICKY)
      ilb__sticky_free(x->p, &a);
    else
      ilb__free(&a, x->p);
    ilb__free(&a, x);
  }
  uint32_t n = atomic_load(&r->n_pools);
  for (uint32_t i = 0; i < n; i++) {
    ilb_pool_free(r->pools[i].pool); /* the router's reference */
    ilb__free(&a, r->pools[i].blk);
  }
  pthread_mutex_destroy(&r->mu);
  ilb__free_aligned(&a, r);
}

int ilb_router_get_option(int64_t *value_out, const ilb_router *r,
                          int32_t option) {
  if (!value_out || !r)
    return ILB_EINVAL;
  if (!ilb__opt_is_router(option))
    return ILB_EUNKNOWN;
  *value_out = atomic_load(&r->opt[option - ILB_OPT_ROUTER_STICKY_ENTRIES]);
  return 0;
}

int ilb_router_set_option(ilb_router *r, int32_t option, int64_t value) {
  if (!r)
    return ILB_EINVAL;
  if (!ilb__opt_is_router(option))
    return ILB_EUNKNOWN;
  int rc = ilb__opt_validate(option, value);
  if (rc)
    return rc;
  pthread_mutex_lock(&r->mu);
  _Atomic int64_t *o = &r->opt[option - ILB_OPT_ROUTER_STICKY_ENTRIES];
  if (option == ILB_OPT_ROUTER_STICKY_ENTRIES && atomic_load(o) != value) {
    struct ilb__sticky *t = NULL;
    if (value && (rc = ilb__sticky_new(&t, &r->a, (uint32_t)value)))
      goto out;
    struct ilb__sticky *old = atomic_exchange(&r->sticky, t);
    if (!retire(r, wait_readers(r), RET_STICKY, old))
      ilb__sticky_free(old, &r->a);
  } else if (option == ILB_OPT_ROUTER_PAIRS_MAX && atomic_load(&r->pairs) &&
             atomic_load(o) != value) {
    rc = ILB_EBUSY; /* the pair table exists: its size is fixed */
    goto out;
  }
  atomic_store(o, value);
out:
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* The index of the active pool (model hash mh, version hash vh) that is
 * (prefill 1) or is not (prefill 0) a PREFILL pool, or -1. A PREFILL pool
 * shares its name with its DECODE pool; routes never target it. */
static int find_pool(ilb_router *r, const char *model, uint64_t mh,
                     const char *version, uint64_t vh, int prefill) {
  uint32_t n = atomic_load_explicit(&r->n_pools, memory_order_acquire);
  if (!version)
    version = "";
  for (uint32_t i = 0; i < n; i++) {
    const struct rpool *p = &r->pools[i];
    if (p->mh == mh && p->vh == vh &&
        atomic_load_explicit(&p->active, memory_order_acquire) &&
        (atomic_load_explicit(&p->role, memory_order_relaxed) ==
         ILB_ROLE_PREFILL) == prefill &&
        strcmp(p->model, model) == 0 && strcmp(p->version, version) == 0)
      return (int)i;
  }
  return -1;
}

static int check_labels(const ilb_label *l, size_t n) {
  if (n > ILB_LABELS_MAX)
    return ILB_ETOOBIG;
  if (n && !l)
    return ILB_EINVAL;
  for (size_t i = 0; i < n; i++) {
    int rc = check_str(l[i].key, 0);
    if (!rc)
      rc = check_str(l[i].value, 1);
    if (rc)
      return rc;
  }
  return 0;
}

int ilb_router_add_pool(ilb_router *r, const ilb_router_pool_spec *spec,
                        ilb_pool *pool) {
  if (!r || !spec || !pool)
    return ILB_EINVAL;
  int rc = ilb__check_struct_in(spec, spec->struct_size, sizeof(*spec),
                                sizeof(*spec));
  if (rc)
    return rc;
  if ((rc = check_str(spec->model, 0)) ||
      (spec->version && (rc = check_str(spec->version, 1))) ||
      (rc = check_labels(spec->labels, spec->n_labels)))
    return rc;
  if ((uint32_t)spec->role > ILB_ROLE_DECODE)
    return ILB_EINVAL;
  if (spec->weight > ILB_WEIGHT_MAX)
    return ILB_ERANGE;
  const char *ver = spec->version ? spec->version : "";
  uint64_t mh = hstr(spec->model), vh = hstr(ver);
  pthread_mutex_lock(&r->mu);
  uint32_t n = atomic_load(&r->n_pools);
  int idx = -1;
  if (find_pool(r, spec->model, mh, ver, vh,
                spec->role == ILB_ROLE_PREFILL) >= 0) {
    rc = ILB_EEXIST;
    goto out;
  }
  uint32_t tag = atomic_load(&pool->ticket_tag);
  if (tag) { /* back in its router after a removal, or in another one */
    if (tag > n || r->pools[tag - 1].pool != pool ||
        atomic_load(&r->pools[tag - 1].active)) {
      rc = ILB_EBUSY;
      goto out;
    }
    idx = (int)tag - 1;
  } else if (n == ILB_ROUTER_POOLS_MAX) {
    rc = ILB_ETOOBIG;
    goto out;
  }
  if (spec->role == ILB_ROLE_PREFILL && !atomic_load(&r->pairs)) {
    uint32_t want = (uint32_t)ROPT(r, ILB_OPT_ROUTER_PAIRS_MAX), m = 64;
    while (m < want)
      m <<= 1;
    struct pair *pa = ilb__calloc(&r->a, m, sizeof(*pa));
    if (!pa) {
      rc = ILB_ENOMEM;
      goto out;
    }
    atomic_store(&r->pairs_mask, m - 1);
    atomic_store_explicit(&r->pairs, pa, memory_order_release); /* last */
  }
  if (idx >= 0) { /* the same pool again: under the same name only (its
                    * old name may still be in results) */
    struct rpool *p = &r->pools[idx];
    if (strcmp(p->model, spec->model) != 0 || strcmp(p->version, ver) != 0) {
      rc = ILB_EBUSY;
      goto out;
    }
    atomic_store(&p->weight, spec->weight);
    atomic_store(&p->role, spec->role);
    atomic_store(&p->active, 1);
    goto out;
  }
  /* one block: the labels, then the strings */
  size_t bytes = spec->n_labels * sizeof(ilb_label) + slen(spec->model) +
                 slen(ver);
  for (size_t i = 0; i < spec->n_labels; i++)
    bytes += slen(spec->labels[i].key) + slen(spec->labels[i].value);
  char *blk = ilb__malloc(&r->a, bytes);
  if (!blk) {
    rc = ILB_ENOMEM;
    goto out;
  }
  ilb_label *labels = (ilb_label *)(void *)blk;
  struct arena ar = {blk + spec->n_labels * sizeof(ilb_label), blk + bytes};
  for (size_t i = 0; i < spec->n_labels; i++) {
    labels[i].key = arena_put(&ar, spec->labels[i].key);
    labels[i].value = arena_put(&ar, spec->labels[i].value);
  }
  struct rpool *p = &r->pools[n];
  p->blk = blk;
  p->model = (char *)(uintptr_t)arena_put(&ar, spec->model);
  p->version = (char *)(uintptr_t)arena_put(&ar, ver);
  p->labels = spec->n_labels ? labels : NULL;
  p->n_labels = (uint32_t)spec->n_labels;
  p->mh = mh;
  p->vh = vh;
  atomic_store(&p->weight, spec->weight);
  atomic_store(&p->role, spec->role);
  p->pool = pool;
  atomic_fetch_add(&pool->refs, 1);
  atomic_store(&pool->ticket_tag, n + 1);
  atomic_store(&p->active, 1);
  atomic_store_explicit(&r->n_pools, n + 1, memory_order_release);
out:
  pthread_mutex_unlock(&r->mu);
  return rc;
}

int ilb_router_remove_pool(ilb_router *r, const char *model,
                           const char *version) {
  if (!r || !model)
    return ILB_EINVAL;
  if (!version)
    version = "";
  pthread_mutex_lock(&r->mu);
  /* both halves of a prefill/decode pair share the name */
  int found = 0;
  for (int prefill = 0; prefill < 2; prefill++) {
    int i = find_pool(r, model, hstr(model), version, hstr(version), prefill);
    if (i >= 0) {
      atomic_store(&r->pools[i].active, 0);
      found = 1;
    }
  }
  pthread_mutex_unlock(&r->mu);
  return found ? 0 : ILB_ENOENT;
}

/* ---- routes -------------------------------------------------------------- */

/* Element i of a route's matches and backends, by their declared size. */
#define M_AT(rt, i)                                                          \
  ((const ilb_match *)(const void *)((const char *)(rt)->matches +          \
                                     (i) * (rt)->match_size))
#define B_AT(rt, i)                                                          \
  ((const ilb_backend *)(const void *)((const char *)(rt)->backends +       \
                                       (i) * (rt)->backend_size))

static int check_route(const ilb_route *rt) {
  int rc = ilb__check_struct_in(rt, rt->struct_size, sizeof(*rt), sizeof(*rt));
  if (rc)
    return rc;
  if (rt->match_size != sizeof(ilb_match) ||
      rt->backend_size != sizeof(ilb_backend))
    return ILB_ESIZE; /* the only element sizes so far */
  if ((rc = check_str(rt->name, 0)))
    return rc;
  if (rt->n_matches > ILB_ROUTE_MATCHES_MAX ||
      rt->n_backends > ILB_ROUTE_BACKENDS_MAX)
    return ILB_ETOOBIG;
  if ((rt->n_matches && !rt->matches) || !rt->n_backends || !rt->backends ||
      rt->reserved0 || rt->mirror_percent > 100 ||
      (rt->mirror_version && !rt->mirror_model))
    return ILB_EINVAL;
  for (size_t i = 0; i < rt->n_matches; i++) {
    const ilb_match *m = M_AT(rt, i);
    if ((rc = check_str(m->key, 0)))
      return rc;
    int needs = m->kind == ILB_MATCH_EXACT || m->kind == ILB_MATCH_PREFIX;
    if (m->kind < ILB_MATCH_EXACT || m->kind > ILB_MATCH_ABSENT ||
        m->reserved0 || (needs ? !m->value : m->value != NULL))
      return ILB_EINVAL;
    if (needs && (rc = check_str(m->value, 1)))
      return rc;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < rt->n_backends; i++) {
    const ilb_backend *b = B_AT(rt, i);
    if (b->reserved0)
      return ILB_EINVAL;
    if ((b->model && (rc = check_str(b->model, 0))) ||
        (b->version && (rc = check_str(b->version, 1))))
      return rc;
    if (b->weight > ILB_WEIGHT_MAX)
      return ILB_ERANGE;
    total += b->weight;
  }
  if (!total)
    return ILB_EINVAL;
  if ((rt->mirror_model && (rc = check_str(rt->mirror_model, 0))) ||
      (rt->mirror_version && (rc = check_str(rt->mirror_version, 1))))
    return rc;
  return 0;
}

/* One allocation per route: the struct, then its strings. */
static struct rroute *route_new(ilb_router *r, const ilb_route *rt) {
  size_t bytes = sizeof(struct rroute) + slen(rt->name) +
                 slen(rt->mirror_model) + slen(rt->mirror_version) + 1;
  for (size_t i = 0; i < rt->n_matches; i++)
    bytes += slen(M_AT(rt, i)->key) + slen(M_AT(rt, i)->value);
  for (size_t i = 0; i < rt->n_backends; i++)
    bytes += slen(B_AT(rt, i)->model) + slen(B_AT(rt, i)->version);
  struct rroute *x = ilb__calloc(&r->a, 1, bytes);
  if (!x)
    return NULL;
  struct arena ar = {(char *)(x + 1), (char *)x + bytes};
  x->name = (char *)(uintptr_t)arena_put(&ar, rt->name);
  x->salt = hstr(rt->name);
  x->n_matches = (uint32_t)rt->n_matches;
  x->n_backends = (uint32_t)rt->n_backends;
  for (size_t i = 0; i < rt->n_matches; i++) {
    x->m[i].key = arena_put(&ar, M_AT(rt, i)->key);
    x->m[i].value = arena_put(&ar, M_AT(rt, i)->value);
    x->m[i].vlen = x->m[i].value ? strlen(x->m[i].value) : 0;
    x->m[i].kind = M_AT(rt, i)->kind;
  }
  for (size_t i = 0; i < rt->n_backends; i++) {
    struct rbackend *b = &x->b[i];
    b->model = arena_put(&ar, B_AT(rt, i)->model);
    b->version = B_AT(rt, i)->version ? arena_put(&ar, B_AT(rt, i)->version)
                                         : "";
    b->mh = b->model ? hstr(b->model) : 0;
    b->vh = hstr(b->version);
    atomic_init(&x->w[0][i], B_AT(rt, i)->weight);
  }
  if (rt->mirror_model) {
    x->mirror_model = arena_put(&ar, rt->mirror_model);
    x->mirror_version =
        rt->mirror_version ? arena_put(&ar, rt->mirror_version) : "";
    x->mmh = hstr(x->mirror_model);
    x->mvh = hstr(x->mirror_version);
    x->mirror_pct = rt->mirror_percent;
  }
  return x;
}

int ilb_router_set_routes(ilb_router *r, const ilb_route *routes, size_t n) {
  if (!r || (n && !routes))
    return ILB_EINVAL;
  if (n > ILB_ROUTES_MAX)
    return ILB_ETOOBIG;
  for (size_t i = 0; i < n; i++) {
    int rc = check_route(&routes[i]);
    if (rc)
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(routes[i].name, routes[j].name) == 0)
        return ILB_EEXIST;
  }
  struct rtable *t = ilb__calloc(&r->a, 1, sizeof(*t) + n * sizeof(t->r[0]));
  if (!t)
    return ILB_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (!(t->r[i] = route_new(r, &routes[i]))) {
      table_free(r, t);
      return ILB_ENOMEM;
    }
    t->n++;
  }
  pthread_mutex_lock(&r->mu);
  struct rtable *old = atomic_load(&r->table);
  atomic_store(&r->table, t);
  int keep = retire(r, wait_readers(r), RET_TABLE, old);
  /* a route that keeps its name and backends keeps its counters: added
   * once no pick can count on the old table any more */
  for (uint32_t i = 0; old && i < t->n; i++)
    for (uint32_t j = 0; j < old->n; j++) {
      struct rroute *a = t->r[i], *b = old->r[j];
      if (strcmp(a->name, b->name) != 0)
        continue;
      for (uint32_t k = 0; k < a->n_backends && k < b->n_backends; k++)
        if (a->b[k].mh == b->b[k].mh && a->b[k].vh == b->b[k].vh)
          atomic_fetch_add(&a->b[k].picks, atomic_load(&b->b[k].picks));
    }
  pthread_mutex_unlock(&r->mu);
  if (!keep)
    table_free(r, old);
  return 0;
}

int ilb_router_set_weights(ilb_router *r, const char *name,
                           const uint32_t *weights, size_t n) {
  if (!r || !name || !weights)
    return ILB_EINVAL;
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (weights[i] > ILB_WEIGHT_MAX)
      return ILB_ERANGE;
    total += weights[i];
  }
  if (!total)
    return ILB_EINVAL;
  pthread_mutex_lock(&r->mu);
  struct rtable *t = atomic_load(&r->table);
  int rc = ILB_ENOENT;
  for (uint32_t i = 0; t && i < t->n; i++) {
    struct rroute *x = t->r[i];
    if (strcmp(x->name, name) != 0)
      continue;
    if (n != x->n_backends) {
      rc = ILB_EINVAL;
      break;
    }
    uint32_t j = !atomic_load(&x->widx);
    for (uint32_t k = 0; k < x->n_backends; k++)
      atomic_store_explicit(&x->w[j][k], weights[k], memory_order_relaxed);
    atomic_store(&x->widx, j);
    wait_readers(r); /* the next call rewrites the set picks read now */
    rc = 0;
    break;
  }
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* ---- rate limits ---------------------------------------------------------- */

/* Free the limits of nl that old does not hold, and nl. */
static void limits_drop_new(ilb_router *r, struct rlimits *nl,
                            const struct rlimits *old) {
  for (uint32_t i = 0; i < nl->n; i++) {
    int was_old = 0;
    for (uint32_t j = 0; old && j < old->n; j++)
      was_old |= old->x[j].l == nl->x[i].l;
    if (!was_old)
      ilb__rl_free(nl->x[i].l, &r->a);
  }
  ilb__free(&r->a, nl);
}

int ilb_router_set_rate_limits(ilb_router *r, const ilb_rate_limit *limits,
                               size_t n) {
  if (!r || (n && !limits))
    return ILB_EINVAL;
  if (n > ILB_RATE_LIMITS_MAX)
    return ILB_ETOOBIG;
  size_t bytes = 0; /* the key attributes' copies, after the array */
  for (size_t i = 0; i < n; i++) {
    const ilb_rate_limit *l = &limits[i];
    int rc = ilb__check_struct_in(l, l->struct_size, sizeof(*l), sizeof(*l));
    if (rc || (rc = check_str(l->name, 0)) ||
        (l->key_attr && (rc = check_str(l->key_attr, 1))))
      return rc;
    if (l->rate == 0 || l->period_ms < 1 || l->period_ms > 86400000 ||
        l->burst < 1 || l->rate > UINT64_MAX / 1000 ||
        l->burst > l->rate * 1000)
      return ILB_EINVAL;
    for (size_t j = 0; j < i; j++)
      if (strcmp(l->name, limits[j].name) == 0)
        return ILB_EEXIST;
    bytes += slen(l->key_attr) + slen(l->name);
  }
  struct rlimits *nl =
      ilb__calloc(&r->a, 1, sizeof(*nl) + n * sizeof(nl->x[0]) + bytes);
  if (!nl)
    return ILB_ENOMEM;
  struct arena ar = {(char *)&nl->x[n], (char *)&nl->x[n] + bytes};
  pthread_mutex_lock(&r->mu);
  struct rlimits *old = atomic_load(&r->limits);
  uint8_t kept[ILB_RATE_LIMITS_MAX] = {0};
  for (size_t i = 0; i < n; i++) {
    struct rlimit *x = &nl->x[i];
    /* a limit that keeps its definition keeps its buckets */
    for (uint32_t j = 0; old && j < old->n && !x->l; j++)
      if (!kept[j] && ilb__rl_same(old->x[j].l, &limits[i])) {
        x->l = old->x[j].l;
        kept[j] = 1;
      }
    if (!x->l) {
      int rc = ilb__rl_new(&x->l, &r->a, &limits[i],
                           (uint32_t)ROPT(r, ILB_OPT_ROUTER_RATE_KEYS));
      if (rc) {
        limits_drop_new(r, nl, old);
        pthread_mutex_unlock(&r->mu);
        return rc;
      }
    }
    x->key_attr = arena_put(&ar, limits[i].key_attr);
    x->name = arena_put(&ar, limits[i].name);
    x->salt = hstr(limits[i].name);
    nl->n++;
  }
  atomic_store(&r->limits, nl);
  int waited = wait_readers(r);
  /* the limits dropped, then the array; each kept for late picks when
   * their absence cannot be known */
  for (uint32_t j = 0; old && j < old->n; j++)
    if (!kept[j] && !retire(r, waited, RET_LIMIT, old->x[j].l))
      ilb__rl_free(old->x[j].l, &r->a);
  if (!retire(r, waited, RET_MEM, old))
    ilb__free(&r->a, old);
  pthread_mutex_unlock(&r->mu);
  return 0;
}

/* ---- picks --------------------------------------------------------------- */

static int match_one(const struct rmatch *m, const ilb_request *req) {
  const char *v = attr(req, m->key);
  switch (m->kind) {
  case ILB_MATCH_EXACT:
    return v && strcmp(v, m->value) == 0;
  case ILB_MATCH_PREFIX:
    return v && strncmp(v, m->value, m->vlen) == 0;
  case ILB_MATCH_PRESENT:
    return v != NULL;
  default: /* ILB_MATCH_ABSENT */
    return v == NULL;
  }
}

/* A point in [0, total): the key's (cohort, fixed while the weights are)
 * or a random one. */
static uint32_t split_point(ilb_router *r, struct rstripe *st,
                            const ilb_request *req, uint64_t salt,
                            uint64_t total) {
  uint64_t h = req && req->key_len ? ilb__xxh64(req->key, req->key_len, salt)
                                   : rnd(r, st);
  return (uint32_t)(((h >> 32) * total) >> 32);
}

/* The route's backend for this request (weights read as one set). */
static uint32_t route_backend(ilb_router *r, struct rstripe *st,
                              struct rroute *x, const ilb_request *req) {
  uint32_t w[ILB_ROUTE_BACKENDS_MAX];
  uint64_t total = 0;
  uint32_t i = atomic_load_explicit(&x->widx, memory_order_acquire);
  for (uint32_t k = 0; k < x->n_backends; k++)
    total += w[k] = atomic_load_explicit(&x->w[i][k], memory_order_relaxed);
  if (x->n_backends == 1)
    return 0;
  uint32_t pt = split_point(r, st, req, x->salt, total);
  uint32_t k = 0; /* pt < total: the last backend at the latest */
  while (k + 1 < x->n_backends && pt >= w[k]) {
    pt -= w[k];
    k++;
  }
  return k;
}

/* Model routing: one of the model's pools by their weights, -1 if none. */
static int model_pool(ilb_router *r, struct rstripe *st, const char *model,
                      const ilb_request *req) {
  uint64_t mh = hstr(model), total = 0;
  uint32_t n = atomic_load_explicit(&r->n_pools, memory_order_acquire);
  uint32_t w[ILB_ROUTER_POOLS_MAX];
  for (uint32_t i = 0; i < n; i++) {
    const struct rpool *p = &r->pools[i];
    w[i] = 0;
    if (p->mh == mh &&
        atomic_load_explicit(&p->active, memory_order_acquire) &&
        atomic_load_explicit(&p->role, memory_order_relaxed) !=
            ILB_ROLE_PREFILL &&
        strcmp(p->model, model) == 0)
      total += w[i] = atomic_load_explicit(&p->weight, memory_order_relaxed);
  }
  if (total == 0)
    return -1;
  uint32_t pt = split_point(r, st, req, mh, total);
  for (uint32_t i = 0;; i++) {
    if (pt < w[i])
      return (int)i;
    pt -= w[i];
  }
}

/* The request's rate-limit key for limit x: 0 (not limited) or 1. The
 * key "model" is the model routed to (a route may choose it). */
static int limit_key(const struct rlimit *x, const ilb_request *req,
                     const char *routed_model, uint64_t *h) {
  if (!x->key_attr) {
    if (!req || !req->key_len)
      return 0;
    *h = ilb__xxh64(req->key, req->key_len, x->salt);
    return 1;
  }
  if (!x->key_attr[0]) {
    *h = x->salt;
    return 1;
  }
  const char *v = strcmp(x->key_attr, "model") == 0 ? routed_model
                                                     : attr(req, x->key_attr);
  if (!v)
    return 0;
  *h = ilb__xxh64(v, strlen(v), x->salt);
  return 1;
}

/* The session's table key in pool i. */
static uint64_t session_hash(const ilb_request *req, uint32_t i) {
  return ilb__mix64(ilb__xxh64(req->key, req->key_len, 0x5e55) ^
                    ((uint64_t)(i + 1) * ILB__GOLDEN));
}

/* Pick in pool i, with the session's replica when there is one. */
static int pool_pick(ilb_router *r, struct ilb__sticky *sticky, uint32_t i,
                     const ilb_request *req, ilb_pick_result *pr,
                     uint64_t now, int *sticky_hit) {
  struct ilb__pick_opts o = {NULL, 0, 0, 0, 0, 0, 0, 0};
  uint64_t h = 0, val = 0, exp = 0;
  int pinned = 0, had = 0;
  if (sticky && req && req->key_len) {
    h = session_hash(req, i);
    had = ilb__sticky_get(sticky, h, now, &val, &pinned, &exp);
    if (had) {
      /* the session's value: the replica's slot + 1, its generation */
      o.want = (uint32_t)val;
      o.want_gen = (uint32_t)(val >> 32);
      o.bound_pct =
          pinned ? 0
                 : (uint32_t)ROPT(r, ILB_OPT_ROUTER_STICKY_BOUND_PERCENT);
    }
  }
  int rc = ilb__pick_ex(pr, r->pools[i].pool, req, &o);
  if (rc || !h)
    return rc;
  uint64_t ttl =
      (uint64_t)ROPT(r, ILB_OPT_ROUTER_STICKY_TTL_MS) * UINT64_C(1000000);
  if (o.want_taken) {
    *sticky_hit = 1;
    atomic_fetch_add_explicit(&r->sticky_hits, 1, memory_order_relaxed);
    /* a use renews the session's lease (a pin keeps its own), at most
     * once per quarter TTL: a busy session rarely writes its bucket (a
     * session lives 3/4 TTL to TTL after its last use) */
    if (!pinned && exp - now < ttl - ttl / 4)
      ilb__sticky_put(sticky, h, val, now + ttl, 0, 0);
  } else {
    uint64_t got = ((uint64_t)o.gen_out << 32) | ((uint64_t)o.slot_out + 1);
    if (had && got != val) /* not when it lands where it was */
      atomic_fetch_add_explicit(&r->sticky_moves, 1, memory_order_relaxed);
    ilb__sticky_put(sticky, h, got, now + ttl, 0, 0);
  }
  return 0;
}

/* Claim a pair entry; its index, or UINT32_MAX when the table is full. */
static uint32_t pair_claim(ilb_router *r, struct pair *pa, struct rstripe *st,
                           uint32_t *seq) {
  uint32_t mask = atomic_load_explicit(&r->pairs_mask, memory_order_relaxed);
  uint32_t cur = atomic_load_explicit(&st->pcur, memory_order_relaxed);
  for (uint32_t k = 0; k <= mask; k++) {
    uint32_t i = (cur + k) & mask;
    uint64_t s = atomic_load_explicit(&pa[i].state, memory_order_relaxed);
    if ((uint32_t)s != PAIR_FREE)
      continue;
    uint32_t q = (uint32_t)(s >> 32) + 1;
    q += q == 0;
    /* claimed as DONE (not yet completable) until the tickets are in */
    if (atomic_compare_exchange_strong(&pa[i].state, &s,
                                       ((uint64_t)q << 32) | PAIR_DONE)) {
      atomic_store_explicit(&st->pcur, i + 1, memory_order_relaxed);
      *seq = q;
      return i;
    }
  }
  return UINT32_MAX;
}

static void set_out(ilb_route_result *res, const ilb_route_result *v) {
  size_t n = res->struct_size < sizeof(*v) ? res->struct_size : sizeof(*v);
  memcpy((char *)res + sizeof(size_t), (const char *)v + sizeof(size_t),
         n - sizeof(size_t));
}

/* Smallest result we accept: up to the ticket. */
#define RES_MIN (offsetof(ilb_route_result, ticket) + sizeof(uint64_t))

int ilb_router_pick(ilb_route_result *res, ilb_router *r,
                    const ilb_request *req) {
  if (!res)
    return ILB_EINVAL;
  if (res->struct_size < RES_MIN)
    return ILB_ESIZE;
  ilb_route_result v;
  memset(&v, 0, sizeof(v));
  v.route = -1;
  v.backend = -1;
  int rc = 0;
  if (!r) {
    rc = ILB_EINVAL;
    goto early;
  }
  if (req) { /* what the router reads; the pool's pick checks the rest */
    if (req->struct_size < offsetof(ilb_request, priority)) {
      rc = ILB_ESIZE;
      goto early;
    }
    if ((req->n_attrs && !req->attrs) || (req->key_len && !req->key)) {
      rc = ILB_EINVAL;
      goto early;
    }
  }
  uint32_t tid;
  struct rstripe *st = my_stripe(r, &tid);
  uint32_t ep = reader_enter(r, tid, st);
  struct rtable *t = atomic_load(&r->table);
  const char *model = attr(req, "model");
  int pi = -1;
  struct rroute *x = NULL;
  for (uint32_t i = 0; t && i < t->n; i++) {
    struct rroute *c = t->r[i];
    uint32_t k = 0;
    while (k < c->n_matches && match_one(&c->m[k], req))
      k++;
    if (k < c->n_matches)
      continue;
    x = c;
    v.route = (int32_t)i;
    uint32_t b = route_backend(r, st, c, req);
    v.backend = (int32_t)b;
    const char *bm = c->b[b].model ? c->b[b].model : model;
    if (bm) {
      pi = find_pool(r, bm, c->b[b].model ? c->b[b].mh : hstr(bm),
                     c->b[b].version, c->b[b].vh, 0);
    }
    if (pi >= 0)
      atomic_fetch_add_explicit(&c->b[b].picks, 1, memory_order_relaxed);
    break;
  }
  if (!x && model)
    pi = model_pool(r, st, model, req);
  if (pi < 0) {
    atomic_fetch_add_explicit(&r->no_model, 1, memory_order_relaxed);
    rc = ILB_ENOMODEL;
    goto out;
  }
  struct rpool *p = &r->pools[pi];
  int pf = -1; /* a DECODE pool's PREFILL partner */
  if (atomic_load_explicit(&p->role, memory_order_relaxed) ==
      ILB_ROLE_DECODE) {
    pf = find_pool(r, p->model, p->mh, p->version, p->vh, 1);
    if (pf < 0) {
      atomic_fetch_add_explicit(&r->no_model, 1, memory_order_relaxed);
      rc = ILB_ENOMODEL;
      goto out;
    }
  }
  /* rate limits: all or none take a token */
  struct rlimits *lim = atomic_load(&r->limits);
  struct ilb__sticky *sticky = atomic_load(&r->sticky);
  /* the clock only for what needs it: rate limits at full resolution (a
   * coarse clock ticking every few ms would admit one request per tick),
   * sessions (TTLs of minutes) at the cheap one */
  uint64_t now = lim && lim->n ? ilb__host_now(&r->host)
                 : sticky && req && req->key_len ? router_now(r)
                                                 : 0;
  uint64_t lh[ILB_RATE_LIMITS_MAX];
  uint8_t took[ILB_RATE_LIMITS_MAX] = {0};
  uint32_t nl = lim ? lim->n : 0;
  for (uint32_t i = 0; i < nl; i++) {
    if (!limit_key(&lim->x[i], req, p->model, &lh[i]))
      continue;
    uint64_t after = 0;
    if (ilb__rl_take(lim->x[i].l, lh[i], now, &after)) {
      v.retry_after_ns = after;
      rc = ILB_ERATELIMIT;
      break;
    }
    took[i] = 1;
  }
  ilb_pick_result pr, pp;
  ilb_pick_result_init(&pr);
  ilb_pick_result_init(&pp);
  uint32_t pair = UINT32_MAX, pseq = 0;
  /* published before the PREFILL pool that made pf >= 0 */
  struct pair *pa = atomic_load_explicit(&r->pairs, memory_order_acquire);
  int hit = 0;
  if (!rc && pf >= 0) {
    pair = pa ? pair_claim(r, pa, st, &pseq) : UINT32_MAX;
    if (pair == UINT32_MAX)
      rc = ILB_ETICKETS;
    else if ((rc = ilb_pick(&pp, r->pools[pf].pool, req)))
      v.retry_after_ns = pp.retry_after_ns;
  }
  if (!rc && (rc = pool_pick(r, sticky, (uint32_t)pi, req, &pr, now, &hit)))
    v.retry_after_ns = pr.retry_after_ns;
  if (rc) {
    if (pp.ticket) { /* the prefill half is not used: release it */
      ilb_outcome oc;
      ilb_outcome_init(&oc);
      oc.status = ILB_OUTCOME_CANCELLED;
      ilb_complete(r->pools[pf].pool, pp.ticket, &oc);
    }
    if (pair != UINT32_MAX)
      atomic_store_explicit(&pa[pair].state,
                            ((uint64_t)pseq << 32) | PAIR_FREE,
                            memory_order_release);
    for (uint32_t i = 0; i < nl; i++)
      if (took[i])
        ilb__rl_give_back(lim->x[i].l, lh[i], now);
    if (x && v.backend >= 0)
      atomic_fetch_sub_explicit(&x->b[v.backend].picks, 1,
                                memory_order_relaxed);
    goto out;
  }
  v.ticket = pr.ticket;
  v.replica_id = pr.replica_id;
  v.host_data = pr.host_data;
  v.pool = p->pool;
  v.model = p->model;
  v.version = p->version;
  v.sticky = hit;
  if (pair != UINT32_MAX) {
    struct pair *e = &pa[pair];
    e->pt = pp.ticket;
    e->dt = pr.ticket;
    e->pp = (uint32_t)pf;
    e->dp = (uint32_t)pi;
    atomic_store_explicit(&e->state, ((uint64_t)pseq << 32) | PAIR_OUT,
                          memory_order_release);
    v.ticket = ((uint64_t)pseq << 32) |
               ((uint64_t)ILB__TAG_PAIR << ILB__TAG_SHIFT) | pair;
    v.prefill_replica_id = pp.replica_id;
    v.prefill_host_data = pp.host_data;
    v.prefill_pool = r->pools[pf].pool;
  }
  /* mirroring: never fails the request */
  if (x && x->mirror_model && x->mirror_pct &&
      (x->mirror_pct >= 100 || rnd(r, st) % 100 < x->mirror_pct)) {
    int mi = find_pool(r, x->mirror_model, x->mmh, x->mirror_version, x->mvh,
                       0);
    ilb_pick_result mr;
    ilb_pick_result_init(&mr);
    if (mi >= 0 && ilb_pick(&mr, r->pools[mi].pool, req) == 0) {
      v.mirror_ticket = mr.ticket;
      v.mirror_replica_id = mr.replica_id;
      v.mirror_host_data = mr.host_data;
      v.mirror_pool = r->pools[mi].pool;
      atomic_fetch_add_explicit(&r->mirrored, 1, memory_order_relaxed);
    }
  }
out:
  reader_leave(r, st, ep);
early:
  set_out(res, &v);
  return rc;
}

/* ---- completion ---------------------------------------------------------- */

static int outcome_ok(const ilb_outcome *o) {
  if (!o)
    return 0;
  /* exactly as ilb_complete checks it: both halves must accept it */
  int rc = ilb__check_struct_in(o, o->struct_size, sizeof(*o), sizeof(*o));
  if (rc)
    return rc;
  if (o->status < ILB_OUTCOME_OK || o->status > ILB_OUTCOME_REFUSED ||
      (o->http_status != 0 &&
       (o->http_status < 100 || o->http_status > 599)))
    return ILB_EINVAL;
  return 0;
}

static int pair_complete(ilb_router *r, uint64_t ticket,
                         const ilb_outcome *po, const ilb_outcome *dox) {
  struct pair *pa = atomic_load_explicit(&r->pairs, memory_order_acquire);
  uint32_t mask = atomic_load_explicit(&r->pairs_mask, memory_order_relaxed);
  uint32_t i = (uint32_t)ticket & 0x1ffffffu, seq = (uint32_t)(ticket >> 32);
  if (!pa || i > mask || seq == 0)
    return ILB_ESTALE;
  int rc = outcome_ok(po);
  if (rc || (rc = outcome_ok(dox)))
    return rc;
  struct pair *e = &pa[i];
  uint64_t s = ((uint64_t)seq << 32) | PAIR_OUT;
  /* one completer wins the entry */
  if (!atomic_compare_exchange_strong(&e->state, &s,
                                      ((uint64_t)seq << 32) | PAIR_DONE))
    return ILB_ESTALE;
  int a = ilb_complete(r->pools[e->pp].pool, e->pt, po);
  int b = ilb_complete(r->pools[e->dp].pool, e->dt, dox);
  atomic_store_explicit(&e->state, ((uint64_t)seq << 32) | PAIR_FREE,
                        memory_order_release);
  return a == ILB_EREMOVED || b == ILB_EREMOVED ? ILB_EREMOVED : (a ? a : b);
}

int ilb_router_complete(ilb_router *r, uint64_t ticket,
                        const ilb_outcome *outcome) {
  if (!r)
    return ILB_EINVAL;
  uint32_t tag = ILB__TAG_OF(ticket);
  if (tag == ILB__TAG_PAIR)
    return pair_complete(r, ticket, outcome, outcome);
  uint32_t n = atomic_load_explicit(&r->n_pools, memory_order_acquire);
  if (tag == 0 || tag > n)
    return ILB_ESTALE;
  return ilb_complete(r->pools[tag - 1].pool, ticket, outcome);
}

int ilb_router_complete_pair(ilb_router *r, uint64_t ticket,
                             const ilb_outcome *prefill_outcome,
                             const ilb_outcome *decode_outcome) {
  if (!r)
    return ILB_EINVAL;
  if (ILB__TAG_OF(ticket) != ILB__TAG_PAIR)
    return ILB_EINVAL;
  return pair_complete(r, ticket, prefill_outcome, decode_outcome);
}

/* ---- pins ---------------------------------------------------------------- */

int ilb_router_pin(ilb_router *r, const void *key, size_t key_len,
                   const char *model, const char *version,
                   const char *replica_id, uint64_t ttl_ms) {
  if (!r || !key || !key_len || !model)
    return ILB_EINVAL;
  int64_t ttl_max = 0;
  ilb_option_bounds(NULL, &ttl_max, NULL, ILB_OPT_ROUTER_STICKY_TTL_MS);
  if (ttl_ms > (uint64_t)ttl_max)
    return ILB_ERANGE;
  /* The pool's mutex is never taken while holding the router's (a
   * router writer called from a pool's callback holds them the other way
   * round): find the replica first, then store under the router's. */
  if (!version)
    version = "";
  int i = find_pool(r, model, hstr(model), version, hstr(version), 0);
  if (i < 0)
    return ILB_ENOMODEL;
  ilb_request q;
  ilb_request_init(&q);
  q.key = key;
  q.key_len = key_len;
  uint64_t h = session_hash(&q, (uint32_t)i), val = 0;
  if (replica_id) {
    struct ilb__replica *rep;
    ilb_pool *pool = r->pools[i].pool;
    int rc = ilb__enter_find(pool, replica_id, &rep);
    if (rc)
      return rc;
    val = ((uint64_t)atomic_load(&ilb__slot_at(pool, rep->slot)->gen) << 32) |
          ((uint64_t)rep->slot + 1);
    ilb__writer_leave(pool, 0);
  }
  pthread_mutex_lock(&r->mu);
  int rc = 0;
  struct ilb__sticky *t = atomic_load(&r->sticky);
  if (!t)
    rc = ILB_EINVAL;
  else if (!replica_id)
    ilb__sticky_del(t, h);
  else
    ilb__sticky_put(t, h, val,
                    router_now(r) +
                        (ttl_ms ? ttl_ms
                                : (uint64_t)ROPT(r, ILB_OPT_ROUTER_STICKY_TTL_MS)) *
                            UINT64_C(1000000),
                    1, 1);
  pthread_mutex_unlock(&r->mu);
  return rc;
}

/* ---- stats --------------------------------------------------------------- */

int ilb__router_visit(ilb_router *r, const struct ilb__rvisit *v) {
  if (!r || !v)
    return ILB_EINVAL;
  pthread_mutex_lock(&r->mu);
  int rc = 0;
  uint32_t n = atomic_load(&r->n_pools);
  for (uint32_t i = 0; !rc && v->pool && i < n; i++)
    rc = v->pool(v->ctx, r->pools[i].pool, r->pools[i].model,
                 r->pools[i].version, atomic_load(&r->pools[i].role),
                 atomic_load(&r->pools[i].active));
  struct rtable *t = atomic_load(&r->table);
  for (uint32_t i = 0; !rc && v->route && t && i < t->n; i++)
    for (uint32_t k = 0; !rc && k < t->r[i]->n_backends; k++) {
      const struct rbackend *b = &t->r[i]->b[k];
      rc = v->route(v->ctx, t->r[i]->name, b->model ? b->model : "",
                    b->version, atomic_load(&b->picks));
    }
  struct rlimits *l = atomic_load(&r->limits);
  for (uint32_t i = 0; !rc && v->limit && l && i < l->n; i++)
    rc = v->limit(v->ctx, l->x[i].name,
                  ilb__rl_limited(l->x[i].l), ilb__rl_evicted(l->x[i].l));
  if (!rc && v->counter && !(rc = v->counter(v->ctx, "no_model",
                                             atomic_load(&r->no_model))) &&
      !(rc = v->counter(v->ctx, "sticky_hits", atomic_load(&r->sticky_hits))) &&
      !(rc = v->counter(v->ctx, "sticky_moves",
                        atomic_load(&r->sticky_moves))))
    rc = v->counter(v->ctx, "mirrored", atomic_load(&r->mirrored));
  pthread_mutex_unlock(&r->mu);
  return rc;
}
