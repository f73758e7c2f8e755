/*
 * ilb_replica_set_available, through the public API, for every policy:
 * argument errors, the state ilb_replica_get reports, REPLICA_STATE events
 * (and the state other events carry), replicas removed while unavailable
 * and new ones after them (available), picks that never return an
 * unavailable replica (keyed, keyless and NULL requests), ILB_ENOREPLICA
 * when none is available, requests in flight on an unavailable replica,
 * batches, capacity and ILB_OPT_ALLOW_OVER_CAPACITY, key affinity across an
 * outage, the chwbl bound over the available weight, ILB_EDEADLK from a
 * callback, no allocation, and one thread toggling availability while
 * another picks.
 *
 * Every run is deterministic but the threaded one, whose checks hold
 * whatever the interleaving.
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

#define MAX_R 16
#define MAX_EV 64
#define MAX_HELD 4096

/* ------------------------------------------------------------------------ */
/* Fixture: a pool, our model of it, and the events it fired                 */
/* ------------------------------------------------------------------------ */

typedef struct ev_rec {
  int32_t type, old_state, new_state;
  char id[32];
  void *host_data;
  uint64_t old_value, new_value, ts;
  void *user_data;
  int get_rc;        /* ilb_replica_get from inside the callback */
  int32_t get_state; /* ... and the state it reported */
  int probe_rc;      /* ilb_replica_set_available from inside, when armed */
} ev_rec;

typedef struct fx {
  ilb_pool *pool;
  int32_t policy;
  uint64_t now; /* fake clock */
  size_t n;     /* replicas ever added; a slot each */
  char id[MAX_R][16];
  uint32_t weight[MAX_R], cap[MAX_R];
  int present[MAX_R], down[MAX_R];
  int64_t in_flight[MAX_R];
  /* tickets held */
  uint64_t t[MAX_HELD];
  size_t ts[MAX_HELD];
  size_t n_held;
  /* events */
  size_t n_ev;
  ev_rec ev[MAX_EV];
  int probe;               /* call set_available from inside each event */
  ilb_pool *probe_target;  /* on this pool (NULL: the event's own) */
  int32_t probe_available; /* with this value */
  const char *probe_id;    /* on this id (NULL: the event's replica) */
  uint64_t rng;
} fx;

static uint64_t fake_clock(void *ud) { return ((fx *)ud)->now; }

static void on_event(const ilb_event *e, void *ud) {
  fx *f = ud;
  if (f->n_ev < MAX_EV) {
    ev_rec *r = &f->ev[f->n_ev];
    memset(r, 0, sizeof *r);
    r->type = e->type;
    r->old_state = e->old_state;
    r->new_state = e->new_state;
    snprintf(r->id, sizeof r->id, "%s", e->replica_id ? e->replica_id : "");
    r->host_data = e->replica_host_data;
    r->old_value = e->old_value;
    r->new_value = e->new_value;
    r->ts = e->timestamp_ns;
    r->user_data = ud;
    ilb_replica_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    r->get_rc = ilb_replica_get(&info, f->pool, r->id);
    r->get_state = info.state;
    r->probe_rc = 1; /* not probed */
    if (f->probe)
      r->probe_rc = ilb_replica_set_available(
          f->probe_target ? f->probe_target : f->pool,
          f->probe_id ? f->probe_id : r->id, f->probe_available);
  }
  f->n_ev++;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static fx *fx_new(int32_t policy, uint64_t seed) {
  fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  ilb_host host;
  assert_rc(ilb_host_init(&host), ILB_OK);
  host.clock_ns = fake_clock;
  host.on_event = on_event;
  host.seed = seed;
  host.user_data = f;
  assert_rc(ilb_pool_new(&f->pool, &host), ILB_OK);
  track_pool(f->pool);
  /* Small hashing tables: every write rebuilds them. */
  assert_rc(ilb_pool_set_option(f->pool, ILB_OPT_MAGLEV_TABLE_SIZE, 1009),
            ILB_OK);
  assert_rc(ilb_pool_set_option(f->pool, ILB_OPT_RING_VNODES, 40), ILB_OK);
  assert_rc(ilb_pool_set_option(f->pool, ILB_OPT_POLICY, policy), ILB_OK);
  f->policy = policy;
  f->rng = seed ^ UINT64_C(0xa5a5a5a5);
  return f;
}

static void fx_free(fx *f) {
  free_pool(f->pool);
  free(f);
}

static void set_policy(fx *f, int32_t policy) {
  assert_rc(ilb_pool_set_option(f->pool, ILB_OPT_POLICY, policy), ILB_OK);
  f->policy = policy;
}

static size_t fx_add(fx *f, uint32_t weight, uint32_t cap) {
  assert_true(f->n < MAX_R);
  size_t s = f->n++;
  snprintf(f->id[s], sizeof f->id[s], "r%02zu", s);
  ilb_replica_spec spec;
  assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
  spec.id = f->id[s];
  spec.weight = weight;
  spec.capacity = cap;
  spec.host_data = (void *)(uintptr_t)(s + 1);
  assert_rc(ilb_replica_add(f->pool, &spec), ILB_OK);
  f->weight[s] = weight;
  f->cap[s] = cap;
  f->present[s] = 1;
  f->down[s] = 0;
  return s;
}

static void set_avail(fx *f, size_t s, int available) {
  assert_rc(ilb_replica_set_available(f->pool, f->id[s], available), ILB_OK);
  f->down[s] = !available;
}

static int32_t state_of(const fx *f, size_t s) {
  return f->down[s] ? ILB_REPLICA_UNAVAILABLE : ILB_REPLICA_ACTIVE;
}

static size_t n_avail(const fx *f) {
  size_t k = 0;
  for (size_t s = 0; s < f->n; s++)
    k += f->present[s] && !f->down[s];
  return k;
}

/* Requests: with a key, without one (key set, key_len 0), or none. */
enum { REQ_KEY, REQ_NO_KEY, REQ_NULL, N_REQ };
static const char *const req_name[N_REQ] = {"keyed request",
                                            "request without key",
                                            "NULL request"};

typedef struct req_buf {
  ilb_request req;
  char key[32];
} req_buf;

static const ilb_request *make_req(req_buf *b, int kind, uint64_t key) {
  if (kind == REQ_NULL)
    return NULL;
  assert_rc(ilb_request_init(&b->req), ILB_OK);
  snprintf(b->key, sizeof b->key, "session-%llu", (unsigned long long)key);
  b->req.key = b->key;
  b->req.key_len = kind == REQ_KEY ? strlen(b->key) : 0;
  return &b->req;
}

/* The slot a successful pick names, checked: the id and host_data agree,
 * the replica is in the pool and available. */
static size_t slot_of(const fx *f, const ilb_pick_result *res,
                      const char *ctx) {
  uintptr_t hd = (uintptr_t)res->host_data;
  if (res->ticket == 0)
    fail_msg("%s: successful pick with ticket 0", ctx);
  if (hd == 0 || hd > f->n)
    fail_msg("%s: pick returned unknown host_data %p", ctx, res->host_data);
  size_t s = hd - 1;
  if (res->replica_id == NULL || strcmp(res->replica_id, f->id[s]) != 0)
    fail_msg("%s: pick returned id \"%s\" with host_data of \"%s\"", ctx,
             res->replica_id ? res->replica_id : "(null)", f->id[s]);
  if (!f->present[s])
    fail_msg("%s: pick returned removed replica %s", ctx, f->id[s]);
  if (f->down[s])
    fail_msg("%s (policy %s): pick returned %s, which is unavailable (%zu "
             "of %zu available)",
             ctx, ilb_policy_name(f->policy), f->id[s], n_avail(f), f->n);
  return s;
}

/* One pick; on success the ticket is held. Returns the code, the slot in
 * *slot (or SIZE_MAX). A failure must leave ticket 0. */
static int try_pick(fx *f, int kind, uint64_t key, size_t *slot,
                    const char *ctx) {
  req_buf b;
  const ilb_request *req = make_req(&b, kind, key);
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  res.ticket = 777; /* must become 0 on failure */
  int rc = ilb_pick(&res, f->pool, req);
  *slot = SIZE_MAX;
  if (rc != 0) {
    if (res.ticket != 0)
      fail_msg("%s: failed pick (%s) left ticket %llu", ctx,
               ilb_err_name(rc), (unsigned long long)res.ticket);
    return rc;
  }
  size_t s = slot_of(f, &res, ctx);
  assert_true(f->n_held < MAX_HELD);
  f->t[f->n_held] = res.ticket;
  f->ts[f->n_held++] = s;
  f->in_flight[s]++;
  *slot = s;
  return 0;
}

static size_t pick_ok(fx *f, int kind, uint64_t key, const char *ctx) {
  size_t s;
  int rc = try_pick(f, kind, key, &s, ctx);
  if (rc != 0)
    fail_msg("%s (policy %s, %s): ilb_pick = %s, expected success (%zu of "
             "%zu available)",
             ctx, ilb_policy_name(f->policy), req_name[kind],
             ilb_err_name(rc), n_avail(f), f->n);
  return s;
}

static void pick_fails(fx *f, int kind, uint64_t key, int want,
                       const char *ctx) {
  size_t s;
  int rc = try_pick(f, kind, key, &s, ctx);
  if (rc != want)
    fail_msg("%s (policy %s, %s): ilb_pick = %s%s%s, expected %s", ctx,
             ilb_policy_name(f->policy), req_name[kind], ilb_err_name(rc),
             rc == 0 ? " on " : "", rc == 0 ? f->id[s] : "",
             ilb_err_name(want));
}

/* Complete held ticket k (0 expected: the replica is in the pool). */
static void complete_held(fx *f, size_t k, const ilb_outcome *o) {
  size_t s = f->ts[k];
  int rc = ilb_complete(f->pool, f->t[k], o);
  if (rc != 0)
    fail_msg("ilb_complete of a ticket on %s (%s) = %s, expected OK",
             f->id[s], f->down[s] ? "unavailable" : "available",
             ilb_err_name(rc));
  f->in_flight[s]--;
  f->t[k] = f->t[f->n_held - 1];
  f->ts[k] = f->ts[f->n_held - 1];
  f->n_held--;
}

static void complete_all(fx *f) {
  while (f->n_held)
    complete_held(f, f->n_held - 1, NULL);
}

/* Pick and complete at once; returns the slot. */
static size_t pick_once(fx *f, int kind, uint64_t key, const char *ctx) {
  size_t s = pick_ok(f, kind, key, ctx);
  complete_held(f, f->n_held - 1, NULL);
  return s;
}

/* The library agrees with the model: state and in-flight of each replica. */
static void check_replicas(fx *f, const char *ctx) {
  for (size_t s = 0; s < f->n; s++) {
    if (!f->present[s])
      continue;
    ilb_replica_info info = get_info(f->pool, f->id[s]);
    if (info.state != state_of(f, s) || info.in_flight != f->in_flight[s])
      fail_msg("%s (policy %s): %s has state %d, in_flight %lld; expected "
               "%d, %lld",
               ctx, ilb_policy_name(f->policy), f->id[s], info.state,
               (long long)info.in_flight, state_of(f, s),
               (long long)f->in_flight[s]);
  }
}

static int is_hash(int32_t p) {
  return p == ILB_POLICY_RING || p == ILB_POLICY_MAGLEV ||
         p == ILB_POLICY_RENDEZVOUS || p == ILB_POLICY_CHWBL;
}

/* ------------------------------------------------------------------------ */
/* Errors, state, events                                                     */
/* ------------------------------------------------------------------------ */

static void errors(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_P2C, 1);
  fx_add(f, 1, 0);
  size_t ev = f->n_ev;
  assert_rc(ilb_replica_set_available(NULL, "r00", 0), ILB_EINVAL);
  assert_rc(ilb_replica_set_available(NULL, "r00", 1), ILB_EINVAL);
  assert_rc(ilb_replica_set_available(f->pool, NULL, 0), ILB_EINVAL);
  assert_rc(ilb_replica_set_available(f->pool, NULL, 1), ILB_EINVAL);
  const int32_t bad[] = {2, -1, 3, 100, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_rc(ilb_replica_set_available(f->pool, "r00", bad[i]), ILB_EINVAL);
  assert_rc(ilb_replica_set_available(f->pool, "nope", 0), ILB_ENOENT);
  assert_rc(ilb_replica_set_available(f->pool, "nope", 1), ILB_ENOENT);
  assert_rc(ilb_replica_set_available(f->pool, "R00", 0), ILB_ENOENT);
  assert_rc(ilb_replica_set_available(f->pool, "r0", 0), ILB_ENOENT);
  assert_rc(ilb_replica_set_available(f->pool, "r000", 0), ILB_ENOENT);
  int rc = ilb_replica_set_available(f->pool, "", 0); /* no replica's id */
  if (rc != ILB_ENOENT && rc != ILB_EINVAL)
    fail_msg("set_available(\"\") = %s, expected ENOENT or EINVAL",
             ilb_err_name(rc));
  /* Nothing changed, no event. */
  assert_int_equal(f->n_ev, ev);
  check_replicas(f, "after rejected calls");
  assert_int_equal(get_info(f->pool, "r00").state, ILB_REPLICA_ACTIVE);
  pick_once(f, REQ_NULL, 0, "after rejected calls");

  /* A removed replica is gone for set_available too. */
  assert_rc(ilb_replica_remove(f->pool, "r00"), ILB_OK);
  f->present[0] = 0;
  ev = f->n_ev;
  assert_rc(ilb_replica_set_available(f->pool, "r00", 0), ILB_ENOENT);
  assert_rc(ilb_replica_set_available(f->pool, "r00", 1), ILB_ENOENT);
  assert_int_equal(f->n_ev, ev);
  fx_free(f);
}

static void state_and_events(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_ROUND_ROBIN, 2);
  f->now = 100;
  size_t a = fx_add(f, 3, 0);
  fx_add(f, 1, 0);
  /* New replicas start available. */
  assert_int_equal(f->n_ev, 2);
  assert_int_equal(f->ev[0].type, ILB_EVENT_REPLICA_ADDED);
  assert_int_equal(f->ev[0].old_state, 0);
  assert_int_equal(f->ev[0].new_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(f->ev[0].get_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(get_info(f->pool, "r00").state, ILB_REPLICA_ACTIVE);
  /* Available already: no change, no event. */
  f->n_ev = 0;
  set_avail(f, a, 1);
  assert_int_equal(f->n_ev, 0);

  f->now = 200;
  set_avail(f, a, 0);
  assert_int_equal(f->n_ev, 1);
  ev_rec *e = &f->ev[0];
  assert_int_equal(e->type, ILB_EVENT_REPLICA_STATE);
  assert_int_equal(e->old_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(e->new_state, ILB_REPLICA_UNAVAILABLE);
  assert_string_equal(e->id, "r00");
  assert_ptr_equal(e->host_data, (void *)(uintptr_t)1);
  assert_int_equal(e->ts, 200);
  assert_ptr_equal(e->user_data, f);
  /* The change is made when the event fires. */
  assert_rc(e->get_rc, ILB_OK);
  assert_int_equal(e->get_state, ILB_REPLICA_UNAVAILABLE);
  ilb_replica_info info = get_info(f->pool, "r00");
  assert_int_equal(info.state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(info.weight, 3); /* nothing else changes */
  assert_int_equal(info.in_flight, 0);
  assert_int_equal(get_info(f->pool, "r01").state, ILB_REPLICA_ACTIVE);

  /* Unchanged: OK, no event. */
  f->now = 250;
  set_avail(f, a, 0);
  assert_int_equal(f->n_ev, 1);
  assert_int_equal(get_info(f->pool, "r00").state, ILB_REPLICA_UNAVAILABLE);

  /* A weight change keeps the state and reports it on both sides. */
  f->now = 300;
  assert_rc(ilb_replica_set_weight(f->pool, "r00", 7), ILB_OK);
  f->weight[a] = 7;
  assert_int_equal(f->n_ev, 2);
  e = &f->ev[1];
  assert_int_equal(e->type, ILB_EVENT_REPLICA_WEIGHT);
  assert_int_equal(e->old_state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(e->new_state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(e->old_value, 3);
  assert_int_equal(e->new_value, 7);
  info = get_info(f->pool, "r00");
  assert_int_equal(info.state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(info.weight, 7);
  /* ... and so does an option change (a rebuild of every table). */
  for (size_t p = 0; p < N_POLICIES; p++) {
    set_policy(f, all_policies[p]);
    assert_int_equal(get_info(f->pool, "r00").state, ILB_REPLICA_UNAVAILABLE);
    for (int i = 0; i < 20; i++)
      pick_once(f, i % N_REQ, (uint64_t)i, "after a rebuild");
  }
  assert_int_equal(f->n_ev, 2);

  /* Back: UNAVAILABLE -> ACTIVE, once. */
  f->now = 400;
  set_avail(f, a, 1);
  assert_int_equal(f->n_ev, 3);
  e = &f->ev[2];
  assert_int_equal(e->type, ILB_EVENT_REPLICA_STATE);
  assert_int_equal(e->old_state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(e->new_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(e->get_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(e->ts, 400);
  set_avail(f, a, 1);
  assert_int_equal(f->n_ev, 3);
  assert_int_equal(get_info(f->pool, "r00").state, ILB_REPLICA_ACTIVE);
  /* The weight event of an available replica says ACTIVE. */
  assert_rc(ilb_replica_set_weight(f->pool, "r00", 2), ILB_OK);
  assert_int_equal(f->ev[3].old_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(f->ev[3].new_state, ILB_REPLICA_ACTIVE);

  /* Removing an unavailable replica: REMOVED from UNAVAILABLE. */
  set_avail(f, a, 0);
  f->n_ev = 0;
  f->now = 500;
  assert_rc(ilb_replica_remove(f->pool, "r00"), ILB_OK);
  f->present[a] = 0;
  assert_int_equal(f->n_ev, 1);
  e = &f->ev[0];
  assert_int_equal(e->type, ILB_EVENT_REPLICA_REMOVED);
  assert_int_equal(e->old_state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(e->new_state, ILB_REPLICA_REMOVED);
  assert_int_equal(e->ts, 500);
  assert_rc(e->get_rc, ILB_ENOENT);
  /* Removing an available one: from ACTIVE. */
  assert_rc(ilb_replica_remove(f->pool, "r01"), ILB_OK);
  f->present[1] = 0;
  assert_int_equal(f->ev[1].old_state, ILB_REPLICA_ACTIVE);

  /* The same id added again is a new replica: available. */
  ilb_replica_spec spec;
  assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
  spec.id = "r00";
  spec.host_data = (void *)(uintptr_t)1;
  assert_rc(ilb_replica_add(f->pool, &spec), ILB_OK);
  f->present[a] = 1;
  f->down[a] = 0;
  f->weight[a] = 1;
  assert_int_equal(f->ev[2].type, ILB_EVENT_REPLICA_ADDED);
  assert_int_equal(f->ev[2].new_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(get_info(f->pool, "r00").state, ILB_REPLICA_ACTIVE);
  for (size_t p = 0; p < N_POLICIES; p++) {
    set_policy(f, all_policies[p]);
    for (int k = 0; k < N_REQ; k++)
      assert_int_equal(pick_once(f, k, 5, "re-added"), a);
  }
  fx_free(f);
}

/* Replicas removed while unavailable leave nothing behind: whatever
 * record a new replica gets (the same id or another, with or without
 * requests of the old one still in flight), it starts available. */
static void removed_unavailable_then_added(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    fx *f = fx_new(all_policies[p], 5 + p);
    size_t keep = fx_add(f, 1, 0);
    for (int round = 0; round < 12; round++) {
      f->n_ev = 0;
      size_t s = fx_add(f, 1 + (uint32_t)round % 3, 0);
      set_avail(f, keep, 0); /* only s available: picks must go there */
      if (round % 3 == 0)
        pick_ok(f, REQ_KEY, (uint64_t)round, "held across the removal");
      set_avail(f, s, 0);
      set_avail(f, keep, 1);
      size_t ev = f->n_ev;
      assert_rc(ilb_replica_remove(f->pool, f->id[s]), ILB_OK);
      f->present[s] = 0;
      assert_int_equal(f->ev[ev].old_state, ILB_REPLICA_UNAVAILABLE);
      /* Its tickets complete with EREMOVED. */
      for (size_t k = 0; k < f->n_held;)
        if (f->ts[k] == s) {
          assert_rc(ilb_complete(f->pool, f->t[k], NULL), ILB_EREMOVED);
          f->t[k] = f->t[--f->n_held];
          f->ts[k] = f->ts[f->n_held];
        } else {
          k++;
        }
      /* The same id again (every other round), or a new one. */
      size_t t = f->n;
      if (round % 2 == 0) {
        ilb_replica_spec spec;
        assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
        spec.id = f->id[s];
        spec.host_data = (void *)(uintptr_t)(s + 1);
        assert_rc(ilb_replica_add(f->pool, &spec), ILB_OK);
        t = s;
        f->present[s] = 1;
        f->down[s] = 0;
        f->weight[s] = 1;
      } else {
        t = fx_add(f, 2, 0);
      }
      assert_int_equal(f->ev[f->n_ev - 1].type, ILB_EVENT_REPLICA_ADDED);
      assert_int_equal(f->ev[f->n_ev - 1].get_state, ILB_REPLICA_ACTIVE);
      assert_int_equal(get_info(f->pool, f->id[t]).state, ILB_REPLICA_ACTIVE);
      /* keep out: the new one takes every pick */
      set_avail(f, keep, 0);
      for (int k = 0; k < N_REQ; k++)
        if (pick_once(f, k, (uint64_t)k, "new replica") != t)
          fail_msg("%s: a new replica is not chosen alone",
                   ilb_policy_name(f->policy));
      set_avail(f, keep, 1);
      assert_rc(ilb_replica_remove(f->pool, f->id[t]), ILB_OK);
      f->present[t] = 0;
      if (f->n >= MAX_R - 1)
        break;
    }
    check_replicas(f, "after the rounds");
    fx_free(f);
  }
}

/* ------------------------------------------------------------------------ */
/* Picks                                                                     */
/* ------------------------------------------------------------------------ */

#define ROUND_PICKS 600

/* ROUND_PICKS picks held until the end of the round (so the load-aware
 * policies spread), random keys: none on an unavailable replica, every
 * available one chosen at least once. */
static void round_of_picks(fx *f, int kind, const char *ctx) {
  size_t hits[MAX_R] = {0};
  for (int i = 0; i < ROUND_PICKS; i++)
    hits[pick_ok(f, kind, splitmix(&f->rng), ctx)]++;
  check_replicas(f, ctx);
  for (size_t s = 0; s < f->n; s++)
    if (f->present[s] && !f->down[s] && hits[s] == 0)
      fail_msg("%s (policy %s, %s): available %s (weight %u) never chosen "
               "in %d picks",
               ctx, ilb_policy_name(f->policy), req_name[kind], f->id[s],
               f->weight[s], ROUND_PICKS);
  complete_all(f);
}

static void never_picks_unavailable(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    for (int kind = 0; kind < N_REQ; kind++) {
      fx *f = fx_new(all_policies[p], 10 + p);
      for (uint32_t i = 0; i < 8; i++)
        fx_add(f, 1 + (i * 3) % 5, 0);
      round_of_picks(f, kind, "all available");
      set_avail(f, 1, 0);
      set_avail(f, 4, 0);
      set_avail(f, 6, 0);
      round_of_picks(f, kind, "three unavailable");
      /* Back to available: chosen again; another goes. */
      set_avail(f, 4, 1);
      set_avail(f, 0, 0);
      round_of_picks(f, kind, "one back, another out");
      /* Rebuilds keep the flags: a reweight of an unavailable one, a new
       * replica, a removal. */
      assert_rc(ilb_replica_set_weight(f->pool, f->id[6], 9), ILB_OK);
      f->weight[6] = 9;
      fx_add(f, 2, 0);
      assert_rc(ilb_replica_remove(f->pool, f->id[3]), ILB_OK);
      f->present[3] = 0;
      round_of_picks(f, kind, "after rebuilds");
      /* Down to one. */
      for (size_t s = 0; s < f->n; s++)
        if (f->present[s] && s != 7)
          set_avail(f, s, 0);
      for (int i = 0; i < 50; i++) {
        size_t s = pick_once(f, kind, splitmix(&f->rng), "one available");
        if (s != 7)
          fail_msg("%s (%s): picked %s, only %s is available",
                   ilb_policy_name(f->policy), req_name[kind], f->id[s],
                   f->id[7]);
      }
      for (size_t s = 0; s < f->n; s++)
        if (f->present[s])
          set_avail(f, s, 1);
      round_of_picks(f, kind, "all back");
      fx_free(f);
    }
  }
}

/* Every replica unavailable: ILB_ENOREPLICA with ticket 0 and nothing in
 * flight, whatever the policy, request, capacity or ALLOW_OVER_CAPACITY;
 * one back and every pick goes to it. */
static void all_unavailable_is_enoreplica(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    fx *f = fx_new(all_policies[p], 20 + p);
    for (uint32_t i = 0; i < 5; i++)
      fx_add(f, 1 + i, i % 2 ? 2 : 0);
    for (size_t s = 0; s < f->n; s++)
      set_avail(f, s, 0);
    for (int over = 0; over <= 1; over++) {
      assert_rc(
          ilb_pool_set_option(f->pool, ILB_OPT_ALLOW_OVER_CAPACITY, over),
          ILB_OK);
      for (int kind = 0; kind < N_REQ; kind++)
        for (int i = 0; i < 30; i++)
          pick_fails(f, kind, (uint64_t)i, ILB_ENOREPLICA, "all unavailable");
      check_replicas(f, "all unavailable"); /* nothing in flight */
    }
    /* Also after a rebuild with every flag down. */
    assert_rc(ilb_replica_set_weight(f->pool, f->id[2], 11), ILB_OK);
    pick_fails(f, REQ_KEY, 1, ILB_ENOREPLICA, "all unavailable, rebuilt");
    pick_fails(f, REQ_NULL, 1, ILB_ENOREPLICA, "all unavailable, rebuilt");

    /* One back: every pick goes to it. */
    set_avail(f, 3, 1);
    for (int kind = 0; kind < N_REQ; kind++)
      for (int i = 0; i < 30; i++)
        assert_int_equal(pick_once(f, kind, (uint64_t)i, "one back"), 3);
    set_avail(f, 3, 0);
    pick_fails(f, REQ_KEY, 3, ILB_ENOREPLICA, "out again");
    check_replicas(f, "out again");
    fx_free(f);
  }
}

/* Requests in flight on a replica that becomes unavailable complete
 * normally (0, counted), and its in-flight count returns to 0. */
static void in_flight_completes(void **state) {
  (void)state;
  ilb_outcome fail_out;
  assert_rc(ilb_outcome_init(&fail_out), ILB_OK);
  fail_out.status = ILB_OUTCOME_TIMEOUT;
  for (size_t p = 0; p < N_POLICIES; p++) {
    fx *f = fx_new(all_policies[p], 30 + p);
    for (uint32_t i = 0; i < 4; i++)
      fx_add(f, 1, 0);
    for (int i = 0; i < 40; i++)
      pick_ok(f, i % N_REQ, (uint64_t)i * 7919, "held");
    for (size_t s = 0; s < f->n; s++)
      set_avail(f, s, 0);
    check_replicas(f, "held, all unavailable");
    pick_fails(f, REQ_KEY, 1, ILB_ENOREPLICA, "held, all unavailable");
    uint64_t completed[MAX_R] = {0}, failed[MAX_R] = {0};
    size_t k = 0;
    while (f->n_held) {
      size_t s = f->ts[f->n_held - 1];
      uint64_t t = f->t[f->n_held - 1];
      complete_held(f, f->n_held - 1, k++ % 2 ? &fail_out : NULL);
      completed[s]++;
      failed[s] += k % 2 == 0;
      assert_rc(ilb_complete(f->pool, t, NULL), ILB_ESTALE);
    }
    for (size_t s = 0; s < f->n; s++) {
      ilb_replica_info info = get_info(f->pool, f->id[s]);
      assert_int_equal(info.in_flight, 0);
      assert_int_equal(info.state, ILB_REPLICA_UNAVAILABLE);
      if (info.completed != completed[s] || info.failed != failed[s])
        fail_msg("%s %s: completed/failed %llu/%llu, expected %llu/%llu",
                 ilb_policy_name(f->policy), f->id[s],
                 (unsigned long long)info.completed,
                 (unsigned long long)info.failed,
                 (unsigned long long)completed[s],
                 (unsigned long long)failed[s]);
    }
    /* Tickets outstanding across down -> up complete as well. */
    set_avail(f, 2, 1);
    pick_ok(f, REQ_KEY, 99, "one back");
    set_avail(f, 2, 0);
    set_avail(f, 2, 1);
    complete_all(f);
    check_replicas(f, "after completing");
    fx_free(f);
  }
}

/* Inside a batch set_available takes effect at once, fires its event at
 * once, and publishes nothing else of the batch. */
static void batch_takes_effect_at_once(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    fx *f = fx_new(all_policies[p], 40 + p);
    for (uint32_t i = 0; i < 4; i++)
      fx_add(f, 2, 0);
    assert_rc(ilb_pool_batch_begin(f->pool), ILB_OK);
    /* Pending: a new replica (hidden from picks until the commit), a
     * removal (still picked until the commit). */
    size_t fresh = fx_add(f, 5, 0);
    f->present[fresh] = 0; /* not visible to picks yet */
    assert_rc(ilb_replica_remove(f->pool, f->id[3]), ILB_OK);
    size_t ev = f->n_ev;
    set_avail(f, 0, 0);
    assert_int_equal(f->n_ev, ev + 1);
    assert_int_equal(f->ev[ev].type, ILB_EVENT_REPLICA_STATE);
    assert_int_equal(get_info(f->pool, f->id[0]).state,
                     ILB_REPLICA_UNAVAILABLE);
    /* The fresh one can be set too (it is in the registry). */
    set_avail(f, fresh, 0);
    assert_int_equal(get_info(f->pool, f->id[fresh]).state,
                     ILB_REPLICA_UNAVAILABLE);
    /* The removed one is not in the registry any more. */
    assert_rc(ilb_replica_set_available(f->pool, f->id[3], 0), ILB_ENOENT);
    int seen3 = 0;
    for (int i = 0; i < 300; i++) {
      size_t s = pick_once(f, i % N_REQ, splitmix(&f->rng), "in the batch");
      if (s == fresh)
        fail_msg("%s: picked %s, added in the open batch",
                 ilb_policy_name(f->policy), f->id[fresh]);
      seen3 |= s == 3;
    }
    (void)seen3; /* the removal is not published yet: 3 may be chosen */
    /* Every published available replica out: ENOREPLICA inside the batch,
     * although the batch's pending add would be available... */
    set_avail(f, 1, 0);
    set_avail(f, 2, 0);
    set_avail(f, fresh, 1);
    /* ... r03 is still published (its removal is pending) and available:
     * picks go there. */
    for (int i = 0; i < 30; i++)
      assert_int_equal(pick_once(f, i % N_REQ, (uint64_t)i, "batch"), 3);
    assert_rc(ilb_pool_batch_commit(f->pool), ILB_OK);
    f->present[3] = 0;
    f->present[fresh] = 1;
    /* Published now: only the fresh one is available. */
    for (int i = 0; i < 30; i++)
      assert_int_equal(pick_once(f, i % N_REQ, (uint64_t)i, "committed"),
                       fresh);
    /* The fresh one out and the others back, inside another batch. */
    assert_rc(ilb_pool_batch_begin(f->pool), ILB_OK);
    set_avail(f, fresh, 0);
    pick_fails(f, REQ_KEY, 4, ILB_ENOREPLICA, "second batch, none");
    set_avail(f, 1, 1);
    for (int i = 0; i < 30; i++)
      assert_int_equal(pick_once(f, i % N_REQ, (uint64_t)i, "second batch"),
                       1);
    assert_rc(ilb_pool_batch_commit(f->pool), ILB_OK);
    for (int i = 0; i < 30; i++)
      assert_int_equal(pick_once(f, i % N_REQ, (uint64_t)i, "after"), 1);
    check_replicas(f, "after the batches");
    fx_free(f);
  }
}

/* Capacity and ALLOW_OVER_CAPACITY never place on an unavailable replica:
 * available ones all full -> ESATURATED (over 0) or over capacity on an
 * available one (over 1); none available -> ENOREPLICA either way. */
static void capacity_and_allow_over(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    for (int kind = 0; kind < N_REQ; kind++) {
      fx *f = fx_new(all_policies[p], 50 + p);
      for (uint32_t i = 0; i < 4; i++)
        fx_add(f, 1 + i, 2);
      set_avail(f, 1, 0);
      set_avail(f, 3, 0);
      /* Room on 0 and 2 only: exactly 4 picks, there. */
      for (int i = 0; i < 4; i++)
        pick_ok(f, kind, splitmix(&f->rng), "filling");
      assert_int_equal(f->in_flight[0], 2);
      assert_int_equal(f->in_flight[2], 2);
      /* Unavailable ones have room, but are not candidates. */
      for (int i = 0; i < 20; i++)
        pick_fails(f, kind, splitmix(&f->rng), ILB_ESATURATED,
                   "available ones full, over 0");
      check_replicas(f, "saturated");
      assert_rc(ilb_pool_set_option(f->pool, ILB_OPT_ALLOW_OVER_CAPACITY, 1),
                ILB_OK);
      for (int i = 0; i < 40; i++) {
        size_t s = pick_ok(f, kind, splitmix(&f->rng), "over capacity");
        assert_true(s == 0 || s == 2); /* slot_of checked availability */
      }
      assert_int_equal(f->in_flight[1], 0);
      assert_int_equal(f->in_flight[3], 0);
      /* None available: ENOREPLICA, over or not. */
      set_avail(f, 0, 0);
      set_avail(f, 2, 0);
      pick_fails(f, kind, 1, ILB_ENOREPLICA, "none available, over 1");
      assert_rc(ilb_pool_set_option(f->pool, ILB_OPT_ALLOW_OVER_CAPACITY, 0),
                ILB_OK);
      pick_fails(f, kind, 2, ILB_ENOREPLICA, "none available, over 0");
      /* Replica 3 back, with room: the next two picks take it, then it is
       * full with the others out: ESATURATED. */
      set_avail(f, 3, 1);
      assert_int_equal(pick_ok(f, kind, 3, "3 back"), 3);
      assert_int_equal(pick_ok(f, kind, 4, "3 back"), 3);
      pick_fails(f, kind, 5, ILB_ESATURATED, "3 full");
      /* 0 back too (over its capacity already): still saturated. */
      set_avail(f, 0, 1);
      pick_fails(f, kind, 6, ILB_ESATURATED, "0 and 3 full");
      /* A completion on the unavailable 2 gives no room to picks. */
      for (size_t k = 0; k < f->n_held; k++)
        if (f->ts[k] == 2) {
          complete_held(f, k, NULL);
          break;
        }
      pick_fails(f, kind, 7, ILB_ESATURATED, "room only on an unavailable");
      /* Room on 0 (drop it below its capacity): picks go there. */
      while (f->in_flight[0] > 1)
        for (size_t k = 0; k < f->n_held; k++)
          if (f->ts[k] == 0) {
            complete_held(f, k, NULL);
            break;
          }
      assert_int_equal(pick_ok(f, kind, 8, "room on 0"), 0);
      check_replicas(f, "end");
      complete_all(f);
      check_replicas(f, "drained");
      fx_free(f);
    }
  }
}

/* Hashing policies, keyed picks completed at once (the home of a key always
 * has room, chwbl included): taking replica X out moves exactly the keys
 * whose home is X, and only those; bringing it back restores every key's
 * replica. */
static void hash_keys_move_only_from_unavailable(void **state) {
  (void)state;
  enum { KEYS = 400 };
  static size_t home[KEYS], during[KEYS];
  for (size_t p = 0; p < N_POLICIES; p++) {
    if (!is_hash(all_policies[p]))
      continue;
    fx *f = fx_new(all_policies[p], 60 + p);
    for (uint32_t i = 0; i < 10; i++)
      fx_add(f, 1 + i % 3, 0);
    for (size_t x = 0; x < f->n; x += 3) {
      size_t moved = 0;
      for (int k = 0; k < KEYS; k++)
        home[k] = pick_once(f, REQ_KEY, (uint64_t)k, "home");
      set_avail(f, x, 0);
      for (int k = 0; k < KEYS; k++) {
        during[k] = pick_once(f, REQ_KEY, (uint64_t)k, "X unavailable");
        if (home[k] != x && during[k] != home[k])
          fail_msg("%s: key %d moved from %s to %s when %s became "
                   "unavailable",
                   ilb_policy_name(f->policy), k, f->id[home[k]],
                   f->id[during[k]], f->id[x]);
        moved += home[k] == x;
      }
      if (moved == 0)
        fail_msg("%s: no key of %d has its home on %s",
                 ilb_policy_name(f->policy), KEYS, f->id[x]);
      /* The same answer every time while X is out. */
      for (int k = 0; k < KEYS; k++)
        if (pick_once(f, REQ_KEY, (uint64_t)k, "again") != during[k])
          fail_msg("%s: key %d not stable while %s is unavailable",
                   ilb_policy_name(f->policy), k, f->id[x]);
      set_avail(f, x, 1);
      for (int k = 0; k < KEYS; k++) {
        size_t s = pick_once(f, REQ_KEY, (uint64_t)k, "X back");
        if (s != home[k])
          fail_msg("%s: key %d on %s after %s came back, was %s before",
                   ilb_policy_name(f->policy), k, f->id[s], f->id[x],
                   f->id[home[k]]);
      }
    }
    fx_free(f);
  }
}

/* chwbl with replicas unavailable: W in the bound is the weight of the
 * available replicas, kept right across set_available and rebuilds. Single
 * thread, keyed picks held. A key's home is its maglev entry (a maglev pool
 * of the same membership and table size tells it). Every pick lands on a
 * replica whose load was below ceil(c * (T + 1) * w / W) (with W too large
 * the bounds would sum to less than T + 1 and picks would have to exceed
 * them), and on the home whenever the home is available and below its
 * bound (with W too small the home would be refused). */
static void chwbl_bound_over_available_weight(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_CHWBL, 70);
  fx *m = fx_new(ILB_POLICY_MAGLEV, 71); /* homes */
  static const uint32_t w[8] = {1, 2, 3, 1, 2, 3, 1, 4};
  for (size_t i = 0; i < 8; i++) {
    fx_add(f, w[i], 0);
    fx_add(m, w[i], 0);
  }
  size_t at_home = 0;
  set_avail(f, 0, 0);
  set_avail(f, 2, 0);
  set_avail(f, 7, 0);
  const uint64_t c = 125; /* default balance factor, percent */
  for (int i = 0; i < 1500; i++) {
    if (i == 500) { /* one out, one back, loads in flight on both */
      set_avail(f, 5, 0);
      set_avail(f, 7, 1);
    }
    if (i == 1000) { /* a rebuild with two out: the sum is recomputed */
      assert_rc(ilb_replica_set_weight(f->pool, f->id[1], 5), ILB_OK);
      assert_rc(ilb_replica_set_weight(m->pool, m->id[1], 5), ILB_OK);
      f->weight[1] = m->weight[1] = 5;
    }
    if (i == 1250)
      set_avail(f, 0, 1);
    uint64_t T = f->n_held, W = 0;
    for (size_t s = 0; s < f->n; s++)
      if (!f->down[s])
        W += f->weight[s];
    int64_t before[MAX_R];
    memcpy(before, f->in_flight, sizeof before);
    uint64_t key = splitmix(&f->rng);
    size_t home = pick_once(m, REQ_KEY, key, "maglev mirror");
    size_t s = pick_ok(f, REQ_KEY, key, "chwbl");
    uint64_t bound = (c * (T + 1) * f->weight[s] + 100 * W - 1) / (100 * W);
    if ((uint64_t)before[s] >= bound)
      fail_msg("pick %d: chwbl placed on %s (weight %u) with %lld in flight, "
               "bound ceil(1.25 * %llu * %u / %llu) = %llu",
               i, f->id[s], f->weight[s], (long long)before[s],
               (unsigned long long)(T + 1), f->weight[s],
               (unsigned long long)W, (unsigned long long)bound);
    uint64_t hb =
        (c * (T + 1) * f->weight[home] + 100 * W - 1) / (100 * W);
    if (!f->down[home] && (uint64_t)before[home] < hb && s != home)
      fail_msg("pick %d: the key's home %s is available with %lld in flight "
               "below its bound ceil(1.25 * %llu * %u / %llu) = %llu, but "
               "chwbl chose %s",
               i, f->id[home], (long long)before[home],
               (unsigned long long)(T + 1), f->weight[home],
               (unsigned long long)W, (unsigned long long)hb, f->id[s]);
    at_home += s == home;
    /* Complete a random held one now and then: T moves both ways. */
    if (splitmix(&f->rng) % 4 == 0)
      complete_held(f, splitmix(&f->rng) % f->n_held, NULL);
  }
  assert_true(at_home > 300 && at_home < 1500); /* both paths ran */
  check_replicas(f, "chwbl");
  complete_all(f);
  fx_free(m);
  fx_free(f);
}

/* ------------------------------------------------------------------------ */
/* Callbacks and cost                                                        */
/* ------------------------------------------------------------------------ */

/* From inside any event of the same pool: ILB_EDEADLK, nothing changes. */
static void callback_is_edeadlk(void **state) {
  (void)state;
  fx *f = fx_new(ILB_POLICY_MAGLEV, 80);
  f->probe = 1;
  f->probe_available = 0;
  fx_add(f, 1, 0); /* ADDED */
  fx_add(f, 1, 0);
  assert_rc(ilb_replica_set_weight(f->pool, f->id[0], 4), ILB_OK); /* WEIGHT */
  f->probe_id = f->id[0];
  set_avail(f, 1, 0); /* STATE, probing another replica */
  f->probe_id = NULL;
  f->probe_available = 1;
  set_avail(f, 1, 1);                                   /* STATE */
  assert_rc(ilb_replica_remove(f->pool, f->id[1]), ILB_OK); /* REMOVED */
  f->present[1] = 0;
  assert_int_equal(f->n_ev, 6);
  for (size_t i = 0; i < f->n_ev; i++)
    if (f->ev[i].probe_rc != ILB_EDEADLK)
      fail_msg("set_available inside event %zu (type %d) = %d (%s), "
               "expected EDEADLK",
               i, f->ev[i].type, f->ev[i].probe_rc,
               ilb_err_name(f->ev[i].probe_rc));
  f->probe = 0;
  check_replicas(f, "after refused calls"); /* r00 still available */
  for (int k = 0; k < N_REQ; k++)
    assert_int_equal(pick_once(f, k, 1, "after refused calls"), 0);

  /* Another pool is writable from the callback. */
  fx *g = fx_new(ILB_POLICY_P2C, 81);
  fx_add(g, 1, 0);
  f->probe = 1;
  f->probe_target = g->pool;
  f->probe_id = g->id[0];
  f->probe_available = 0;
  size_t ev = f->n_ev;
  assert_rc(ilb_replica_set_weight(f->pool, f->id[0], 2), ILB_OK);
  assert_rc(f->ev[ev].probe_rc, ILB_OK);
  g->down[0] = 1;
  check_replicas(g, "set from another pool's callback");
  assert_int_equal(g->n_ev, 2); /* ADDED, STATE */
  assert_int_equal(g->ev[1].type, ILB_EVENT_REPLICA_STATE);
  pick_fails(g, REQ_NULL, 0, ILB_ENOREPLICA, "other pool");
  f->probe = 0;
  fx_free(g);
  fx_free(f);
}

typedef struct counting {
  long allocs;
} counting;

static void *count_alloc(size_t size, void *ud) {
  ((counting *)ud)->allocs++;
  return malloc(size);
}

static void count_free(void *ptr, void *ud) {
  (void)ud;
  free(ptr);
}

/* No allocation: set_available does not publish or rebuild anything. */
static void no_allocation(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    counting c = {0};
    ilb_host host;
    assert_rc(ilb_host_init(&host), ILB_OK);
    host.alloc = count_alloc;
    host.free = count_free;
    host.user_data = &c;
    ilb_pool *pool = NULL;
    assert_rc(ilb_pool_new(&pool, &host), ILB_OK);
    track_pool(pool);
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_MAGLEV_TABLE_SIZE, 101),
              ILB_OK);
    assert_rc(ilb_pool_set_option(pool, ILB_OPT_POLICY, all_policies[p]),
              ILB_OK);
    char id[8];
    ilb_replica_spec spec;
    for (int i = 0; i < 6; i++) {
      assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
      snprintf(id, sizeof id, "r%d", i);
      spec.id = id;
      assert_rc(ilb_replica_add(pool, &spec), ILB_OK);
    }
    long before = c.allocs;
    for (int k = 0; k < 200; k++) {
      snprintf(id, sizeof id, "r%d", k % 6);
      assert_rc(ilb_replica_set_available(pool, id, (k / 6) % 2), ILB_OK);
    }
    assert_rc(ilb_pool_batch_begin(pool), ILB_OK);
    assert_rc(ilb_replica_set_available(pool, "r1", 0), ILB_OK);
    assert_rc(ilb_replica_set_available(pool, "r1", 1), ILB_OK);
    assert_rc(ilb_pool_batch_commit(pool), ILB_OK); /* nothing to publish */
    if (c.allocs != before)
      fail_msg("%s: set_available made %ld allocations",
               ilb_policy_name(all_policies[p]), c.allocs - before);
    free_pool(pool);
  }
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SLOW_BUILD 1
#endif
#endif
/* The picker runs for at least THREAD_PICKS picks and until the toggler
 * has made MIN_TOGGLES changes (at most 50 * THREAD_PICKS picks). */
#ifdef SLOW_BUILD
#define THREAD_PICKS 4000
#define MIN_TOGGLES 1000
#else
#define THREAD_PICKS 20000
#define MIN_TOGGLES 5000
#endif

#define T_REPLICAS 8
#define T_DEAD 7 /* unavailable for the whole threaded phase */
#define T_HOLD 6

/* What the picker knows of a replica's availability: a word per replica,
 * sequence number << 2 | W_UP, W_DOWN or W_MOVING. The toggler stores
 * W_MOVING (a new sequence number) before each ilb_replica_set_available
 * and W_UP or W_DOWN after it returned. A picker that reads the same word
 * before a pick and after it has taken the pool mutex (ilb_pool_count)
 * knows the replica was in that state for the whole pick: a call that
 * changes it either takes the mutex after the picker (then the pick, which
 * came before, cannot have seen its change) or before (then its W_MOVING
 * store is visible after the picker's lock). */
enum { W_UP = 0, W_DOWN = 1, W_MOVING = 2 };
#define W_STATE(w) ((uint32_t)(w)&3u)

typedef struct tshared {
  ilb_pool *pool;
  char id[T_REPLICAS][16];
  uint32_t cap[T_REPLICAS];
  _Atomic uint32_t word[T_REPLICAS];
  atomic_int picker_done;
  pthread_barrier_t start;
  atomic_long errors, picks_ok, enoreplica, esaturated, toggles;
  pthread_mutex_t mu;
  char first[256];
  /* the toggler's final view */
  int down[T_REPLICAS];
} tshared;

static void terror(tshared *sh, const char *fmt, ...) {
  if (atomic_fetch_add(&sh->errors, 1) != 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&sh->mu);
  vsnprintf(sh->first, sizeof sh->first, fmt, ap);
  pthread_mutex_unlock(&sh->mu);
  va_end(ap);
}

typedef struct picker_arg {
  tshared *sh;
  uint64_t seed;
  int32_t policy;
} picker_arg;

static void *t_picker(void *argp) {
  picker_arg *a = argp;
  tshared *sh = a->sh;
  uint64_t rng = a->seed;
  uint64_t held[T_HOLD + 1];
  size_t n_held = 0;
  ilb_request req;
  ilb_request_init(&req);
  char key[32];
  pthread_barrier_wait(&sh->start);
  for (long i = 0; i < 50L * THREAD_PICKS; i++) {
    if (i >= THREAD_PICKS && atomic_load(&sh->toggles) >= MIN_TOGGLES)
      break;
    uint32_t before[T_REPLICAS];
    for (size_t s = 0; s < T_REPLICAS; s++)
      before[s] = atomic_load_explicit(&sh->word[s], memory_order_acquire);
    uint64_t r = splitmix(&rng);
    const ilb_request *rq = NULL;
    if (r % 10 < 7) { /* keyed, 1000 sessions */
      snprintf(key, sizeof key, "k%llu", (unsigned long long)(r >> 8) % 1000);
      req.key = key;
      req.key_len = strlen(key);
      rq = &req;
    }
    ilb_pick_result res;
    ilb_pick_result_init(&res);
    int rc = ilb_pick(&res, sh->pool, rq);
    if (rc == 0) {
      size_t s = (uintptr_t)res.host_data - 1;
      if (s >= T_REPLICAS || strcmp(res.replica_id, sh->id[s]) != 0) {
        terror(sh, "%s: pick returned an unknown replica",
               ilb_policy_name(a->policy));
        ilb_complete(sh->pool, res.ticket, NULL);
        continue;
      }
      if (s == T_DEAD)
        terror(sh, "%s: pick returned %s, unavailable throughout",
               ilb_policy_name(a->policy), sh->id[s]);
      if (W_STATE(before[s]) != W_UP) {
        size_t count;
        ilb_pool_count(&count, sh->pool); /* the mutex: see W_UP */
        uint32_t after =
            atomic_load_explicit(&sh->word[s], memory_order_acquire);
        if (after == before[s] && W_STATE(after) == W_DOWN)
          terror(sh, "%s: pick returned %s, unavailable from before the pick "
                     "began until after it ended (word %u)",
                 ilb_policy_name(a->policy), sh->id[s], after);
      }
      held[n_held++] = res.ticket;
      atomic_fetch_add_explicit(&sh->picks_ok, 1, memory_order_relaxed);
    } else if (rc == ILB_ENOREPLICA || rc == ILB_ESATURATED) {
      if (res.ticket != 0)
        terror(sh, "failed pick left ticket %llu",
               (unsigned long long)res.ticket);
      /* A replica available for the whole pick makes ENOREPLICA wrong, and
       * ESATURATED too when it has no capacity limit. */
      size_t count;
      ilb_pool_count(&count, sh->pool);
      for (size_t s = 0; s < T_REPLICAS; s++) {
        uint32_t after =
            atomic_load_explicit(&sh->word[s], memory_order_acquire);
        if (after != before[s] || W_STATE(after) != W_UP)
          continue;
        if (rc == ILB_ENOREPLICA || sh->cap[s] == 0)
          terror(sh, "%s: ilb_pick = %s while %s (capacity %u) was available "
                     "from before the pick began until after it ended",
                 ilb_policy_name(a->policy), ilb_err_name(rc), sh->id[s],
                 sh->cap[s]);
      }
      atomic_fetch_add_explicit(rc == ILB_ENOREPLICA ? &sh->enoreplica
                                                     : &sh->esaturated,
                                1, memory_order_relaxed);
    } else {
      terror(sh, "%s: ilb_pick = %s", ilb_policy_name(a->policy),
             ilb_err_name(rc));
    }
    size_t target = (size_t)(splitmix(&rng) % (T_HOLD + 1));
    while (n_held > target) {
      size_t k = splitmix(&rng) % n_held;
      rc = ilb_complete(sh->pool, held[k], NULL);
      if (rc != 0)
        terror(sh, "ilb_complete = %s", ilb_err_name(rc));
      held[k] = held[--n_held];
    }
  }
  while (n_held) {
    int rc = ilb_complete(sh->pool, held[--n_held], NULL);
    if (rc != 0)
      terror(sh, "ilb_complete = %s", ilb_err_name(rc));
  }
  atomic_store(&sh->picker_done, 1);
  return NULL;
}

typedef struct toggler_arg {
  tshared *sh;
  uint64_t seed;
} toggler_arg;

static void *t_toggler(void *argp) {
  toggler_arg *a = argp;
  tshared *sh = a->sh;
  uint64_t rng = a->seed;
  long n = 0;
  pthread_barrier_wait(&sh->start);
  while (!atomic_load(&sh->picker_done)) {
    size_t s = splitmix(&rng) % (T_REPLICAS - 1); /* never T_DEAD */
    int avail = sh->down[s];                     /* flip it */
    uint32_t seq =
        (atomic_load_explicit(&sh->word[s], memory_order_relaxed) >> 2) + 1;
    atomic_store_explicit(&sh->word[s], seq << 2 | W_MOVING,
                          memory_order_release);
    int rc = ilb_replica_set_available(sh->pool, sh->id[s], avail);
    if (rc != 0)
      terror(sh, "set_available(%s, %d) = %s", sh->id[s], avail,
             ilb_err_name(rc));
    atomic_store_explicit(&sh->word[s], seq << 2 | (avail ? W_UP : W_DOWN),
                          memory_order_release);
    sh->down[s] = !avail;
    n++;
    atomic_fetch_add_explicit(&sh->toggles, 1, memory_order_relaxed);
    if (n % 128 == 0) { /* a rebuild now and then */
      rc = ilb_replica_set_weight(sh->pool, sh->id[s],
                                  1 + (uint32_t)(splitmix(&rng) % 4));
      if (rc != 0)
        terror(sh, "set_weight = %s", ilb_err_name(rc));
    }
    ilb_replica_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (ilb_replica_get(&info, sh->pool, sh->id[s]) != 0 ||
        info.state != (sh->down[s] ? ILB_REPLICA_UNAVAILABLE
                                   : ILB_REPLICA_ACTIVE))
      terror(sh, "get %s: state %d after set_available", sh->id[s],
             info.state);
  }
  return NULL;
}

static void threaded_toggle_while_picking(void **state) {
  (void)state;
  for (size_t p = 0; p < N_POLICIES; p++) {
    tshared *sh = calloc(1, sizeof *sh);
    assert_non_null(sh);
    pthread_mutex_init(&sh->mu, NULL);
    assert_int_equal(pthread_barrier_init(&sh->start, NULL, 2), 0);
    ilb_host host;
    assert_rc(ilb_host_init(&host), ILB_OK);
    host.seed = 90 + p;
    assert_rc(ilb_pool_new(&sh->pool, &host), ILB_OK);
    track_pool(sh->pool);
    assert_rc(ilb_pool_set_option(sh->pool, ILB_OPT_MAX_IN_FLIGHT, 1024),
              ILB_OK);
    assert_rc(ilb_pool_set_option(sh->pool, ILB_OPT_MAGLEV_TABLE_SIZE, 257),
              ILB_OK);
    assert_rc(ilb_pool_set_option(sh->pool, ILB_OPT_POLICY, all_policies[p]),
              ILB_OK);
    for (size_t s = 0; s < T_REPLICAS; s++) {
      snprintf(sh->id[s], sizeof sh->id[s], "t%zu", s);
      ilb_replica_spec spec;
      assert_rc(ilb_replica_spec_init(&spec), ILB_OK);
      spec.id = sh->id[s];
      spec.weight = 1 + (uint32_t)(s % 3);
      spec.capacity = s % 4 == 1 ? 2 : 0; /* some full now and then */
      sh->cap[s] = spec.capacity;
      spec.host_data = (void *)(uintptr_t)(s + 1);
      assert_rc(ilb_replica_add(sh->pool, &spec), ILB_OK);
    }
    assert_rc(ilb_replica_set_available(sh->pool, sh->id[T_DEAD], 0), ILB_OK);
    sh->down[T_DEAD] = 1;
    atomic_store(&sh->word[T_DEAD], 1u << 2 | W_DOWN);

    picker_arg pa = {sh, 1000 + p, all_policies[p]};
    toggler_arg ta = {sh, 2000 + p};
    pthread_t pt, tt;
    assert_int_equal(pthread_create(&pt, NULL, t_picker, &pa), 0);
    assert_int_equal(pthread_create(&tt, NULL, t_toggler, &ta), 0);
    assert_int_equal(pthread_join(pt, NULL), 0);
    assert_int_equal(pthread_join(tt, NULL), 0);

    /* Quiescent: nothing in flight, states as the toggler left them. */
    for (size_t s = 0; s < T_REPLICAS; s++) {
      ilb_replica_info info = get_info(sh->pool, sh->id[s]);
      if (info.in_flight != 0)
        terror(sh, "after join: %s has %lld in flight", sh->id[s],
               (long long)info.in_flight);
      if (info.state !=
          (sh->down[s] ? ILB_REPLICA_UNAVAILABLE : ILB_REPLICA_ACTIVE))
        terror(sh, "after join: %s has state %d, expected %s", sh->id[s],
               info.state, sh->down[s] ? "UNAVAILABLE" : "ACTIVE");
    }
    printf("[ threads  ] %-22s %ld picks ok, %ld ENOREPLICA, %ld ESATURATED, "
           "%ld toggles\n",
           ilb_policy_name(all_policies[p]), atomic_load(&sh->picks_ok),
           atomic_load(&sh->enoreplica), atomic_load(&sh->esaturated),
           atomic_load(&sh->toggles));
    long errs = atomic_load(&sh->errors);
    char first[sizeof sh->first];
    memcpy(first, sh->first, sizeof first);
    long ok = atomic_load(&sh->picks_ok), toggles = atomic_load(&sh->toggles);
    long fails = atomic_load(&sh->enoreplica) + atomic_load(&sh->esaturated);
    free_pool(sh->pool);
    pthread_mutex_destroy(&sh->mu);
    pthread_barrier_destroy(&sh->start);
    free(sh);
    if (errs)
      fail_msg("%s: %ld errors; first: %s", ilb_policy_name(all_policies[p]),
               errs, first);
    /* Picks may all have failed (a toggler preempted with every replica
     * out): each failure was checked above. */
    assert_true(ok + fails >= THREAD_PICKS);
    assert_true(toggles > 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(errors),
      cmocka_unit_test(state_and_events),
      cmocka_unit_test(removed_unavailable_then_added),
      cmocka_unit_test(never_picks_unavailable),
      cmocka_unit_test(all_unavailable_is_enoreplica),
      cmocka_unit_test(in_flight_completes),
      cmocka_unit_test(batch_takes_effect_at_once),
      cmocka_unit_test(capacity_and_allow_over),
      cmocka_unit_test(hash_keys_move_only_from_unavailable),
      cmocka_unit_test(chwbl_bound_over_available_weight),
      cmocka_unit_test(callback_is_edeadlk),
      cmocka_unit_test(no_allocation),
      cmocka_unit_test(threaded_toggle_while_picking),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
