/*
 * Model-based test: a long, seeded, random sequence of public API calls on
 * one pool, each checked against an in-test model of what the header
 * promises. Single-threaded, so every expectation is exact.
 *
 * The model keeps every replica the pool may still know about as an object
 * (a replica removed and re-added under the same id is a new object, told
 * apart by a serial number used as host_data), the registry (id -> object),
 * the published set (what picks see: the registry as of the last publish,
 * i.e. the last write outside a batch or the outermost commit), the option
 * values (set and published), and every ticket held.
 *
 * Per pick it derives the allowed result classes: ILB_ENOREPLICA (nothing
 * published), ILB_ESATURATED (every published replica full and
 * ALLOW_OVER_CAPACITY published as 0), ILB_ETICKETS (this thread holds
 * MAX_IN_FLIGHT (rounded up to a power of two) + ILB_THREAD_TICKETS
 * tickets), otherwise success on a published replica, one with room when
 * any has room. Which replica the policy prefers is not predicted.
 *
 * Reproduce a failure with the seed and op count it prints:
 *   INFERLB_MODEL_SEED=0x... INFERLB_MODEL_OPS=... build/tests/test_model
 * SPDX-License-Identifier: MIT
 */
#include "testutil.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define DEFAULT_SEED UINT64_C(0x1b0de15ca1ab1e5)
#define DEFAULT_OPS 200000u
#define SEGMENT_OPS 10000u /* ops between policy switches */
#define N_NAMES 40
#define HELD_MAX 600   /* tickets the model holds at most */
#define DONE_RING 256  /* recently completed tickets, replayed as stale */
#define EV_MAX 8       /* events one writer call may fire (at most one) */
#define MAX_DEPTH 3    /* batch nesting the test opens */
#define N_POLICIES 7
#define TAIL_MAX 4096  /* largest unknown struct tail the header accepts */

/* ------------------------------------------------------------------------ */
/* Model                                                                     */
/* ------------------------------------------------------------------------ */

/* One replica as the pool knows it, from its add until it is out of the
 * registry, out of the published set and has nothing in flight. */
typedef struct obj {
  int used;
  int name;        /* index into names[] */
  uint64_t serial; /* its host_data */
  uint32_t weight, capacity, n_labels;
  int64_t in_flight;
  uint64_t completed, failed;
  int in_reg, in_pub;
  int next_free;
} obj;

typedef struct held {
  uint64_t ticket;
  int obj;
  const char *id; /* as the pick returned it: valid until completed */
} held;

/* An event as seen from inside the callback. */
typedef struct ev_rec {
  size_t struct_size;
  int32_t type, old_state, new_state;
  char id[ILB_ID_MAX + 1];
  void *host_data;
  uint64_t old_value, new_value, timestamp_ns;
  int get_rc;          /* ilb_replica_get from inside the callback */
  uint32_t get_weight;
  size_t count;        /* ilb_pool_count from inside the callback */
  int count_rc;
  int writer_rc;       /* a writer call from inside: ILB_EDEADLK */
} ev_rec;

enum { O_POLICY, O_P2C, O_MIF, O_ALLOW, N_OPT };
static const int32_t opt_id[N_OPT] = {ILB_OPT_POLICY, ILB_OPT_P2C_CHOICES,
                                      ILB_OPT_MAX_IN_FLIGHT,
                                      ILB_OPT_ALLOW_OVER_CAPACITY};

enum {
  OP_PICK,
  OP_COMPLETE,
  OP_ADD,
  OP_ADD_DUP,
  OP_ADD_INVALID,
  OP_REMOVE,
  OP_SET_WEIGHT,
  OP_OPTION,
  OP_BATCH,
  OP_GARBAGE,
  OP_BAD_OUTCOME,
  OP_GET_ONE,
  OP_GET_ALL,
  OP_COUNT,
  N_OPS
};
static const char *const op_names[N_OPS] = {
    "pick",     "complete",   "add",      "add_dup",     "add_invalid",
    "remove",   "set_weight", "option",   "batch",       "garbage_ticket",
    "bad_outcome", "get_one", "get_all", "count"};

typedef struct model {
  ilb_pool *pool;
  uint64_t seed, rng;
  size_t ops, op;
  const char *what; /* current operation, for failure messages */
  uint64_t now;     /* fake clock */
  long live_allocs;
  uint64_t n_allocs;

  obj *objs;
  int n_objs, cap_objs, free_head;
  uint64_t next_serial;
  int reg[N_NAMES]; /* object or -1 */
  size_t n_reg;
  int pub[N_NAMES]; /* published objects */
  size_t n_pub;

  int64_t opt[N_OPT];     /* as set (what ilb_pool_get_option reports) */
  int64_t opt_pub[N_OPT]; /* as published (what picks use) */
  uint32_t mif;           /* ticket table size in effect (power of 2) */
  uint32_t mif_lo, mif_hi; /* bounds while a batch hides which one picks
                              use: see set_mif */
  uint32_t depth;

  held held[HELD_MAX];
  size_t n_held;
  uint64_t done[DONE_RING];
  size_t n_done;

  ev_rec ev[EV_MAX];
  size_t n_ev;

  /* segment parameters */
  unsigned w[N_OPS];
  unsigned cap0_pct; /* share of adds with capacity 0 (unlimited) */

  /* what the run exercised */
  uint64_t st_pick_ok[N_POLICIES + 1], st_noreplica, st_saturated,
      st_tickets, st_over, st_removed, st_stale, st_busy, st_batched_pick,
      st_ops[N_OPS];
} model;

static model M;

static char names[N_NAMES][ILB_ID_MAX + 1];
static const char absent_name[] = "never-added";

/* ------------------------------------------------------------------------ */
/* Failure reporting                                                         */
/* ------------------------------------------------------------------------ */

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void failf(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fail_msg("seed=0x%016" PRIx64 " op=%zu (%s, policy %s, depth %u): %s\n"
           "  reproduce: INFERLB_MODEL_SEED=0x%" PRIx64
           " INFERLB_MODEL_OPS=%zu",
           M.seed, M.op, M.what ? M.what : "-",
           ilb_policy_name((int32_t)M.opt[O_POLICY]), M.depth, buf, M.seed,
           M.op + 1);
}

static void expect(int rc, int want, const char *call) {
  if (rc != want)
    failf("%s = %d (%s), expected %d (%s)", call, rc, ilb_err_name(rc), want,
          ilb_err_name(want));
}

/* Either of two codes: where the header leaves the order of two applicable
 * errors (or a detail) open. */
static void expect2(int rc, int a, int b, const char *call) {
  if (rc != a && rc != b)
    failf("%s = %d (%s), expected %s or %s", call, rc, ilb_err_name(rc),
          ilb_err_name(a), ilb_err_name(b));
}

/* ------------------------------------------------------------------------ */
/* Random numbers (the test's own; the pool is seeded from the same seed)    */
/* ------------------------------------------------------------------------ */

static uint64_t rnd(void) {
  uint64_t z = (M.rng += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint32_t rndn(uint32_t n) { return (uint32_t)(rnd() % n); }
static int chance(unsigned pct) { return rndn(100) < pct; }

/* ------------------------------------------------------------------------ */
/* Host: counting allocator, fake clock, event recorder                      */
/* ------------------------------------------------------------------------ */

static void *t_alloc(size_t size, void *ud) {
  model *m = ud;
  void *p = malloc(size);
  if (p) {
    m->live_allocs++;
    m->n_allocs++;
  }
  return p;
}

static void t_free(void *p, void *ud) {
  model *m = ud;
  if (p)
    m->live_allocs--;
  free(p);
}

static uint64_t t_clock(void *ud) { return ((model *)ud)->now; }

static void t_event(const ilb_event *e, void *ud) {
  model *m = ud;
  if (m->n_ev >= EV_MAX) {
    m->n_ev++; /* counted, reported by check_events */
    return;
  }
  ev_rec *r = &m->ev[m->n_ev++];
  memset(r, 0, sizeof *r);
  r->struct_size = e->struct_size;
  r->type = e->type;
  r->old_state = e->old_state;
  r->new_state = e->new_state;
  if (e->replica_id)
    snprintf(r->id, sizeof r->id, "%s", e->replica_id);
  r->host_data = e->replica_host_data;
  r->old_value = e->old_value;
  r->new_value = e->new_value;
  r->timestamp_ns = e->timestamp_ns;
  /* Readers work from inside a callback ... */
  ilb_replica_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  r->get_rc = ilb_replica_get(&info, m->pool, r->id);
  r->get_weight = info.weight;
  r->count_rc = ilb_pool_count(&r->count, m->pool);
  /* ... a writer on the same pool is refused and changes nothing. */
  switch (m->op % 3) {
  case 0:
    r->writer_rc = ilb_pool_batch_begin(m->pool);
    break;
  case 1:
    r->writer_rc = ilb_replica_remove(m->pool, r->id);
    break;
  default:
    r->writer_rc = ilb_pool_set_option(
        m->pool, ILB_OPT_ALLOW_OVER_CAPACITY, !m->opt[O_ALLOW]);
    break;
  }
}

/* ------------------------------------------------------------------------ */
/* Model bookkeeping                                                         */
/* ------------------------------------------------------------------------ */

static uint32_t round_pow2(int64_t v) {
  uint32_t n = 1;
  while (n < (uint64_t)v)
    n <<= 1;
  return n;
}

static int obj_new(int name) {
  int i;
  if (M.free_head >= 0) {
    i = M.free_head;
    M.free_head = M.objs[i].next_free;
  } else {
    if (M.n_objs == M.cap_objs) {
      M.cap_objs = M.cap_objs ? M.cap_objs * 2 : 64;
      M.objs = realloc(M.objs, sizeof(obj) * (size_t)M.cap_objs);
      assert_non_null(M.objs);
    }
    i = M.n_objs++;
  }
  obj *o = &M.objs[i];
  memset(o, 0, sizeof *o);
  o->used = 1;
  o->name = name;
  o->serial = ++M.next_serial;
  return i;
}

/* Forget an object nothing can reach any more. */
static void obj_maybe_free(int i) {
  obj *o = &M.objs[i];
  if (!o->used || o->in_reg || o->in_pub || o->in_flight)
    return;
  o->used = 0;
  o->next_free = M.free_head;
  M.free_head = i;
}

/* The registry becomes what picks see (a write outside a batch, or the
 * outermost commit). */
static void publish(void) {
  int old[N_NAMES];
  size_t n_old = M.n_pub;
  memcpy(old, M.pub, sizeof(int) * n_old);
  for (size_t k = 0; k < n_old; k++)
    M.objs[old[k]].in_pub = 0;
  M.n_pub = 0;
  for (int n = 0; n < N_NAMES; n++) {
    if (M.reg[n] < 0)
      continue;
    M.objs[M.reg[n]].in_pub = 1;
    M.pub[M.n_pub++] = M.reg[n];
  }
  for (size_t k = 0; k < n_old; k++)
    obj_maybe_free(old[k]);
  memcpy(M.opt_pub, M.opt, sizeof M.opt);
  M.mif_lo = M.mif_hi = M.mif;
}

/* After a successful write: published at once unless a batch is open. */
static void wrote(void) {
  if (M.depth == 0)
    publish();
}

static int random_name(void) { return (int)rndn(N_NAMES); }

static int random_name_where(int present) {
  int start = random_name();
  for (int k = 0; k < N_NAMES; k++) {
    int n = (start + k) % N_NAMES;
    if ((M.reg[n] >= 0) == present)
      return n;
  }
  return -1;
}

/* ------------------------------------------------------------------------ */
/* Sized-struct buffers                                                      */
/* ------------------------------------------------------------------------ */

/* A struct plus room for an unknown tail (input: header allows up to 4096
 * zero bytes; output: any size that covers the first field). */
typedef union sbuf {
  max_align_t align;
  unsigned char b[TAIL_MAX + 512];
} sbuf;

static sbuf g_req, g_res, g_out, g_info, g_spec;

/* How big an input struct to pass and what to put in the tail. */
typedef enum { IN_EXACT, IN_ZERO_TAIL, IN_MAX_TAIL, IN_SMALL, IN_DIRTY_TAIL,
               IN_HUGE_TAIL } in_mode;

/* Lay an input struct of sizeof == ours into buf with struct_size per mode;
 * returns whether the library must accept it. */
static int size_input(sbuf *buf, const void *s, size_t ours, in_mode mode) {
  size_t size = ours;
  memset(buf->b, 0, sizeof buf->b);
  memcpy(buf->b, s, ours);
  int ok = 1;
  switch (mode) {
  case IN_EXACT:
    break;
  case IN_ZERO_TAIL:
    size = ours + 1 + rndn(64);
    break;
  case IN_MAX_TAIL:
    size = ours + TAIL_MAX;
    break;
  case IN_SMALL:
    size = rndn((uint32_t)ours); /* 0 .. ours-1 */
    ok = 0;
    break;
  case IN_DIRTY_TAIL: {
    size_t tail = 1 + rndn(64);
    size = ours + tail;
    buf->b[ours + rndn((uint32_t)tail)] = (unsigned char)(1 + rndn(255));
    ok = 0;
    break;
  }
  case IN_HUGE_TAIL:
    size = ours + TAIL_MAX + 1 + rndn(64);
    ok = 0;
    break;
  }
  memcpy(buf->b, &size, sizeof size); /* struct_size is the first field */
  return ok;
}

static in_mode random_in_mode(void) {
  uint32_t r = rndn(100);
  if (r < 80)
    return IN_EXACT;
  if (r < 88)
    return IN_ZERO_TAIL;
  if (r < 90)
    return IN_MAX_TAIL;
  if (r < 94)
    return IN_SMALL;
  if (r < 98)
    return IN_DIRTY_TAIL;
  return IN_HUGE_TAIL;
}

#define POISON 0xA5

/* An output struct: struct_size drawn from too small / partial / exact /
 * larger with a garbage tail; the rest of the buffer poisoned. Returns the
 * struct_size; *ok says whether the library must accept it. */
static size_t size_output(sbuf *buf, size_t ours, size_t min, int *ok) {
  size_t size;
  uint32_t r = rndn(100);
  if (r < 80)
    size = ours;
  else if (r < 86)
    size = min + rndn((uint32_t)(ours - min)); /* partial */
  else if (r < 94)
    size = ours + 1 + rndn(256); /* newer caller, tail not ours */
  else
    size = rndn((uint32_t)min); /* too small */
  memset(buf->b, POISON, sizeof buf->b);
  memcpy(buf->b, &size, sizeof size);
  *ok = size >= min;
  return size;
}

/* Bytes [from, end of buffer) still hold the poison. */
static void check_poison(const sbuf *buf, size_t from, const char *what) {
  for (size_t i = from; i < sizeof buf->b; i++)
    if (buf->b[i] != POISON)
      failf("%s wrote byte %zu (value 0x%02x) beyond its %zu-byte struct",
            what, i, buf->b[i], from);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                    */
/* ------------------------------------------------------------------------ */

static void begin_call(void) { M.n_ev = 0; }

static void check_no_events(const char *call) {
  if (M.n_ev)
    failf("%s fired %zu event(s) (first type %d for \"%s\"), expected none",
          call, M.n_ev, M.ev[0].type, M.ev[0].id);
}

/* Exactly one event of this kind, for object o. count_after is the pool
 * size once the change is made. */
static void check_event(const char *call, int32_t type, const obj *o,
                        uint64_t old_value, uint64_t new_value,
                        size_t count_after) {
  if (M.n_ev != 1)
    failf("%s fired %zu events, expected one of type %d", call, M.n_ev,
          type);
  const ev_rec *r = &M.ev[0];
  const char *id = names[o->name];
  int32_t want_old = type == ILB_EVENT_REPLICA_ADDED ? 0 : ILB_REPLICA_ACTIVE;
  int32_t want_new =
      type == ILB_EVENT_REPLICA_REMOVED ? ILB_REPLICA_REMOVED
                                        : ILB_REPLICA_ACTIVE;
  if (r->struct_size < sizeof(ilb_event) || r->type != type ||
      r->old_state != want_old || r->new_state != want_new ||
      strcmp(r->id, id) != 0 ||
      r->host_data != (void *)(uintptr_t)o->serial ||
      r->timestamp_ns != M.now)
    failf("%s: event {size %zu, type %d, %d -> %d, \"%s\", host_data %p, "
          "ts %" PRIu64 "}, expected {type %d, %d -> %d, \"%s\", %p, "
          "ts %" PRIu64 "}",
          call, r->struct_size, r->type, r->old_state, r->new_state, r->id,
          r->host_data, r->timestamp_ns, type, want_old, want_new, id,
          (void *)(uintptr_t)o->serial, M.now);
  if (type == ILB_EVENT_REPLICA_WEIGHT &&
      (r->old_value != old_value || r->new_value != new_value))
    failf("%s: weight event %" PRIu64 " -> %" PRIu64 ", expected %" PRIu64
          " -> %" PRIu64,
          call, r->old_value, r->new_value, old_value, new_value);
  /* During REMOVED the replica is already gone (header); during ADDED and
   * WEIGHT it is there with its new weight. */
  if (type == ILB_EVENT_REPLICA_REMOVED) {
    if (r->get_rc != ILB_ENOENT)
      failf("%s: ilb_replica_get inside the REMOVED event = %s, expected "
            "ENOENT",
            call, ilb_err_name(r->get_rc));
  } else if (r->get_rc != 0 || r->get_weight != o->weight) {
    failf("%s: ilb_replica_get inside the event = %s, weight %u, expected "
          "OK, weight %u",
          call, ilb_err_name(r->get_rc), r->get_weight, o->weight);
  }
  if (r->count_rc != 0 || r->count != count_after)
    failf("%s: ilb_pool_count inside the event = %s, %zu, expected %zu",
          call, ilb_err_name(r->count_rc), r->count, count_after);
  if (r->writer_rc != ILB_EDEADLK)
    failf("%s: a writer call inside the event = %d (%s), expected EDEADLK",
          call, r->writer_rc, ilb_err_name(r->writer_rc));
}

/* ------------------------------------------------------------------------ */
/* Replica info                                                              */
/* ------------------------------------------------------------------------ */

#define COVERS(size, field)                                                  \
  (offsetof(ilb_replica_info, field) + sizeof(((ilb_replica_info *)0)->field) \
   <= (size))

/* ilb_replica_get of name n, with a random struct_size, against the model
 * (present: every field it covers; absent: ILB_ENOENT). */
static void check_get(int n, int sized) {
  const size_t ours = sizeof(ilb_replica_info);
  const size_t min = offsetof(ilb_replica_info, host_data) + sizeof(void *);
  int ok = 1;
  size_t size = ours;
  if (sized) {
    size = size_output(&g_info, ours, min, &ok);
  } else {
    memset(g_info.b, POISON, sizeof g_info.b);
    memcpy(g_info.b, &size, sizeof size);
  }
  int rc = ilb_replica_get((ilb_replica_info *)(void *)g_info.b, M.pool,
                           names[n]);
  if (!ok) {
    expect(rc, ILB_ESIZE, "ilb_replica_get(struct_size too small)");
    check_poison(&g_info, sizeof size, "ilb_replica_get failing with ESIZE");
    return;
  }
  if (M.reg[n] < 0) {
    expect(rc, ILB_ENOENT, "ilb_replica_get(absent id)");
    return;
  }
  expect(rc, 0, "ilb_replica_get(present id)");
  size_t written = size < ours ? size : ours;
  ilb_replica_info v;
  memset(&v, 0, sizeof v);
  memcpy(&v, g_info.b, written);
  check_poison(&g_info, written, "ilb_replica_get");
  const obj *o = &M.objs[M.reg[n]];
  if (v.struct_size != written)
    failf("replica %s: info.struct_size %zu, expected %zu (caller %zu)",
          names[n], v.struct_size, written, size);
  if (v.host_data != (void *)(uintptr_t)o->serial)
    failf("replica %s: host_data %p, expected %p", names[n], v.host_data,
          (void *)(uintptr_t)o->serial);
#define FIELD(field, fmt, want)                                              \
  if (COVERS(written, field) && v.field != (want))                           \
    failf("replica %s: " #field " " fmt ", expected " fmt, names[n], v.field, \
          (want));
  FIELD(weight, "%" PRIu32, o->weight)
  FIELD(capacity, "%" PRIu32, o->capacity)
  FIELD(state, "%" PRId32, (int32_t)ILB_REPLICA_ACTIVE)
  FIELD(n_labels, "%" PRIu32, o->n_labels)
  FIELD(in_flight, "%" PRId64, o->in_flight)
  FIELD(completed, "%" PRIu64, o->completed)
  FIELD(failed, "%" PRIu64, o->failed)
#undef FIELD
}

static void check_all(void) {
  for (int n = 0; n < N_NAMES; n++)
    check_get(n, 0);
  size_t c = 12345;
  expect(ilb_pool_count(&c, M.pool), 0, "ilb_pool_count");
  if (c != M.n_reg)
    failf("ilb_pool_count = %zu, expected %zu", c, M.n_reg);
}

/* ------------------------------------------------------------------------ */
/* Replicas                                                                  */
/* ------------------------------------------------------------------------ */

static uint32_t random_weight(void) {
  uint32_t r = rndn(100);
  if (r < 2)
    return ILB_WEIGHT_MAX - rndn(3);
  if (r < 4)
    return 1 + rndn(ILB_WEIGHT_MAX);
  if (r < 10)
    return 1;
  return 1 + rndn(100);
}

static ilb_label g_labels[ILB_LABELS_MAX + 1];
static char g_label_str[ILB_LABELS_MAX + 1][2][16];
static char g_long[ILB_ID_MAX + 2]; /* ILB_ID_MAX + 1 bytes of 'x' */

/* n random labels into g_labels. */
static void make_labels(size_t n) {
  for (size_t i = 0; i < n; i++) {
    snprintf(g_label_str[i][0], 16, "k%zu", i);
    if (chance(10))
      g_label_str[i][1][0] = '\0'; /* empty values are allowed */
    else
      snprintf(g_label_str[i][1], 16, "v%u", rndn(1000));
    g_labels[i].key = g_label_str[i][0];
    g_labels[i].value = g_label_str[i][1];
  }
}

static void random_spec(ilb_replica_spec *sp, int n) {
  expect(ilb_replica_spec_init(sp), 0, "ilb_replica_spec_init");
  sp->id = names[n];
  sp->weight = random_weight();
  sp->capacity = chance(M.cap0_pct) ? 0 : 1 + rndn(4);
  static const char *const zones[] = {"us-east-1a", "eu-west-1b", ""};
  uint32_t z = rndn(4);
  sp->zone = z < 3 ? zones[z] : NULL;
  size_t nl = chance(5) ? 1 + rndn(ILB_LABELS_MAX) : rndn(3);
  make_labels(nl);
  sp->labels = nl ? g_labels : (chance(50) ? NULL : g_labels);
  sp->n_labels = nl;
}

static void op_add(int n) {
  ilb_replica_spec sp;
  random_spec(&sp, n);
  in_mode mode = rndn(100) < 85 ? IN_EXACT
                                : (chance(50) ? IN_ZERO_TAIL : IN_MAX_TAIL);
  size_input(&g_spec, &sp, sizeof sp, mode);
  int dup = M.reg[n] >= 0;
  int o = dup ? -1 : obj_new(n);
  if (o >= 0)
    sp.host_data = (void *)(uintptr_t)M.objs[o].serial;
  memcpy(g_spec.b + offsetof(ilb_replica_spec, host_data), &sp.host_data,
         sizeof sp.host_data);
  begin_call();
  int rc =
      ilb_replica_add(M.pool, (const ilb_replica_spec *)(void *)g_spec.b);
  if (dup) {
    expect(rc, ILB_EEXIST, "ilb_replica_add(duplicate id)");
    check_no_events("ilb_replica_add(duplicate id)");
    return;
  }
  expect(rc, 0, "ilb_replica_add");
  obj *ob = &M.objs[o];
  ob->weight = sp.weight;
  ob->capacity = sp.capacity;
  ob->n_labels = (uint32_t)sp.n_labels;
  ob->in_reg = 1;
  M.reg[n] = o;
  M.n_reg++;
  check_event("ilb_replica_add", ILB_EVENT_REPLICA_ADDED, ob, 0, 0, M.n_reg);
  wrote();
}

/* A spec with exactly one defect, for an id not in the pool. */
static void op_add_invalid(void) {
  ilb_replica_spec sp;
  expect(ilb_replica_spec_init(&sp), 0, "ilb_replica_spec_init");
  sp.id = absent_name;
  sp.weight = 1 + rndn(10);
  sp.capacity = rndn(5);
  make_labels(2);
  sp.labels = g_labels;
  sp.n_labels = 2;
  ilb_label bad[1];
  int want = ILB_EINVAL;
  const char *what = "";
  in_mode mode = IN_EXACT;
  ilb_pool *pool = M.pool;
  int null_spec = 0;
  switch (rndn(15)) {
  case 0:
    sp.id = "", what = "empty id";
    break;
  case 1:
    sp.id = NULL, what = "NULL id";
    break;
  case 2:
    sp.weight = 0, what = "weight 0";
    break;
  case 3:
    sp.weight = chance(50) ? ILB_WEIGHT_MAX + 1 : UINT32_MAX;
    want = ILB_ERANGE, what = "weight > ILB_WEIGHT_MAX";
    break;
  case 4:
    sp.id = g_long, want = ILB_ETOOBIG, what = "id of ILB_ID_MAX + 1 bytes";
    break;
  case 5:
    sp.zone = g_long, want = ILB_ETOOBIG, what = "zone too long";
    break;
  case 6:
    make_labels(ILB_LABELS_MAX + 1);
    sp.n_labels = ILB_LABELS_MAX + 1;
    want = ILB_ETOOBIG, what = "ILB_LABELS_MAX + 1 labels";
    break;
  case 7:
    sp.labels = NULL, what = "NULL labels, n_labels 2";
    break;
  case 8:
    bad[0].key = NULL, bad[0].value = "v";
    sp.labels = bad, sp.n_labels = 1, what = "NULL label key";
    break;
  case 9:
    bad[0].key = "", bad[0].value = "v";
    sp.labels = bad, sp.n_labels = 1, what = "empty label key";
    break;
  case 10:
    bad[0].key = "k", bad[0].value = NULL;
    sp.labels = bad, sp.n_labels = 1, what = "NULL label value";
    break;
  case 11:
    bad[0].key = chance(50) ? g_long : "k";
    bad[0].value = bad[0].key == g_long ? "v" : g_long;
    sp.labels = bad, sp.n_labels = 1, want = ILB_ETOOBIG;
    what = "label too long";
    break;
  case 12: {
    static const in_mode m3[3] = {IN_SMALL, IN_DIRTY_TAIL, IN_HUGE_TAIL};
    mode = m3[rndn(3)];
    want = ILB_ESIZE, what = "bad struct_size or tail";
    break;
  }
  case 13:
    null_spec = 1, what = "NULL spec";
    break;
  default:
    pool = NULL, what = "NULL pool";
    break;
  }
  size_input(&g_spec, &sp, sizeof sp, mode);
  begin_call();
  int rc = ilb_replica_add(
      pool, null_spec ? NULL : (const ilb_replica_spec *)(void *)g_spec.b);
  char call[128];
  snprintf(call, sizeof call, "ilb_replica_add(%s)", what);
  expect(rc, want, call);
  check_no_events(call);
  ilb_replica_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  expect(ilb_replica_get(&info, M.pool, absent_name), ILB_ENOENT,
         "ilb_replica_get after a rejected add");
}

static void op_remove(void) {
  int n = chance(80) ? random_name_where(1) : random_name();
  if (n < 0)
    n = random_name();
  begin_call();
  int rc = ilb_replica_remove(M.pool, names[n]);
  int o = M.reg[n];
  if (o < 0) {
    expect(rc, ILB_ENOENT, "ilb_replica_remove(absent id)");
    check_no_events("ilb_replica_remove(absent id)");
    return;
  }
  expect(rc, 0, "ilb_replica_remove");
  obj *ob = &M.objs[o];
  ob->in_reg = 0;
  M.reg[n] = -1;
  M.n_reg--;
  check_event("ilb_replica_remove", ILB_EVENT_REPLICA_REMOVED, ob, 0, 0,
              M.n_reg);
  wrote();
  obj_maybe_free(o);
  check_get(n, 0); /* gone from the registry at once, batch or not */
}

static void op_set_weight(void) {
  int n = chance(85) ? random_name_where(1) : random_name();
  if (n < 0)
    n = random_name();
  int o = M.reg[n];
  uint32_t w;
  int bad = 0;
  uint32_t r = rndn(100);
  if (r < 10)
    w = 0, bad = ILB_EINVAL;
  else if (r < 18)
    w = chance(50) ? ILB_WEIGHT_MAX + 1 : UINT32_MAX - rndn(10),
    bad = ILB_ERANGE;
  else if (r < 28 && o >= 0)
    w = M.objs[o].weight; /* unchanged: no event */
  else
    w = random_weight();
  begin_call();
  int rc = ilb_replica_set_weight(M.pool, names[n], w);
  if (bad && o < 0) {
    expect2(rc, bad, ILB_ENOENT, "ilb_replica_set_weight(absent, bad weight)");
  } else if (bad) {
    expect(rc, bad, "ilb_replica_set_weight(bad weight)");
  } else if (o < 0) {
    expect(rc, ILB_ENOENT, "ilb_replica_set_weight(absent id)");
  } else {
    expect(rc, 0, "ilb_replica_set_weight");
    obj *ob = &M.objs[o];
    uint32_t old = ob->weight;
    ob->weight = w;
    if (old == w)
      check_no_events("ilb_replica_set_weight(same weight)");
    else
      check_event("ilb_replica_set_weight", ILB_EVENT_REPLICA_WEIGHT, ob,
                  old, w, M.n_reg);
    wrote();
    return;
  }
  check_no_events("ilb_replica_set_weight (failing)");
}
