/*
 * Out-of-memory tests. The pool gets a host allocator (ilb_host.alloc/free)
 * that counts live allocations and fails exactly the k-th allocation after
 * it is armed. Every scenario is run for k = 1, 2, 3, ... until it runs with
 * no failure injected. At every k:
 *   - the call that met the failure returns ILB_ENOMEM, every other call
 *     succeeds;
 *   - nothing observable changes on failure (count, weights, options,
 *     in-flight, events), picks keep working, and a retry succeeds;
 *   - ilb_pick / ilb_complete never call the allocator;
 *   - after ilb_pool_free no allocation is live and every free matched an
 *     allocation of ours.
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

#define MAX_SLOTS 96
#define MAX_HELD 160
#define K_LIMIT 100000 /* no scenario makes this many allocations */

/* ------------------------------------------------------------------------ */
/* The failing allocator                                                     */
/* ------------------------------------------------------------------------ */

typedef struct oom {
  long live;      /* allocations not yet freed */
  long calls;     /* every allocation attempt, armed or not */
  long armed_at;  /* value of calls when armed; -1 when disarmed */
  long fail_at;   /* the fail_at-th attempt after arming fails */
  int persistent; /* and, if set, every later one until disarmed */
  long injected;  /* failures injected so far (0 or 1) */
  long bad_frees; /* frees of pointers that are not live allocations */
} oom;

#define MAGIC_LIVE UINT64_C(0x11bA110cA7ED0001)
#define MAGIC_DEAD UINT64_C(0x11bDEADF4EED0002)

typedef struct hdr {
  uint64_t magic;
  size_t size;
} hdr;
/* The header keeps the user pointer aligned like malloc's. */
#define HDR_SIZE                                                             \
  ((sizeof(hdr) + _Alignof(max_align_t) - 1) / _Alignof(max_align_t) *      \
   _Alignof(max_align_t))

/* ------------------------------------------------------------------------ */
/* Context: the pool, the allocator and our model of the pool                */
/* ------------------------------------------------------------------------ */

typedef struct ctx {
  oom a;
  ilb_host host;
  ilb_pool *pool;
  int32_t param; /* the scenario's policy */
  long events;   /* events delivered */
  long events_expected;
  /* One slot per replica incarnation (a re-added id gets a new slot). */
  size_t n;
  char id[MAX_SLOTS][16];
  uint32_t weight[MAX_SLOTS];
  int present[MAX_SLOTS];     /* in the registry */
  int published[MAX_SLOTS];   /* in the snapshot picks see */
  int64_t in_flight[MAX_SLOTS];
  /* Tickets we hold. */
  uint64_t ticket[MAX_HELD];
  size_t ticket_slot[MAX_HELD];
  size_t n_held;
  /* Options and batch depth. */
  int64_t opt_policy, opt_choices, opt_over, opt_mif, opt_vnodes, opt_maglev,
      opt_pfx_table;
  int batch_depth;
} ctx;

static void *oom_alloc(size_t size, void *user_data) {
  ctx *c = user_data;
  c->a.calls++;
  long nth = c->a.calls - c->a.armed_at;
  if (c->a.armed_at >= 0 &&
      (nth == c->a.fail_at || (c->a.persistent && nth > c->a.fail_at))) {
    c->a.injected++;
    return NULL;
  }
  unsigned char *p = malloc(HDR_SIZE + (size ? size : 1));
  if (p == NULL)
    return NULL;
  hdr h = {MAGIC_LIVE, size};
  memcpy(p, &h, sizeof(h));
  memset(p + HDR_SIZE, 0xA5, size); /* the library must not expect zeros */
  c->a.live++;
  return p + HDR_SIZE;
}

static void oom_free(void *ptr, void *user_data) {
  ctx *c = user_data;
  if (ptr == NULL)
    return;
  unsigned char *p = (unsigned char *)ptr - HDR_SIZE;
  hdr h;
  memcpy(&h, p, sizeof(h));
  if (h.magic != MAGIC_LIVE) {
    c->a.bad_frees++; /* double free or foreign pointer: leak it */
    return;
  }
  h.magic = MAGIC_DEAD;
  memcpy(p, &h, sizeof(h));
  memset(p + HDR_SIZE, 0x5A, h.size);
  c->a.live--;
  free(p);
}

static void on_event(const ilb_event *ev, void *user_data) {
  ctx *c = user_data;
  (void)ev;
  c->events++;
}

static void arm(ctx *c) { c->a.armed_at = c->a.calls; }

/* Memory is available again (ends the persistent mode). */
static void recover(ctx *c) { c->a.armed_at = -1; }

/* How often each writer call met an injected failure, over all runs: shows
 * which ENOMEM paths a test exercised. */
static long failures_commit;

static int injected_during(const ctx *c, long before) {
  return c->a.injected != before;
}

/* Verdict on one writer call: returns 1 when the injected failure hit it
 * (then it must have returned ILB_ENOMEM), 0 when it succeeded. */
static int verdict(ctx *c, long injected_before, int rc, const char *call,
                   int line) {
  if (injected_during(c, injected_before)) {
    if (rc != ILB_ENOMEM)
      fail_msg("line %d: %s returned %d (%s) after allocation %ld failed; "
               "expected ILB_ENOMEM",
               line, call, rc, ilb_err_name(rc), c->a.fail_at);
    return 1;
  }
  if (rc != 0)
    fail_msg("line %d: %s returned %d (%s) with no allocation failure", line,
             call, rc, ilb_err_name(rc));
  return 0;
}

#define OOM_TRY(c, failed, call)                                             \
  do {                                                                       \
    long inj_ = (c)->a.injected;                                             \
    int rc_ = (call);                                                        \
    (failed) = verdict((c), inj_, rc_, #call, __LINE__);                     \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Consistency checks                                                        */
/* ------------------------------------------------------------------------ */

static size_t model_count(const ctx *c) {
  size_t k = 0;
  for (size_t s = 0; s < c->n; s++)
    k += c->present[s] != 0;
  return k;
}

static int name_present(const ctx *c, const char *name) {
  for (size_t s = 0; s < c->n; s++)
    if (c->present[s] && strcmp(c->id[s], name) == 0)
      return 1;
  return 0;
}

/* Returns the slot a successful pick names, failing unless it is one the
 * picks may see. */
static size_t slot_of(const ctx *c, const ilb_pick_result *res) {
  uintptr_t hd = (uintptr_t)res->host_data;
  if (res->ticket == 0 || hd == 0 || hd > c->n)
    fail_msg("pick returned ticket %llu host_data %p",
             (unsigned long long)res->ticket, res->host_data);
  size_t s = hd - 1;
  if (res->replica_id == NULL || strcmp(res->replica_id, c->id[s]) != 0)
    fail_msg("pick returned id %s for host_data of %s",
             res->replica_id ? res->replica_id : "(null)", c->id[s]);
  if (!c->published[s])
    fail_msg("pick returned %s, which picks must not see (batch depth %d)",
             c->id[s], c->batch_depth);
  return s;
}

/* One pick and its completion: it works or says ILB_ENOREPLICA for an
 * empty snapshot, and it never calls the allocator. */
static void check_pick(ctx *c) {
  long calls = c->a.calls;
  int any = 0;
  for (size_t s = 0; s < c->n; s++)
    any |= c->published[s];
  ilb_pick_result res;
  CHECK_RC(0, ilb_pick_result_init(&res));
  int rc = ilb_pick(&res, c->pool, NULL);
  if (!any) {
    if (rc != ILB_ENOREPLICA || res.ticket != 0)
      fail_msg("pick on an empty pool: %s, ticket %llu", ilb_err_name(rc),
               (unsigned long long)res.ticket);
  } else {
    if (rc != 0)
      fail_msg("pick failed: %d (%s)", rc, ilb_err_name(rc));
    size_t s = slot_of(c, &res);
    rc = ilb_complete(c->pool, res.ticket, NULL);
    /* Published but removed inside an open batch: either answer is fine. */
    if (!(rc == 0 || (rc == ILB_EREMOVED && !c->present[s])))
      fail_msg("complete of %s: %d (%s)", c->id[s], rc, ilb_err_name(rc));
  }
  if (c->a.calls != calls)
    fail_msg("ilb_pick/ilb_complete called the allocator %ld times",
             c->a.calls - calls);
}

static void check_option(ctx *c, int32_t opt, int64_t want) {
  int64_t v = -12345;
  CHECK_RC(0, ilb_pool_get_option(&v, c->pool, opt));
  if (v != want)
    fail_msg("option %d is %lld, expected %lld", opt, (long long)v,
             (long long)want);
}

/* The pool agrees with the model: count, every replica's weight, state and
 * in-flight, absent ids absent, options, events; and a pick works. */
static void check_consistent(ctx *c) {
  size_t count = 9999;
  CHECK_RC(0, ilb_pool_count(&count, c->pool));
  if (count != model_count(c))
    fail_msg("ilb_pool_count = %zu, expected %zu", count, model_count(c));
  for (size_t s = 0; s < c->n; s++) {
    ilb_replica_info info;
    memset(&info, 0, sizeof(info));
    info.struct_size = sizeof(info);
    int rc = ilb_replica_get(&info, c->pool, c->id[s]);
    if (c->present[s]) {
      if (rc != 0)
        fail_msg("get %s: %s", c->id[s], ilb_err_name(rc));
      if (info.weight != c->weight[s] || info.state != ILB_REPLICA_ACTIVE ||
          info.in_flight != c->in_flight[s] ||
          info.host_data != (void *)(uintptr_t)(s + 1))
        fail_msg("get %s: weight %u state %d in_flight %lld; expected "
                 "weight %u, ACTIVE, in_flight %lld",
                 c->id[s], info.weight, info.state, (long long)info.in_flight,
                 c->weight[s], (long long)c->in_flight[s]);
    } else if (!name_present(c, c->id[s]) && rc != ILB_ENOENT) {
      fail_msg("get of removed %s: %d (%s), expected ENOENT", c->id[s], rc,
               ilb_err_name(rc));
    }
  }
  check_option(c, ILB_OPT_POLICY, c->opt_policy);
  check_option(c, ILB_OPT_P2C_CHOICES, c->opt_choices);
  check_option(c, ILB_OPT_ALLOW_OVER_CAPACITY, c->opt_over);
  check_option(c, ILB_OPT_MAX_IN_FLIGHT, c->opt_mif);
  check_option(c, ILB_OPT_RING_VNODES, c->opt_vnodes);
  check_option(c, ILB_OPT_MAGLEV_TABLE_SIZE, c->opt_maglev);
  check_option(c, ILB_OPT_PREFIX_TABLE_BLOCKS, c->opt_pfx_table);
  if (c->events != c->events_expected)
    fail_msg("%ld events delivered, expected %ld", c->events,
             c->events_expected);
  check_pick(c);
}

/* ------------------------------------------------------------------------ */
/* Writer operations: try, on ENOMEM check nothing changed and retry         */
/* ------------------------------------------------------------------------ */

static void publish(ctx *c) {
  if (c->batch_depth == 0)
    memcpy(c->published, c->present, sizeof(c->present));
}

static size_t op_add(ctx *c, const char *name, uint32_t weight,
                     int with_labels) {
  assert_true(c->n < MAX_SLOTS);
  size_t s = c->n;
  if (name)
    snprintf(c->id[s], sizeof(c->id[s]), "%s", name);
  else
    snprintf(c->id[s], sizeof(c->id[s]), "r%02zu", s);
  ilb_replica_spec spec;
  CHECK_RC(0, ilb_replica_spec_init(&spec));
  const ilb_label labels[2] = {{"gpu", "h100"}, {"model", "llama-3-70b"}};
  spec.id = c->id[s];
  spec.weight = weight;
  spec.host_data = (void *)(uintptr_t)(s + 1);
  if (with_labels) {
    spec.zone = "eu-west-1a";
    spec.labels = labels;
    spec.n_labels = 2;
  }
  int failed;
  OOM_TRY(c, failed, ilb_replica_add(c->pool, &spec));
  if (failed) {
    check_consistent(c); /* count unchanged, id absent */
    recover(c);
    OOM_TRY(c, failed, ilb_replica_add(c->pool, &spec));
    assert_false(failed);
  }
  c->n++;
  c->weight[s] = weight;
  c->present[s] = 1;
  c->events_expected++;
  publish(c);
  check_consistent(c);
  return s;
}

static void op_remove(ctx *c, size_t s) {
  assert_true(c->present[s]);
  int failed;
  OOM_TRY(c, failed, ilb_replica_remove(c->pool, c->id[s]));
  if (failed) {
    check_consistent(c); /* still there, same count */
    recover(c);
    OOM_TRY(c, failed, ilb_replica_remove(c->pool, c->id[s]));
    assert_false(failed);
  }
  c->present[s] = 0;
  c->events_expected++;
  publish(c);
  check_consistent(c);
}

static void op_set_weight(ctx *c, size_t s, uint32_t w) {
  assert_true(c->present[s]);
  int failed;
  OOM_TRY(c, failed, ilb_replica_set_weight(c->pool, c->id[s], w));
  if (failed) {
    check_consistent(c); /* get shows the old weight */
    recover(c);
    OOM_TRY(c, failed, ilb_replica_set_weight(c->pool, c->id[s], w));
    assert_false(failed);
  }
  if (c->weight[s] != w)
    c->events_expected++;
  c->weight[s] = w;
  check_consistent(c);
}

static int64_t *opt_slot(ctx *c, int32_t opt) {
  switch (opt) {
  case ILB_OPT_POLICY:
    return &c->opt_policy;
  case ILB_OPT_P2C_CHOICES:
    return &c->opt_choices;
  case ILB_OPT_ALLOW_OVER_CAPACITY:
    return &c->opt_over;
  case ILB_OPT_MAX_IN_FLIGHT:
    return &c->opt_mif;
  case ILB_OPT_RING_VNODES:
    return &c->opt_vnodes;
  case ILB_OPT_MAGLEV_TABLE_SIZE:
    return &c->opt_maglev;
  case ILB_OPT_PREFIX_TABLE_BLOCKS:
    return &c->opt_pfx_table;
  default:
    fail();
  }
  return NULL;
}

static void op_set_option(ctx *c, int32_t opt, int64_t v) {
  int failed;
  OOM_TRY(c, failed, ilb_pool_set_option(c->pool, opt, v));
  if (failed) {
    check_consistent(c); /* old value, picks work */
    recover(c);
    OOM_TRY(c, failed, ilb_pool_set_option(c->pool, opt, v));
    assert_false(failed);
  }
  *opt_slot(c, opt) = v;
  check_consistent(c);
}

static void op_batch_begin(ctx *c) {
  int failed;
  OOM_TRY(c, failed, ilb_pool_batch_begin(c->pool));
  if (failed) {
    check_consistent(c);
    recover(c);
    OOM_TRY(c, failed, ilb_pool_batch_begin(c->pool));
    assert_false(failed);
  }
  c->batch_depth++;
  check_consistent(c);
}

/* A failed commit leaves the batch open (picks still see the snapshot from
 * before the batch); retrying the commit succeeds. */
static void op_batch_commit(ctx *c) {
  int failed;
  OOM_TRY(c, failed, ilb_pool_batch_commit(c->pool));
  if (failed) {
    failures_commit++;
    check_consistent(c); /* still open: picks see the old snapshot */
    recover(c);
    OOM_TRY(c, failed, ilb_pool_batch_commit(c->pool));
    assert_false(failed);
  }
  c->batch_depth--;
  publish(c);
  check_consistent(c);
}

/* Pick without completing; the ticket is remembered. */
static size_t hold(ctx *c) {
  assert_true(c->n_held < MAX_HELD);
  long calls = c->a.calls;
  ilb_pick_result res;
  CHECK_RC(0, ilb_pick_result_init(&res));
  CHECK_RC(0, ilb_pick(&res, c->pool, NULL));
  size_t s = slot_of(c, &res);
  assert_true(c->a.calls == calls);
  c->in_flight[s]++;
  c->ticket[c->n_held] = res.ticket;
  c->ticket_slot[c->n_held++] = s;
  return s;
}

/* Complete every held ticket: ILB_EREMOVED for replicas removed since. */
static void release_all(ctx *c) {
  long calls = c->a.calls;
  for (size_t i = 0; i < c->n_held; i++) {
    size_t s = c->ticket_slot[i];
    int rc = ilb_complete(c->pool, c->ticket[i], NULL);
    int want = c->present[s] ? 0 : ILB_EREMOVED;
    if (rc != want)
      fail_msg("complete of a ticket of %s: %s, expected %s", c->id[s],
               ilb_err_name(rc), ilb_err_name(want));
    CHECK_RC(ILB_ESTALE, ilb_complete(c->pool, c->ticket[i], NULL));
    if (c->present[s])
      c->in_flight[s]--;
  }
  c->n_held = 0;
  assert_true(c->a.calls == calls);
  check_consistent(c);
}

/* ------------------------------------------------------------------------ */
/* Setup and the k loop                                                      */
/* ------------------------------------------------------------------------ */

static void host_for(ctx *c) {
  CHECK_RC(0, ilb_host_init(&c->host));
  c->host.alloc = oom_alloc;
  c->host.free = oom_free;
  c->host.on_event = on_event;
  c->host.user_data = c;
  c->host.seed = 7;
  c->a.armed_at = -1;
  c->opt_policy = ILB_POLICY_P2C;
  c->opt_choices = 2;
  c->opt_over = 0;
  c->opt_mif = 65536;
  c->opt_vnodes = 160;
  c->opt_maglev = 65537;
  c->opt_pfx_table = 262144;
}

/* ilb_pool_new under injection; returns 0 if it failed (nothing to do). */
static int try_pool_new(ctx *c) {
  int failed;
  OOM_TRY(c, failed, ilb_pool_new(&c->pool, &c->host));
  if (failed) {
    if (c->a.live != 0)
      fail_msg("failed ilb_pool_new leaked %ld allocations", c->a.live);
    c->pool = NULL;
    return 0;
  }
  assert_non_null(c->pool);
  check_consistent(c);
  return 1;
}

/* Small tables for the hashing policies: each scenario runs once per
 * allocation it makes, and every write rebuilds them. */
#define SMALL_VNODES 2
#define SMALL_MAGLEV 257 /* a prime above every scenario's replica count */
#define SMALL_PFX_TABLE 1024 /* the prefix index's least: 80 KiB, not 20 MiB */

/* Pool with n replicas and a small ticket table and hashing tables (writes
 * stay cheap), made while the injector is disarmed. */
static void setup(ctx *c, size_t n, int32_t policy) {
  assert_true(try_pool_new(c));
  op_set_option(c, ILB_OPT_MAX_IN_FLIGHT, 64);
  op_set_option(c, ILB_OPT_RING_VNODES, SMALL_VNODES);
  op_set_option(c, ILB_OPT_MAGLEV_TABLE_SIZE, SMALL_MAGLEV);
  op_set_option(c, ILB_OPT_PREFIX_TABLE_BLOCKS, SMALL_PFX_TABLE);
  op_set_option(c, ILB_OPT_POLICY, policy);
  for (size_t i = 0; i < n; i++)
    op_add(c, NULL, (uint32_t)(1 + (i * 5) % 7), (int)(i & 1));
}

typedef void (*scenario_fn)(ctx *c);

static long run_mode(const char *name, scenario_fn fn, int32_t param,
                     int persistent) {
  for (long k = 1; k < K_LIMIT; k++) {
    ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    host_for(c);
    c->param = param;
    c->a.fail_at = k;
    c->a.persistent = persistent;
    fn(c);
    ilb_pool_free(c->pool);
    c->pool = NULL;
    if (c->a.live != 0)
      fail_msg("%s (param %d), failing allocation %ld: %ld allocations live "
               "after ilb_pool_free",
               name, param, k, c->a.live);
    if (c->a.bad_frees != 0)
      fail_msg("%s, failing allocation %ld: %ld frees of unknown pointers",
               name, k, c->a.bad_frees);
    long injected = c->a.injected;
    long made = c->a.armed_at >= 0 ? c->a.calls - c->a.armed_at : 0;
    free(c);
    if (!injected) {
      if (!persistent)
        printf("[ %-10s ] policy %-22s %ld allocations, each failed\n", name,
               param ? ilb_policy_name(param) : "-", made);
      return made;
    }
  }
  fail_msg("%s: still failing at allocation %d", name, K_LIMIT);
  return 0;
}

/* Run a scenario failing the k-th allocation, k = 1, 2, ..., until it runs
 * clean: once failing only the k-th, once failing the k-th and all later
 * ones until the failed call was checked (so the library's clean-up paths
 * get no memory either). Returns the allocations of a clean run. */
static long run_scenario(const char *name, scenario_fn fn, int32_t param) {
  long made = run_mode(name, fn, param, 0);
  long made2 = run_mode(name, fn, param, 1);
  assert_true(made == made2); /* the same deterministic run */
  return made;
}

/* ------------------------------------------------------------------------ */
/* Scenarios                                                                 */
/* ------------------------------------------------------------------------ */

static void sc_pool_new(ctx *c) {
  arm(c);
  if (!try_pool_new(c))
    return;
  op_add(c, NULL, 3, 1);
  check_pick(c);
}

static void sc_add(ctx *c) {
  setup(c, 2, c->param);
  hold(c);
  arm(c);
  for (uint32_t i = 0; i < 30; i++)
    op_add(c, NULL, 1 + (i * 37) % 100, (int)(i % 3 == 0));
  hold(c);
  release_all(c);
}

static void sc_remove(ctx *c) {
  setup(c, 24, c->param);
  for (int i = 0; i < 8; i++)
    hold(c);
  arm(c);
  for (size_t i = 0; i < 24; i++) {
    op_remove(c, (i * 7) % 24);
    if (i == 12)
      release_all(c); /* some EREMOVED, some completed normally */
  }
  check_pick(c); /* empty: ILB_ENOREPLICA */
  release_all(c);
}

static void sc_set_weight(ctx *c) {
  setup(c, 8, c->param);
  hold(c);
  hold(c);
  arm(c);
  static const uint32_t w[16] = {5,  1, 1, 100, ILB_WEIGHT_MAX, 2, 3, 3,
                                 17, 9, 1, 1000, 64,             6, 7, 1};
  for (size_t i = 0; i < 16; i++) {
    /* ring gives a replica vnodes * weight points (up to 2^22): at
     * ILB_WEIGHT_MAX every later write of every run would rebuild millions
     * of them, so ring gets the largest weight the header advises for it
     * (its allocation paths are the same at any size). */
    uint32_t wi = w[i];
    if (c->param == ILB_POLICY_RING && wi > 100)
      wi = 100;
    op_set_weight(c, i % 8, wi); /* some equal to the old weight */
  }
  release_all(c);
}

static void sc_set_option(ctx *c) {
  setup(c, 8, ILB_POLICY_P2C);
  arm(c);
  /* Every ordered pair of policies, so every transition is tried: one walk
   * i, j, i for every j > i (both directions of each pair), one switch
   * joining consecutive i -- n * n switches in all, not 2 * n * (n - 1)
   * (the scenario runs once per allocation it makes). */
  for (size_t i = 0; i < N_POLICIES; i++) {
    op_set_option(c, ILB_OPT_POLICY, all_policies[i]);
    for (size_t j = i + 1; j < N_POLICIES; j++) {
      op_set_option(c, ILB_OPT_POLICY, all_policies[j]);
      op_set_option(c, ILB_OPT_POLICY, all_policies[i]);
    }
  }
  op_set_option(c, ILB_OPT_P2C_CHOICES, 3);
  op_set_option(c, ILB_OPT_P2C_CHOICES, 16);
  op_set_option(c, ILB_OPT_ALLOW_OVER_CAPACITY, 1);
  op_set_option(c, ILB_OPT_ALLOW_OVER_CAPACITY, 0);
  op_set_option(c, ILB_OPT_MAX_IN_FLIGHT, 128);
  op_set_option(c, ILB_OPT_MAX_IN_FLIGHT, 65536);
  op_set_option(c, ILB_OPT_MAX_IN_FLIGHT, 64);
  /* The resized table holds exactly 64 tickets, plus this thread's
   * ILB_THREAD_TICKETS private entries. */
  for (int i = 0; i < 64 + ILB_THREAD_TICKETS; i++)
    hold(c);
  ilb_pick_result res;
  CHECK_RC(0, ilb_pick_result_init(&res));
  CHECK_RC(ILB_ETICKETS, ilb_pick(&res, c->pool, NULL));
  assert_true(res.ticket == 0);
  release_all(c);
}

static void sc_batch(ctx *c) {
  setup(c, 4, c->param);
  arm(c);
  op_batch_begin(c);
  size_t fresh[4];
  for (int i = 0; i < 4; i++)
    fresh[i] = op_add(c, NULL, 2, i & 1); /* not visible to picks yet */
  op_set_weight(c, 1, 9);
  op_remove(c, 3);
  op_set_option(c, ILB_OPT_P2C_CHOICES, 3);
  op_batch_commit(c);
  if (c->param == ILB_POLICY_ROUND_ROBIN) {
    /* round_robin cycles: 7 picks visit all 7 replicas once. */
    int seen[MAX_SLOTS] = {0};
    for (int i = 0; i < 7; i++) {
      ilb_pick_result res;
      CHECK_RC(0, ilb_pick_result_init(&res));
      CHECK_RC(0, ilb_pick(&res, c->pool, NULL));
      size_t s = slot_of(c, &res);
      assert_true(c->present[s]);
      seen[s]++;
      CHECK_RC(0, ilb_complete(c->pool, res.ticket, NULL));
    }
    for (int i = 0; i < 4; i++)
      assert_true(seen[fresh[i]] == 1);
  }
  /* Nested: only the outermost commit publishes. */
  op_batch_begin(c);
  op_batch_begin(c);
  op_add(c, NULL, 50, 0);
  op_remove(c, fresh[0]);
  op_batch_commit(c);
  op_batch_commit(c);
  long calls = c->a.calls, inj = c->a.injected;
  CHECK_RC(ILB_EINVAL, ilb_pool_batch_commit(c->pool)); /* none open */
  assert_true(c->a.calls == calls && c->a.injected == inj);
  check_consistent(c);
}

/* Everything mixed, armed from ilb_pool_new on, with tickets in flight
 * across writes, a removed id re-added and an empty pool. */
static void sc_mix(ctx *c) {
  arm(c);
  if (!try_pool_new(c))
    return;
  op_set_option(c, ILB_OPT_MAX_IN_FLIGHT, 64);
  op_set_option(c, ILB_OPT_RING_VNODES, SMALL_VNODES);
  op_set_option(c, ILB_OPT_MAGLEV_TABLE_SIZE, SMALL_MAGLEV);
  op_set_option(c, ILB_OPT_PREFIX_TABLE_BLOCKS, SMALL_PFX_TABLE);
  for (uint32_t i = 0; i < 6; i++)
    op_add(c, NULL, i + 1, (int)(i & 1));
  for (int i = 0; i < 6; i++)
    hold(c);
  op_set_option(c, ILB_OPT_POLICY, ILB_POLICY_WEIGHTED_ROUND_ROBIN);
  op_set_weight(c, 0, 10);
  op_set_weight(c, 4, 1);
  op_batch_begin(c);
  op_add(c, NULL, 4, 1);
  op_add(c, NULL, 8, 0);
  size_t victim = c->ticket_slot[0]; /* has a ticket in flight */
  op_remove(c, victim);
  op_set_weight(c, victim == 5 ? 4 : 5, 3);
  op_set_option(c, ILB_OPT_POLICY, ILB_POLICY_WEIGHTED_RANDOM);
  op_batch_commit(c);
  release_all(c);
  size_t gone = MAX_SLOTS;
  for (size_t s = 1, k = 0; s < c->n && k < 2; s++)
    if (c->present[s]) {
      op_remove(c, s);
      gone = s;
      k++;
    }
  assert_true(gone < MAX_SLOTS);
  op_add(c, c->id[gone], 7, 1); /* the same id again */
  for (size_t p = 0; p < N_POLICIES; p++) {
    op_set_option(c, ILB_OPT_POLICY, all_policies[p]);
    hold(c);
    check_pick(c);
  }
  op_set_option(c, ILB_OPT_P2C_CHOICES, 4);
  for (size_t s = 0; s < c->n; s++)
    if (c->present[s])
      op_remove(c, s);
  check_pick(c); /* empty */
  release_all(c);
  op_add(c, "last", 1, 0);
  hold(c);
  release_all(c);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

static void test_oom_pool_new(void **state) {
  (void)state;
  long made = run_scenario("pool_new", sc_pool_new, 0);
  assert_true(made >= 1); /* a pool lives in host memory */
}

static void test_oom_add(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++)
    run_scenario("add", sc_add, all_policies[p]);
}

static void test_oom_remove(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++)
    run_scenario("remove", sc_remove, all_policies[p]);
}

static void test_oom_set_weight(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++)
    run_scenario("set_weight", sc_set_weight, all_policies[p]);
}

static void test_oom_set_option(void **state) {
  (void)state;
  run_scenario("set_option", sc_set_option, 0);
}

static void test_oom_batch(void **state) {
  (void)state;
  failures_commit = 0;
  for (size_t p = 0; p < N_POLICIES; p++)
    run_scenario("batch", sc_batch, all_policies[p]);
  /* The failed-commit-then-retry path really ran. */
  assert_true(failures_commit > 0);
}

static void test_oom_mix(void **state) {
  (void)state;
  run_scenario("mix", sc_mix, 0);
}

/* alloc without free (or the reverse) is rejected, and nothing leaks from
 * the allocator when creation fails that way. */
static void test_oom_allocator_pair_required(void **state) {
  (void)state;
  ctx *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  host_for(c);
  ilb_pool *pool = NULL;
  c->host.free = NULL;
  CHECK_RC(ILB_EINVAL, ilb_pool_new(&pool, &c->host));
  c->host.free = oom_free;
  c->host.alloc = NULL;
  CHECK_RC(ILB_EINVAL, ilb_pool_new(&pool, &c->host));
  assert_true(c->a.calls == 0 && c->a.live == 0);
  free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_oom_allocator_pair_required),
      cmocka_unit_test(test_oom_pool_new),
      cmocka_unit_test(test_oom_add),
      cmocka_unit_test(test_oom_remove),
      cmocka_unit_test(test_oom_set_weight),
      cmocka_unit_test(test_oom_set_option),
      cmocka_unit_test(test_oom_batch),
      cmocka_unit_test(test_oom_mix),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
