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
 * Availability (ilb_replica_set_available) belongs to the replica object
 * and takes effect at once, batch or not, without publishing anything.
 *
 * Per pick it derives the allowed result classes: ILB_ENOREPLICA (nothing
 * published, or every published replica unavailable), ILB_ESATURATED (every
 * available published replica full and ALLOW_OVER_CAPACITY published as 0),
 * ILB_ENOKEY (a hashing policy, a request without a key and
 * ILB_OPT_HASH_NO_KEY published as ILB_NO_KEY_ERROR), ILB_EINVAL (key NULL
 * with key_len > 0), ILB_ETICKETS (this thread holds MAX_IN_FLIGHT (rounded
 * up to a power of two) + ILB_THREAD_TICKETS tickets), otherwise success on
 * an available published replica, one with room when any has room. Which
 * replica the policy prefers is not predicted.
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
#define HELD_MAX 600  /* tickets the model holds at most */
#define DONE_RING 256 /* recently completed tickets, replayed as stale */
#define EV_MAX 8      /* events one writer call may fire (at most one) */
#define MAX_DEPTH 3   /* batch nesting the test opens */
#define TAIL_MAX 4096 /* largest unknown struct tail the header accepts */

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
  uint64_t tokens; /* token cost of its requests in flight */
  uint64_t completed, failed;
  int in_reg, in_pub;
  int down; /* ilb_replica_set_available(0): skipped by picks */
  int next_free;
} obj;

typedef struct held {
  uint64_t ticket;
  int obj;
  uint32_t cost; /* its token cost */
  const char *id; /* as the pick returned it: valid until completed */
} held;

/* An event as seen from inside the callback. */
typedef struct ev_rec {
  size_t struct_size;
  int32_t type, old_state, new_state;
  char id[ILB_ID_MAX + 1];
  void *host_data;
  uint64_t old_value, new_value, timestamp_ns;
  int get_rc; /* ilb_replica_get from inside the callback */
  uint32_t get_weight;
  int32_t get_state;
  size_t count; /* ilb_pool_count from inside the callback */
  int count_rc;
  int writer_rc; /* a writer call from inside: ILB_EDEADLK */
} ev_rec;

enum {
  O_POLICY,
  O_P2C,
  O_MIF,
  O_ALLOW,
  O_NO_KEY,
  O_VNODES,
  O_MAGLEV,
  O_BALANCE,
  N_OPT
};
static const int32_t opt_id[N_OPT] = {
    ILB_OPT_POLICY,      ILB_OPT_P2C_CHOICES,       ILB_OPT_MAX_IN_FLIGHT,
    ILB_OPT_ALLOW_OVER_CAPACITY, ILB_OPT_HASH_NO_KEY, ILB_OPT_RING_VNODES,
    ILB_OPT_MAGLEV_TABLE_SIZE,   ILB_OPT_HASH_BALANCE_FACTOR};

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
  OP_SET_AVAILABLE,
  OP_REPORT,
  N_OPS
};
static const char *const op_names[N_OPS] = {
    "pick",        "complete",   "add",     "add_dup", "add_invalid",
    "remove",      "set_weight", "option",  "batch",   "garbage_ticket",
    "bad_outcome", "get_one",    "get_all", "count",   "set_available",
    "report"};

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

  int64_t opt[N_OPT];      /* as set (what ilb_pool_get_option reports) */
  int64_t opt_pub[N_OPT];  /* as published (what picks use) */
  uint32_t mif;            /* ticket table size in effect (power of 2) */
  uint32_t mif_lo, mif_hi; /* bounds while a batch hides which one picks
                              use: see set_mif */
  uint32_t depth;

  held tix[HELD_MAX]; /* tickets out, in no order */
  size_t n_held;
  uint64_t done[DONE_RING];
  size_t n_done;

  ev_rec ev[EV_MAX];
  size_t n_ev;

  /* segment parameters */
  unsigned w[N_OPS];
  unsigned cap0_pct; /* share of adds with capacity 0 (unlimited) */

  /* what the run exercised */
  uint64_t st_pick_ok[N_POLICIES + 1], st_noreplica, st_saturated, st_tickets,
      st_over, st_removed, st_stale, st_busy, st_batched_pick;
  uint64_t st_keyed_pick, st_nokey, st_badkey, st_all_down, st_state_ev,
      st_down_over;
} model;

static model M;

static char names[N_NAMES][ILB_ID_MAX + 1];
static const char absent_name[] = "never-added";

/* ------------------------------------------------------------------------ */
/* Failure reporting                                                         */
/* ------------------------------------------------------------------------ */

#if defined(__GNUC__)
#define PRINTF_LIKE __attribute__((format(printf, 1, 2)))
#else
#define PRINTF_LIKE
#endif

static void failf(const char *fmt, ...) PRINTF_LIKE;
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
  r->get_state = info.state;
  r->count_rc = ilb_pool_count(&r->count, m->pool);
  /* ... a writer on the same pool is refused and changes nothing. */
  switch (m->op % 4) {
  case 3:
    r->writer_rc = ilb_replica_set_available(m->pool, r->id,
                                             r->new_state ==
                                                 ILB_REPLICA_UNAVAILABLE);
    break;
  case 0:
    r->writer_rc = ilb_pool_batch_begin(m->pool);
    break;
  case 1:
    r->writer_rc = ilb_replica_remove(m->pool, r->id);
    break;
  default:
    r->writer_rc = ilb_pool_set_option(m->pool, ILB_OPT_ALLOW_OVER_CAPACITY,
                                       !m->opt[O_ALLOW]);
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

static int32_t state_of(const obj *o) {
  return o->down ? ILB_REPLICA_UNAVAILABLE : ILB_REPLICA_ACTIVE;
}

static int is_hash_policy(int64_t p) {
  return p == ILB_POLICY_RING || p == ILB_POLICY_MAGLEV ||
         p == ILB_POLICY_RENDEZVOUS || p == ILB_POLICY_CHWBL;
}

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
typedef enum {
  IN_EXACT,
  IN_ZERO_TAIL,
  IN_MAX_TAIL,
  IN_SMALL,
  IN_DIRTY_TAIL,
  IN_HUGE_TAIL
} in_mode;

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
      failf("%s wrote byte %zu (value 0x%02x) beyond its %zu-byte struct", what,
            i, buf->b[i], from);
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

/* Exactly one event of this kind, for object o (its model already
 * changed). count_after is the pool size once the change is made. */
static void check_event(const char *call, int32_t type, const obj *o,
                        uint64_t old_value, uint64_t new_value,
                        size_t count_after) {
  if (M.n_ev != 1)
    failf("%s fired %zu events, expected one of type %d", call, M.n_ev, type);
  const ev_rec *r = &M.ev[0];
  const char *id = names[o->name];
  /* New replicas start available; a removal or reweight reports the state
   * the replica was in; a state event the flip. */
  int32_t st = state_of(o);
  int32_t want_old = type == ILB_EVENT_REPLICA_ADDED ? 0
                     : type == ILB_EVENT_REPLICA_STATE
                         ? (o->down ? ILB_REPLICA_ACTIVE
                                    : ILB_REPLICA_UNAVAILABLE)
                         : st;
  int32_t want_new =
      type == ILB_EVENT_REPLICA_REMOVED ? ILB_REPLICA_REMOVED : st;
  if (r->struct_size < sizeof(ilb_event) || r->type != type ||
      r->old_state != want_old || r->new_state != want_new ||
      strcmp(r->id, id) != 0 || r->host_data != (void *)(uintptr_t)o->serial ||
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
  } else if (r->get_rc != 0 || r->get_weight != o->weight ||
             r->get_state != st) {
    failf("%s: ilb_replica_get inside the event = %s, weight %u, state %d, "
          "expected OK, weight %u, state %d",
          call, ilb_err_name(r->get_rc), r->get_weight, r->get_state,
          o->weight, st);
  }
  if (r->count_rc != 0 || r->count != count_after)
    failf("%s: ilb_pool_count inside the event = %s, %zu, expected %zu", call,
          ilb_err_name(r->count_rc), r->count, count_after);
  if (r->writer_rc != ILB_EDEADLK)
    failf("%s: a writer call inside the event = %d (%s), expected EDEADLK",
          call, r->writer_rc, ilb_err_name(r->writer_rc));
}

/* ------------------------------------------------------------------------ */
/* Replica info                                                              */
/* ------------------------------------------------------------------------ */

#define COVERS(size, field)                                                    \
  (offsetof(ilb_replica_info, field) +                                         \
       sizeof(((ilb_replica_info *)0)->field) <=                               \
   (size))

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
  int rc =
      ilb_replica_get((ilb_replica_info *)(void *)g_info.b, M.pool, names[n]);
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
#define FIELD(field, fmt, want)                                                \
  if (COVERS(written, field) && v.field != (want))                             \
    failf("replica %s: " #field " " fmt ", expected " fmt, names[n], v.field,  \
          (want));
  FIELD(weight, "%" PRIu32, o->weight)
  FIELD(capacity, "%" PRIu32, o->capacity)
  FIELD(state, "%" PRId32, state_of(o))
  FIELD(n_labels, "%" PRIu32, o->n_labels)
  FIELD(in_flight, "%" PRId64, o->in_flight)
  FIELD(completed, "%" PRIu64, o->completed)
  FIELD(failed, "%" PRIu64, o->failed)
  FIELD(tokens_in_flight, "%" PRIu64, o->tokens)
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

/* ring gives a replica RING_VNODES * weight points and rebuilds them on
 * every write: while it is (or is about to be) in use, weights stay within
 * the 1..100 the header advises for it, or the run would crawl. */
static int ring_in_use(void) {
  return M.opt[O_POLICY] == ILB_POLICY_RING ||
         M.opt_pub[O_POLICY] == ILB_POLICY_RING;
}

static uint32_t random_weight(void) {
  uint32_t r = rndn(100);
  if (ring_in_use())
    return r < 10 ? 1 : 1 + rndn(100);
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
  in_mode mode =
      rndn(100) < 85 ? IN_EXACT : (chance(50) ? IN_ZERO_TAIL : IN_MAX_TAIL);
  size_input(&g_spec, &sp, sizeof sp, mode);
  int dup = M.reg[n] >= 0;
  int o = dup ? -1 : obj_new(n);
  if (o >= 0)
    sp.host_data = (void *)(uintptr_t)M.objs[o].serial;
  memcpy(g_spec.b + offsetof(ilb_replica_spec, host_data), &sp.host_data,
         sizeof sp.host_data);
  begin_call();
  int rc = ilb_replica_add(M.pool, (const ilb_replica_spec *)(void *)g_spec.b);
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
      check_event("ilb_replica_set_weight", ILB_EVENT_REPLICA_WEIGHT, ob, old,
                  w, M.n_reg);
    wrote();
    return;
  }
  check_no_events("ilb_replica_set_weight (failing)");
}

/* Writer calls with an id no replica can have: too long, or empty. */
static void odd_ids(void) {
  const char *id = chance(50) ? g_long : "";
  begin_call();
  expect2(ilb_replica_remove(M.pool, id), ILB_ENOENT, ILB_EINVAL,
          "ilb_replica_remove(impossible id)");
  expect2(ilb_replica_set_weight(M.pool, id, 1), ILB_ENOENT, ILB_EINVAL,
          "ilb_replica_set_weight(impossible id)");
  ilb_replica_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  expect2(ilb_replica_get(&info, M.pool, id), ILB_ENOENT, ILB_EINVAL,
          "ilb_replica_get(impossible id)");
  expect(ilb_replica_get(NULL, M.pool, names[0]), ILB_EINVAL,
         "ilb_replica_get(NULL info)");
  expect(ilb_replica_get(&info, NULL, names[0]), ILB_EINVAL,
         "ilb_replica_get(NULL pool)");
  expect(ilb_replica_get(&info, M.pool, NULL), ILB_EINVAL,
         "ilb_replica_get(NULL id)");
  expect(ilb_replica_remove(M.pool, NULL), ILB_EINVAL,
         "ilb_replica_remove(NULL id)");
  expect2(ilb_replica_set_available(M.pool, id, (int32_t)rndn(2)), ILB_ENOENT,
          ILB_EINVAL, "ilb_replica_set_available(impossible id)");
  check_no_events("calls with impossible ids");
}

/* ilb_replica_set_available: at once, batch or not; publishes nothing (a
 * batch's pending changes stay hidden from picks). */
static void op_set_available(void) {
  int n = chance(85) ? random_name_where(1) : random_name();
  if (n < 0)
    n = random_name();
  int o = M.reg[n];
  static const int32_t bad_v[] = {2, -1, INT32_MAX, INT32_MIN, 256};
  int32_t av;
  ilb_pool *pool = M.pool;
  const char *id = names[n];
  int bad = 0;
  uint32_t r = rndn(100);
  if (r < 4)
    av = bad_v[rndn(sizeof bad_v / sizeof bad_v[0])], bad = 1;
  else if (r < 6)
    av = 1, pool = NULL, bad = 1;
  else if (r < 8)
    av = 0, id = NULL, bad = 1;
  else
    av = chance(60); /* most replicas stay available */
  begin_call();
  int rc = ilb_replica_set_available(pool, id, av);
  if (bad && o >= 0 && pool && id) {
    expect(rc, ILB_EINVAL, "ilb_replica_set_available(available not 0/1)");
  } else if (bad && (!pool || !id)) {
    expect(rc, ILB_EINVAL, "ilb_replica_set_available(NULL pool or id)");
  } else if (bad) {
    expect2(rc, ILB_EINVAL, ILB_ENOENT,
            "ilb_replica_set_available(absent id, bad value)");
  } else if (o < 0) {
    expect(rc, ILB_ENOENT, "ilb_replica_set_available(absent id)");
  } else {
    expect(rc, 0, "ilb_replica_set_available");
    obj *ob = &M.objs[o];
    int was = ob->down;
    ob->down = !av;
    if (was == ob->down) {
      check_no_events("ilb_replica_set_available(unchanged)");
    } else {
      check_event("ilb_replica_set_available", ILB_EVENT_REPLICA_STATE, ob, 0,
                  0, M.n_reg);
      M.st_state_ev++;
    }
    if (chance(20))
      check_get(n, 0);
    return; /* no wrote(): nothing is published */
  }
  check_no_events("ilb_replica_set_available (failing)");
  if (o >= 0)
    check_get(n, 0);
}

/* ------------------------------------------------------------------------ */
/* Options and batches                                                       */
/* ------------------------------------------------------------------------ */

static void check_option_read(int k) {
  int64_t v = INT64_MIN + 7;
  expect(ilb_pool_get_option(&v, M.pool, opt_id[k]), 0, "ilb_pool_get_option");
  if (v != M.opt[k])
    failf("ilb_pool_get_option(%d) = %" PRId64 ", expected %" PRId64, opt_id[k],
          v, M.opt[k]);
}

/* The ticket table picks use: at once, but inside a batch the header can be
 * read either way (options are hidden from picks until the commit, yet this
 * one "allocates a new ticket table instead" of publishing), so until the
 * commit either size is accepted. */
static void set_mif(uint32_t n) {
  M.mif = n;
  if (M.depth == 0) {
    M.mif_lo = M.mif_hi = n;
  } else {
    if (n < M.mif_lo)
      M.mif_lo = n;
    if (n > M.mif_hi)
      M.mif_hi = n;
  }
}

static int64_t random_mif(int tight) {
  static const int64_t tight_v[] = {64, 64, 100, 128, 200, 256};
  static const int64_t loose_v[] = {64, 128, 500, 1024, 4096, 65536};
  if (tight)
    return tight_v[rndn(sizeof tight_v / sizeof tight_v[0])];
  return loose_v[rndn(sizeof loose_v / sizeof loose_v[0])];
}

static int is_prime64(int64_t v) {
  if (v < 2)
    return 0;
  for (int64_t d = 2; d * d <= v; d++)
    if (v % d == 0)
      return 0;
  return 1;
}

/* Set option k to v (valid or not, by ilb_option_bounds; the maglev table
 * size must also be 0 or a prime >= 3) and check the code and the value
 * read back against the model. */
static void set_option(int k, int64_t v) {
  int64_t lo, hi;
  expect(ilb_option_bounds(&lo, &hi, NULL, opt_id[k]), 0, "ilb_option_bounds");
  int valid = v >= lo && v <= hi;
  if (k == O_MAGLEV && valid && v != 0 && (v < 3 || !is_prime64(v)))
    valid = 0;
  begin_call();
  int rc = ilb_pool_set_option(M.pool, opt_id[k], v);
  char call[96];
  snprintf(call, sizeof call, "ilb_pool_set_option(%d, %" PRId64 ")", opt_id[k],
           v);
  check_no_events(call);
  if (!valid) {
    if (k == O_POLICY)
      expect2(rc, ILB_EUNKNOWN, ILB_ERANGE, call);
    else if (k == O_MIF && M.n_held)
      expect2(rc, ILB_ERANGE, ILB_EBUSY, call);
    else
      expect(rc, ILB_ERANGE, call);
  } else if (k == O_MIF) {
    uint32_t n = round_pow2(v);
    if (M.n_held == 0)
      expect(rc, 0, call);
    else if (n == M.mif) /* not a change: refusing it is fine too */
      expect2(rc, 0, ILB_EBUSY, call);
    else
      expect(rc, ILB_EBUSY, call);
    if (rc == ILB_EBUSY)
      M.st_busy++;
    if (rc == 0) {
      int64_t got = 0;
      expect(ilb_pool_get_option(&got, M.pool, opt_id[k]), 0,
             "ilb_pool_get_option");
      if (got != v && got != (int64_t)n)
        failf("MAX_IN_FLIGHT set to %" PRId64 " reads back %" PRId64
              ", expected it or %" PRIu32,
              v, got, n);
      M.opt[k] = got;
      set_mif(n);
    }
  } else {
    expect(rc, 0, call);
    M.opt[k] = v;
    wrote();
  }
  check_option_read(k);
}

/* Maglev table sizes: small primes mostly (every write rebuilds the
 * table), the default and auto sometimes, and sizes in range that are not
 * prime (ILB_ERANGE). Sizes below the replica count make the pool use the
 * auto size. */
static int64_t random_maglev_size(void) {
  static const int64_t small[] = {3, 5, 37, 41, 53, 101, 257, 1009, 4093};
  static const int64_t other[] = {0, 65537, 1, 2, 4, 9, 100, 65536, 1 << 20};
  if (chance(80))
    return small[rndn(sizeof small / sizeof small[0])];
  return other[rndn(sizeof other / sizeof other[0])];
}

/* Before ring comes into use: the weights it should have (ring_in_use). */
static void tame_weights_for_ring(void) {
  for (int n = 0; n < N_NAMES; n++) {
    if (M.reg[n] < 0 || M.objs[M.reg[n]].weight <= 100)
      continue;
    obj *ob = &M.objs[M.reg[n]];
    uint32_t old = ob->weight, w = 1 + rndn(100);
    begin_call();
    expect(ilb_replica_set_weight(M.pool, names[n], w), 0,
           "ilb_replica_set_weight(before ring)");
    ob->weight = w;
    check_event("ilb_replica_set_weight(before ring)",
                ILB_EVENT_REPLICA_WEIGHT, ob, old, w, M.n_reg);
    wrote();
  }
}

static void op_option(void) {
  /* The four core options as often as before the hashing ones came (the
   * ticket table size especially: every publish scans the table), the
   * four hashing options together as often as one of them, an unknown
   * option half as often. */
  uint32_t r = rndn(11);
  uint32_t k = r < 8 ? r / 2 : r < 10 ? O_NO_KEY + rndn(4) : N_OPT;
  if (k == N_OPT) {
    static const int32_t unknown[] = {0,         99,        183,           205,
                                      INT32_MAX, INT32_MIN, ILB_POLICY_P2C};
    int32_t id = unknown[rndn(sizeof unknown / sizeof unknown[0])];
    int64_t v = 0;
    begin_call();
    expect(ilb_pool_set_option(M.pool, id, 1), ILB_EUNKNOWN,
           "ilb_pool_set_option(unknown option)");
    expect(ilb_pool_get_option(&v, M.pool, id), ILB_EUNKNOWN,
           "ilb_pool_get_option(unknown option)");
    expect(ilb_option_bounds(&v, NULL, NULL, id), ILB_EUNKNOWN,
           "ilb_option_bounds(unknown option)");
    expect(ilb_pool_set_option(NULL, ILB_OPT_POLICY, ILB_POLICY_P2C),
           ILB_EINVAL, "ilb_pool_set_option(NULL pool)");
    expect(ilb_pool_get_option(NULL, M.pool, ILB_OPT_POLICY), ILB_EINVAL,
           "ilb_pool_get_option(NULL out)");
    check_no_events("unknown options");
    return;
  }
  int64_t lo, hi, v;
  expect(ilb_option_bounds(&lo, &hi, NULL, opt_id[k]), 0, "ilb_option_bounds");
  if (chance(70)) {
    switch (k) {
    case O_POLICY: /* mostly keep the segment's policy */
      v = chance(70) ? M.opt[O_POLICY] : 1 + rndn(N_POLICIES);
      if (v == ILB_POLICY_RING)
        tame_weights_for_ring();
      break;
    case O_MIF:
      v = chance(30) ? M.opt[O_MIF] : random_mif(chance(70));
      break;
    case O_VNODES: /* small: ring rebuilds vnodes * weight points a write */
      v = 1 + rndn(16);
      break;
    case O_MAGLEV:
      v = random_maglev_size();
      break;
    default:
      v = lo + (int64_t)rndn((uint32_t)(hi - lo + 1));
      break;
    }
  } else {
    switch (rndn(6)) {
    case 0:
      v = lo - 1;
      break;
    case 1:
      v = hi + 1;
      break;
    case 2:
      v = INT64_MIN;
      break;
    case 3:
      v = INT64_MAX;
      break;
    case 4:
      v = lo - 1 - (int64_t)rndn(1000);
      break;
    default:
      v = hi + 1 + (int64_t)(rnd() % 100000); /* above the range */
      break;
    }
  }
  set_option((int)k, v);
}

static void op_batch(void) {
  begin_call();
  if (M.depth == 0 && chance(5)) {
    expect(ilb_pool_batch_commit(M.pool), ILB_EINVAL,
           "ilb_pool_batch_commit(no batch open)");
  } else if (M.depth == 0 || (M.depth < MAX_DEPTH && chance(30))) {
    expect(ilb_pool_batch_begin(M.pool), 0, "ilb_pool_batch_begin");
    M.depth++;
  } else {
    expect(ilb_pool_batch_commit(M.pool), 0, "ilb_pool_batch_commit");
    if (--M.depth == 0)
      publish();
  }
  check_no_events("batch begin/commit");
}

/* ------------------------------------------------------------------------ */
/* Picks                                                                     */
/* ------------------------------------------------------------------------ */

#define RES_COVERS(size, field)                                                \
  (offsetof(ilb_pick_result, field) + sizeof(((ilb_pick_result *)0)->field) <= \
   (size))

static uint64_t g_hashes[8];
static char g_prompt[64];
static unsigned char g_key[300];

/* A request with random contents (the core policies ignore them; the
 * hashing policies use the key): no key, a session-like key, binary key
 * bytes of any length, a key pointer with key_len 0 (no key), or a NULL
 * key with key_len > 0 (ILB_EINVAL). */
static void random_request(ilb_request *req) {
  expect(ilb_request_init(req), 0, "ilb_request_init");
  uint32_t r = rndn(100);
  if (r < 40) {
    snprintf(g_prompt, sizeof g_prompt, "user-%u", rndn(1000));
    req->key = g_prompt;
    req->key_len = strlen(g_prompt);
  } else if (r < 55) {
    size_t len = 1 + rndn(chance(90) ? 16 : sizeof g_key);
    for (size_t i = 0; i < len; i++)
      g_key[i] = (unsigned char)rnd();
    req->key = g_key;
    req->key_len = len;
  } else if (r < 60) {
    req->key = g_prompt;
    req->key_len = 0;
  } else if (r < 62) {
    req->key = NULL;
    req->key_len = 1 + rndn(64);
  }
  if (chance(30)) {
    for (size_t i = 0; i < 8; i++)
      g_hashes[i] = rnd();
    req->block_hashes = g_hashes;
    req->n_blocks = 1 + rndn(8);
    req->prompt = g_prompt;
    req->prompt_len = strlen(g_prompt);
  }
  req->prompt_tokens = rndn(4000);
  req->output_tokens = rndn(1000);
  if (chance(30)) {
    make_labels(1 + rndn(3));
    req->attrs = g_labels;
    req->n_attrs = 1 + rndn(3);
  }
}

/* The model object of a pick that reported only its ticket: the one
 * registry replica whose in-flight count went up by one. Outside a batch
 * only, where the registry is what picks see. */
static int find_by_in_flight(void) {
  int found = -1;
  for (int n = 0; n < N_NAMES; n++) {
    if (M.reg[n] < 0)
      continue;
    ilb_replica_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    expect(ilb_replica_get(&info, M.pool, names[n]), 0, "ilb_replica_get");
    int64_t d = info.in_flight - M.objs[M.reg[n]].in_flight;
    if (d == 1 && found < 0)
      found = M.reg[n];
    else if (d != 0)
      failf("after a pick, %s has %" PRId64 " in flight, model %" PRId64,
            names[n], info.in_flight, M.objs[M.reg[n]].in_flight);
  }
  if (found < 0)
    failf("a successful pick raised no replica's in-flight count");
  return found;
}

static int has_room(const obj *o) {
  return o->capacity == 0 || o->in_flight < (int64_t)o->capacity;
}

/* ilb_replica_report: random telemetry, mostly valid (then composite
 * routes on it), sometimes one bad value (ILB_ERANGE), sometimes an absent
 * replica (ILB_ENOENT). Picks check their usual invariants on top. */
static void op_report(void) {
  int n = chance(90) ? random_name_where(1) : random_name();
  if (n < 0) /* none is registered */
    n = random_name();
  ilb_telemetry t;
  expect(ilb_telemetry_init(&t), 0, "ilb_telemetry_init");
  t.present = rnd() & ((UINT64_C(1) << ILB_SIGNAL_COUNT) - 1);
  t.requests_waiting = rndn(50);
  t.requests_running = rndn(50);
  t.kv_cache_usage = rndn(1001) / 1000.0;
  t.gpu_utilization = rndn(1001) / 1000.0;
  t.gpu_memory_total = 80e9;
  t.gpu_memory_free = rndn(81) * 1e9;
  t.prefix_hit_rate = rndn(101) / 100.0;
  t.gen_tokens_per_s = rndn(5000);
  t.ttft_s = rndn(3000) / 1000.0;
  t.queue_time_s = rndn(1000) / 1000.0;
  t.request_rate = rndn(100);
  t.max_concurrency = 1 + rndn(256);
  t.model_ready = chance(90);
  t.kv_block_size = 16;
  t.kv_blocks_total = rndn(100000);
  int bad = chance(10);
  if (bad) { /* one present fraction out of range */
    t.present |= ILB_SIGNAL_BIT(ILB_SIGNAL_KV_CACHE_USAGE);
    t.kv_cache_usage = chance(50) ? 1.5 : -0.25;
  }
  int rc = ilb_replica_report(M.pool, names[n], &t);
  if (M.reg[n] < 0)
    expect(rc, ILB_ENOENT, "ilb_replica_report(absent id)");
  else
    expect(rc, bad ? ILB_ERANGE : 0, "ilb_replica_report");
}

static void op_complete(void);

static void op_pick(void) {
  if (M.n_held >= HELD_MAX) {
    op_complete();
    return;
  }
  /* request: none, exact, or a struct_size game */
  ilb_request req;
  const ilb_request *reqp = NULL;
  int req_ok = 1, has_key = 0, bad_key = 0;
  in_mode mode = IN_EXACT;
  if (chance(70)) {
    random_request(&req);
    mode = random_in_mode();
    req_ok = size_input(&g_req, &req, sizeof req, mode);
    reqp = (const ilb_request *)(void *)g_req.b;
    /* the 0.3 request, without priority, and the 0.5 one, without zone,
     * are still accepted */
    if (reqp->struct_size == offsetof(ilb_request, priority) ||
        reqp->struct_size == offsetof(ilb_request, zone))
      req_ok = 1;
    has_key = req.key_len > 0 && req.key != NULL;
    bad_key = req.key_len > 0 && req.key == NULL;
  }
  /* result: exact, partial, larger, too small */
  const size_t ours = sizeof(ilb_pick_result);
  const size_t min = offsetof(ilb_pick_result, ticket) + sizeof(uint64_t);
  int res_ok;
  size_t size = size_output(&g_res, ours, min, &res_ok);
  if (res_ok && !RES_COVERS(size, replica_id) && M.depth > 0) {
    size = ours; /* find_by_in_flight needs registry == published */
    memcpy(g_res.b, &size, sizeof size);
  }
  size_t written = size < ours ? size : ours;

  int rc = ilb_pick((ilb_pick_result *)(void *)g_res.b, M.pool, reqp);
  if (!res_ok) {
    expect(rc, ILB_ESIZE, "ilb_pick(result struct_size too small)");
    check_poison(&g_res, sizeof size, "ilb_pick failing with ESIZE");
    return;
  }
  check_poison(&g_res, written, "ilb_pick");
  uint64_t ticket;
  memcpy(&ticket, g_res.b + offsetof(ilb_pick_result, ticket), sizeof ticket);
  if (!req_ok) {
    expect(rc, ILB_ESIZE, "ilb_pick(bad request struct_size or tail)");
    if (ticket != 0)
      failf("failed pick left ticket %" PRIx64 ", expected 0", ticket);
    return;
  }
  if (bad_key) {
    expect(rc, ILB_EINVAL, "ilb_pick(key NULL, key_len > 0)");
    if (ticket != 0)
      failf("failed pick left ticket %" PRIx64 ", expected 0", ticket);
    M.st_badkey++;
    return;
  }

  /* Only available published replicas may be chosen. */
  size_t n_avail = 0;
  int room_any = 0;
  for (size_t k = 0; k < M.n_pub; k++) {
    const obj *c = &M.objs[M.pub[k]];
    if (c->down)
      continue;
    n_avail++;
    room_any |= has_room(c);
  }
  int empty = n_avail == 0; /* nothing published, or none available */
  int sat = !empty && !room_any && !M.opt_pub[O_ALLOW];
  int nokey = is_hash_policy(M.opt_pub[O_POLICY]) && !has_key &&
              M.opt_pub[O_NO_KEY] == ILB_NO_KEY_ERROR && M.n_pub > 0;
  size_t lim_lo = M.mif_lo + ILB_THREAD_TICKETS;
  size_t lim_hi = M.mif_hi + ILB_THREAD_TICKETS;
  int tix_may = M.n_held >= lim_lo, tix_must = M.n_held >= lim_hi;

  if (rc != 0) {
    if (ticket != 0)
      failf("pick failing with %s left ticket %" PRIx64 ", expected 0",
            ilb_err_name(rc), ticket);
    int allowed = (rc == ILB_ETICKETS && tix_may) ||
                  (rc == ILB_ENOREPLICA && empty) ||
                  (rc == ILB_ESATURATED && sat) ||
                  (rc == ILB_ENOKEY && nokey);
    if (!allowed)
      failf("ilb_pick = %d (%s); model: %zu published, %zu available, %s, "
            "allow_over %d, %s key, no_key %d, %zu tickets held of a "
            "per-thread limit of %zu (%s)",
            rc, ilb_err_name(rc), M.n_pub, n_avail,
            room_any ? "some with room" : "none with room",
            (int)M.opt_pub[O_ALLOW], has_key ? "with" : "without",
            (int)M.opt_pub[O_NO_KEY], M.n_held, lim_hi,
            nokey      ? "expected ENOKEY"
            : empty    ? "expected ENOREPLICA"
            : sat      ? "expected ESATURATED"
            : tix_must ? "expected ETICKETS"
                       : "expected success");
    if (rc == ILB_ETICKETS) {
      M.st_tickets++;
    } else if (rc == ILB_ENOREPLICA) {
      M.st_noreplica++;
      M.st_all_down += M.n_pub > 0;
    } else if (rc == ILB_ENOKEY) {
      M.st_nokey++;
    } else {
      M.st_saturated++;
    }
    return;
  }

  if (empty || sat || tix_must || nokey)
    failf("ilb_pick succeeded (ticket %" PRIx64 "), expected %s", ticket,
          nokey   ? "ENOKEY"
          : empty ? (M.n_pub ? "ENOREPLICA (every replica unavailable)"
                             : "ENOREPLICA")
          : sat   ? "ESATURATED"
                  : "ETICKETS");
  if (ticket == 0)
    failf("successful pick returned ticket 0");
  for (size_t k = 0; k < M.n_held; k++)
    if (M.tix[k].ticket == ticket)
      failf("pick returned ticket %" PRIx64 ", already held", ticket);

  int o = -1;
  const char *id = NULL;
  if (RES_COVERS(written, replica_id)) {
    memcpy(&id, g_res.b + offsetof(ilb_pick_result, replica_id), sizeof id);
    if (!id)
      failf("successful pick returned a NULL replica_id");
    for (size_t k = 0; k < M.n_pub && o < 0; k++)
      if (strcmp(names[M.objs[M.pub[k]].name], id) == 0)
        o = M.pub[k];
    if (o < 0)
      failf("pick returned \"%.40s\", not a published replica", id);
    if (RES_COVERS(written, host_data)) {
      void *hd;
      memcpy(&hd, g_res.b + offsetof(ilb_pick_result, host_data), sizeof hd);
      if (hd != (void *)(uintptr_t)M.objs[o].serial)
        failf("pick returned %s with host_data %p, expected %p", id, hd,
              (void *)(uintptr_t)M.objs[o].serial);
    }
  } else {
    o = find_by_in_flight();
  }
  obj *ob = &M.objs[o];
  if (ob->down)
    failf("pick chose %s, which is unavailable (%zu of %zu published "
          "available)",
          names[ob->name], n_avail, M.n_pub);
  if (!has_room(ob)) {
    if (room_any)
      failf("pick chose %s at capacity (%" PRId64 "/%u) while another "
            "published replica had room",
            names[ob->name], ob->in_flight, ob->capacity);
    if (!M.opt_pub[O_ALLOW])
      failf("pick exceeded the capacity of %s (%" PRId64 "/%u) with "
            "ALLOW_OVER_CAPACITY 0 (published)",
            names[ob->name], ob->in_flight, ob->capacity);
    M.st_over++;
    M.st_down_over += n_avail < M.n_pub;
  }
  ob->in_flight++;
  /* Token cost (ILB_OPT_TOKEN_OUTPUT_PERCENT stays 100): the estimates,
   * or under least_tokens and prefix the default 512 when they come to 0. */
  uint32_t cost = reqp ? req.prompt_tokens + req.output_tokens : 0;
  if (cost == 0 && (M.opt_pub[O_POLICY] == ILB_POLICY_LEAST_TOKENS ||
                    M.opt_pub[O_POLICY] == ILB_POLICY_PREFIX))
    cost = 512;
  ob->tokens += cost;
  M.tix[M.n_held].cost = cost;
  M.tix[M.n_held].ticket = ticket;
  M.tix[M.n_held].obj = o;
  M.tix[M.n_held].id = id;
  M.n_held++;
  M.st_pick_ok[M.opt_pub[O_POLICY]]++;
  M.st_keyed_pick += has_key && is_hash_policy(M.opt_pub[O_POLICY]);
  if (M.depth)
    M.st_batched_pick++;
}

/* ------------------------------------------------------------------------ */
/* Completions                                                               */
/* ------------------------------------------------------------------------ */

static void random_outcome(ilb_outcome *out) {
  expect(ilb_outcome_init(out), 0, "ilb_outcome_init");
  out->status = (int32_t)rndn(5);
  if (out->status == ILB_OUTCOME_HTTP_ERROR)
    out->http_status = 400 + (int32_t)rndn(200);
  else if (chance(20))
    out->http_status = 100 + (int32_t)rndn(500);
  out->latency_ns = rnd() % 10000000000u;
  out->ttft_ns = chance(50) ? out->latency_ns / 3 : 0;
  out->prompt_tokens = rndn(5000);
  out->output_tokens = rndn(2000);
}

static int is_failure(int32_t status) {
  return status == ILB_OUTCOME_CONNECT_ERROR || status == ILB_OUTCOME_TIMEOUT ||
         status == ILB_OUTCOME_HTTP_ERROR;
}

/* Complete held ticket k with outcome (NULL = OK); sized says whether to
 * play struct_size games with the outcome. */
static void complete_held(size_t k, int sized) {
  held h = M.tix[k];
  obj *ob = &M.objs[h.obj];
  if (h.id && strcmp(h.id, names[ob->name]) != 0)
    failf("the replica_id of a held ticket changed to \"%.40s\" (was %s)", h.id,
          names[ob->name]);
  ilb_outcome out;
  const ilb_outcome *outp = NULL;
  int out_ok = 1;
  int32_t status = ILB_OUTCOME_OK;
  if (!sized || chance(80)) {
    random_outcome(&out);
    status = out.status;
    out_ok = size_input(&g_out, &out, sizeof out,
                        sized ? random_in_mode() : IN_EXACT);
    outp = (const ilb_outcome *)(void *)g_out.b;
  }
  int rc = ilb_complete(M.pool, h.ticket, outp);
  if (!out_ok) {
    expect(rc, ILB_ESIZE, "ilb_complete(bad outcome struct_size or tail)");
    return; /* nothing changed: still held */
  }
  if (ob->in_reg)
    expect(rc, 0, "ilb_complete(held ticket)");
  else if (ob->in_pub) /* removed inside the open batch */
    expect2(rc, 0, ILB_EREMOVED,
            "ilb_complete(ticket of a replica removed in the open batch)");
  else
    expect(rc, ILB_EREMOVED, "ilb_complete(ticket of a removed replica)");
  if (rc == ILB_EREMOVED)
    M.st_removed++;
  ob->in_flight--;
  ob->tokens -= h.cost;
  if (ob->in_reg) {
    ob->completed++;
    ob->failed += is_failure(status);
  }
  M.tix[k] = M.tix[--M.n_held];
  M.done[M.n_done++ % DONE_RING] = h.ticket;
  obj_maybe_free(h.obj);
  if (chance(30))
    expect(ilb_complete(M.pool, h.ticket, chance(50) ? NULL : outp), ILB_ESTALE,
           "ilb_complete(the same ticket again)");
}

static void op_garbage(void);

static void op_complete(void) {
  if (M.n_held == 0) {
    op_garbage();
    return;
  }
  complete_held(rndn((uint32_t)M.n_held), 1);
}

static int is_held(uint64_t t) {
  for (size_t k = 0; k < M.n_held; k++)
    if (M.tix[k].ticket == t)
      return 1;
  return 0;
}

/* Tickets that are not out: ILB_ESTALE, nothing changes. */
static void op_garbage(void) {
  uint64_t t;
  switch (rndn(6)) {
  case 0:
    t = 0;
    break;
  case 1:
    t = rnd();
    break;
  case 2:
    t = M.n_done ? M.done[rndn(
                       (uint32_t)(M.n_done < DONE_RING ? M.n_done : DONE_RING))]
                 : UINT64_MAX;
    break;
  case 3: /* a held ticket's entry with another sequence number */
    t = M.n_held ? M.tix[rndn((uint32_t)M.n_held)].ticket ^
                       ((uint64_t)(1 + rndn(0xffff)) << 32)
                 : rnd();
    break;
  case 4: /* a held ticket's sequence number, an entry past the table */
    t = M.n_held
            ? (M.tix[rndn((uint32_t)M.n_held)].ticket & ~UINT64_C(0xffffffff)) |
                  (UINT64_C(0xffffffff) - rndn(16))
            : rnd();
    break;
  default:
    t = UINT64_MAX;
    break;
  }
  if (is_held(t))
    return;
  ilb_outcome out;
  random_outcome(&out);
  expect(ilb_complete(M.pool, t, chance(50) ? NULL : &out), ILB_ESTALE,
         "ilb_complete(ticket not out)");
  M.st_stale++;
}

/* An invalid outcome: ILB_EINVAL, and the ticket stays valid. */
static void op_bad_outcome(void) {
  ilb_outcome out;
  expect(ilb_outcome_init(&out), 0, "ilb_outcome_init");
  static const int32_t bad_status[] = {-1, 6, INT32_MIN, INT32_MAX, 100};
  static const int32_t bad_http[] = {1, 99, 600, -1, INT32_MAX, 1000};
  if (chance(50)) {
    out.status = bad_status[rndn(5)];
  } else {
    out.status = (int32_t)rndn(5);
    out.http_status = bad_http[rndn(6)];
  }
  size_input(&g_out, &out, sizeof out, chance(80) ? IN_EXACT : IN_ZERO_TAIL);
  const ilb_outcome *outp = (const ilb_outcome *)(void *)g_out.b;
  if (M.n_held == 0 || chance(10)) {
    uint64_t t = chance(50) ? 0 : rnd();
    if (!is_held(t))
      expect2(ilb_complete(M.pool, t, outp), ILB_EINVAL, ILB_ESTALE,
              "ilb_complete(stale ticket, invalid outcome)");
    return;
  }
  const held *h = &M.tix[rndn((uint32_t)M.n_held)];
  expect(ilb_complete(M.pool, h->ticket, outp), ILB_EINVAL,
         "ilb_complete(held ticket, invalid outcome)");
  expect(ilb_complete(NULL, h->ticket, NULL), ILB_EINVAL,
         "ilb_complete(NULL pool)");
  const obj *ob = &M.objs[h->obj];
  if (ob->in_reg)
    check_get(ob->name, 0); /* in_flight, completed, failed unchanged */
}

/* Complete every held ticket. */
static void drain(void) {
  while (M.n_held)
    complete_held(M.n_held - 1, 0);
}

/* ------------------------------------------------------------------------ */
/* Segments and the run                                                      */
/* ------------------------------------------------------------------------ */

/* clang-format off */
/* Weights of the ops (enum order: pick complete add add_dup add_invalid
 * remove set_weight option batch garbage bad_outcome get_one get_all count
 * set_available) per kind of segment: normal; fill (held tickets climb to
 * the ticket limit); churn (replicas come and go); sparse (often empty). */
static const unsigned mix_normal[N_OPS] = {30, 24, 8, 2, 2, 6, 5, 4, 3, 3, 2, 4, 1, 1, 4, 3};
static const unsigned mix_fill[N_OPS] = {45, 18, 6, 1, 1, 3, 3, 3, 3, 3, 2, 3, 1, 1, 2, 3};
static const unsigned mix_churn[N_OPS] = {25, 20, 16, 2, 2, 14, 5, 3, 4, 2, 1, 3, 1, 1, 5, 3};
static const unsigned mix_sparse[N_OPS] = {25, 22, 4, 1, 2, 14, 4, 4, 3, 3, 2, 3, 1, 1, 6, 3};
/* clang-format on */

static void start_segment(size_t seg, int32_t *perm) {
  if (seg % N_POLICIES == 0)
    for (int i = N_POLICIES - 1; i > 0; i--) {
      int j = (int)rndn((uint32_t)i + 1);
      int32_t t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
  uint32_t kind = rndn(5);
  const unsigned *mix = kind == 1   ? mix_fill
                        : kind == 2 ? mix_churn
                        : kind == 3 ? mix_sparse
                                    : mix_normal;
  memcpy(M.w, mix, sizeof M.w);
  M.cap0_pct = kind == 4 ? 0 : kind == 1 ? 40 : 20; /* 4: all limited */
  M.what = "segment start";
  if (kind == 1 || chance(60)) {
    drain();
    set_option(O_MIF, random_mif(kind == 1 || chance(50)));
  }
  /* Small hashing tables (rebuilt on every write), a fresh balance
   * factor, and sometimes no-key requests refused. */
  set_option(O_VNODES, 1 + rndn(8));
  static const int64_t primes[] = {53, 101, 257, 1009};
  set_option(O_MAGLEV, primes[rndn(4)]);
  set_option(O_BALANCE, chance(50) ? 125 : 100 + rndn(400));
  set_option(O_NO_KEY, chance(25) ? ILB_NO_KEY_ERROR
                                  : ILB_NO_KEY_LEAST_REQUEST);
  if (perm[seg % N_POLICIES] == ILB_POLICY_RING)
    tame_weights_for_ring();
  set_option(O_POLICY, perm[seg % N_POLICIES]);
  if (kind == 4)
    set_option(O_ALLOW, 0);
}

static void check_bounds(void) {
  static const struct {
    int32_t id;
    int64_t min, max, def;
  } doc[] = {
      {ILB_OPT_POLICY, ILB_POLICY_ROUND_ROBIN, ILB_POLICY_PREFIX,
       ILB_POLICY_P2C},
      {ILB_OPT_P2C_CHOICES, 2, 16, 2},
      {ILB_OPT_MAX_IN_FLIGHT, 64, 16777216, 65536},
      {ILB_OPT_ALLOW_OVER_CAPACITY, 0, 1, 0},
      {ILB_OPT_HASH_NO_KEY, 0, 1, ILB_NO_KEY_LEAST_REQUEST},
      {ILB_OPT_RING_VNODES, 1, 1000, 160},
      {ILB_OPT_MAGLEV_TABLE_SIZE, 0, 16777213, 65537},
      {ILB_OPT_HASH_BALANCE_FACTOR, 100, 10000, 125},
  };
  _Static_assert(sizeof doc / sizeof doc[0] == N_OPT, "one row per option");
  for (size_t i = 0; i < sizeof doc / sizeof doc[0]; i++) {
    int64_t lo, hi, def;
    expect(ilb_option_bounds(&lo, &hi, &def, doc[i].id), 0,
           "ilb_option_bounds");
    if (lo != doc[i].min || hi != doc[i].max || def != doc[i].def)
      failf("option %d: bounds %" PRId64 "..%" PRId64 " default %" PRId64
            ", header says %" PRId64 "..%" PRId64 " default %" PRId64,
            doc[i].id, lo, hi, def, doc[i].min, doc[i].max, doc[i].def);
    M.opt[i] = def;
    check_option_read((int)i);
  }
}

static uint64_t env_u64(const char *name, uint64_t def) {
  const char *s = getenv(name);
  if (!s || !*s)
    return def;
  char *end;
  unsigned long long v = strtoull(s, &end, 0);
  if (*end)
    fail_msg("%s=%s is not a number", name, s);
  return (uint64_t)v;
}

static void test_model_random_ops(void **state) {
  (void)state;
  memset(&M, 0, sizeof M);
  M.seed = env_u64("INFERLB_MODEL_SEED", DEFAULT_SEED);
  M.ops = (size_t)env_u64("INFERLB_MODEL_OPS", DEFAULT_OPS);
  M.rng = M.seed;
  M.free_head = -1;
  for (int n = 0; n < N_NAMES; n++) {
    M.reg[n] = -1;
    if (n < N_NAMES - 3)
      snprintf(names[n], sizeof names[n], "r%02d", n);
  }
  snprintf(names[N_NAMES - 3], sizeof names[0], "%s",
           "replica-7.inference.svc.cluster.local:8000");
  memset(names[N_NAMES - 2], 'L', ILB_ID_MAX); /* longest valid id */
  names[N_NAMES - 2][ILB_ID_MAX] = '\0';
  snprintf(names[N_NAMES - 1], sizeof names[0], "%s",
           "gpu-\xc3\xbc\xce\xbb-\xe2\x82\xac"); /* UTF-8 bytes */
  memset(g_long, 'x', ILB_ID_MAX + 1);
  g_long[ILB_ID_MAX + 1] = '\0';

  ilb_host host;
  expect(ilb_host_init(&host), 0, "ilb_host_init");
  host.alloc = t_alloc;
  host.free = t_free;
  host.clock_ns = t_clock;
  host.on_event = t_event;
  host.seed = M.seed;
  host.user_data = &M;
  expect(ilb_pool_new(&M.pool, &host), 0, "ilb_pool_new");
  track_pool(M.pool);
  /* prefix's index at its least (80 KiB): switching to it allocates it,
   * and the default 20 MiB, zeroed through the counting allocator at
   * every switch, would only slow the model down */
  expect(ilb_pool_set_option(M.pool, ILB_OPT_PREFIX_TABLE_BLOCKS, 1024), 0,
         "ilb_pool_set_option(PREFIX_TABLE_BLOCKS)");
  M.what = "setup";
  check_bounds();
  M.mif = round_pow2(M.opt[O_MIF]);
  publish();

  int32_t perm[N_POLICIES];
  for (int i = 0; i < (int)N_POLICIES; i++)
    perm[i] = i + 1;
  unsigned total_w = 0;
  for (M.op = 0; M.op < M.ops; M.op++) {
    M.now = 1000000 + (uint64_t)M.op * 1000;
    if (M.op % SEGMENT_OPS == 0) {
      start_segment(M.op / SEGMENT_OPS, perm);
      total_w = 0;
      for (int k = 0; k < N_OPS; k++)
        total_w += M.w[k];
    }
    uint32_t r = rndn(total_w);
    int op = 0;
    while (r >= M.w[op])
      r -= M.w[op++];
    M.what = op_names[op];
    switch (op) {
    case OP_PICK:
      op_pick();
      break;
    case OP_COMPLETE:
      op_complete();
      break;
    case OP_ADD: {
      int n = random_name_where(0);
      op_add(n >= 0 ? n : random_name());
      break;
    }
    case OP_ADD_DUP: {
      int n = random_name_where(1);
      op_add(n >= 0 ? n : random_name());
      break;
    }
    case OP_ADD_INVALID:
      op_add_invalid();
      break;
    case OP_REMOVE:
      op_remove();
      break;
    case OP_SET_WEIGHT:
      op_set_weight();
      break;
    case OP_OPTION:
      op_option();
      break;
    case OP_BATCH:
      op_batch();
      break;
    case OP_GARBAGE:
      op_garbage();
      break;
    case OP_BAD_OUTCOME:
      op_bad_outcome();
      break;
    case OP_GET_ONE:
      if (chance(5))
        odd_ids();
      else
        check_get(random_name(), 1);
      break;
    case OP_GET_ALL:
      check_all();
      break;
    case OP_SET_AVAILABLE:
      op_set_available();
      break;
    case OP_REPORT:
      op_report();
      break;
    default: {
      size_t c = 0;
      expect(ilb_pool_count(&c, M.pool), 0, "ilb_pool_count");
      if (c != M.n_reg)
        failf("ilb_pool_count = %zu, expected %zu", c, M.n_reg);
      expect(ilb_pool_count(NULL, M.pool), ILB_EINVAL,
             "ilb_pool_count(NULL out)");
      break;
    }
    }
  }

  /* Close every batch, complete everything: nothing is left in flight. */
  M.what = "finish";
  while (M.depth) {
    expect(ilb_pool_batch_commit(M.pool), 0, "ilb_pool_batch_commit");
    if (--M.depth == 0)
      publish();
  }
  drain();
  check_all();
  for (int n = 0; n < N_NAMES; n++)
    if (M.reg[n] >= 0 && M.objs[M.reg[n]].in_flight != 0)
      failf("model: %s still has requests in flight", names[n]);

  printf("[ model    ] seed 0x%016" PRIx64 ", %zu ops: picks", M.seed, M.ops);
  for (int p = 1; p <= (int)N_POLICIES; p++)
    printf(" %s %" PRIu64, ilb_policy_name(p), M.st_pick_ok[p]);
  printf("\n[ model    ] ENOREPLICA %" PRIu64 ", ESATURATED %" PRIu64
         ", ETICKETS %" PRIu64 ", over capacity %" PRIu64 ", EREMOVED %" PRIu64
         ", ESTALE %" PRIu64 ", EBUSY %" PRIu64 ", picks in a batch %" PRIu64
         "\n",
         M.st_noreplica, M.st_saturated, M.st_tickets, M.st_over, M.st_removed,
         M.st_stale, M.st_busy, M.st_batched_pick);
  printf("[ model    ] keyed hashing picks %" PRIu64 ", ENOKEY %" PRIu64
         ", EINVAL key %" PRIu64 ", ENOREPLICA with all unavailable %" PRIu64
         ", over capacity beside unavailable ones %" PRIu64
         ", state events %" PRIu64 "\n",
         M.st_keyed_pick, M.st_nokey, M.st_badkey, M.st_all_down,
         M.st_down_over, M.st_state_ev);

  /* The default run must have reached every state it is meant to test. */
  if (M.seed == DEFAULT_SEED && M.ops >= DEFAULT_OPS) {
    for (int p = 1; p <= (int)N_POLICIES; p++)
      if (M.st_pick_ok[p] == 0)
        failf("no pick under policy %s", ilb_policy_name(p));
    if (!M.st_noreplica || !M.st_saturated || !M.st_tickets || !M.st_over ||
        !M.st_removed || !M.st_busy || !M.st_batched_pick ||
        !M.st_keyed_pick || !M.st_nokey || !M.st_badkey || !M.st_all_down ||
        !M.st_down_over || !M.st_state_ev)
      failf("the default run missed a result class (see the counts above)");
  }

  free_pool(M.pool);
  M.pool = NULL;
  if (M.live_allocs != 0)
    failf("%ld allocations still live after ilb_pool_free (of %" PRIu64 ")",
          M.live_allocs, M.n_allocs);
  free(M.objs);
  M.objs = NULL;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_model_random_ops),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
