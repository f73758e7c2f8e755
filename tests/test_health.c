/*
 * Health and failure handling (since 0.4), through the public API only:
 *   1. active health: the probe state machine (table-driven: PASS / FAIL /
 *      NOT_READY sequences with rise / fall), ILB_EVENT_HEALTH, the HEALTH
 *      exclusion bit, picks never taking a non-healthy replica;
 *   2. ilb_next_due: exact schedules with jitter 0, jitter bounds, the cap,
 *      scrapes, no probes, the outlier interval as a deadline, bad args;
 *   3. passive outlier detection: consecutive gateway / 5xx streaks
 *      (table-driven), ejection at once, ILB_EVENT_EJECTED / RESTORED,
 *      ejection time base * n capped at max, n's growth and decay, the
 *      maximum ejection percentage, success-rate and failure-percentage
 *      ejection at the interval boundary;
 *   4. panic threshold; 5. slow start; 6. drain; 7. circuit breaker;
 *   11. a replica dying and coming back (scenario);
 *   12. names, ilb_strerror(ILB_ESHED), option bounds and defaults, bad
 *       arguments, EDEADLK from callbacks;
 *   13. a multi-threaded smoke test (pickers, a timer thread) with
 *       invariants checked at the end.
 * Retries and load shedding (8, 9, 10) are in test_retry.c.
 *
 * The host clock is fake (fake_ns below): every time-dependent assertion is
 * on fake time, none on wall-clock time. Pools are seeded; each test makes
 * its own pool. Jitter is set to 0 wherever a time is asserted exactly.
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

#define SEED UINT64_C(0x4ea17b0d5eed0042)

/* ------------------------------------------------------------------------ */
/* Fake clock, event log, pools, picks                                       */
/* ------------------------------------------------------------------------ */



/* Every event delivered, copied (the callback runs under the pool mutex,
 * so one pool's events never race each other). */
typedef struct {
  int32_t type, old_state, new_state, reason;
  int has_id;
  char id[32];
  void *host_data;
  uint64_t old_value, new_value, ts;
} ev_rec;

#define EV_MAX 8192
static ev_rec evs[EV_MAX];
static size_t n_evs;
static int ev_bad_size;

/* Optional streaming check of each replica's event sequence (r0..r7):
 * breaker events chain (each starts where the previous one ended), and
 * ejections alternate EJECTED, RESTORED, the restoration at least
 * seq_min_eject_ns after the ejection began. The first violation is kept
 * in seq_err. */
static int seq_check;
static uint64_t seq_brk[8], seq_ej_at[8], seq_min_eject_ns;
static int seq_ej[8];
static char seq_err[256];

static void seq_event(const ilb_event *e) {
  if (!e->replica_id || e->replica_id[0] != 'r' || e->replica_id[1] < '0' ||
      e->replica_id[1] > '7' || e->replica_id[2] != 0)
    return;
  int i = e->replica_id[1] - '0';
  char msg[256] = "";
  if (e->type == ILB_EVENT_REPLICA_ADDED) {
    seq_brk[i] = ILB_BREAKER_CLOSED;
    seq_ej[i] = 0;
  } else if (e->type == ILB_EVENT_BREAKER) {
    if (e->old_value != seq_brk[i])
      snprintf(msg, sizeof msg,
               "r%d: breaker event %s -> %s after one that ended in %s", i,
               ilb_breaker_name((int32_t)e->old_value),
               ilb_breaker_name((int32_t)e->new_value),
               ilb_breaker_name((int32_t)seq_brk[i]));
    seq_brk[i] = e->new_value;
  } else if (e->type == ILB_EVENT_EJECTED) {
    if (seq_ej[i])
      snprintf(msg, sizeof msg, "r%d: ejected twice, not restored between",
               i);
    seq_ej[i] = 1;
    seq_ej_at[i] = e->timestamp_ns;
  } else if (e->type == ILB_EVENT_RESTORED) {
    if (!seq_ej[i])
      snprintf(msg, sizeof msg,
               "r%d: restored (old_value %llu ns) without an ejection event",
               i, (unsigned long long)e->old_value);
    else if (e->timestamp_ns < seq_ej_at[i] + seq_min_eject_ns)
      snprintf(msg, sizeof msg, "r%d: restored %llu ns after its ejection",
               i, (unsigned long long)(e->timestamp_ns - seq_ej_at[i]));
    seq_ej[i] = 0;
  }
  if (msg[0] && !seq_err[0])
    memcpy(seq_err, msg, sizeof msg);
}

static void on_event(const ilb_event *e, void *user_data) {
  (void)user_data;
  if (seq_check)
    seq_event(e);
  if (e->struct_size != sizeof(ilb_event))
    ev_bad_size = 1;
  if (n_evs == EV_MAX)
    return;
  ev_rec *r = &evs[n_evs++];
  memset(r, 0, sizeof *r);
  r->type = e->type;
  r->old_state = e->old_state;
  r->new_state = e->new_state;
  r->reason = e->reason;
  r->has_id = e->replica_id != NULL;
  if (e->replica_id)
    snprintf(r->id, sizeof r->id, "%s", e->replica_id);
  r->host_data = e->replica_host_data;
  r->old_value = e->old_value;
  r->new_value = e->new_value;
  r->ts = e->timestamp_ns;
}

static void ev_clear(void) { n_evs = 0; }

static int ev_match(const ev_rec *r, int32_t type, const char *id) {
  return r->type == type && (!id || (r->has_id && !strcmp(r->id, id)));
}

/* Events of a type (and replica, unless id is NULL) since ev_clear. */
static size_t ev_count(int32_t type, const char *id) {
  size_t n = 0;
  for (size_t i = 0; i < n_evs; i++)
    n += (size_t)ev_match(&evs[i], type, id);
  return n;
}

static const ev_rec *ev_last(int32_t type, const char *id) {
  for (size_t i = n_evs; i-- > 0;)
    if (ev_match(&evs[i], type, id))
      return &evs[i];
  fail_msg("no event of type %d for %s", type, id ? id : "(any)");
  return NULL;
}

/* The only event of a type for a replica (asserting there is one). */
static const ev_rec *ev_one(int32_t type, const char *id) {
  size_t n = ev_count(type, id);
  if (n != 1)
    fail_msg("%zu events of type %d for %s, expected 1", n, type,
             id ? id : "(any)");
  return ev_last(type, id);
}

/* A pool with the fake clock (reset to T0), the event log (cleared), a
 * seed and a policy. */
static ilb_pool *new_pool(int32_t policy) {
  set_now(T0);
  ev_clear();
  seq_check = 0;
  seq_err[0] = 0;
  memset(seq_brk, 0, sizeof seq_brk);
  memset(seq_ej, 0, sizeof seq_ej);
  ev_bad_size = 0;
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.on_event = on_event;
  ilb_pool *p = fake_pool(SEED, &h);
  SET_OPT(p, ILB_OPT_POLICY, policy);
  return p;
}


static void add_n(ilb_pool *p, int n) {
  for (int i = 0; i < n; i++)
    add_replica(p, rname(i), 1, 0, (void *)(uintptr_t)(i + 1));
}

static ilb_replica_info info_of(ilb_pool *p, int i) {
  return get_info(p, rname(i));
}


static int pick_idx(ilb_pool *p, uint64_t *ticket) {
  int i;
  uint64_t t;
  assert_rc(try_pick(p, NULL, &i, &t), ILB_OK);
  if (ticket)
    *ticket = t;
  return i;
}

/* Pick until replica i comes up (completing the others with OK), and
 * return its ticket. Fails when it never does. */
static uint64_t pick_on(ilb_pool *p, int i) {
  for (int k = 0; k < 1000; k++) {
    uint64_t t;
    int got = pick_idx(p, &t);
    if (got == i)
      return t;
    assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  }
  fail_msg("replica r%d never picked", i);
  return 0;
}

/* n picks, each completed at once with OK, counted per replica. */
static void count_picks(ilb_pool *p, int n, int *counts, int n_reps) {
  memset(counts, 0, sizeof(int) * (size_t)n_reps);
  for (int k = 0; k < n; k++) {
    uint64_t t;
    int i = pick_idx(p, &t);
    assert_true(i >= 0 && i < n_reps);
    counts[i]++;
    assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  }
}


static void complete_with(ilb_pool *p, uint64_t t, int32_t status,
                          int32_t http) {
  ilb_outcome o = oc(status, http);
  assert_rc(ilb_complete(p, t, &o), ILB_OK);
}

/* Pick replica i and complete it with the outcome. */
static void fail_on(ilb_pool *p, int i, int32_t status, int32_t http) {
  complete_with(p, pick_on(p, i), status, http);
}

/* ilb_next_due once (up to 64 entries into *due if given); returns the
 * number due, *next the deadline. */
#define DUE_CAP 64
static size_t tick_due(ilb_pool *p, ilb_due *due, uint64_t *next) {
  ilb_due buf[DUE_CAP];
  size_t n = 99;
  uint64_t nx = 0;
  assert_rc(ilb_next_due(due ? due : buf, sizeof(ilb_due), DUE_CAP, &n, &nx,
                         p),
            ILB_OK);
  assert_true(n <= DUE_CAP);
  if (next)
    *next = nx;
  return n;
}

static uint64_t tick(ilb_pool *p) {
  uint64_t next;
  tick_due(p, NULL, &next);
  return next;
}

/* Act as a punctual host until time `until`: call ilb_next_due at every
 * deadline it returns (and at `until`). */
static void run_until(ilb_pool *p, uint64_t until) {
  for (int guard = 0;; guard++) {
    assert_true(guard < 1000000);
    uint64_t next = tick(p);
    if (now_ns() >= until)
      return;
    assert_true(next > now_ns());
    set_now(next < until ? next : until);
  }
}



/* ------------------------------------------------------------------------ */
/* 1. Active health state machine                                            */
/* ------------------------------------------------------------------------ */

enum { PASS = ILB_PROBE_PASS, FAIL = ILB_PROBE_FAIL, NREADY = ILB_PROBE_NOT_READY };
#define HK ILB_HEALTH_UNKNOWN
#define HH ILB_HEALTH_HEALTHY
#define HX ILB_HEALTH_UNHEALTHY
#define HS ILB_HEALTH_STARTING
#define NOEV (-1)
#define R_PASSED ILB_REASON_PROBE_PASSED
#define R_FAILED ILB_REASON_PROBE_FAILED
#define R_NREADY ILB_REASON_NOT_READY

typedef struct {
  int32_t result; /* -1 ends the sequence */
  int32_t health; /* expected after it */
  int32_t reason; /* of the ILB_EVENT_HEALTH it fires, NOEV for none */
} hstep;

typedef struct {
  const char *name;
  int32_t initial; /* ILB_OPT_HEALTH_INITIAL */
  int64_t rise, fall;
  hstep s[16];
} hcase;

#define END {-1, 0, 0}

static const hcase health_cases[] = {
    {"unknown: first pass is healthy", HK, 2, 3,
     {{PASS, HH, R_PASSED}, {PASS, HH, NOEV}, END}},
    {"unknown: fall failures make it unhealthy, rise passes back", HK, 2, 3,
     {{FAIL, HK, NOEV}, {FAIL, HK, NOEV}, {FAIL, HX, R_FAILED},
      {FAIL, HX, NOEV}, {PASS, HX, NOEV}, {PASS, HH, R_PASSED}, END}},
    {"unknown: failures then one pass", HK, 2, 3,
     {{FAIL, HK, NOEV}, {FAIL, HK, NOEV}, {PASS, HH, R_PASSED}, END}},
    {"unknown: not ready is starting at once", HK, 2, 3,
     {{NREADY, HS, R_NREADY}, {NREADY, HS, NOEV}, {PASS, HS, NOEV},
      {PASS, HH, R_PASSED}, END}},
    {"healthy: fall, then unhealthy -> starting at once", HH, 2, 3,
     {{FAIL, HH, NOEV}, {FAIL, HH, NOEV}, {FAIL, HX, R_FAILED},
      {PASS, HX, NOEV}, {NREADY, HS, R_NREADY}, {PASS, HS, NOEV},
      {PASS, HH, R_PASSED}, END}},
    {"healthy: a pass resets the fall count", HH, 2, 3,
     {{FAIL, HH, NOEV}, {FAIL, HH, NOEV}, {PASS, HH, NOEV}, {FAIL, HH, NOEV},
      {FAIL, HH, NOEV}, {FAIL, HX, R_FAILED}, END}},
    {"healthy: not ready fall times is starting", HH, 2, 3,
     {{NREADY, HH, NOEV}, {NREADY, HH, NOEV}, {NREADY, HS, R_NREADY},
      {NREADY, HS, NOEV}, {FAIL, HS, NOEV}, {FAIL, HS, NOEV},
      {FAIL, HX, R_FAILED}, END}},
    {"healthy: mixed non-passes are starting, not unhealthy", HH, 2, 3,
     {{FAIL, HH, NOEV}, {NREADY, HH, NOEV}, {FAIL, HS, R_NREADY},
      {FAIL, HS, NOEV}, {FAIL, HX, R_FAILED}, END}},
    {"starting: not ready restarts the failure count", HK, 2, 3,
     {{NREADY, HS, R_NREADY}, {FAIL, HS, NOEV}, {FAIL, HS, NOEV},
      {NREADY, HS, NOEV}, {FAIL, HS, NOEV}, {FAIL, HS, NOEV},
      {FAIL, HX, R_FAILED}, END}},
    {"unhealthy: rise 3, a failure restarts the rise count", HH, 3, 1,
     {{FAIL, HX, R_FAILED}, {PASS, HX, NOEV}, {PASS, HX, NOEV},
      {FAIL, HX, NOEV}, {PASS, HX, NOEV}, {PASS, HX, NOEV},
      {PASS, HH, R_PASSED}, END}},
    {"starting: not ready restarts the rise count", HK, 2, 3,
     {{NREADY, HS, R_NREADY}, {PASS, HS, NOEV}, {NREADY, HS, NOEV},
      {PASS, HS, NOEV}, {PASS, HH, R_PASSED}, END}},
    {"rise 1, fall 1", HH, 1, 1,
     {{FAIL, HX, R_FAILED}, {PASS, HH, R_PASSED}, {NREADY, HS, R_NREADY},
      {PASS, HH, R_PASSED}, {NREADY, HS, R_NREADY}, {FAIL, HX, R_FAILED},
      {NREADY, HS, R_NREADY}, END}},
};

static void run_health_case(const hcase *c) {
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_HEALTH_INITIAL, c->initial);
  SET_OPT(p, ILB_OPT_HEALTH_RISE, c->rise);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, c->fall);
  add_n(p, 2); /* r0 is probed, r1 stays as it is */
  if (c->initial != HH)
    assert_rc(ilb_health_report(p, "r1", PASS), ILB_OK);
  ilb_replica_info in = info_of(p, 0);
  if (in.health != c->initial)
    fail_msg("%s: initial health %d", c->name, in.health);
  int32_t prev = c->initial;
  for (size_t k = 0; c->s[k].result >= 0; k++) {
    const hstep *st = &c->s[k];
    advance(MS);
    ev_clear();
    assert_rc(ilb_health_report(p, "r0", st->result), ILB_OK);
    in = info_of(p, 0);
    if (in.health != st->health)
      fail_msg("%s, step %zu (%d): health %s, expected %s", c->name, k,
               st->result, ilb_health_name(in.health),
               ilb_health_name(st->health));
    int healthy = st->health == HH;
    if (((in.excluded & ILB_EXCLUDED_HEALTH) != 0) == healthy ||
        (in.excluded & ~(uint32_t)ILB_EXCLUDED_HEALTH) != 0)
      fail_msg("%s, step %zu: excluded 0x%x", c->name, k, in.excluded);
    assert_int_equal(in.state,
                     healthy ? ILB_REPLICA_ACTIVE : ILB_REPLICA_UNAVAILABLE);
    size_t n = ev_count(ILB_EVENT_HEALTH, NULL);
    if (st->reason == NOEV) {
      if (n != 0)
        fail_msg("%s, step %zu: %zu health events, expected none", c->name,
                 k, n);
    } else {
      if (n != 1)
        fail_msg("%s, step %zu: %zu health events, expected 1", c->name, k,
                 n);
      const ev_rec *e = ev_last(ILB_EVENT_HEALTH, "r0");
      if (e->reason != st->reason || e->old_value != (uint64_t)prev ||
          e->new_value != (uint64_t)st->health)
        fail_msg("%s, step %zu: event %s -> %s (%s), expected %s -> %s (%s)",
                 c->name, k, ilb_health_name((int32_t)e->old_value),
                 ilb_health_name((int32_t)e->new_value),
                 ilb_reason_name(e->reason), ilb_health_name(prev),
                 ilb_health_name(st->health), ilb_reason_name(st->reason));
      assert_int_equal(e->old_state, prev == HH ? ILB_REPLICA_ACTIVE
                                                : ILB_REPLICA_UNAVAILABLE);
      assert_int_equal(e->new_state, healthy ? ILB_REPLICA_ACTIVE
                                             : ILB_REPLICA_UNAVAILABLE);
      assert_u64(e->ts, now_ns());
      assert_ptr_equal(e->host_data, (void *)(uintptr_t)1);
    }
    /* picks take r0 exactly when it is healthy */
    int counts[2];
    count_picks(p, 8, counts, 2);
    if (counts[0] != (healthy ? 4 : 0))
      fail_msg("%s, step %zu: r0 got %d of 8 picks while %s", c->name, k,
               counts[0], ilb_health_name(st->health));
    prev = st->health;
  }
  assert_false(ev_bad_size);
  free_pool(p);
}

static void test_health_state_machine(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof health_cases / sizeof health_cases[0]; i++)
    run_health_case(&health_cases[i]);
}

/* Unknown replicas are not routable; only HEALTHY ones are, in every
 * policy; ilb_pool_health counts them. */
static void test_unknown_not_routable(void **state) {
  (void)state;
  for (size_t k = 0; k < N_POLICIES; k++) {
    ilb_pool *p = new_pool(all_policies[k]);
    SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
    SET_OPT(p, ILB_OPT_HEALTH_INITIAL, ILB_HEALTH_UNKNOWN);
    add_n(p, 3);
    ilb_request req;
    assert_rc(ilb_request_init(&req), ILB_OK);
    req.key = "k";
    req.key_len = 1;
    int i;
    uint64_t t;
    assert_rc(try_pick(p, &req, &i, &t), ILB_ENOREPLICA);
    ilb_pool_status st = pstat(p);
    assert_int_equal(st.replicas, 3);
    assert_int_equal(st.healthy, 0);
    assert_int_equal(st.eligible, 0);
    assert_rc(ilb_health_report(p, "r1", ILB_PROBE_PASS), ILB_OK);
    for (int n = 0; n < 50; n++) {
      char key[8];
      snprintf(key, sizeof key, "k%d", n);
      req.key = key;
      req.key_len = strlen(key);
      assert_rc(try_pick(p, &req, &i, &t), ILB_OK);
      if (i != 1)
        fail_msg("%s: picked r%d, which is unknown",
                 ilb_policy_name(all_policies[k]), i);
      assert_rc(ilb_complete(p, t, NULL), ILB_OK);
    }
    st = pstat(p);
    assert_int_equal(st.healthy, 1);
    assert_int_equal(st.eligible, 1);
    assert_int_equal(info_of(p, 0).excluded, ILB_EXCLUDED_HEALTH);
    assert_int_equal(info_of(p, 1).excluded, 0);
    free_pool(p);
  }
}

/* ilb_health_report: bad arguments change nothing. */
static void test_health_report_args(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  add_n(p, 1);
  assert_rc(ilb_health_report(NULL, "r0", ILB_PROBE_FAIL), ILB_EINVAL);
  assert_rc(ilb_health_report(p, NULL, ILB_PROBE_FAIL), ILB_EINVAL);
  assert_rc(ilb_health_report(p, "r0", -1), ILB_EINVAL);
  assert_rc(ilb_health_report(p, "r0", 3), ILB_EINVAL);
  assert_rc(ilb_health_report(p, "nope", ILB_PROBE_FAIL), ILB_ENOENT);
  assert_rc(ilb_health_report(p, "", ILB_PROBE_FAIL), ILB_EINVAL);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  /* none of the above counted as a failure */
  assert_int_equal(info_of(p, 0).health, ILB_HEALTH_HEALTHY);
  assert_int_equal(ev_count(ILB_EVENT_HEALTH, NULL), 0);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(info_of(p, 0).health, ILB_HEALTH_UNHEALTHY);
  /* a removed replica */
  assert_rc(ilb_replica_remove(p, "r0"), ILB_OK);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_ENOENT);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 2. ilb_next_due                                                           */
/* ------------------------------------------------------------------------ */

/* Options for exact schedules: no jitter, probes every 5 s (2 s when not
 * healthy), outlier interval 10 s. */
static void exact_schedule(ilb_pool *p) {
  SET_OPT(p, ILB_OPT_PROBE_JITTER_PERCENT, 0);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 5000);
  SET_OPT(p, ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS, 2000);
  SET_OPT(p, ILB_OPT_OUTLIER_INTERVAL_MS, 10000);
}

static void assert_due(const ilb_due *d, int i, int32_t kind, int32_t health) {
  assert_non_null(d->replica_id);
  if (strcmp(d->replica_id, rname(i)) || d->kind != kind ||
      d->health != health)
    fail_msg("due %s kind %d health %d, expected %s kind %d health %d",
             d->replica_id, d->kind, d->health, rname(i), kind, health);
  assert_ptr_equal(d->host_data, (void *)(uintptr_t)(i + 1));
}

static void test_next_due_exact(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  exact_schedule(p);
  add_n(p, 1);
  ilb_due d[DUE_CAP];
  uint64_t next;
  /* initial delay 0: due at once */
  assert_int_equal(tick_due(p, d, &next), 1);
  assert_due(&d[0], 0, ILB_DUE_PROBE, HH);
  assert_u64(next, T0 + 5 * SEC);
  /* listed once: not again before its interval */
  assert_int_equal(tick_due(p, d, &next), 0);
  assert_u64(next, T0 + 5 * SEC);
  set_now(T0 + 5 * SEC - 1);
  assert_int_equal(tick_due(p, d, &next), 0);
  assert_u64(next, T0 + 5 * SEC);
  set_now(T0 + 5 * SEC);
  assert_int_equal(tick_due(p, d, &next), 1);
  assert_due(&d[0], 0, ILB_DUE_PROBE, HH);
  assert_u64(next, T0 + 10 * SEC); /* probe and outlier interval */
  /* going unhealthy moves the next probe to the 2 s interval */
  set_now(T0 + 6 * SEC);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(tick_due(p, d, &next), 0);
  assert_u64(next, T0 + 8 * SEC);
  set_now(T0 + 8 * SEC);
  assert_int_equal(tick_due(p, d, &next), 1);
  assert_due(&d[0], 0, ILB_DUE_PROBE, HX);
  assert_u64(next, T0 + 10 * SEC);
  set_now(T0 + 10 * SEC);
  assert_int_equal(tick_due(p, d, &next), 1);
  assert_due(&d[0], 0, ILB_DUE_PROBE, HX);
  assert_u64(next, T0 + 12 * SEC);
  free_pool(p);
}

/* ILB_OPT_PROBE_INITIAL_DELAY_MS, and the unhealthy interval from the
 * start for replicas added UNKNOWN. */
static void test_next_due_initial_delay(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  exact_schedule(p);
  SET_OPT(p, ILB_OPT_PROBE_INITIAL_DELAY_MS, 1500);
  SET_OPT(p, ILB_OPT_HEALTH_INITIAL, ILB_HEALTH_UNKNOWN);
  add_n(p, 1);
  ilb_due d[DUE_CAP];
  uint64_t next;
  assert_int_equal(tick_due(p, d, &next), 0);
  assert_u64(next, T0 + 1500 * MS);
  set_now(T0 + 1500 * MS);
  assert_int_equal(tick_due(p, d, &next), 1);
  assert_due(&d[0], 0, ILB_DUE_PROBE, HK);
  assert_u64(next, T0 + 3500 * MS);
  /* a replica added later waits its own delay */
  set_now(T0 + 2 * SEC);
  add_replica(p, "r1", 1, 0, (void *)(uintptr_t)2);
  assert_int_equal(tick_due(p, d, &next), 0);
  assert_u64(next, T0 + 3500 * MS);
  set_now(T0 + 3500 * MS);
  assert_int_equal(tick_due(p, d, &next), 2); /* r0 again, r1's first */
  for (size_t k = 0; k < 2; k++)
    assert_due(&d[k], (int)k, ILB_DUE_PROBE, HK);
  assert_u64(next, T0 + 5500 * MS);
  /* healthy: the healthy interval (the next probe stays where it was) */
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_OK);
  assert_int_equal(tick_due(p, d, &next), 0);
  assert_u64(next, T0 + 5500 * MS);
  set_now(T0 + 5500 * MS);
  assert_int_equal(tick_due(p, d, &next), 2);
  for (size_t k = 0; k < 2; k++)
    assert_due(&d[k], (int)k, ILB_DUE_PROBE, k == 0 ? HH : HK);
  assert_u64(next, T0 + 7500 * MS); /* r1 in 2 s, r0 in 5 s */
  set_now(T0 + 7500 * MS);
  assert_int_equal(tick_due(p, d, &next), 1);
  assert_due(&d[0], 1, ILB_DUE_PROBE, HK);
  assert_u64(next, T0 + 9500 * MS);
  free_pool(p);
}

/* With jitter j%, each replica's probes come every [iv, iv * (1 + j%)]. */
static void test_next_due_jitter(void **state) {
  (void)state;
  static const struct {
    int32_t initial;
    int64_t healthy_iv, unhealthy_iv, jitter;
  } cases[] = {
      {HH, 1000, 2000, 20},
      {HK, 5000, 1000, 50},
      {HH, 700, 100, 100},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
    SET_OPT(p, ILB_OPT_HEALTH_INITIAL, cases[c].initial);
    SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, cases[c].healthy_iv);
    SET_OPT(p, ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS, cases[c].unhealthy_iv);
    SET_OPT(p, ILB_OPT_PROBE_JITTER_PERCENT, cases[c].jitter);
    add_n(p, 4);
    uint64_t iv = (uint64_t)(cases[c].initial == HH ? cases[c].healthy_iv
                                                    : cases[c].unhealthy_iv) *
                  MS;
    uint64_t hi = iv + iv * (uint64_t)cases[c].jitter / 100;
    /* the first probes spread over the jitter of an interval */
    uint64_t longer = (uint64_t)(cases[c].healthy_iv > cases[c].unhealthy_iv
                                     ? cases[c].healthy_iv
                                     : cases[c].unhealthy_iv) *
                      MS;
    uint64_t first_max = longer * (uint64_t)cases[c].jitter / 100;
    uint64_t last[4] = {0, 0, 0, 0}, dmin = UINT64_MAX, dmax = 0;
    int seen = 0;
    while (now_ns() < T0 + 200 * iv) {
      ilb_due d[DUE_CAP];
      uint64_t next;
      size_t n = tick_due(p, d, &next);
      for (size_t k = 0; k < n; k++) {
        assert_int_equal(d[k].kind, ILB_DUE_PROBE);
        int i = (int)((uintptr_t)d[k].host_data - 1);
        assert_true(i >= 0 && i < 4);
        if (last[i]) {
          uint64_t delta = now_ns() - last[i];
          if (delta < iv || delta > hi)
            fail_msg("case %zu: r%d probed %llu ns after the last, expected "
                     "[%llu, %llu]",
                     c, i, (unsigned long long)delta, (unsigned long long)iv,
                     (unsigned long long)hi);
          dmin = delta < dmin ? delta : dmin;
          dmax = delta > dmax ? delta : dmax;
          seen++;
        } else if (now_ns() > T0 + first_max) {
          fail_msg("case %zu: r%d first probed at +%llu ns", c, i,
                   (unsigned long long)(now_ns() - T0));
        }
        last[i] = now_ns();
      }
      assert_true(next > now_ns());
      set_now(next);
    }
    assert_true(seen > 4 * 100);
    /* the jitter is used: intervals differ, and some come late */
    assert_true(dmin < dmax);
    assert_true(dmax > iv + (hi - iv) / 2);
    free_pool(p);
  }
}

/* More due than cap: *next is now, the rest come at the next call. */
static void test_next_due_cap(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  exact_schedule(p);
  add_n(p, 3);
  ilb_due d[4];
  size_t n = 0;
  uint64_t next = 0;
  /* cap 0, due NULL: nothing listed, call again now */
  assert_rc(ilb_next_due(NULL, sizeof(ilb_due), 0, &n, &next, p), ILB_OK);
  assert_int_equal(n, 0);
  assert_u64(next, T0);
  assert_rc(ilb_next_due(d, sizeof(ilb_due), 2, &n, &next, p), ILB_OK);
  assert_int_equal(n, 2);
  assert_u64(next, T0);
  int seen[3] = {0, 0, 0};
  for (size_t k = 0; k < n; k++)
    seen[(uintptr_t)d[k].host_data - 1]++;
  assert_rc(ilb_next_due(d, sizeof(ilb_due), 2, &n, &next, p), ILB_OK);
  assert_int_equal(n, 1);
  assert_u64(next, T0 + 5 * SEC);
  seen[(uintptr_t)d[0].host_data - 1]++;
  for (int i = 0; i < 3; i++)
    assert_int_equal(seen[i], 1);
  assert_rc(ilb_next_due(d, sizeof(ilb_due), 2, &n, &next, p), ILB_OK);
  assert_int_equal(n, 0);
  /* next_ns_out may be NULL */
  set_now(T0 + 5 * SEC);
  assert_rc(ilb_next_due(d, sizeof(ilb_due), 4, &n, NULL, p), ILB_OK);
  assert_int_equal(n, 3);
  free_pool(p);
}

/* Scrapes: ILB_DUE_SCRAPE at their own interval; with probes off, only
 * scrapes. */
static void test_next_due_scrape(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  exact_schedule(p);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_SCRAPE_INTERVAL_MS, 3000);
  SET_OPT(p, ILB_OPT_OUTLIER_INTERVAL_MS, 86400000);
  add_n(p, 2);
  ilb_due d[DUE_CAP];
  uint64_t next;
  int scrapes = 0;
  for (uint64_t t = 0; t <= 30; t += 3) {
    set_now(T0 + t * SEC);
    size_t n = tick_due(p, d, &next);
    assert_int_equal(n, 2);
    for (size_t k = 0; k < n; k++)
      assert_due(&d[k], (int)k, ILB_DUE_SCRAPE, HH);
    scrapes += (int)n;
    assert_u64(next, T0 + (t + 3) * SEC);
  }
  assert_int_equal(scrapes, 22);
  free_pool(p);

  /* both kinds */
  p = new_pool(ILB_POLICY_ROUND_ROBIN);
  exact_schedule(p);
  SET_OPT(p, ILB_OPT_SCRAPE_INTERVAL_MS, 3000);
  add_n(p, 1);
  assert_int_equal(tick_due(p, d, &next), 2);
  int kinds = 0;
  for (int k = 0; k < 2; k++)
    kinds |= 1 << d[k].kind;
  assert_int_equal(kinds, (1 << ILB_DUE_PROBE) | (1 << ILB_DUE_SCRAPE));
  assert_u64(next, T0 + 3 * SEC);
  set_now(T0 + 3 * SEC);
  assert_int_equal(tick_due(p, d, &next), 1);
  assert_due(&d[0], 0, ILB_DUE_SCRAPE, HH);
  assert_u64(next, T0 + 5 * SEC);
  free_pool(p);
}

/* PROBE_INTERVAL 0: no probe is ever asked for (not even for unknown or
 * unhealthy replicas). With nothing else scheduled the deadline is
 * UINT64_MAX; the outlier interval is a deadline only while an interval
 * analysis is on (or an ejection count has to decay). */
/* While completions can change something (passive health or breakers on,
 * a drain in progress), ilb_next_due asks to be called within a second. */
static uint64_t capped(uint64_t want) {
  uint64_t c = now_ns() + SEC;
  return want < c ? want : c;
}

static void test_next_due_no_probes(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  exact_schedule(p);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_HEALTH_INITIAL, ILB_HEALTH_UNKNOWN);
  uint64_t next;
  /* empty pool */
  assert_int_equal(tick_due(p, NULL, &next), 0);
  assert_u64(next, UINT64_MAX);
  add_n(p, 3);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_FAIL), ILB_OK);
  for (uint64_t t = 0; t < 30; t++) {
    set_now(T0 + t * SEC);
    assert_int_equal(tick_due(p, NULL, &next), 0);
    assert_u64(next, UINT64_MAX);
  }
  /* an analysis on: the interval, from the first call that needs it */
  SET_OPT(p, ILB_OPT_OUTLIER_FAILURE_PERCENT, 90);
  uint64_t start = now_ns();
  for (uint64_t t = 0; t < 30; t++) {
    set_now(start + t * SEC);
    assert_int_equal(tick_due(p, NULL, &next), 0);
    assert_u64(next, capped(start + (t / 10 + 1) * 10 * SEC));
  }
  SET_OPT(p, ILB_OPT_OUTLIER_FAILURE_PERCENT, 0);
  assert_int_equal(tick_due(p, NULL, &next), 0);
  assert_u64(next, UINT64_MAX);
  /* a timer of its own: the deadline is that, not the interval */
  SET_OPT(p, ILB_OPT_SCRAPE_INTERVAL_MS, 60000);
  assert_int_equal(tick_due(p, NULL, &next), 3);
  assert_u64(next, now_ns() + 60 * SEC);
  free_pool(p);
}

/* An ejection count to decay keeps the outlier interval running; once it
 * is 0 the deadline is UINT64_MAX again. */
static void test_next_due_interval_for_decay(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_INTERVAL_MS, 10000);
  SET_OPT(p, ILB_OPT_OUTLIER_BASE_EJECTION_MS, 3000);
  SET_OPT(p, ILB_OPT_OUTLIER_JITTER_PERCENT, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 1);
  add_n(p, 2);
  assert_u64(tick(p), capped(UINT64_MAX)); /* an ejection may come */
  ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_rc(ilb_complete(p, pick_on(p, 0), &o), ILB_OK);
  /* no more ejections: only the timers that exist set the deadline */
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 0);
  /* ejected until T0 + 3 s; the interval from now */
  assert_u64(tick(p), T0 + 3 * SEC);
  set_now(T0 + 3 * SEC);
  assert_u64(tick(p), T0 + 10 * SEC);
  assert_int_equal(info_of(p, 0).ejections, 1);
  /* the count decays once an interval has passed after the ejection */
  run_until(p, T0 + 30 * SEC);
  assert_int_equal(info_of(p, 0).ejections, 0);
  assert_u64(tick(p), UINT64_MAX);
  free_pool(p);
}

static void test_next_due_args(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  exact_schedule(p);
  add_n(p, 1);
  ilb_due d[2];
  size_t n = 7;
  uint64_t next = 0;
  assert_rc(ilb_next_due(d, sizeof(ilb_due), 2, &n, &next, NULL), ILB_EINVAL);
  assert_rc(ilb_next_due(d, sizeof(ilb_due), 2, NULL, &next, p), ILB_EINVAL);
  assert_rc(ilb_next_due(NULL, sizeof(ilb_due), 1, &n, &next, p), ILB_EINVAL);
  assert_rc(ilb_next_due(d, sizeof(ilb_due) - 1, 2, &n, &next, p),
            ILB_ESIZE);
  assert_rc(ilb_next_due(d, 0, 1, &n, &next, p), ILB_ESIZE);
  assert_rc(ilb_next_due(d, offsetof(ilb_due, health), 1, &n, &next, p),
            ILB_ESIZE);
  /* none of that consumed the due probe */
  assert_rc(ilb_next_due(d, sizeof(ilb_due), 2, &n, &next, p), ILB_OK);
  assert_int_equal(n, 1);
  free_pool(p);
}

/* due_size is the caller's sizeof(ilb_due): the stride of due[]; each
 * entry is filled up to min(due_size, the library's size), the rest of
 * the caller's entry left alone. With cap 0, due and due_size may be
 * anything. */
static void test_next_due_stride(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  exact_schedule(p);
  add_n(p, 3);
  size_t n = 9;
  uint64_t next;
  assert_rc(ilb_next_due(NULL, 0, 0, &n, &next, p), ILB_OK);
  assert_int_equal(n, 0);
  assert_u64(next, T0); /* 3 due, none listed */
  ilb_due d0[1];
  assert_rc(ilb_next_due(d0, 1, 0, &n, &next, p), ILB_OK);
  assert_int_equal(n, 0);
  /* a newer caller's larger entries */
  const size_t stride = sizeof(ilb_due) + 16;
  unsigned char buf[4 * (sizeof(ilb_due) + 16)];
  memset(buf, 0xA5, sizeof buf);
  assert_rc(ilb_next_due((ilb_due *)(void *)buf, stride, 4, &n, &next, p),
            ILB_OK);
  assert_int_equal(n, 3);
  assert_u64(next, T0 + 5 * SEC);
  for (size_t k = 0; k < 4; k++) {
    ilb_due e;
    memcpy(&e, buf + k * stride, sizeof e);
    if (k < 3)
      assert_due(&e, (int)k, ILB_DUE_PROBE, HH);
    for (size_t j = k < 3 ? sizeof(ilb_due) : 0; j < stride; j++)
      if (buf[k * stride + j] != 0xA5)
        fail_msg("entry %zu byte %zu written", k, j);
  }
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 3. Passive outlier detection                                              */
/* ------------------------------------------------------------------------ */

typedef struct {
  int32_t status, http;
} outc;

#define O_OK {ILB_OUTCOME_OK, 0}
#define O_CE {ILB_OUTCOME_CONNECT_ERROR, 0}
#define O_TO {ILB_OUTCOME_TIMEOUT, 0}
#define O_REF {ILB_OUTCOME_REFUSED, 0}
#define O_503 {ILB_OUTCOME_HTTP_ERROR, 503}
#define O_H0 {ILB_OUTCOME_HTTP_ERROR, 0}
#define O_OK500 {ILB_OUTCOME_OK, 500}
#define O_404 {ILB_OUTCOME_HTTP_ERROR, 404}
#define O_429 {ILB_OUTCOME_HTTP_ERROR, 429}
#define O_CAN {ILB_OUTCOME_CANCELLED, 0}
#define O_END {-1, 0}

typedef struct {
  const char *name;
  int64_t c5xx, cgw; /* thresholds */
  outc seq[12];
  int32_t reason; /* of the ejection; NOEV = not ejected */
} streak_case;

static const streak_case streak_cases[] = {
    {"gateway: connect, timeout, refused", 0, 3,
     {O_CE, O_TO, O_REF, O_END}, ILB_REASON_CONSECUTIVE_GATEWAY},
    {"gateway: a success resets", 0, 3,
     {O_CE, O_CE, O_OK, O_CE, O_CE, O_END}, NOEV},
    {"gateway: a 4xx is a success", 0, 3,
     {O_CE, O_CE, O_404, O_CE, O_CE, O_END}, NOEV},
    {"gateway: cancelled counts as nothing", 0, 3,
     {O_CE, O_CE, O_CAN, O_CE, O_END}, ILB_REASON_CONSECUTIVE_GATEWAY},
    {"gateway: 5xx are not gateway failures", 0, 3,
     {O_503, O_503, O_503, O_503, O_503, O_END}, NOEV},
    {"gateway: threshold 1", 0, 1, {O_REF, O_END},
     ILB_REASON_CONSECUTIVE_GATEWAY},
    {"5xx: 503, HTTP_ERROR 0, OK with 500", 3, 0,
     {O_503, O_H0, O_OK500, O_END}, ILB_REASON_CONSECUTIVE_5XX},
    {"5xx: gateway failures are errors too", 3, 0,
     {O_503, O_CE, O_503, O_END}, ILB_REASON_CONSECUTIVE_5XX},
    {"5xx: a success resets", 3, 0,
     {O_503, O_503, O_OK, O_503, O_503, O_END}, NOEV},
    {"5xx: a 429 is a success", 3, 0,
     {O_503, O_503, O_429, O_503, O_503, O_END}, NOEV},
    {"5xx: cancelled counts as nothing", 3, 0,
     {O_503, O_503, O_CAN, O_503, O_END}, ILB_REASON_CONSECUTIVE_5XX},
    {"5xx: 4xx never eject", 3, 0,
     {O_404, O_404, O_404, O_404, O_404, O_END}, NOEV},
    {"off: both thresholds 0", 0, 0,
     {O_CE, O_CE, O_CE, O_503, O_503, O_503, O_CE, O_CE, O_END}, NOEV},
};

static void test_outlier_streaks(void **state) {
  (void)state;
  for (size_t c = 0; c < sizeof streak_cases / sizeof streak_cases[0]; c++) {
    const streak_case *sc = &streak_cases[c];
    ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
    SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
    SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
    SET_OPT(p, ILB_OPT_OUTLIER_JITTER_PERCENT, 0);
    SET_OPT(p, ILB_OPT_OUTLIER_BASE_EJECTION_MS, 7000);
    SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_5XX, sc->c5xx);
    SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, sc->cgw);
    add_n(p, 4);
    tick(p);
    uint64_t last = 0;
    size_t n_err = 0;
    for (size_t k = 0; sc->seq[k].status >= 0; k++) {
      advance(MS);
      fail_on(p, 0, sc->seq[k].status, sc->seq[k].http);
      last = now_ns();
      n_err += !(sc->seq[k].status == ILB_OUTCOME_OK &&
                 sc->seq[k].http < 500) &&
               sc->seq[k].status != ILB_OUTCOME_CANCELLED &&
               !(sc->seq[k].status == ILB_OUTCOME_HTTP_ERROR &&
                 sc->seq[k].http >= 400 && sc->seq[k].http < 500);
    }
    ilb_replica_info in = info_of(p, 0);
    assert_u64(in.errors, n_err);
    int ejected = (in.excluded & ILB_EXCLUDED_EJECTED) != 0;
    if (ejected != (sc->reason != NOEV))
      fail_msg("%s: ejected %d", sc->name, ejected);
    /* at once: the next picks, before any ilb_next_due */
    int counts[4];
    count_picks(p, 40, counts, 4);
    if (counts[0] != (ejected ? 0 : 10))
      fail_msg("%s: r0 got %d of 40 picks", sc->name, counts[0]);
    assert_int_equal(ev_count(ILB_EVENT_EJECTED, NULL), 0);
    assert_int_equal(pstat(p).ejected, (uint32_t)ejected);
    advance(SEC);
    ev_clear();
    tick(p);
    if (!ejected) {
      assert_int_equal(ev_count(ILB_EVENT_EJECTED, NULL), 0);
      free_pool(p);
      continue;
    }
    const ev_rec *e = ev_one(ILB_EVENT_EJECTED, "r0");
    if (e->reason != sc->reason)
      fail_msg("%s: reason %s", sc->name, ilb_reason_name(e->reason));
    assert_u64(e->new_value, 7000 * MS);
    assert_u64(e->old_value, 1);
    assert_u64(e->ts, last); /* when it happened */
    assert_int_equal(e->old_state, ILB_REPLICA_ACTIVE); /* before it */
    assert_int_equal(e->new_state, ILB_REPLICA_UNAVAILABLE);
    assert_ptr_equal(e->host_data, (void *)(uintptr_t)1);
    assert_int_equal(info_of(p, 0).ejections, 1);
    /* reported once */
    ev_clear();
    tick(p);
    assert_int_equal(ev_count(ILB_EVENT_EJECTED, NULL), 0);
    free_pool(p);
  }
}

/* Options for ejection timing: 3 gateway failures eject, no jitter, no
 * probes, no panic. */
static ilb_pool *ejection_pool(int n, int64_t base_ms, int64_t max_ms,
                               int64_t interval_ms) {
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_JITTER_PERCENT, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 3);
  SET_OPT(p, ILB_OPT_OUTLIER_BASE_EJECTION_MS, base_ms);
  SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_MS, max_ms);
  SET_OPT(p, ILB_OPT_OUTLIER_INTERVAL_MS, interval_ms);
  add_n(p, n);
  tick(p);
  return p;
}

/* Eject r0 (3 connect errors now), report it, check the event; returns
 * the ejection's end. */
static uint64_t eject_r0(ilb_pool *p, uint32_t want_n, uint64_t want_ns) {
  ev_clear();
  for (int k = 0; k < 3; k++)
    fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  uint64_t at = now_ns();
  assert_true(info_of(p, 0).excluded & ILB_EXCLUDED_EJECTED);
  tick(p);
  const ev_rec *e = ev_one(ILB_EVENT_EJECTED, "r0");
  if (e->old_value != want_n || e->new_value != want_ns)
    fail_msg("ejection: count %llu for %llu ns, expected count %u for %llu "
             "ns (min(base * n, max))",
             (unsigned long long)e->old_value,
             (unsigned long long)e->new_value, want_n,
             (unsigned long long)want_ns);
  assert_int_equal(e->reason, ILB_REASON_CONSECUTIVE_GATEWAY);
  assert_int_equal(info_of(p, 0).ejections, want_n);
  return at + want_ns;
}

/* Run to the ejection's end: RESTORED then, not a nanosecond before. */
static void expect_restored(ilb_pool *p, uint64_t until, uint64_t length) {
  ev_clear();
  run_until(p, until - 1);
  assert_int_equal(ev_count(ILB_EVENT_RESTORED, NULL), 0);
  assert_true(info_of(p, 0).excluded & ILB_EXCLUDED_EJECTED);
  run_until(p, until);
  const ev_rec *e = ev_one(ILB_EVENT_RESTORED, "r0");
  assert_int_equal(e->reason, ILB_REASON_EJECTION_EXPIRED);
  assert_u64(e->old_value, length);
  assert_u64(e->ts, until);
  assert_int_equal(e->old_state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(e->new_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(info_of(p, 0).excluded, 0);
  int counts[4];
  count_picks(p, 8, counts, 4);
  assert_int_equal(counts[0], 2);
}

/* base 10 s, max 30 s: 10, 20, 30, 30 s; then n decays by one per clean
 * interval (20 s), never below 0, and the next ejection is short again. */
static void test_ejection_growth_and_decay(void **state) {
  (void)state;
  ilb_pool *p = ejection_pool(4, 10000, 30000, 20000);
  static const uint64_t want[] = {10, 20, 30, 30};
  uint64_t end = 0;
  for (uint32_t n = 1; n <= 4; n++) {
    advance(MS);
    end = eject_r0(p, n, want[n - 1] * SEC);
    expect_restored(p, end, want[n - 1] * SEC);
  }
  /* decay: after each interval spent neither ejected nor ejected again */
  uint64_t iv = 20 * SEC;
  assert_int_equal(info_of(p, 0).ejections, 4);
  run_until(p, end + iv - 1);
  assert_int_equal(info_of(p, 0).ejections, 4);
  for (uint32_t k = 1; k <= 4; k++) {
    run_until(p, end + (k + 1) * iv - 1);
    if (info_of(p, 0).ejections != 4 - k)
      fail_msg("%u intervals after the ejection: count %u, expected %u", k,
               info_of(p, 0).ejections, 4 - k);
  }
  run_until(p, end + 20 * iv);
  assert_int_equal(info_of(p, 0).ejections, 0);
  /* decayed to 0: the next ejection lasts base again */
  end = eject_r0(p, 1, 10 * SEC);
  expect_restored(p, end, 10 * SEC);
  /* partly decayed (n 2 -> 1): the next one is the 2nd again */
  advance(MS);
  end = eject_r0(p, 2, 20 * SEC);
  expect_restored(p, end, 20 * SEC);
  run_until(p, end + 2 * iv - 1);
  assert_int_equal(info_of(p, 0).ejections, 1);
  end = eject_r0(p, 2, 20 * SEC);
  free_pool(p);
}

/* min(base * n, max) when max is not a multiple of base: base 10 s,
 * max 25 s -> 10, 20, 25 s. */
static void test_ejection_cap_not_multiple(void **state) {
  (void)state;
  ilb_pool *p = ejection_pool(4, 10000, 25000, 600000);
  static const uint64_t want[] = {10000, 20000, 25000, 25000};
  for (uint32_t n = 1; n <= 4; n++) {
    advance(MS);
    uint64_t end = eject_r0(p, n, want[n - 1] * MS);
    expect_restored(p, end, want[n - 1] * MS);
  }
  free_pool(p);
}

/* Jitter lengthens an ejection by 0..j%. */
static void test_ejection_jitter(void **state) {
  (void)state;
  ilb_pool *p = ejection_pool(4, 10000, 10000, 600000);
  SET_OPT(p, ILB_OPT_OUTLIER_JITTER_PERCENT, 30);
  uint64_t lo = UINT64_MAX, hi = 0;
  for (int k = 0; k < 40; k++) {
    advance(MS);
    ev_clear();
    for (int j = 0; j < 3; j++)
      fail_on(p, 0, ILB_OUTCOME_TIMEOUT, 0);
    tick(p);
    uint64_t d = ev_one(ILB_EVENT_EJECTED, "r0")->new_value;
    assert_in(d, 10 * SEC, 13 * SEC);
    lo = d < lo ? d : lo;
    hi = d > hi ? d : hi;
    run_until(p, now_ns() + d);
    assert_int_equal(ev_count(ILB_EVENT_RESTORED, "r0"), 1);
  }
  assert_true(lo < hi);
  free_pool(p);
}

/* At most floor(pct * n / 100) replicas ejected at once. */
static void test_max_ejection_percent(void **state) {
  (void)state;
  static const struct {
    int n;
    int64_t pct;
    uint32_t max;
  } cases[] = {
      {1, 50, 0},  {2, 50, 1},  {3, 50, 1},  {10, 50, 5}, {1, 100, 1},
      {3, 100, 3}, {3, 34, 1},  {3, 33, 0},  {3, 67, 2},  {4, 75, 3},
      {10, 10, 1}, {10, 9, 0},  {10, 0, 0},  {10, 99, 9}, {2, 49, 0},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int n = cases[c].n;
    ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
    SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
    SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
    SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 1);
    SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT, cases[c].pct);
    add_n(p, n);
    for (int round = 0; round < 3; round++) {
      for (int i = 0; i < n; i++) {
        if (info_of(p, i).excluded & ILB_EXCLUDED_EJECTED)
          continue;
        fail_on(p, i, ILB_OUTCOME_CONNECT_ERROR, 0);
        uint32_t ej = 0;
        for (int j = 0; j < n; j++)
          ej += (info_of(p, j).excluded & ILB_EXCLUDED_EJECTED) != 0;
        if (ej > cases[c].max)
          fail_msg("%d replicas, %lld%%: %u ejected at once, at most %u", n,
                   (long long)cases[c].pct, ej, cases[c].max);
      }
      tick(p);
      assert_int_equal(pstat(p).ejected, cases[c].max);
    }
    assert_int_equal(ev_count(ILB_EVENT_EJECTED, NULL), cases[c].max);
    /* the others still take picks */
    if (cases[c].max < (uint32_t)n) {
      int counts[10];
      count_picks(p, 10 * n, counts, n);
      for (int i = 0; i < n; i++) {
        int ej = (info_of(p, i).excluded & ILB_EXCLUDED_EJECTED) != 0;
        assert_true(ej ? counts[i] == 0 : counts[i] > 0);
      }
    }
    free_pool(p);
  }
}

/* Completions per replica for the interval analysis: replica i gets
 * volume[i] OK / HTTP 503 completions, errors[i] of them 503 (spread
 * evenly), then cancelled[i] CANCELLED ones (cancelled may be NULL). A
 * replica that has all of its completions is made unavailable by the host
 * meanwhile, so the others' counts are exact; all are available again at
 * the end. */
static void feed_interval(ilb_pool *p, int n, const int *volume,
                          const int *errors, const int *cancelled) {
  int done[16] = {0}, errs[16] = {0}, canc[16] = {0};
  assert_true(n <= 16);
  for (int i = 0; i < n; i++)
    if (volume[i] == 0 && (!cancelled || cancelled[i] == 0))
      assert_rc(ilb_replica_set_available(p, rname(i), 0), ILB_OK);
  for (int guard = 0; guard < 1000000; guard++) {
    int left = 0;
    for (int i = 0; i < n; i++)
      left += done[i] < volume[i] || (cancelled && canc[i] < cancelled[i]);
    if (!left)
      break;
    uint64_t t;
    int i = pick_idx(p, &t);
    if (done[i] < volume[i]) {
      int err = errs[i] < errors[i] &&
                (long long)(errs[i] + 1) * volume[i] <=
                    (long long)(done[i] + 1) * errors[i];
      if (err) {
        complete_with(p, t, ILB_OUTCOME_HTTP_ERROR, 503);
        errs[i]++;
      } else {
        complete_with(p, t, ILB_OUTCOME_OK, 200);
      }
      done[i]++;
    } else {
      assert_true(cancelled && canc[i] < cancelled[i]);
      complete_with(p, t, ILB_OUTCOME_CANCELLED, 0);
      canc[i]++;
    }
    if (done[i] == volume[i] && (!cancelled || canc[i] == cancelled[i]))
      assert_rc(ilb_replica_set_available(p, rname(i), 0), ILB_OK);
  }
  for (int i = 0; i < n; i++) {
    assert_true(done[i] == volume[i]);
    assert_rc(ilb_replica_set_available(p, rname(i), 1), ILB_OK);
  }
}

typedef struct {
  const char *name;
  int64_t stdev, fail_pct, min_hosts, volume;
  int vol[6], err[6];
  int ejected; /* replica index, -1 none */
  int32_t reason;
} sr_case;

static const sr_case sr_cases[] = {
    {"success rate: r4 at 50%", 1000, 0, 5, 100,
     {100, 100, 100, 100, 100}, {0, 0, 0, 0, 50}, 4, ILB_REASON_SUCCESS_RATE},
    {"success rate: r2 at 70%, Envoy's 1.9", 1900, 0, 5, 100,
     {200, 200, 200, 200, 200}, {2, 0, 60, 4, 0}, 2, ILB_REASON_SUCCESS_RATE},
    {"success rate: r4 below the volume", 1000, 0, 5, 100,
     {100, 100, 100, 100, 99}, {0, 0, 0, 0, 50}, -1, 0},
    {"success rate: too few hosts", 1000, 0, 6, 100,
     {100, 100, 100, 100, 100}, {0, 0, 0, 0, 50}, -1, 0},
    {"success rate: off", 0, 0, 5, 100,
     {100, 100, 100, 100, 100}, {0, 0, 0, 0, 50}, -1, 0},
    {"success rate: all alike", 1000, 0, 5, 100,
     {100, 100, 100, 100, 100}, {10, 10, 10, 10, 10}, -1, 0},
    {"failure percent: r1 at 60% of 50", 0, 50, 5, 50,
     {50, 50, 50, 50, 50}, {0, 30, 0, 0, 0}, 1, ILB_REASON_FAILURE_PERCENT},
    {"failure percent: r1 at 40% of 50", 0, 50, 5, 50,
     {50, 50, 50, 50, 50}, {0, 20, 0, 0, 0}, -1, 0},
    {"failure percent: exactly the threshold", 0, 50, 5, 50,
     {50, 50, 50, 50, 50}, {0, 0, 25, 0, 0}, 2, ILB_REASON_FAILURE_PERCENT},
    {"failure percent: too few hosts", 0, 50, 5, 50,
     {50, 50, 50, 50, 49}, {0, 30, 0, 0, 0}, -1, 0},
    {"failure percent: min hosts 1", 0, 50, 1, 50,
     {50, 10, 10, 10, 10}, {30, 10, 10, 10, 10}, 0,
     ILB_REASON_FAILURE_PERCENT},
};

/* Success-rate and failure-percentage ejection, at the interval boundary
 * and not before. */
static void test_interval_ejection(void **state) {
  (void)state;
  for (size_t c = 0; c < sizeof sr_cases / sizeof sr_cases[0]; c++) {
    const sr_case *sc = &sr_cases[c];
    ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
    SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
    SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
    SET_OPT(p, ILB_OPT_OUTLIER_JITTER_PERCENT, 0);
    SET_OPT(p, ILB_OPT_OUTLIER_INTERVAL_MS, 10000);
    SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT, 100);
    SET_OPT(p, ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV, sc->stdev);
    SET_OPT(p, ILB_OPT_OUTLIER_FAILURE_PERCENT, sc->fail_pct);
    SET_OPT(p, ILB_OPT_OUTLIER_MIN_HOSTS, sc->min_hosts);
    SET_OPT(p, ILB_OPT_OUTLIER_REQUEST_VOLUME, sc->volume);
    add_n(p, 5);
    uint64_t next = tick(p);
    /* the interval is a deadline while an analysis is on */
    assert_u64(next, sc->stdev || sc->fail_pct ? capped(T0 + 10 * SEC)
                                               : UINT64_MAX);
    advance(SEC);
    feed_interval(p, 5, sc->vol, sc->err, NULL);
    set_now(T0 + 10 * SEC - 1);
    tick(p);
    assert_int_equal(ev_count(ILB_EVENT_EJECTED, NULL), 0);
    assert_int_equal(pstat(p).ejected, 0);
    set_now(T0 + 10 * SEC);
    tick(p);
    if (sc->ejected < 0) {
      if (ev_count(ILB_EVENT_EJECTED, NULL) != 0)
        fail_msg("%s: ejected %s", sc->name,
                 ev_last(ILB_EVENT_EJECTED, NULL)->id);
      free_pool(p);
      continue;
    }
    if (ev_count(ILB_EVENT_EJECTED, NULL) != 1)
      fail_msg("%s: %zu ejections", sc->name,
               ev_count(ILB_EVENT_EJECTED, NULL));
    const ev_rec *e = ev_one(ILB_EVENT_EJECTED, rname(sc->ejected));
    if (e->reason != sc->reason)
      fail_msg("%s: reason %s", sc->name, ilb_reason_name(e->reason));
    assert_u64(e->new_value, 30 * SEC);
    assert_u64(e->ts, T0 + 10 * SEC);
    int counts[5];
    count_picks(p, 40, counts, 5);
    for (int i = 0; i < 5; i++)
      if (i == sc->ejected ? counts[i] != 0 : counts[i] == 0)
        fail_msg("%s: r%d got %d of 40 picks", sc->name, i, counts[i]);
    /* an interval's data is used once: the next boundary, with no new
     * completions, ejects nobody else */
    ev_clear();
    run_until(p, T0 + 20 * SEC);
    assert_int_equal(ev_count(ILB_EVENT_EJECTED, NULL), 0);
    free_pool(p);
  }
}

/* "CANCELLED counts as neither" (success nor error): a replica's success
 * rate is its successes over its successes and errors. r4: 50 OK, 50
 * errors (0.5) and 900 cancelled; the others 1.0, 0.9, 1.0, 0.9. Mean
 * 0.86, stddev 0.19: r4 alone is below mean - 1.0 * stddev. */
static void test_success_rate_ignores_cancelled(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_INTERVAL_MS, 10000);
  SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT, 100);
  SET_OPT(p, ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV, 1000);
  SET_OPT(p, ILB_OPT_OUTLIER_MIN_HOSTS, 5);
  SET_OPT(p, ILB_OPT_OUTLIER_REQUEST_VOLUME, 100);
  add_n(p, 5);
  tick(p);
  static const int vol[5] = {100, 100, 100, 100, 100};
  static const int err[5] = {0, 10, 0, 10, 50};
  static const int can[5] = {0, 0, 0, 0, 900};
  feed_interval(p, 5, vol, err, can);
  assert_u64(info_of(p, 4).completed, 1000);
  assert_u64(info_of(p, 4).errors, 50);
  set_now(T0 + 10 * SEC);
  tick(p);
  char got[64] = "";
  for (int i = 0; i < 5; i++)
    if (ev_count(ILB_EVENT_EJECTED, rname(i))) {
      strcat(got, " ");
      strcat(got, rname(i));
    }
  if (ev_count(ILB_EVENT_EJECTED, NULL) != 1 ||
      ev_count(ILB_EVENT_EJECTED, "r4") != 1)
    fail_msg("ejected:%s; expected r4 alone (success rate 0.5 of its "
             "successes and errors)",
             got[0] ? got : " none");
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 4. Panic                                                                  */
/* ------------------------------------------------------------------------ */

static void test_panic(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  SET_OPT(p, ILB_OPT_HEALTH_RISE, 1);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 50);
  add_n(p, 5);
  /* r4 is the host's "unavailable": out of the base, and out in panic */
  assert_rc(ilb_replica_set_available(p, "r4", 0), ILB_OK);
  int counts[5];
  /* 2 of 4 unhealthy: 50% is not below 50% */
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_FAIL), ILB_OK);
  tick(p);
  assert_int_equal(ev_count(ILB_EVENT_PANIC, NULL), 0);
  assert_int_equal(pstat(p).panic, 0);
  count_picks(p, 40, counts, 5);
  assert_true(counts[0] == 0 && counts[1] == 0 && counts[4] == 0);
  /* 3 of 4: 25% < 50%: panic, at once */
  advance(MS);
  ev_clear();
  assert_rc(ilb_health_report(p, "r2", ILB_PROBE_FAIL), ILB_OK);
  const ev_rec *e = ev_one(ILB_EVENT_PANIC, NULL);
  assert_false(e->has_id);
  assert_null(e->host_data);
  assert_int_equal(e->old_state, 0);
  assert_int_equal(e->new_state, 0);
  assert_u64(e->new_value, 1);
  assert_u64(e->old_value, 25);
  assert_int_equal(e->reason, ILB_REASON_HEALTHY_SHARE);
  assert_u64(e->ts, now_ns());
  ilb_pool_status st = pstat(p);
  assert_int_equal(st.panic, 1);
  assert_int_equal(st.healthy, 2); /* r3, and r4 (unavailable, healthy) */
  count_picks(p, 400, counts, 5);
  for (int i = 0; i < 4; i++)
    assert_in(counts[i], 70, 130); /* every replica, unhealthy too */
  assert_int_equal(counts[4], 0);     /* but not the host's unavailable */
  /* still reported as unhealthy */
  assert_int_equal(info_of(p, 0).health, ILB_HEALTH_UNHEALTHY);
  /* ilb_next_due does not end it */
  ev_clear();
  tick(p);
  assert_int_equal(ev_count(ILB_EVENT_PANIC, NULL), 0);
  /* back to 2 of 4: over */
  advance(MS);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_OK);
  e = ev_one(ILB_EVENT_PANIC, NULL);
  assert_u64(e->new_value, 0);
  assert_u64(e->old_value, 50);
  assert_int_equal(e->reason, ILB_REASON_HEALTHY_SHARE);
  assert_int_equal(pstat(p).panic, 0);
  count_picks(p, 40, counts, 5);
  assert_true(counts[0] > 0 && counts[3] > 0);
  assert_true(counts[1] == 0 && counts[2] == 0 && counts[4] == 0);
  free_pool(p);
}

/* Panic from ejections and breakers: ilb_next_due checks the share; in
 * panic the ejected and open replicas take picks again. Threshold 0:
 * never. */
static void test_panic_ejections(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 60);
  SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT, 100);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 1);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 1);
  add_n(p, 4);
  tick(p);
  ilb_outcome o = oc(ILB_OUTCOME_CONNECT_ERROR, 0);
  /* r0 ejected (and open), r1 ejected: 2 of 4 = 50% < 60% */
  assert_rc(ilb_complete(p, pick_on(p, 0), &o), ILB_OK);
  assert_rc(ilb_complete(p, pick_on(p, 1), &o), ILB_OK);
  ilb_replica_info in = info_of(p, 0);
  assert_int_equal(in.excluded, ILB_EXCLUDED_EJECTED | ILB_EXCLUDED_BREAKER);
  assert_int_equal(in.breaker, ILB_BREAKER_OPEN);
  ev_clear();
  tick(p);
  const ev_rec *e = ev_one(ILB_EVENT_PANIC, NULL);
  assert_u64(e->new_value, 1);
  assert_u64(e->old_value, 50);
  int counts[4];
  count_picks(p, 40, counts, 4);
  for (int i = 0; i < 4; i++)
    assert_int_equal(counts[i], 10);
  free_pool(p);

  /* the same with threshold 0: no panic */
  p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT, 100);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 1);
  add_n(p, 4);
  for (int i = 0; i < 4; i++)
    assert_rc(ilb_complete(p, pick_on(p, i), &o), ILB_OK);
  tick(p);
  assert_int_equal(ev_count(ILB_EVENT_PANIC, NULL), 0);
  assert_int_equal(pstat(p).panic, 0);
  int i;
  uint64_t t;
  assert_rc(try_pick(p, NULL, &i, &t), ILB_ENOREPLICA);
  free_pool(p);
}

/* Replicas added UNKNOWN are all "not healthy": by the panic rule (the
 * default threshold 50%) the first ilb_next_due puts the pool in panic,
 * and picks then go to them. Before it, none is routable. */
static void test_unknown_initial_panic(void **state) {
  (void)state;
  /* Replicas not ready yet (UNKNOWN, STARTING) do not count towards the
   * panic threshold and stay out even in a panic: a server still loading
   * its model cannot serve. */
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_HEALTH_INITIAL, ILB_HEALTH_UNKNOWN);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  add_n(p, 3);
  int i;
  uint64_t t;
  assert_rc(try_pick(p, NULL, &i, &t), ILB_ENOREPLICA);
  tick(p);
  assert_int_equal(pstat(p).panic, 0);
  assert_rc(try_pick(p, NULL, &i, &t), ILB_ENOREPLICA);
  /* r0 ready, r1 failed: one of the two counted is healthy, 50%: no panic */
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_OK);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(info_of(p, 1).health, ILB_HEALTH_UNHEALTHY);
  assert_int_equal(pstat(p).panic, 0);
  int counts[3];
  count_picks(p, 30, counts, 3);
  assert_int_equal(counts[0], 30);
  /* r0 fails too: none of two healthy, panic; r2 (unknown) still out */
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(pstat(p).panic, 1);
  const ev_rec *e = ev_last(ILB_EVENT_PANIC, NULL);
  assert_non_null(e);
  assert_u64(e->new_value, 1);
  assert_u64(e->old_value, 0);
  count_picks(p, 30, counts, 3);
  assert_int_equal(counts[2], 0);
  assert_true(counts[0] > 0 && counts[1] > 0);
  /* r0 back: panic over */
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_OK);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_OK);
  assert_int_equal(pstat(p).panic, 0);
  assert_u64(ev_last(ILB_EVENT_PANIC, NULL)->new_value, 0);
  free_pool(p);
}

/* In a panic the breakers still work: a half-open breaker closes after
 * CLOSE_SUCCESSES successes in a row. */
static void test_panic_half_open_closes(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 1);
  SET_OPT(p, ILB_OPT_BREAKER_OPEN_MS, 5000);
  SET_OPT(p, ILB_OPT_BREAKER_CLOSE_SUCCESSES, 3);
  add_n(p, 4);
  tick(p);
  for (int i = 1; i < 4; i++)
    assert_rc(ilb_health_report(p, rname(i), ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(pstat(p).panic, 1);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_OPEN);
  run_until(p, T0 + 5 * SEC);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_HALF_OPEN);
  assert_int_equal(pstat(p).panic, 1);
  for (int k = 0; k < 3; k++)
    fail_on(p, 0, ILB_OUTCOME_OK, 200);
  if (info_of(p, 0).breaker != ILB_BREAKER_CLOSED)
    fail_msg("3 successes in a row while half-open (in a panic): breaker %s, "
             "expected closed",
             ilb_breaker_name(info_of(p, 0).breaker));
  free_pool(p);
}

/* The panic share is re-checked when the host changes the pool (add,
 * remove, set_available, drain), not only at ilb_next_due. */
static void test_panic_rechecked_on_host_changes(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 50);
  add_n(p, 4);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(pstat(p).panic, 0); /* 2 of 4 */
  /* the host takes a healthy one out: 1 of 3 */
  ev_clear();
  assert_rc(ilb_replica_set_available(p, "r3", 0), ILB_OK);
  assert_int_equal(pstat(p).panic, 1);
  assert_u64(ev_one(ILB_EVENT_PANIC, NULL)->old_value, 33);
  /* and back: 2 of 4 */
  assert_rc(ilb_replica_set_available(p, "r3", 1), ILB_OK);
  assert_int_equal(pstat(p).panic, 0);
  /* draining a healthy one: 1 of 3 */
  assert_rc(ilb_replica_drain(p, "r3", 1, 0), ILB_OK);
  assert_int_equal(pstat(p).panic, 1);
  assert_rc(ilb_replica_drain(p, "r3", 0, 0), ILB_OK);
  assert_int_equal(pstat(p).panic, 0);
  /* removing a healthy one: 1 of 3 */
  assert_rc(ilb_replica_remove(p, "r3"), ILB_OK);
  assert_int_equal(pstat(p).panic, 1);
  /* adding a healthy one: 2 of 4 */
  add_replica(p, "r3", 1, 0, (void *)(uintptr_t)4);
  assert_int_equal(pstat(p).panic, 0);
  int counts[4];
  count_picks(p, 40, counts, 4);
  assert_true(counts[0] == 0 && counts[1] == 0);
  free_pool(p);
}

/* ILB_EVENT_REPLICA_STATE (ilb_replica_set_available) has reason HOST;
 * both states are UNAVAILABLE when something else also excludes it. */
static void test_replica_state_event_reason(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  add_n(p, 2);
  ev_clear();
  assert_rc(ilb_replica_set_available(p, "r0", 0), ILB_OK);
  const ev_rec *e = ev_one(ILB_EVENT_REPLICA_STATE, "r0");
  assert_int_equal(e->reason, ILB_REASON_HOST);
  assert_int_equal(e->old_state, ILB_REPLICA_ACTIVE);
  assert_int_equal(e->new_state, ILB_REPLICA_UNAVAILABLE);
  /* unhealthy meanwhile: back from the host, still unavailable */
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  ev_clear();
  assert_rc(ilb_replica_set_available(p, "r0", 1), ILB_OK);
  e = ev_one(ILB_EVENT_REPLICA_STATE, "r0");
  assert_int_equal(e->reason, ILB_REASON_HOST);
  assert_int_equal(e->old_state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(e->new_state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(info_of(p, 0).excluded, ILB_EXCLUDED_HEALTH);
  /* no change, no event */
  ev_clear();
  assert_rc(ilb_replica_set_available(p, "r0", 1), ILB_OK);
  assert_int_equal(ev_count(ILB_EVENT_REPLICA_STATE, NULL), 0);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 5. Slow start                                                             */
/* ------------------------------------------------------------------------ */

static void test_slow_start_ramp(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_WEIGHTED_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  add_replica(p, "r0", 1, 0, (void *)(uintptr_t)1);
  SET_OPT(p, ILB_OPT_SLOW_START_MS, 10000);
  SET_OPT(p, ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT, 25);
  add_replica(p, "r1", 1, 0, (void *)(uintptr_t)2);
  assert_int_equal(info_of(p, 0).weight_percent, 100);
  assert_int_equal(info_of(p, 1).weight_percent, 25);
  int counts[2];
  count_picks(p, 1000, counts, 2);
  assert_in(counts[1], 100, 300); /* 20% at 25% weight, 50% at full */
  uint32_t last = 25;
  for (uint64_t ms = 250; ms <= 12000; ms += 250) {
    set_now(T0 + ms * MS);
    tick(p);
    uint32_t w = info_of(p, 1).weight_percent;
    assert_true(w >= last);
    if (ms < 2500)
      assert_int_equal(w, 25); /* t <= min weight: the floor */
    if (ms == 5000)
      assert_in(w, 47, 54); /* linear: about half */
    if (ms == 9000)
      assert_in(w, 87, 94);
    if (ms >= 10000)
      assert_int_equal(w, 100);
    last = w;
  }
  count_picks(p, 1000, counts, 2);
  assert_in(counts[1], 480, 520);
  free_pool(p);
}

/* The ramp's shape: w * max(t^(1/aggression), min_weight), in 32 steps
 * (so a value is rounded up to the next 1/32). */
static void test_slow_start_shape(void **state) {
  (void)state;
  static const struct {
    int64_t aggression, min_pct, at_ms; /* window 10 s */
    uint32_t lo, hi;
  } cases[] = {
      {1000, 1, 0, 1, 4},      {1000, 1, 2500, 25, 29},
      {1000, 1, 7500, 75, 79}, {2000, 1, 2500, 50, 54},
      {500, 1, 5000, 25, 29},  {1000, 50, 2500, 50, 54},
      {1000, 10, 0, 10, 13},   {1000, 100, 0, 100, 100},
      {4000, 1, 625, 50, 54},  {1000, 1, 9999, 100, 100},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    ilb_pool *p = new_pool(ILB_POLICY_WEIGHTED_RANDOM);
    SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
    SET_OPT(p, ILB_OPT_SLOW_START_MS, 10000);
    SET_OPT(p, ILB_OPT_SLOW_START_AGGRESSION, cases[c].aggression);
    SET_OPT(p, ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT, cases[c].min_pct);
    add_n(p, 1);
    set_now(T0 + (uint64_t)cases[c].at_ms * MS);
    tick(p);
    uint32_t w = info_of(p, 0).weight_percent;
    if (w < cases[c].lo || w > cases[c].hi)
      fail_msg("aggression %lld, min %lld%%, at %lld ms: weight %u%%, "
               "expected [%u, %u]",
               (long long)cases[c].aggression, (long long)cases[c].min_pct,
               (long long)cases[c].at_ms, w, cases[c].lo, cases[c].hi);
    free_pool(p);
  }
}

/* A replica that becomes healthy ramps from the min weight; the deadline
 * includes the slow-start steps. */
static void test_slow_start_on_recovery(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_WEIGHTED_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_HEALTH_INITIAL, ILB_HEALTH_UNKNOWN);
  SET_OPT(p, ILB_OPT_SLOW_START_MS, 20000);
  SET_OPT(p, ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT, 50);
  add_n(p, 2);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_OK);
  set_now(T0 + 100 * SEC); /* r0's ramp is long over */
  run_until(p, T0 + 100 * SEC);
  assert_int_equal(info_of(p, 0).weight_percent, 100);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_PASS), ILB_OK);
  assert_int_equal(info_of(p, 1).weight_percent, 50);
  uint64_t next = tick(p);
  assert_true(next > now_ns() && next <= now_ns() + 20 * SEC / 32);
  int counts[2];
  count_picks(p, 900, counts, 2);
  assert_in(counts[1], 250, 350); /* 1/3 at half weight */
  run_until(p, T0 + 110 * SEC);
  uint32_t w = info_of(p, 1).weight_percent;
  assert_in(w, 50, 100);
  assert_true(w < 100);
  run_until(p, T0 + 120 * SEC);
  assert_int_equal(info_of(p, 1).weight_percent, 100);
  count_picks(p, 900, counts, 2);
  assert_in(counts[1], 430, 470);
  /* unhealthy and back: ramps again */
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  SET_OPT(p, ILB_OPT_HEALTH_RISE, 1);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_FAIL), ILB_OK);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_PASS), ILB_OK);
  assert_int_equal(info_of(p, 1).weight_percent, 50);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 6. Drain                                                                  */
/* ------------------------------------------------------------------------ */

static void test_drain_in_flight(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  add_n(p, 3);
  uint64_t t1 = pick_on(p, 0), t2 = pick_on(p, 0);
  ev_clear();
  assert_rc(ilb_replica_drain(p, "r0", 1, 0), ILB_OK);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 0);
  ilb_replica_info in = info_of(p, 0);
  assert_int_equal(in.excluded, ILB_EXCLUDED_DRAINING);
  assert_int_equal(in.state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(in.in_flight, 2);
  assert_int_equal(pstat(p).draining, 1);
  int counts[3];
  count_picks(p, 60, counts, 3);
  assert_int_equal(counts[0], 0);
  advance(MS);
  assert_rc(ilb_complete(p, t1, NULL), ILB_OK);
  tick(p);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 0);
  advance(MS);
  uint64_t at = now_ns();
  complete_with(p, t2, ILB_OUTCOME_OK, 200);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 0);
  advance(SEC);
  tick(p);
  const ev_rec *e = ev_one(ILB_EVENT_DRAINED, "r0");
  assert_int_equal(e->reason, ILB_REASON_DRAIN_DONE);
  assert_u64(e->new_value, 0);
  assert_u64(e->ts, at);
  assert_int_equal(info_of(p, 0).in_flight, 0);
  assert_int_equal(info_of(p, 0).completed, 2);
  /* once; still draining (no picks) until cancelled or removed */
  tick(p);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 1);
  count_picks(p, 30, counts, 3);
  assert_int_equal(counts[0], 0);
  assert_rc(ilb_replica_remove(p, "r0"), ILB_OK);
  assert_int_equal(pstat(p).draining, 0);
  free_pool(p);
}

static void test_drain_idle(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  add_n(p, 2);
  advance(MS);
  assert_rc(ilb_replica_drain(p, "r1", 1, 5000), ILB_OK);
  const ev_rec *e = ev_one(ILB_EVENT_DRAINED, "r1");
  assert_int_equal(e->reason, ILB_REASON_DRAIN_DONE);
  assert_u64(e->new_value, 0);
  assert_u64(e->ts, now_ns());
  assert_ptr_equal(e->host_data, (void *)(uintptr_t)2);
  /* no second event: neither from ilb_next_due nor at the deadline */
  run_until(p, now_ns() + 10 * SEC);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 1);
  int counts[2];
  count_picks(p, 10, counts, 2);
  assert_int_equal(counts[1], 0);
  free_pool(p);
}

static void test_drain_deadline(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  add_n(p, 2);
  uint64_t t[3];
  for (int k = 0; k < 3; k++)
    t[k] = pick_on(p, 0);
  assert_rc(ilb_complete(p, t[0], NULL), ILB_OK);
  ev_clear();
  assert_rc(ilb_replica_drain(p, "r0", 1, 3000), ILB_OK);
  assert_u64(tick(p), capped(T0 + 3 * SEC)); /* the deadline, or sooner */
  run_until(p, T0 + 3 * SEC - 1);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 0);
  run_until(p, T0 + 3 * SEC);
  const ev_rec *e = ev_one(ILB_EVENT_DRAINED, "r0");
  assert_int_equal(e->reason, ILB_REASON_DRAIN_DEADLINE);
  assert_u64(e->new_value, 2);
  assert_u64(e->ts, T0 + 3 * SEC);
  /* the requests left still complete normally, and no second event */
  assert_rc(ilb_complete(p, t[1], NULL), ILB_OK);
  complete_with(p, t[2], ILB_OUTCOME_TIMEOUT, 0);
  run_until(p, T0 + 10 * SEC);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 1);
  assert_int_equal(info_of(p, 0).in_flight, 0);
  free_pool(p);
}

/* A second drain(1) sets a new deadline; drain 0 cancels (no event). */
static void test_drain_cancel(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  add_n(p, 2);
  uint64_t t = pick_on(p, 0);
  ev_clear();
  assert_rc(ilb_replica_drain(p, "r0", 1, 1000), ILB_OK);
  assert_rc(ilb_replica_drain(p, "r0", 1, 4000), ILB_OK);
  run_until(p, T0 + 4 * SEC - 1);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 0);
  assert_rc(ilb_replica_drain(p, "r0", 0, 0), ILB_OK);
  assert_int_equal(info_of(p, 0).excluded, 0);
  assert_int_equal(pstat(p).draining, 0);
  int counts[2];
  count_picks(p, 10, counts, 2);
  assert_int_equal(counts[0], 5);
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  run_until(p, T0 + 10 * SEC);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 0);
  /* cancelling when not draining: nothing */
  assert_rc(ilb_replica_drain(p, "r1", 0, 0), ILB_OK);
  assert_int_equal(info_of(p, 1).excluded, 0);
  free_pool(p);
}

static void test_drain_args(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  add_n(p, 1);
  assert_rc(ilb_replica_drain(NULL, "r0", 1, 0), ILB_EINVAL);
  assert_rc(ilb_replica_drain(p, NULL, 1, 0), ILB_EINVAL);
  assert_rc(ilb_replica_drain(p, "r0", 2, 0), ILB_EINVAL);
  assert_rc(ilb_replica_drain(p, "r0", -1, 0), ILB_EINVAL);
  assert_rc(ilb_replica_drain(p, "r9", 1, 0), ILB_ENOENT);
  assert_int_equal(info_of(p, 0).excluded, 0);
  assert_int_equal(ev_count(ILB_EVENT_DRAINED, NULL), 0);
  free_pool(p);
}

/* timeout_ms up to 2^32 is accepted, above it ERANGE (and nothing
 * changes). */
static void test_drain_long_timeout(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  add_n(p, 2);
  uint64_t t = pick_on(p, 0);
  static const uint64_t bad[] = {(UINT64_C(1) << 32) + 1, UINT64_MAX,
                                 UINT64_MAX / 1000000};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    assert_rc(ilb_replica_drain(p, "r0", 1, bad[k]), ILB_ERANGE);
    assert_int_equal(info_of(p, 0).excluded, 0);
  }
  assert_rc(ilb_replica_drain(p, "r0", 1, UINT64_C(1) << 32), ILB_OK);
  assert_int_equal(info_of(p, 0).excluded, ILB_EXCLUDED_DRAINING);
  assert_u64(tick(p), capped(T0 + (UINT64_C(1) << 32) * MS));
  /* a deadline too far replaces nothing */
  assert_rc(ilb_replica_drain(p, "r0", 1, UINT64_MAX), ILB_ERANGE);
  assert_u64(tick(p), capped(T0 + (UINT64_C(1) << 32) * MS));
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  tick(p);
  assert_int_equal(ev_one(ILB_EVENT_DRAINED, "r0")->reason,
                   ILB_REASON_DRAIN_DONE);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 7. Circuit breaker                                                        */
/* ------------------------------------------------------------------------ */

static ilb_pool *breaker_pool(int n) {
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 3);
  SET_OPT(p, ILB_OPT_BREAKER_OPEN_MS, 5000);
  SET_OPT(p, ILB_OPT_BREAKER_HALF_OPEN_MAX, 1);
  SET_OPT(p, ILB_OPT_BREAKER_CLOSE_SUCCESSES, 2);
  add_n(p, n);
  tick(p);
  return p;
}

static void expect_breaker_event(int32_t from, int32_t to, int32_t reason,
                                 uint64_t ts) {
  const ev_rec *e = ev_one(ILB_EVENT_BREAKER, "r0");
  if (e->old_value != (uint64_t)from || e->new_value != (uint64_t)to ||
      e->reason != reason)
    fail_msg("breaker event %s -> %s (%s), expected %s -> %s (%s)",
             ilb_breaker_name((int32_t)e->old_value),
             ilb_breaker_name((int32_t)e->new_value),
             ilb_reason_name(e->reason), ilb_breaker_name(from),
             ilb_breaker_name(to), ilb_reason_name(reason));
  assert_u64(e->ts, ts);
}

/* Open after 3 consecutive errors (a success between resets), then run
 * to half-open; returns when the breaker went half-open. */
static uint64_t open_then_half_open(ilb_pool *p) {
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  fail_on(p, 0, ILB_OUTCOME_HTTP_ERROR, 502);
  fail_on(p, 0, ILB_OUTCOME_OK, 200);
  fail_on(p, 0, ILB_OUTCOME_TIMEOUT, 0);
  fail_on(p, 0, ILB_OUTCOME_HTTP_ERROR, 0);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_CLOSED);
  advance(MS);
  uint64_t at = now_ns();
  fail_on(p, 0, ILB_OUTCOME_REFUSED, 0);
  /* open at once */
  ilb_replica_info in = info_of(p, 0);
  assert_int_equal(in.breaker, ILB_BREAKER_OPEN);
  assert_int_equal(in.excluded, ILB_EXCLUDED_BREAKER);
  assert_int_equal(pstat(p).breakers_open, 1);
  int counts[2];
  count_picks(p, 20, counts, 2);
  assert_int_equal(counts[0], 0);
  assert_int_equal(ev_count(ILB_EVENT_BREAKER, NULL), 0);
  advance(MS);
  ev_clear();
  assert_u64(tick(p), capped(at + 5 * SEC));
  expect_breaker_event(ILB_BREAKER_CLOSED, ILB_BREAKER_OPEN,
                       ILB_REASON_BREAKER_CONSECUTIVE, at);
  const ev_rec *e = ev_last(ILB_EVENT_BREAKER, "r0");
  assert_int_equal(e->old_state, ILB_REPLICA_ACTIVE); /* before it */
  assert_int_equal(e->new_state, ILB_REPLICA_UNAVAILABLE);
  ev_clear();
  run_until(p, at + 5 * SEC - 1);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_OPEN);
  assert_int_equal(ev_count(ILB_EVENT_BREAKER, NULL), 0);
  run_until(p, at + 5 * SEC);
  expect_breaker_event(ILB_BREAKER_OPEN, ILB_BREAKER_HALF_OPEN,
                       ILB_REASON_BREAKER_TIMEOUT, at + 5 * SEC);
  e = ev_last(ILB_EVENT_BREAKER, "r0");
  assert_int_equal(e->old_state, ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(e->new_state, ILB_REPLICA_ACTIVE);
  in = info_of(p, 0);
  assert_int_equal(in.breaker, ILB_BREAKER_HALF_OPEN);
  assert_int_equal(in.excluded, 0);
  assert_int_equal(pstat(p).breakers_open, 0);
  return at + 5 * SEC;
}

static void test_breaker_cycle(void **state) {
  (void)state;
  ilb_pool *p = breaker_pool(2);
  open_then_half_open(p);
  /* half-open: one trial in flight at most */
  uint64_t t = pick_on(p, 0);
  int counts[2];
  count_picks(p, 20, counts, 2);
  assert_int_equal(counts[0], 0);
  advance(MS);
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_HALF_OPEN);
  t = pick_on(p, 0);
  advance(MS);
  uint64_t at = now_ns();
  ev_clear();
  complete_with(p, t, ILB_OUTCOME_OK, 200);
  /* 2 successes: closed at once, the event at the next ilb_next_due */
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_CLOSED);
  assert_int_equal(ev_count(ILB_EVENT_BREAKER, NULL), 0);
  count_picks(p, 20, counts, 2);
  assert_int_equal(counts[0], 10);
  advance(MS);
  tick(p);
  expect_breaker_event(ILB_BREAKER_HALF_OPEN, ILB_BREAKER_CLOSED,
                       ILB_REASON_BREAKER_TRIALS_PASSED, at);
  /* closed again: takes 3 new errors to open */
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_CLOSED);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_OPEN);
  free_pool(p);
}

static void test_breaker_trial_failure(void **state) {
  (void)state;
  ilb_pool *p = breaker_pool(2);
  uint64_t half = open_then_half_open(p);
  uint64_t t = pick_on(p, 0);
  advance(MS);
  uint64_t at = now_ns();
  ev_clear();
  complete_with(p, t, ILB_OUTCOME_HTTP_ERROR, 503);
  ilb_replica_info in = info_of(p, 0);
  assert_int_equal(in.breaker, ILB_BREAKER_OPEN);
  assert_int_equal(in.excluded, ILB_EXCLUDED_BREAKER);
  int counts[2];
  count_picks(p, 20, counts, 2);
  assert_int_equal(counts[0], 0);
  advance(MS);
  tick(p);
  expect_breaker_event(ILB_BREAKER_HALF_OPEN, ILB_BREAKER_OPEN,
                       ILB_REASON_BREAKER_TRIAL_FAILED, at);
  /* open for OPEN_MS again, from the failure */
  ev_clear();
  run_until(p, at + 5 * SEC - 1);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_OPEN);
  run_until(p, at + 5 * SEC);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_HALF_OPEN);
  expect_breaker_event(ILB_BREAKER_OPEN, ILB_BREAKER_HALF_OPEN,
                       ILB_REASON_BREAKER_TIMEOUT, at + 5 * SEC);
  assert_true(half < at);
  free_pool(p);
}

/* A lone half-open replica: HALF_OPEN_MAX picks, then ESATURATED with a
 * retry-after; open: ENOREPLICA. */
static void test_breaker_half_open_single(void **state) {
  (void)state;
  ilb_pool *p = breaker_pool(1);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 1);
  SET_OPT(p, ILB_OPT_BREAKER_HALF_OPEN_MAX, 2);
  SET_OPT(p, ILB_OPT_BREAKER_CLOSE_SUCCESSES, 3);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  int i;
  uint64_t t[3];
  assert_rc(try_pick(p, NULL, &i, &t[0]), ILB_ENOREPLICA);
  run_until(p, T0 + 5 * SEC);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_HALF_OPEN);
  assert_rc(try_pick(p, NULL, &i, &t[0]), ILB_OK);
  assert_rc(try_pick(p, NULL, &i, &t[1]), ILB_OK);
  ilb_pick_result res;
  assert_rc(ilb_pick_result_init(&res), ILB_OK);
  assert_rc(ilb_pick(&res, p, NULL), ILB_ESATURATED);
  assert_true(res.ticket == 0);
  assert_true(res.retry_after_ns > 0);
  assert_rc(ilb_complete(p, t[0], NULL), ILB_OK);
  assert_rc(try_pick(p, NULL, &i, &t[2]), ILB_OK);
  assert_rc(ilb_complete(p, t[1], NULL), ILB_OK);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_HALF_OPEN);
  assert_rc(ilb_complete(p, t[2], NULL), ILB_OK);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_CLOSED);
  /* closed: no limit */
  for (int k = 0; k < 3; k++)
    assert_rc(try_pick(p, NULL, &i, &t[k]), ILB_OK);
  for (int k = 0; k < 3; k++)
    assert_rc(ilb_complete(p, t[k], NULL), ILB_OK);
  free_pool(p);
}

typedef struct {
  const char *name;
  int64_t pct, min_req;
  outc seq[24];
  int open_at; /* index of the completion that opens it, -1 never */
} rate_case;

static const rate_case rate_cases[] = {
    {"9 errors, below 10 requests", 50, 10,
     {O_CE, O_CE, O_CE, O_CE, O_CE, O_CE, O_CE, O_CE, O_CE, O_END}, -1},
    {"10 errors", 50, 10,
     {O_CE, O_CE, O_CE, O_CE, O_CE, O_CE, O_CE, O_CE, O_CE, O_503, O_END},
     9},
    {"5 of 10 is 50%", 50, 10,
     {O_OK, O_503, O_OK, O_503, O_OK, O_503, O_OK, O_503, O_OK, O_503,
      O_END},
     9},
    {"4 of 10, 5 of 11, 6 of 12", 50, 10,
     {O_OK, O_OK, O_OK, O_OK, O_OK, O_OK, O_503, O_503, O_503, O_503, O_TO,
      O_TO, O_END},
     11},
    {"4xx are not errors", 50, 4,
     {O_404, O_429, O_CE, O_CE, O_END}, 3},
    {"cancelled ones aside", 50, 4,
     {O_404, O_CAN, O_CAN, O_429, O_CAN, O_CE, O_CAN, O_CE, O_END}, 7},
    {"100%: one success keeps it closed", 100, 4,
     {O_CE, O_CE, O_CE, O_OK, O_CE, O_CE, O_CE, O_CE, O_END}, -1},
};

static void test_breaker_error_rate(void **state) {
  (void)state;
  for (size_t c = 0; c < sizeof rate_cases / sizeof rate_cases[0]; c++) {
    const rate_case *rc = &rate_cases[c];
    ilb_pool *p = breaker_pool(2);
    SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 0);
    SET_OPT(p, ILB_OPT_BREAKER_ERROR_PERCENT, rc->pct);
    SET_OPT(p, ILB_OPT_BREAKER_MIN_REQUESTS, rc->min_req);
    SET_OPT(p, ILB_OPT_BREAKER_WINDOW_MS, 10000);
    tick(p);
    int opened = -1;
    for (int k = 0; rc->seq[k].status >= 0; k++) {
      fail_on(p, 0, rc->seq[k].status, rc->seq[k].http);
      if (opened < 0 && info_of(p, 0).breaker == ILB_BREAKER_OPEN)
        opened = k;
    }
    if (opened != rc->open_at)
      fail_msg("%s: opened at completion %d, expected %d", rc->name, opened,
               rc->open_at);
    ev_clear();
    tick(p);
    if (opened >= 0) {
      const ev_rec *e = ev_one(ILB_EVENT_BREAKER, "r0");
      assert_int_equal(e->reason, ILB_REASON_BREAKER_ERROR_RATE);
      assert_u64(e->new_value, ILB_BREAKER_OPEN);
    } else {
      assert_int_equal(ev_count(ILB_EVENT_BREAKER, NULL), 0);
    }
    free_pool(p);
  }
}

/* A breaker that opens on 50% errors over a 10 s window given at least 10
 * completions, with 9 connection errors on r0 at T0 + 2 s. */
static ilb_pool *window_pool(void) {
  ilb_pool *p = breaker_pool(2);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 0);
  SET_OPT(p, ILB_OPT_BREAKER_ERROR_PERCENT, 50);
  SET_OPT(p, ILB_OPT_BREAKER_MIN_REQUESTS, 10);
  SET_OPT(p, ILB_OPT_BREAKER_WINDOW_MS, 10000);
  tick(p);
  set_now(T0 + 2 * SEC);
  for (int k = 0; k < 9; k++)
    fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  return p;
}

/* Error-rate window: completions older than 1.5 windows no longer
 * count. */
static void test_breaker_window_forgets(void **state) {
  (void)state;
  ilb_pool *p = window_pool();
  run_until(p, T0 + 2 * SEC + 15 * SEC + MS);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_CLOSED);
  free_pool(p);
}

/* Error-rate window: by the header the window covers the last 1 to 1.5
 * windows, so completions less than one window old always count. */
static void test_breaker_window_covers_a_window(void **state) {
  (void)state;
  ilb_pool *p = window_pool();
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_CLOSED);
  /* 8 s later (less than one window): 10 errors of 10 in the window */
  run_until(p, T0 + 10 * SEC);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  if (info_of(p, 0).breaker != ILB_BREAKER_OPEN)
    fail_msg("10 errors of 10 within 8 s (window 10 s, min 10 requests): "
             "breaker %s, expected open",
             ilb_breaker_name(info_of(p, 0).breaker));
  free_pool(p);
}

/* A half-open breaker takes trial requests under every policy, the
 * scoring ones included, and closes. */
static void test_breaker_half_open_every_policy(void **state) {
  (void)state;
  const int32_t pols[] = {ILB_POLICY_COMPOSITE, ILB_POLICY_PEAK_EWMA,
                          ILB_POLICY_LEAST_TOKENS, ILB_POLICY_P2C,
                          ILB_POLICY_ROUND_ROBIN, ILB_POLICY_MAGLEV};
  for (size_t k = 0; k < sizeof pols / sizeof pols[0]; k++) {
    ilb_pool *p = breaker_pool(3);
    SET_OPT(p, ILB_OPT_POLICY, pols[k]);
    SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 1);
    fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
    assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_OPEN);
    run_until(p, now_ns() + 6 * SEC);
    assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_HALF_OPEN);
    /* successes on whatever is picked: r0 gets its trials and closes
     * (peak_ewma first waits for its failure's latency penalty to decay:
     * 10 ms a pick) */
    int on0 = 0;
    for (int n = 0; n < 6000 && info_of(p, 0).breaker != ILB_BREAKER_CLOSED;
         n++) {
      advance(10 * MS);
      ilb_request req;
      assert_rc(ilb_request_init(&req), ILB_OK);
      char key[16];
      snprintf(key, sizeof key, "k%d", n);
      req.key = key;
      req.key_len = strlen(key);
      int i;
      uint64_t t;
      assert_rc(try_pick(p, &req, &i, &t), ILB_OK);
      on0 += i == 0;
      assert_rc(ilb_complete(p, t, NULL), ILB_OK);
    }
    if (info_of(p, 0).breaker != ILB_BREAKER_CLOSED)
      fail_msg("%s: half-open breaker never closed (%d trials)",
               ilb_policy_name(pols[k]), on0);
    assert_true(on0 >= 2); /* ILB_OPT_BREAKER_CLOSE_SUCCESSES */
    free_pool(p);
  }
}

/* Half-open -> closed -> open between two ilb_next_due calls: both
 * transitions have their event, in order. */
static void test_breaker_close_then_open_events(void **state) {
  (void)state;
  ilb_pool *p = breaker_pool(2);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 1);
  SET_OPT(p, ILB_OPT_BREAKER_CLOSE_SUCCESSES, 1);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  run_until(p, now_ns() + 6 * SEC);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_HALF_OPEN);
  ev_clear();
  advance(MS);
  uint64_t closed_at = now_ns();
  complete_with(p, pick_on(p, 0), ILB_OUTCOME_OK, 200);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_CLOSED);
  advance(MS);
  uint64_t opened_at = now_ns();
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_OPEN);
  tick(p);
  assert_int_equal(ev_count(ILB_EVENT_BREAKER, "r0"), 2);
  const ev_rec *a = NULL, *b = NULL;
  for (size_t k = 0; k < n_evs; k++)
    if (evs[k].type == ILB_EVENT_BREAKER)
      *(a ? &b : &a) = &evs[k];
  assert_u64(a->old_value, ILB_BREAKER_HALF_OPEN);
  assert_u64(a->new_value, ILB_BREAKER_CLOSED);
  assert_int_equal(a->reason, ILB_REASON_BREAKER_TRIALS_PASSED);
  assert_u64(a->ts, closed_at);
  assert_u64(b->old_value, ILB_BREAKER_CLOSED);
  assert_u64(b->new_value, ILB_BREAKER_OPEN);
  assert_int_equal(b->reason, ILB_REASON_BREAKER_CONSECUTIVE);
  assert_u64(b->ts, opened_at);
  free_pool(p);
}

/* A host that sleeps until the deadline ilb_next_due gives sees a
 * completion's ejection end, even with probes off. */
static void test_next_due_after_completion_ejection(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 1);
  SET_OPT(p, ILB_OPT_OUTLIER_BASE_EJECTION_MS, 3000);
  SET_OPT(p, ILB_OPT_OUTLIER_JITTER_PERCENT, 0);
  add_n(p, 2);
  uint64_t next = tick(p);
  assert_true(next != UINT64_MAX);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0); /* while the host sleeps */
  uint64_t at = now_ns();
  run_until(p, at + 5 * SEC); /* a punctual host, nothing else */
  const ev_rec *e = ev_one(ILB_EVENT_RESTORED, "r0");
  assert_u64(e->old_value, 3 * SEC); /* the ejection's length */
  assert_true(e->ts <= at + 3 * SEC + SEC);
  assert_int_equal(info_of(p, 0).excluded, 0);
  free_pool(p);
}

/* A replica added as UNKNOWN during a panic stays out: it is not ready. */
static void test_unknown_added_in_panic(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  add_n(p, 2);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(pstat(p).panic, 1);
  SET_OPT(p, ILB_OPT_HEALTH_INITIAL, ILB_HEALTH_UNKNOWN);
  ev_clear();
  add_replica(p, rname(2), 1, 0, (void *)(uintptr_t)3);
  assert_int_equal(ev_one(ILB_EVENT_REPLICA_ADDED, "r2")->new_state,
                   ILB_REPLICA_UNAVAILABLE);
  assert_int_equal(info_of(p, 2).state, ILB_REPLICA_UNAVAILABLE);
  int counts[3];
  count_picks(p, 300, counts, 3);
  assert_int_equal(counts[2], 0);
  assert_true(counts[0] > 0 && counts[1] > 0); /* panic: to the failed */
  free_pool(p);
}

/* Health options changed at run time take effect at once. */
static void test_options_at_run_time(void **state) {
  (void)state;
  /* a half-open breaker's limit */
  ilb_pool *p = breaker_pool(1);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 1);
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  run_until(p, now_ns() + 6 * SEC);
  assert_int_equal(info_of(p, 0).breaker, ILB_BREAKER_HALF_OPEN);
  uint64_t t[5];
  int i;
  assert_rc(try_pick(p, NULL, &i, &t[0]), ILB_OK);
  assert_rc(try_pick(p, NULL, &i, &t[1]), ILB_ESATURATED);
  SET_OPT(p, ILB_OPT_BREAKER_HALF_OPEN_MAX, 5);
  for (int k = 1; k < 5; k++)
    assert_rc(try_pick(p, NULL, &i, &t[k]), ILB_OK);
  assert_rc(try_pick(p, NULL, &i, &t[0]), ILB_ESATURATED);
  free_pool(p);

  /* the panic threshold */
  p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  add_n(p, 2);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(pstat(p).panic, 1);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  assert_int_equal(pstat(p).panic, 0);
  assert_rc(try_pick(p, NULL, &i, &t[0]), ILB_ENOREPLICA);
  free_pool(p);

  /* slow start switched off while a replica ramps */
  p = new_pool(ILB_POLICY_WEIGHTED_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_SLOW_START_MS, 10000);
  add_n(p, 2);
  assert_true(info_of(p, 0).weight_percent < 100);
  SET_OPT(p, ILB_OPT_SLOW_START_MS, 0);
  assert_int_equal(info_of(p, 0).weight_percent, 100);
  free_pool(p);

  /* a shorter probe interval: due by the new interval, not the old */
  p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_JITTER_PERCENT, 0);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 86400000);
  add_n(p, 1);
  assert_int_equal(tick_due(p, NULL, NULL), 1);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 5000);
  uint64_t next;
  assert_int_equal(tick_due(p, NULL, &next), 0);
  assert_u64(next, now_ns() + 5 * SEC);
  free_pool(p);
}

/* Replicas added in a batch: the panic check runs once, at the commit. */
static void test_panic_checked_at_batch_commit(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  add_n(p, 2);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_rc(ilb_health_report(p, "r1", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(pstat(p).panic, 1);
  assert_rc(ilb_pool_batch_begin(p), ILB_OK);
  for (int k = 2; k < 10; k++)
    add_replica(p, rname(k), 1, 0, (void *)(uintptr_t)(k + 1));
  assert_int_equal(pstat(p).panic, 1); /* not yet */
  assert_rc(ilb_pool_batch_commit(p), ILB_OK);
  assert_int_equal(pstat(p).panic, 0); /* 8 of 10 healthy */
  assert_u64(ev_last(ILB_EVENT_PANIC, NULL)->new_value, 0);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 11. Scenario: a replica dies mid-stream and comes back                    */
/* ------------------------------------------------------------------------ */

static void test_scenario_replica_dies(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_WEIGHTED_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_JITTER_PERCENT, 0);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 1000);
  SET_OPT(p, ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS, 500);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 2);
  SET_OPT(p, ILB_OPT_HEALTH_RISE, 2);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 3);
  SET_OPT(p, ILB_OPT_OUTLIER_JITTER_PERCENT, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_BASE_EJECTION_MS, 5000);
  SET_OPT(p, ILB_OPT_SLOW_START_MS, 10000);
  add_n(p, 4);
  run_until(p, T0 + 20 * SEC); /* ramps of the first replicas over */
  for (int i = 0; i < 4; i++)
    assert_int_equal(info_of(p, i).weight_percent, 100);
  int dead = 2, alive = 1;
  /* steady traffic: 16 requests in flight, 4 on each */
  uint64_t held[16];
  int held_on[16];
  for (int k = 0; k < 16; k++)
    held_on[k] = pick_idx(p, &held[k]);
  assert_int_equal(info_of(p, dead).in_flight, 4);
  /* r2 dies: its new requests fail, its probes fail */
  int got_dead = 0, step = 0;
  uint64_t stop = now_ns() + 10 * SEC;
  while (now_ns() < stop) {
    advance(100 * MS);
    ilb_due d[DUE_CAP];
    size_t n = tick_due(p, d, NULL);
    for (size_t k = 0; k < n; k++)
      if (d[k].kind == ILB_DUE_PROBE)
        assert_rc(ilb_health_report(p, d[k].replica_id,
                                    strcmp(d[k].replica_id, rname(dead))
                                        ? ILB_PROBE_PASS
                                        : ILB_PROBE_FAIL),
                  ILB_OK);
    for (int r = 0; r < 8; r++) {
      uint64_t t;
      int i = pick_idx(p, &t);
      if (i == dead) {
        got_dead++;
        complete_with(p, t, ILB_OUTCOME_CONNECT_ERROR, 0);
      } else {
        assert_rc(ilb_complete(p, t, NULL), ILB_OK);
      }
    }
    step++;
  }
  /* out by ejection after 3 failures: at most 3 picks ever reached it */
  assert_in(got_dead, 1, 3);
  ilb_replica_info in = info_of(p, dead);
  assert_int_equal(in.health, ILB_HEALTH_UNHEALTHY);
  assert_true(in.excluded & ILB_EXCLUDED_HEALTH);
  int counts[4];
  count_picks(p, 300, counts, 4);
  assert_int_equal(counts[dead], 0);
  assert_in(counts[alive], 70, 130);
  /* its requests in flight still complete cleanly */
  for (int k = 0; k < 16; k++) {
    ilb_outcome o = oc(held_on[k] == dead ? ILB_OUTCOME_CONNECT_ERROR
                                          : ILB_OUTCOME_OK,
                       0);
    assert_rc(ilb_complete(p, held[k], &o), ILB_OK);
  }
  assert_int_equal(info_of(p, dead).in_flight, 0);
  /* it comes back: probes pass, slow start */
  int saw_ramp = 0;
  uint32_t last_w = 0;
  stop = now_ns() + 30 * SEC;
  int share_early = -1;
  while (now_ns() < stop) {
    advance(100 * MS);
    ilb_due d[DUE_CAP];
    size_t n = tick_due(p, d, NULL);
    for (size_t k = 0; k < n; k++)
      if (d[k].kind == ILB_DUE_PROBE)
        assert_rc(
            ilb_health_report(p, d[k].replica_id, ILB_PROBE_PASS), ILB_OK);
    in = info_of(p, dead);
    if (in.health == ILB_HEALTH_HEALTHY && in.excluded == 0) {
      if (in.weight_percent < 100) {
        saw_ramp = 1;
        if (share_early < 0) {
          count_picks(p, 400, counts, 4);
          share_early = counts[dead];
        }
      }
      assert_true(in.weight_percent >= last_w);
      last_w = in.weight_percent;
    }
  }
  assert_true(saw_ramp);
  assert_int_equal(info_of(p, dead).weight_percent, 100);
  assert_in(share_early, 1, 60); /* well below its full 100 of 400 */
  count_picks(p, 400, counts, 4);
  assert_int_equal(counts[dead], 100);
  assert_int_equal(pstat(p).in_flight, 0);
  (void)step;
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 12. Names, options, arguments                                             */
/* ------------------------------------------------------------------------ */

static void test_names(void **state) {
  (void)state;
  static const char *const health[] = {"unknown", "healthy", "unhealthy",
                                       "starting"};
  for (int32_t i = 0; i < 4; i++)
    assert_string_equal(ilb_health_name(i), health[i]);
  assert_null(ilb_health_name(-1));
  assert_null(ilb_health_name(4));
  assert_null(ilb_health_name(INT32_MAX));
  assert_null(ilb_health_name(INT32_MIN));
  static const char *const breaker[] = {"closed", "open", "half_open"};
  for (int32_t i = 0; i < 3; i++)
    assert_string_equal(ilb_breaker_name(i), breaker[i]);
  assert_null(ilb_breaker_name(-1));
  assert_null(ilb_breaker_name(3));
  assert_null(ilb_breaker_name(INT32_MIN));
  static const struct {
    int32_t v;
    const char *name;
  } reasons[] = {
      {ILB_REASON_NONE, "none"},
      {ILB_REASON_PROBE_PASSED, "probe_passed"},
      {ILB_REASON_PROBE_FAILED, "probe_failed"},
      {ILB_REASON_NOT_READY, "not_ready"},
      {ILB_REASON_CONSECUTIVE_5XX, "consecutive_5xx"},
      {ILB_REASON_CONSECUTIVE_GATEWAY, "consecutive_gateway"},
      {ILB_REASON_SUCCESS_RATE, "success_rate"},
      {ILB_REASON_FAILURE_PERCENT, "failure_percent"},
      {ILB_REASON_EJECTION_EXPIRED, "ejection_expired"},
      {ILB_REASON_BREAKER_CONSECUTIVE, "breaker_consecutive"},
      {ILB_REASON_BREAKER_ERROR_RATE, "breaker_error_rate"},
      {ILB_REASON_BREAKER_TIMEOUT, "breaker_timeout"},
      {ILB_REASON_BREAKER_TRIALS_PASSED, "breaker_trials_passed"},
      {ILB_REASON_BREAKER_TRIAL_FAILED, "breaker_trial_failed"},
      {ILB_REASON_DRAIN_DONE, "drain_done"},
      {ILB_REASON_DRAIN_DEADLINE, "drain_deadline"},
      {ILB_REASON_HEALTHY_SHARE, "healthy_share"},
      {ILB_REASON_HOST, "host"},
  };
  size_t n = sizeof reasons / sizeof reasons[0];
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(reasons[i].v, (int32_t)i); /* dense from 0 */
    assert_string_equal(ilb_reason_name(reasons[i].v), reasons[i].name);
  }
  assert_null(ilb_reason_name(-1));
  assert_null(ilb_reason_name((int32_t)n));
  assert_null(ilb_reason_name(INT32_MAX));
  assert_null(ilb_reason_name(INT32_MIN));
  /* the new error code */
  const char *s = ilb_strerror(ILB_ESHED);
  assert_non_null(s);
  assert_true(s[0] != 0);
  assert_string_not_equal(s, ilb_strerror(-1000));
  assert_string_equal(ilb_err_name(ILB_ESHED), "ESHED");
  assert_true(ILB_ERRNO_MIN <= ILB_ESHED);
  assert_int_equal(ILB_OUTCOME_REFUSED, 5);
}

typedef struct {
  int32_t opt;
  int64_t min, max, def;
} opt_row;

/* Bounds and defaults as the header documents them. */
static const opt_row health_opts[] = {
    {ILB_OPT_HEALTH_INITIAL, ILB_HEALTH_UNKNOWN, ILB_HEALTH_HEALTHY,
     ILB_HEALTH_HEALTHY},
    {ILB_OPT_HEALTH_RISE, 1, 1000, 2},
    {ILB_OPT_HEALTH_FALL, 1, 1000, 3},
    {ILB_OPT_PROBE_INTERVAL_MS, 0, 86400000, 5000},
    {ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS, 1, 86400000, 2000},
    {ILB_OPT_PROBE_INITIAL_DELAY_MS, 0, 86400000, 0},
    {ILB_OPT_PROBE_JITTER_PERCENT, 0, 100, 10},
    {ILB_OPT_SCRAPE_INTERVAL_MS, 0, 86400000, 0},
    {ILB_OPT_OUTLIER_CONSECUTIVE_5XX, 0, 65535, 0},
    {ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 0, 65535, 0},
    {ILB_OPT_OUTLIER_INTERVAL_MS, 1, 86400000, 10000},
    {ILB_OPT_OUTLIER_BASE_EJECTION_MS, 1, 86400000, 30000},
    {ILB_OPT_OUTLIER_MAX_EJECTION_MS, 1, 86400000, 300000},
    {ILB_OPT_OUTLIER_JITTER_PERCENT, 0, 100, 10},
    {ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT, 0, 100, 50},
    {ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV, 0, 100000, 0},
    {ILB_OPT_OUTLIER_FAILURE_PERCENT, 0, 100, 0},
    {ILB_OPT_OUTLIER_MIN_HOSTS, 1, 1000000, 5},
    {ILB_OPT_OUTLIER_REQUEST_VOLUME, 1, 1000000000, 100},
    {ILB_OPT_PANIC_THRESHOLD_PERCENT, 0, 100, 50},
    {ILB_OPT_SLOW_START_MS, 0, 3600000, 0},
    {ILB_OPT_SLOW_START_AGGRESSION, 1, 100000, 1000},
    {ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT, 1, 100, 10},
    {ILB_OPT_BREAKER_CONSECUTIVE, 0, 65535, 0},
    {ILB_OPT_BREAKER_ERROR_PERCENT, 0, 100, 0},
    {ILB_OPT_BREAKER_MIN_REQUESTS, 1, 1000000000, 20},
    {ILB_OPT_BREAKER_WINDOW_MS, 2, 86400000, 10000},
    {ILB_OPT_BREAKER_OPEN_MS, 1, 86400000, 30000},
    {ILB_OPT_BREAKER_HALF_OPEN_MAX, 1, 65535, 1},
    {ILB_OPT_BREAKER_CLOSE_SUCCESSES, 1, 65535, 3},
    {ILB_OPT_POOL_MAX_IN_FLIGHT, 0, 16777216, 0},
    {ILB_OPT_SHED_PERCENT, 1, 100, 80},
    {ILB_OPT_RETRY_AFTER_MS, 1, 3600000, 1000},
    {ILB_OPT_RETRY_ON, 0, 31,
     ILB_RETRY_ON_CONNECT_ERROR | ILB_RETRY_ON_REFUSED | ILB_RETRY_ON_TIMEOUT},
    {ILB_OPT_RETRY_MAX_ATTEMPTS, 1, ILB_RETRY_TRIED_MAX, 2},
    {ILB_OPT_RETRY_BUDGET_PERCENT, 0, 100000, 20},
    {ILB_OPT_RETRY_BUDGET_MIN_PER_S, 0, 1000000, 10},
    {ILB_OPT_RETRY_BACKOFF_BASE_MS, 0, 3600000, 25},
    {ILB_OPT_RETRY_BACKOFF_MAX_MS, 0, 3600000, 250},
};

static void test_option_bounds(void **state) {
  (void)state;
  size_t n = sizeof health_opts / sizeof health_opts[0];
  assert_int_equal(n, ILB_OPT_RETRY_BACKOFF_MAX_MS - ILB_OPT_HEALTH_INITIAL + 1);
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  add_n(p, 2);
  for (size_t i = 0; i < n; i++) {
    const opt_row *o = &health_opts[i];
    assert_int_equal(o->opt, ILB_OPT_HEALTH_INITIAL + (int32_t)i);
    int64_t v = -7;
    /* the ends are accepted, one past them is ERANGE and changes nothing */
    assert_option_doc(p, o->opt, o->min, o->max, o->def);
    assert_rc(ilb_pool_set_option(p, o->opt, INT64_MIN), ILB_ERANGE);
    assert_rc(ilb_pool_set_option(p, o->opt, INT64_MAX), ILB_ERANGE);
    assert_rc(ilb_pool_get_option(&v, p, o->opt), ILB_OK);
    assert_int_equal(v, o->def);
    SET_OPT(p, o->opt, o->max);
    assert_rc(ilb_pool_get_option(&v, p, o->opt), ILB_OK);
    assert_int_equal(v, o->max);
    SET_OPT(p, o->opt, o->min);
    assert_rc(ilb_pool_get_option(&v, p, o->opt), ILB_OK);
    assert_int_equal(v, o->min);
    SET_OPT(p, o->opt, o->def);
  }
  /* HEALTH_INITIAL: only UNKNOWN and HEALTHY */
  assert_rc(ilb_pool_set_option(p, ILB_OPT_HEALTH_INITIAL,
                                ILB_HEALTH_UNHEALTHY),
            ILB_ERANGE);
  assert_rc(ilb_pool_set_option(p, ILB_OPT_HEALTH_INITIAL,
                                ILB_HEALTH_STARTING),
            ILB_ERANGE);
  assert_rc(ilb_option_bounds(NULL, NULL, NULL, 183), ILB_EUNKNOWN);
  int64_t v;
  assert_rc(ilb_pool_get_option(&v, p, 183), ILB_EUNKNOWN);
  free_pool(p);
}

static void test_pool_health_args(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  add_n(p, 3);
  uint64_t t = pick_on(p, 1);
  ilb_pool_status st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  assert_rc(ilb_pool_health(NULL, p), ILB_EINVAL);
  assert_rc(ilb_pool_health(&st, NULL), ILB_EINVAL);
  st.struct_size = 0;
  assert_rc(ilb_pool_health(&st, p), ILB_ESIZE);
  st.struct_size = offsetof(ilb_pool_status, replicas);
  assert_rc(ilb_pool_health(&st, p), ILB_ESIZE);
  /* an older, smaller struct: filled up to its size */
  memset(&st, 0x5A, sizeof st);
  st.struct_size = offsetof(ilb_pool_status, healthy);
  assert_rc(ilb_pool_health(&st, p), ILB_OK);
  assert_int_equal(st.struct_size, offsetof(ilb_pool_status, healthy));
  assert_int_equal(st.replicas, 3);
  assert_int_equal(st.eligible, 3);
  assert_int_equal(st.healthy, 0x5A5A5A5Au);
  st = pstat(p);
  assert_int_equal(st.replicas, 3);
  assert_int_equal(st.eligible, 3);
  assert_int_equal(st.healthy, 3);
  assert_int_equal(st.ejected, 0);
  assert_int_equal(st.breakers_open, 0);
  assert_int_equal(st.draining, 0);
  assert_int_equal(st.panic, 0);
  assert_u64(st.in_flight, 1);
  assert_u64(st.retries, 0);
  assert_u64(st.retries_denied_budget, 0);
  assert_u64(st.shed, 0);
  assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  assert_u64(pstat(p).in_flight, 0);
  free_pool(p);
}

/* New replica_info fields, also for an older caller's smaller struct. */
static void test_replica_info_fields(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  add_n(p, 2);
  ilb_replica_info in = info_of(p, 0);
  assert_int_equal(in.health, ILB_HEALTH_HEALTHY);
  assert_int_equal(in.breaker, ILB_BREAKER_CLOSED);
  assert_int_equal(in.excluded, 0);
  assert_int_equal(in.ejections, 0);
  assert_u64(in.errors, 0);
  assert_int_equal(in.weight_percent, 100);
  /* errors: gateway failures and 5xx; failed: CONNECT_ERROR, TIMEOUT,
   * HTTP_ERROR (and REFUSED, not OK, not CANCELLED) */
  fail_on(p, 0, ILB_OUTCOME_CONNECT_ERROR, 0);
  fail_on(p, 0, ILB_OUTCOME_HTTP_ERROR, 404);
  fail_on(p, 0, ILB_OUTCOME_OK, 503);
  fail_on(p, 0, ILB_OUTCOME_CANCELLED, 0);
  fail_on(p, 0, ILB_OUTCOME_REFUSED, 0);
  in = info_of(p, 0);
  assert_u64(in.errors, 3);
  assert_u64(in.completed, 5);
  assert_u64(in.failed, 3); /* CONNECT_ERROR, HTTP_ERROR 404, REFUSED */
  /* host exclusion shows as HOST */
  assert_rc(ilb_replica_set_available(p, "r1", 0), ILB_OK);
  assert_int_equal(info_of(p, 1).excluded, ILB_EXCLUDED_HOST);
  assert_rc(ilb_replica_drain(p, "r1", 1, 0), ILB_OK);
  assert_int_equal(info_of(p, 1).excluded,
                   ILB_EXCLUDED_HOST | ILB_EXCLUDED_DRAINING);
  /* a 0.3-sized info struct: the new fields are not written */
  ilb_replica_info old;
  memset(&old, 0x5A, sizeof old);
  old.struct_size = offsetof(ilb_replica_info, health);
  assert_rc(ilb_replica_get(&old, p, "r0"), ILB_OK);
  assert_int_equal(old.struct_size, offsetof(ilb_replica_info, health));
  assert_u64(old.completed, 5);
  assert_int_equal(old.health, 0x5A5A5A5A);
  free_pool(p);
}

/* Writer calls from inside a callback are ILB_EDEADLK; readers work. */
static ilb_pool *cb_pool;
static int cb_rc[6];
static int cb_calls;

static void reentrant_event(const ilb_event *e, void *user_data) {
  on_event(e, user_data);
  if (!cb_pool || e->type != ILB_EVENT_REPLICA_STATE)
    return;
  cb_calls++;
  ilb_due d[2];
  size_t n;
  cb_rc[0] = ilb_health_report(cb_pool, "r0", ILB_PROBE_FAIL);
  cb_rc[1] = ilb_next_due(d, sizeof(ilb_due), 2, &n, NULL, cb_pool);
  cb_rc[2] = ilb_replica_drain(cb_pool, "r0", 1, 0);
  ilb_pool_status st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  cb_rc[3] = ilb_pool_health(&st, cb_pool);
  ilb_replica_info in;
  memset(&in, 0, sizeof in);
  in.struct_size = sizeof in;
  cb_rc[4] = ilb_replica_get(&in, cb_pool, "r0");
  ilb_pick_result res;
  ilb_pick_result_init(&res);
  cb_rc[5] = ilb_pick(&res, cb_pool, NULL);
  if (cb_rc[5] == ILB_OK)
    ilb_complete(cb_pool, res.ticket, NULL);
}

static void test_callbacks_edeadlk(void **state) {
  (void)state;
  set_now(T0);
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.clock_ns = fake_clock;
  h.on_event = reentrant_event;
  h.seed = SEED;
  h.log_level = ILB_LOG_NONE;
  ilb_pool *p = NULL;
  assert_rc(ilb_pool_new(&p, &h), ILB_OK);
  track_pool(p);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  add_n(p, 2);
  cb_pool = p;
  cb_calls = 0;
  assert_rc(ilb_replica_set_available(p, "r1", 0), ILB_OK);
  cb_pool = NULL;
  assert_int_equal(cb_calls, 1);
  assert_rc(cb_rc[0], ILB_EDEADLK);
  assert_rc(cb_rc[1], ILB_EDEADLK);
  assert_rc(cb_rc[2], ILB_EDEADLK);
  assert_rc(cb_rc[3], ILB_OK);
  assert_rc(cb_rc[4], ILB_OK);
  assert_rc(cb_rc[5], ILB_OK);
  /* and nothing happened */
  ilb_replica_info in = info_of(p, 0);
  assert_int_equal(in.health, ILB_HEALTH_HEALTHY);
  assert_int_equal(in.excluded, 0);
  free_pool(p);
}

/* ------------------------------------------------------------------------ */
/* 13. Threads                                                               */
/* ------------------------------------------------------------------------ */

#define MT_N 4
#define MT_PICKS 20000

typedef struct {
  ilb_pool *pool;
  atomic_int stop;
  atomic_int errors;
  atomic_ullong picks, completes, retries_yes;
  int seed;
} mt_shared;

static uint64_t xs(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static void *mt_picker(void *arg) {
  mt_shared *sh = arg;
  uint64_t rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&rng;
  for (int k = 0; k < MT_PICKS; k++) {
    ilb_pick_result res;
    ilb_pick_result_init(&res);
    int rc = ilb_pick(&res, sh->pool, NULL);
    if (rc == ILB_ENOREPLICA || rc == ILB_ESATURATED)
      continue;
    if (rc != ILB_OK) {
      atomic_fetch_add(&sh->errors, 1);
      continue;
    }
    atomic_fetch_add(&sh->picks, 1);
    uint64_t t = res.ticket;
    uint64_t r = xs(&rng) % 100;
    ilb_outcome o;
    ilb_outcome_init(&o);
    o.latency_ns = (1 + xs(&rng) % 50) * MS;
    if (r < 10) {
      o.status = ILB_OUTCOME_CONNECT_ERROR;
    } else if (r < 15) {
      o.status = ILB_OUTCOME_HTTP_ERROR;
      o.http_status = 503;
    } else if (r < 17) {
      o.status = ILB_OUTCOME_CANCELLED;
    }
    if (r < 5) {
      /* retry connect errors */
      ilb_retry_state st;
      ilb_retry_state_init(&st);
      for (;;) {
        ilb_retry_result rr;
        ilb_retry_result_init(&rr);
        if (ilb_retry(&rr, sh->pool, &st, NULL, t, &o) != ILB_OK) {
          atomic_fetch_add(&sh->errors, 1);
          break;
        }
        atomic_fetch_add(&sh->completes, 1);
        if (rr.verdict != ILB_RETRY_YES)
          break;
        atomic_fetch_add(&sh->retries_yes, 1);
        atomic_fetch_add(&sh->picks, 1);
        t = rr.ticket;
        o.status = xs(&rng) % 2 ? ILB_OUTCOME_OK : ILB_OUTCOME_TIMEOUT;
      }
      continue;
    }
    if (ilb_complete(sh->pool, t, &o) != ILB_OK)
      atomic_fetch_add(&sh->errors, 1);
    else
      atomic_fetch_add(&sh->completes, 1);
  }
  return NULL;
}

static void *mt_timer(void *arg) {
  mt_shared *sh = arg;
  uint64_t rng = 12345;
  while (!atomic_load(&sh->stop)) {
    advance(3 * MS);
    ilb_due d[8];
    size_t n;
    if (ilb_next_due(d, sizeof(ilb_due), 8, &n, NULL, sh->pool) != ILB_OK) {
      atomic_fetch_add(&sh->errors, 1);
      continue;
    }
    for (size_t k = 0; k < n; k++) {
      if (d[k].kind != ILB_DUE_PROBE)
        continue;
      uint64_t r = xs(&rng) % 10;
      int32_t res = r < 7 ? ILB_PROBE_PASS
                    : r < 9 ? ILB_PROBE_FAIL
                            : ILB_PROBE_NOT_READY;
      if (ilb_health_report(sh->pool, d[k].replica_id, res) != ILB_OK)
        atomic_fetch_add(&sh->errors, 1);
    }
    if (xs(&rng) % 64 == 0) {
      int i = (int)(xs(&rng) % MT_N);
      if (ilb_replica_drain(sh->pool, rname(i), (int32_t)(xs(&rng) % 2),
                            xs(&rng) % 50) != ILB_OK)
        atomic_fetch_add(&sh->errors, 1);
    }
    ilb_pool_status st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    if (ilb_pool_health(&st, sh->pool) != ILB_OK || st.replicas != MT_N)
      atomic_fetch_add(&sh->errors, 1);
  }
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Out of memory: the health writers that publish (slow-start steps)         */
/* ------------------------------------------------------------------------ */

static long oom_live;
static int oom_failing;

static void *oom_alloc(size_t n, void *user_data) {
  (void)user_data;
  if (oom_failing)
    return NULL;
  oom_live++;
  return malloc(n);
}

static void oom_free(void *ptr, void *user_data) {
  (void)user_data;
  if (ptr) {
    oom_live--;
    free(ptr);
  }
}

/* With no memory, a probe that brings a replica back and the timer's
 * slow-start steps cannot publish: both still succeed (the health state
 * changes at once), picks keep working, and the next ilb_next_due with
 * memory publishes the ramp it missed. Nothing leaks. */
static void test_oom_slow_start_publish(void **state) {
  (void)state;
  set_now(T0);
  oom_live = 0;
  oom_failing = 0;
  ilb_host h;
  assert_rc(ilb_host_init(&h), ILB_OK);
  h.clock_ns = fake_clock;
  h.alloc = oom_alloc;
  h.free = oom_free;
  h.seed = SEED;
  h.log_level = ILB_LOG_NONE;
  ilb_pool *p = NULL;
  assert_rc(ilb_pool_new(&p, &h), ILB_OK);
  track_pool(p);
  SET_OPT(p, ILB_OPT_POLICY, ILB_POLICY_WEIGHTED_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 1);
  SET_OPT(p, ILB_OPT_HEALTH_RISE, 1);
  SET_OPT(p, ILB_OPT_SLOW_START_MS, 10000);
  add_n(p, 3);
  run_until(p, T0 + 20 * SEC);
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_FAIL), ILB_OK);
  assert_int_equal(info_of(p, 0).health, ILB_HEALTH_UNHEALTHY);

  oom_failing = 1;
  assert_rc(ilb_health_report(p, "r0", ILB_PROBE_PASS), ILB_OK);
  assert_int_equal(info_of(p, 0).health, ILB_HEALTH_HEALTHY);
  int counts[3];
  count_picks(p, 30, counts, 3);
  assert_true(counts[0] > 0); /* routable at once, unramped for now */
  advance(1 * SEC);
  assert_rc(ilb_next_due(NULL, 0, 0, &(size_t){0}, NULL, p), ILB_OK);

  oom_failing = 0;
  advance(1 * SEC);
  assert_rc(ilb_next_due(NULL, 0, 0, &(size_t){0}, NULL, p), ILB_OK);
  uint32_t w = info_of(p, 0).weight_percent;
  assert_in(w, 10, 40); /* 2 s of a 10 s linear ramp, at least 10% */
  count_picks(p, 300, counts, 3);
  assert_true(counts[0] * 2 < counts[1]); /* ramped: well under a full share */
  run_until(p, T0 + 40 * SEC);
  assert_int_equal(info_of(p, 0).weight_percent, 100);
  free_pool(p);
  assert_int_equal(oom_live, 0);
}

static void test_threads(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_P2C);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 10);
  SET_OPT(p, ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS, 5);
  SET_OPT(p, ILB_OPT_HEALTH_FALL, 2);
  SET_OPT(p, ILB_OPT_HEALTH_RISE, 1);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 3);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_5XX, 5);
  SET_OPT(p, ILB_OPT_OUTLIER_BASE_EJECTION_MS, 30);
  SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_MS, 500);
  SET_OPT(p, ILB_OPT_OUTLIER_INTERVAL_MS, 50);
  SET_OPT(p, ILB_OPT_OUTLIER_FAILURE_PERCENT, 30);
  SET_OPT(p, ILB_OPT_OUTLIER_MIN_HOSTS, 2);
  SET_OPT(p, ILB_OPT_OUTLIER_REQUEST_VOLUME, 10);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 4);
  SET_OPT(p, ILB_OPT_BREAKER_ERROR_PERCENT, 40);
  SET_OPT(p, ILB_OPT_BREAKER_MIN_REQUESTS, 10);
  SET_OPT(p, ILB_OPT_BREAKER_WINDOW_MS, 40);
  SET_OPT(p, ILB_OPT_BREAKER_OPEN_MS, 20);
  SET_OPT(p, ILB_OPT_BREAKER_HALF_OPEN_MAX, 2);
  SET_OPT(p, ILB_OPT_SLOW_START_MS, 30);
  SET_OPT(p, ILB_OPT_RETRY_MAX_ATTEMPTS, 3);
  SET_OPT(p, ILB_OPT_POOL_MAX_IN_FLIGHT, 1000);
  add_n(p, MT_N);
  mt_shared sh;
  memset(&sh, 0, sizeof sh);
  sh.pool = p;
  pthread_t th[3];
  assert_int_equal(pthread_create(&th[0], NULL, mt_picker, &sh), 0);
  assert_int_equal(pthread_create(&th[1], NULL, mt_picker, &sh), 0);
  assert_int_equal(pthread_create(&th[2], NULL, mt_timer, &sh), 0);
  assert_int_equal(pthread_join(th[0], NULL), 0);
  assert_int_equal(pthread_join(th[1], NULL), 0);
  atomic_store(&sh.stop, 1);
  assert_int_equal(pthread_join(th[2], NULL), 0);
  assert_int_equal(atomic_load(&sh.errors), 0);
  assert_true(atomic_load(&sh.picks) > 0);
  assert_u64(atomic_load(&sh.picks), atomic_load(&sh.completes));
  /* invariants */
  ilb_pool_status st = pstat(p);
  assert_int_equal(st.replicas, MT_N);
  assert_u64(st.in_flight, 0);
  assert_u64(st.retries, atomic_load(&sh.retries_yes));
  uint32_t healthy = 0, eligible = 0, ejected = 0, open = 0, draining = 0;
  uint64_t completed = 0;
  for (int i = 0; i < MT_N; i++) {
    ilb_replica_info in = info_of(p, i);
    if (in.in_flight != 0)
      fail_msg("r%d: in flight %lld", i, (long long)in.in_flight);
    completed += in.completed;
    healthy += in.health == ILB_HEALTH_HEALTHY;
    eligible += in.excluded == 0;
    ejected += (in.excluded & ILB_EXCLUDED_EJECTED) != 0;
    open += in.breaker == ILB_BREAKER_OPEN;
    draining += (in.excluded & ILB_EXCLUDED_DRAINING) != 0;
    assert_true(in.weight_percent >= 1 && in.weight_percent <= 100);
    assert_true(in.errors <= in.completed);
    assert_true((in.breaker == ILB_BREAKER_OPEN) ==
                ((in.excluded & ILB_EXCLUDED_BREAKER) != 0));
    assert_true((in.health != ILB_HEALTH_HEALTHY) ==
                ((in.excluded & ILB_EXCLUDED_HEALTH) != 0));
  }
  assert_u64(completed, atomic_load(&sh.completes));
  assert_int_equal(st.healthy, healthy);
  assert_int_equal(st.eligible, eligible);
  assert_int_equal(st.ejected, ejected);
  assert_int_equal(st.breakers_open, open);
  assert_int_equal(st.draining, draining);
  assert_true(ejected <= MT_N / 2); /* max ejection 50% */
  /* after the storm: everything back with time, probes passing, no drain */
  for (int i = 0; i < MT_N; i++)
    assert_rc(ilb_replica_drain(p, rname(i), 0, 0), ILB_OK);
  for (int k = 0; k < 2000; k++) {
    advance(5 * MS);
    ilb_due d[DUE_CAP];
    size_t n = tick_due(p, d, NULL);
    for (size_t j = 0; j < n; j++)
      if (d[j].kind == ILB_DUE_PROBE)
        assert_rc(ilb_health_report(p, d[j].replica_id, ILB_PROBE_PASS),
                  ILB_OK);
    int i;
    uint64_t t;
    if (try_pick(p, NULL, &i, &t) == ILB_OK)
      assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  }
  st = pstat(p);
  assert_int_equal(st.eligible, MT_N);
  assert_int_equal(st.healthy, MT_N);
  assert_int_equal(st.panic, 0);
  free_pool(p);
}

/* Completions that open breakers or eject, racing ilb_next_due on another
 * thread (the documented way to run the timer). Whatever the interleaving:
 * the events of a replica chain (each starts where the previous one of
 * its kind ended), and once the failures stop, every replica comes back.
 * Short timers (1 ms) so that the timer acts on every replica often. */
#define RACE_ITER 400000

typedef struct {
  ilb_pool *pool;
  atomic_int stop;
  atomic_int errors;
  int ok_every; /* 0: every outcome fails */
} race_shared;

static void *race_worker(void *arg) {
  race_shared *sh = arg;
  for (int k = 0; k < RACE_ITER; k++) {
    ilb_pick_result res;
    ilb_pick_result_init(&res);
    int rc = ilb_pick(&res, sh->pool, NULL);
    if (rc == ILB_ENOREPLICA || rc == ILB_ESATURATED)
      continue;
    if (rc != ILB_OK) {
      atomic_fetch_add(&sh->errors, 1);
      continue;
    }
    ilb_outcome o;
    ilb_outcome_init(&o);
    if (!sh->ok_every || k % sh->ok_every)
      o.status = ILB_OUTCOME_CONNECT_ERROR;
    if (ilb_complete(sh->pool, res.ticket, &o) != ILB_OK)
      atomic_fetch_add(&sh->errors, 1);
  }
  return NULL;
}

static void *race_timer(void *arg) {
  race_shared *sh = arg;
  while (!atomic_load(&sh->stop)) {
    advance(MS);
    size_t n;
    if (ilb_next_due(NULL, sizeof(ilb_due), 0, &n, NULL, sh->pool) != ILB_OK)
      atomic_fetch_add(&sh->errors, 1);
  }
  return NULL;
}

static void run_race(ilb_pool *p, int ok_every) {
  race_shared sh;
  memset(&sh, 0, sizeof sh);
  sh.pool = p;
  sh.ok_every = ok_every;
  pthread_t th[3];
  assert_int_equal(pthread_create(&th[0], NULL, race_worker, &sh), 0);
  assert_int_equal(pthread_create(&th[1], NULL, race_worker, &sh), 0);
  assert_int_equal(pthread_create(&th[2], NULL, race_timer, &sh), 0);
  assert_int_equal(pthread_join(th[0], NULL), 0);
  assert_int_equal(pthread_join(th[1], NULL), 0);
  atomic_store(&sh.stop, 1);
  assert_int_equal(pthread_join(th[2], NULL), 0);
  assert_int_equal(atomic_load(&sh.errors), 0);
}

/* Traffic that succeeds, with time passing: every replica back in. */
static void recover(ilb_pool *p, int n) {
  for (int k = 0; k < 200; k++) {
    advance(10 * MS);
    tick(p);
    int i;
    uint64_t t;
    if (try_pick(p, NULL, &i, &t) == ILB_OK)
      assert_rc(ilb_complete(p, t, NULL), ILB_OK);
  }
  for (int i = 0; i < n; i++) {
    ilb_replica_info in = info_of(p, i);
    if (in.excluded != 0 || in.breaker != ILB_BREAKER_CLOSED)
      fail_msg("r%d after recovery: breaker %s, excluded 0x%x", i,
               ilb_breaker_name(in.breaker), in.excluded);
    assert_int_equal(in.in_flight, 0);
  }
}

/* A few rounds: the interleavings that matter are rare. */
#define RACE_ROUNDS 4

static void test_threads_breaker_vs_timer(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_BREAKER_CONSECUTIVE, 1);
  SET_OPT(p, ILB_OPT_BREAKER_OPEN_MS, 1);
  SET_OPT(p, ILB_OPT_BREAKER_CLOSE_SUCCESSES, 1);
  seq_check = 1;
  seq_min_eject_ns = 0;
  add_n(p, 2);
  for (int round = 0; round < RACE_ROUNDS; round++) {
    run_race(p, 4);
    /* the state and the exclusion bit agree */
    for (int i = 0; i < 2; i++) {
      ilb_replica_info in = info_of(p, i);
      if ((in.breaker == ILB_BREAKER_OPEN) !=
          ((in.excluded & ILB_EXCLUDED_BREAKER) != 0))
        fail_msg("round %d, r%d: breaker %s but excluded 0x%x", round, i,
                 ilb_breaker_name(in.breaker), in.excluded);
    }
    recover(p, 2);
    if (seq_err[0])
      fail_msg("round %d: %s", round, seq_err);
  }
  free_pool(p);
}

static void test_threads_ejection_vs_timer(void **state) {
  (void)state;
  ilb_pool *p = new_pool(ILB_POLICY_ROUND_ROBIN);
  SET_OPT(p, ILB_OPT_PROBE_INTERVAL_MS, 0);
  SET_OPT(p, ILB_OPT_PANIC_THRESHOLD_PERCENT, 0);
  SET_OPT(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 1);
  SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT, 100);
  SET_OPT(p, ILB_OPT_OUTLIER_BASE_EJECTION_MS, 1);
  SET_OPT(p, ILB_OPT_OUTLIER_MAX_EJECTION_MS, 1);
  SET_OPT(p, ILB_OPT_OUTLIER_JITTER_PERCENT, 0);
  seq_check = 1;
  seq_min_eject_ns = MS;
  add_n(p, 2);
  for (int round = 0; round < RACE_ROUNDS; round++) {
    run_race(p, 0);
    if (seq_err[0])
      fail_msg("round %d: %s", round, seq_err);
    recover(p, 2);
  }
  free_pool(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_health_state_machine),
      cmocka_unit_test(test_unknown_not_routable),
      cmocka_unit_test(test_health_report_args),
      cmocka_unit_test(test_next_due_exact),
      cmocka_unit_test(test_next_due_initial_delay),
      cmocka_unit_test(test_next_due_jitter),
      cmocka_unit_test(test_next_due_cap),
      cmocka_unit_test(test_next_due_scrape),
      cmocka_unit_test(test_next_due_no_probes),
      cmocka_unit_test(test_next_due_interval_for_decay),
      cmocka_unit_test(test_next_due_args),
      cmocka_unit_test(test_next_due_stride),
      cmocka_unit_test(test_outlier_streaks),
      cmocka_unit_test(test_ejection_growth_and_decay),
      cmocka_unit_test(test_ejection_cap_not_multiple),
      cmocka_unit_test(test_ejection_jitter),
      cmocka_unit_test(test_max_ejection_percent),
      cmocka_unit_test(test_interval_ejection),
      cmocka_unit_test(test_success_rate_ignores_cancelled),
      cmocka_unit_test(test_panic),
      cmocka_unit_test(test_panic_ejections),
      cmocka_unit_test(test_unknown_initial_panic),
      cmocka_unit_test(test_panic_half_open_closes),
      cmocka_unit_test(test_panic_rechecked_on_host_changes),
      cmocka_unit_test(test_replica_state_event_reason),
      cmocka_unit_test(test_slow_start_ramp),
      cmocka_unit_test(test_slow_start_shape),
      cmocka_unit_test(test_slow_start_on_recovery),
      cmocka_unit_test(test_drain_in_flight),
      cmocka_unit_test(test_drain_idle),
      cmocka_unit_test(test_drain_deadline),
      cmocka_unit_test(test_drain_cancel),
      cmocka_unit_test(test_drain_args),
      cmocka_unit_test(test_drain_long_timeout),
      cmocka_unit_test(test_breaker_cycle),
      cmocka_unit_test(test_breaker_trial_failure),
      cmocka_unit_test(test_breaker_half_open_single),
      cmocka_unit_test(test_breaker_error_rate),
      cmocka_unit_test(test_breaker_window_forgets),
      cmocka_unit_test(test_breaker_window_covers_a_window),
      cmocka_unit_test(test_breaker_half_open_every_policy),
      cmocka_unit_test(test_breaker_close_then_open_events),
      cmocka_unit_test(test_next_due_after_completion_ejection),
      cmocka_unit_test(test_unknown_added_in_panic),
      cmocka_unit_test(test_options_at_run_time),
      cmocka_unit_test(test_panic_checked_at_batch_commit),
      cmocka_unit_test(test_scenario_replica_dies),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_option_bounds),
      cmocka_unit_test(test_pool_health_args),
      cmocka_unit_test(test_replica_info_fields),
      cmocka_unit_test(test_callbacks_edeadlk),
      cmocka_unit_test(test_oom_slow_start_publish),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_threads_breaker_vs_timer),
      cmocka_unit_test(test_threads_ejection_vs_timer),
  };
  return cmocka_run_group_tests(tests, NULL, free_leftover_pools);
}
