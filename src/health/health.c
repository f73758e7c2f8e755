/* Active health, drain, panic, slow start, and the pool's timer
 * (ilb_next_due). Writer side: everything here runs with the pool mutex
 * held; what completions do lock-free is in passive.c.
 * SPDX-License-Identifier: MIT */
#include <stddef.h>

#include "core/internal.h"
#include "policy/prefix.h"
#include "policy/policy.h"

#define MS(v) ((uint64_t)(v)*UINT64_C(1000000))
/* ilb_next_due's longest sleep while completions may change something */
#define POLL_NS (UINT64_C(1000) * UINT64_C(1000000))
/* ilb_due as of 0.4, through `health` */
#define DUE_MIN (offsetof(ilb_due, health) + sizeof(int32_t))

/* ---- names --------------------------------------------------------------- */

const char *ilb_health_name(int32_t health) {
  static const char *const names[] = {"unknown", "healthy", "unhealthy",
                                      "starting"};
  return health >= 0 && health < 4 ? names[health] : NULL;
}

const char *ilb_breaker_name(int32_t breaker) {
  static const char *const names[] = {"closed", "open", "half_open"};
  return breaker >= 0 && breaker < 3 ? names[breaker] : NULL;
}

const char *ilb_reason_name(int32_t reason) {
  static const char *const names[] = {
      "none",          "probe_passed",        "probe_failed",
      "not_ready",     "consecutive_5xx",     "consecutive_gateway",
      "success_rate",  "failure_percent",     "ejection_expired",
      "breaker_consecutive", "breaker_error_rate", "breaker_timeout",
      "breaker_trials_passed", "breaker_trial_failed", "drain_done",
      "drain_deadline", "healthy_share",      "host"};
  return reason >= 0 && reason < (int32_t)(sizeof(names) / sizeof(names[0]))
             ? names[reason]
             : NULL;
}

/* ---- small helpers ------------------------------------------------------- */

uint64_t ilb__wrand(struct ilb_pool *p) {
  if (p->host.rand)
    return ilb__mix64(p->host.rand(p->host.user_data));
  p->wrng += ILB__GOLDEN;
  return ilb__mix64(p->wrng);
}

/* base lengthened by a random 0..pct percent. */
static uint64_t jittered(struct ilb_pool *p, uint64_t base, int64_t pct) {
  if (!pct || !base)
    return base;
  double u = (double)(ilb__wrand(p) >> 11) * 0x1p-53;
  return base + (uint64_t)((double)base * (double)pct / 100.0 * u);
}

static uint64_t min64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Natural logarithm for 0 < x <= 1 without libm: x = m 2^e, m in [1, 2),
 * ln m = 2 atanh((m - 1) / (m + 1)) by its series (|z| <= 1/3). */
static double ln01(double x) {
  uint64_t b = ilb__d_bits(x);
  int e = (int)((b >> 52) & 0x7ff) - 1023;
  double m = ilb__d_from_bits((b & ((UINT64_C(1) << 52) - 1)) |
                              (UINT64_C(1023) << 52));
  double z = (m - 1) / (m + 1), z2 = z * z, t = z, sum = 0;
  for (int k = 0; k < 16; k++) {
    sum += t / (2 * k + 1);
    t *= z2;
  }
  return e * 0.6931471805599453 + 2 * sum;
}

void ilb__health_init(struct ilb_pool *p) {
  p->wrng = ilb__mix64(p->host.seed ^ UINT64_C(0x68656c7468)); /* "helth" */
  /* the retry budget counts requests from here (seconds + 1, picks 0) */
  p->bud_base_sec = ilb__now(p) / UINT64_C(1000000000) + 1;
}

/* ---- slow start ----------------------------------------------------------- */

/* Effective weight step (1..32 thirty-seconds) at now of a ramp begun at
 * start: max(t^(1/aggression), min_weight), t = elapsed / window. */
static uint32_t ramp_q(const struct ilb_pool *p, uint64_t start, uint64_t now) {
  uint64_t win = MS(ilb__hopt(p, ILB_OPT_SLOW_START_MS));
  if (!win || now >= start + win)
    return ILB__RAMP_STEPS;
  double t = now > start ? (double)(now - start) / (double)win : 0.0;
  double a = (double)ilb__hopt(p, ILB_OPT_SLOW_START_AGGRESSION) / 1000.0;
  double f = t > 0 ? ilb__exp_neg(-ln01(t) / a) : 0.0;
  double lo = (double)ilb__hopt(p, ILB_OPT_SLOW_START_MIN_WEIGHT_PERCENT) / 100;
  if (f < lo)
    f = lo;
  double q = f * ILB__RAMP_STEPS;
  uint32_t qi = (uint32_t)q;
  qi += (double)qi < q; /* ceil */
  return qi < 1 ? 1 : qi > ILB__RAMP_STEPS ? ILB__RAMP_STEPS : qi;
}

/* The replica became routable: ramp its weight up from now. 1 when the
 * snapshot's weights must change. */
static int ramp_begin(struct ilb_pool *p, struct ilb__replica *r,
                      uint64_t now) {
  if (!ilb__hopt(p, ILB_OPT_SLOW_START_MS))
    return 0;
  if (!r->h.ramp_start)
    p->ramping++;
  r->h.ramp_start = now ? now : 1;
  r->h.ramp_q = ramp_q(p, r->h.ramp_start, now);
  return 1;
}

static void ramp_end(struct ilb_pool *p, struct ilb__replica *r) {
  if (r->h.ramp_start) {
    r->h.ramp_start = 0;
    p->ramping--;
  }
  r->h.ramp_q = ILB__RAMP_STEPS;
}

void ilb__ramp_prepare(struct ilb_pool *p, int weighted_policy) {
  p->ramp_scaled = weighted_policy && p->ramping > 0;
}

uint32_t ilb__eff_weight(const struct ilb_pool *p,
                         const struct ilb__replica *r) {
  if (!p->ramp_scaled)
    return r->weight;
  return r->weight * (r->h.ramp_start ? r->h.ramp_q : ILB__RAMP_STEPS);
}

/* ---- exclusion ------------------------------------------------------------ */

/* `down` as why, the breaker and the panic mode say. */
static uint32_t down_of(struct ilb_pool *p, uint32_t why, uint32_t brk) {
  if (atomic_load(&p->panic)) /* a half-open breaker keeps counting its
                                 successes, without a limit */
    return (why & ILB__EXCL_PANIC_KEEP) |
           ((brk & ILB__BRK_STATE) == ILB_BREAKER_HALF_OPEN ? 0xffff0000u
                                                             : 0);
  uint32_t want = why & ILB__EXCL_MASK;
  if ((brk & ILB__BRK_STATE) == ILB_BREAKER_OPEN)
    want |= ILB_EXCLUDED_BREAKER;
  else if ((brk & ILB__BRK_STATE) == ILB_BREAKER_HALF_OPEN)
    want |= (uint32_t)ilb__hopt(p, ILB_OPT_BREAKER_HALF_OPEN_MAX) << 16;
  return want;
}

/* The available weight of r's zone snapshot, or NULL (no zones, or r is
 * not in the snapshot yet). */
static _Atomic uint64_t *zone_avail(struct ilb__snap *snap,
                                    const struct ilb__replica *r) {
  if (!snap->n_zones || r->slot >= snap->n_slotmap || !snap->slotmap[r->slot])
    return NULL;
  uint32_t z = snap->zone_of[snap->slotmap[r->slot] - 1];
  return z < snap->n_zones ? &snap->zsub[z]->avail_weight : NULL;
}

void ilb__hsync(struct ilb_pool *p, struct ilb__replica *r) {
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  uint32_t why, brk, want;
  /* Completions change why, brk and down lock-free, each state change
   * before its `down` bit (all seq_cst). Re-deriving until why and brk
   * held still across the store means a completion's bit is either seen
   * here or set in `down` after this store, never overwritten. */
  do {
    why = atomic_load(&s->why);
    brk = atomic_load(&s->brk);
    want = down_of(p, why, brk);
    /* The flag and the snapshot's available weight change one after the
     * other, in the order that errs on the tight side: a chwbl pick in
     * between counts the weight of a replica it cannot use (going out:
     * flag first) or does not see the replica yet (coming back: weight
     * first). */
    uint32_t in = (want & ILB__EXCL_MASK) == 0;
    struct ilb__snap *snap = atomic_load(&p->snap);
    /* and its zone's snapshot (locality), which counts it the same way */
    _Atomic uint64_t *zw = zone_avail(snap, r);
    if (in == r->h.avail_in) {
      atomic_store(&s->down, want);
    } else if (!in) {
      atomic_store(&s->down, want);
      atomic_fetch_sub(&snap->avail_weight, r->pub_weight);
      if (zw)
        atomic_fetch_sub(zw, r->pub_weight);
    } else {
      atomic_fetch_add(&snap->avail_weight, r->pub_weight);
      if (zw)
        atomic_fetch_add(zw, r->pub_weight);
      atomic_store(&s->down, want);
    }
    r->h.avail_in = in;
  } while (atomic_load(&s->why) != why || atomic_load(&s->brk) != brk);
}

/* Panic: the share of replicas not excluded by health, ejection or an open
 * breaker among those the host has not taken out. */
void ilb__panic_check(struct ilb_pool *p, uint64_t now) {
  if (p->batch_depth) /* once, at the outermost commit */
    return;
  int64_t thr = ilb__hopt(p, ILB_OPT_PANIC_THRESHOLD_PERCENT);
  uint64_t base = 0, ok = 0;
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__slot *s = ilb__slot_at(p, p->reps[i]->slot);
    uint32_t why = atomic_load(&s->why);
    if (why & ILB__EXCL_PANIC_KEEP) /* the host's, or not ready yet */
      continue;
    base++;
    ok += (why & ILB__EXCL_MASK) == 0 &&
          (atomic_load(&s->brk) & ILB__BRK_STATE) != ILB_BREAKER_OPEN;
  }
  uint32_t panic = thr > 0 && base > 0 && ok * 100 < (uint64_t)thr * base;
  if (panic == atomic_load(&p->panic))
    return;
  atomic_store(&p->panic, panic);
  for (uint32_t i = 0; i < p->n_reps; i++)
    ilb__hsync(p, p->reps[i]);
  ilb__log(p, panic ? ILB_LOG_WARN : ILB_LOG_INFO,
           panic ? "panic: %llu of %llu replicas healthy, routing to all"
                 : "panic over: %llu of %llu replicas healthy",
           (unsigned long long)ok, (unsigned long long)base);
  ilb__emit(p, ILB_EVENT_PANIC, NULL, 0, 0, base ? ok * 100 / base : 0, panic,
            ILB_REASON_HEALTHY_SHARE, now);
}

/* ---- replicas come and go -------------------------------------------------- */

void ilb__health_added(struct ilb_pool *p, struct ilb__replica *r) {
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  uint64_t now = ilb__now(p);
  memset(&r->h, 0, sizeof(r->h));
  int32_t init = (int32_t)ilb__hopt(p, ILB_OPT_HEALTH_INITIAL);
  uint32_t why = init == ILB_HEALTH_HEALTHY ? 0 : ILB__WHY_NOTREADY;
  r->h.health = init;
  r->h.ramp_q = ILB__RAMP_STEPS;
  r->h.brk_seen = ILB_BREAKER_CLOSED;
  atomic_store(&s->why, why);
  atomic_store(&s->brk, ILB_BREAKER_CLOSED);
  atomic_store(&s->pend, 0);
  atomic_store(&s->consec, 0);
  atomic_store(&s->errors, 0);
  atomic_store(&s->neutral, 0);
  atomic_store(&s->eject_at, 0);
  atomic_store(&s->brk_at, 0);
  atomic_store(&s->drained_at, 0);
  atomic_store(&s->win_c, 0);
  atomic_store(&s->win_e, 0);
  atomic_store(&s->closed_at, 0);
  atomic_store(&s->down, down_of(p, why, ILB_BREAKER_CLOSED));
  /* Probes of replicas added together spread over the jitter. */
  uint64_t pi = MS(ilb__hopt(p, ILB_OPT_PROBE_INTERVAL_MS));
  int64_t jit = ilb__hopt(p, ILB_OPT_PROBE_JITTER_PERCENT);
  r->h.next_probe = now + MS(ilb__hopt(p, ILB_OPT_PROBE_INITIAL_DELAY_MS)) +
                    (jittered(p, pi, jit) - pi);
  uint64_t si = MS(ilb__hopt(p, ILB_OPT_SCRAPE_INTERVAL_MS));
  r->h.next_scrape = now + (jittered(p, si, jit) - si);
  if (!why)
    ramp_begin(p, r, now);
  atomic_fetch_add(&p->n_members, 1);
}

void ilb__health_removed(struct ilb_pool *p, struct ilb__replica *r) {
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  atomic_fetch_sub(&p->n_members, 1);
  atomic_fetch_or(&s->why, ILB__WHY_GONE);
  if (atomic_fetch_and(&s->why, ~(uint32_t)ILB_EXCLUDED_EJECTED) &
      ILB_EXCLUDED_EJECTED)
    atomic_fetch_sub(&p->n_ejected, 1);
  ramp_end(p, r);
}

/* ---- active health ---------------------------------------------------------- */

/* Move to health nh; 1 when the snapshot's weights must change. */
static int set_health(struct ilb_pool *p, struct ilb__replica *r, int32_t nh,
                      int32_t reason, uint64_t now) {
  int32_t old = r->h.health;
  if (old == nh)
    return 0;
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  int32_t old_state = ilb__state_of(s);
  int pub = 0;
  r->h.health = nh;
  uint32_t bit = nh == ILB_HEALTH_HEALTHY     ? 0
                 : nh == ILB_HEALTH_UNHEALTHY ? ILB_EXCLUDED_HEALTH
                                              : ILB__WHY_NOTREADY;
  uint32_t w = atomic_load(&s->why);
  while (!atomic_compare_exchange_weak(
      &s->why, &w, (w & ~(ILB_EXCLUDED_HEALTH | ILB__WHY_NOTREADY)) | bit))
    ;
  if (nh == ILB_HEALTH_HEALTHY) {
    pub = ramp_begin(p, r, now);
  } else {
    pub = r->h.ramp_start != 0;
    ramp_end(p, r);
  }
  ilb__hsync(p, r);
  /* dead or restarting: its cache is gone (after hsync: picks no longer
   * choose it); and again when it comes back, for a pick that was past
   * the check when it went (a no-op when nothing was recorded since) */
  if (nh == ILB_HEALTH_UNHEALTHY || nh == ILB_HEALTH_STARTING ||
      old == ILB_HEALTH_UNHEALTHY || old == ILB_HEALTH_STARTING)
    ilb__pfx_forget(p, r->slot);
  /* a replica that changed state is probed again at its new interval */
  int64_t pi = ilb__hopt(p, ILB_OPT_PROBE_INTERVAL_MS);
  if (pi > 0) {
    int64_t iv = nh == ILB_HEALTH_HEALTHY
                     ? pi
                     : ilb__hopt(p, ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS);
    r->h.next_probe = min64(
        r->h.next_probe,
        now + jittered(p, MS(iv), ilb__hopt(p, ILB_OPT_PROBE_JITTER_PERCENT)));
  }
  ilb__emit(p, ILB_EVENT_HEALTH, r, old_state, ilb__state_of(s),
            (uint64_t)old, (uint64_t)nh, reason, now);
  ilb__panic_check(p, now);
  return pub;
}

/* Publish a slow-start change now (or at the batch commit); on ENOMEM the
 * next ilb_next_due tries again. */
static void ramp_publish(struct ilb_pool *p) {
  const struct ilb__policy *pol =
      ilb__policy_get((int32_t)atomic_load(&p->opt_policy));
  if (!pol->slow_start && !p->ramp_scaled) {
    p->ramp_dirty = 0; /* its weights do not ramp: nothing to publish */
    return;
  }
  p->ramp_dirty = ilb__commit(p) != 0;
}

void ilb__health_opt_changed(struct ilb_pool *p) {
  uint64_t now = ilb__now(p);
  int64_t pi = ilb__hopt(p, ILB_OPT_PROBE_INTERVAL_MS);
  int64_t ui = ilb__hopt(p, ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS);
  int64_t si = ilb__hopt(p, ILB_OPT_SCRAPE_INTERVAL_MS);
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__replica *r = p->reps[i];
    struct ilb__hrec *h = &r->h;
    /* shorter intervals take effect now, not after the old one */
    int64_t iv = h->health == ILB_HEALTH_HEALTHY ? pi : ui;
    if (pi && iv)
      h->next_probe = min64(h->next_probe, now + MS(iv));
    if (si)
      h->next_scrape = min64(h->next_scrape, now + MS(si));
    /* ramps follow the new window and shape (the caller publishes) */
    if (h->ramp_start) {
      uint32_t q = ramp_q(p, h->ramp_start, now);
      p->ramp_dirty |= q != h->ramp_q; /* if the caller does not publish */
      if (q >= ILB__RAMP_STEPS)
        ramp_end(p, r);
      else
        h->ramp_q = q;
    }
    ilb__hsync(p, r); /* the half-open limit */
  }
  if (p->next_interval)
    p->next_interval = min64(
        p->next_interval, now + MS(ilb__hopt(p, ILB_OPT_OUTLIER_INTERVAL_MS)));
  if (p->next_half)
    p->next_half = min64(
        p->next_half, now + MS(ilb__hopt(p, ILB_OPT_BREAKER_WINDOW_MS)) / 2);
  ilb__panic_check(p, now);
}

int ilb_health_report(ilb_pool *p, const char *id, int32_t result) {
  if (!p || !id || result < ILB_PROBE_PASS || result > ILB_PROBE_NOT_READY)
    return ILB_EINVAL;
  struct ilb__replica *r;
  int rc = ilb__enter_find(p, id, &r);
  if (rc)
    return rc;
  uint64_t now = ilb__now(p);
  uint32_t rise = (uint32_t)ilb__hopt(p, ILB_OPT_HEALTH_RISE);
  uint32_t fall = (uint32_t)ilb__hopt(p, ILB_OPT_HEALTH_FALL);
  struct ilb__hrec *h = &r->h;
  int32_t nh = h->health, reason = ILB_REASON_NONE;
  switch (result) {
  case ILB_PROBE_PASS:
    h->passes += h->passes < UINT32_MAX;
    h->nonpass = h->fails = 0;
    if (h->health != ILB_HEALTH_HEALTHY &&
        (h->health == ILB_HEALTH_UNKNOWN || h->passes >= rise)) {
      nh = ILB_HEALTH_HEALTHY;
      reason = ILB_REASON_PROBE_PASSED;
    }
    break;
  case ILB_PROBE_NOT_READY:
    h->passes = h->fails = 0;
    h->nonpass += h->nonpass < UINT32_MAX;
    if (h->health == ILB_HEALTH_UNKNOWN || h->health == ILB_HEALTH_UNHEALTHY ||
        (h->health == ILB_HEALTH_HEALTHY && h->nonpass >= fall)) {
      nh = ILB_HEALTH_STARTING;
      reason = ILB_REASON_NOT_READY;
    }
    break;
  default: /* ILB_PROBE_FAIL */
    h->passes = 0;
    h->nonpass += h->nonpass < UINT32_MAX;
    h->fails += h->fails < UINT32_MAX;
    if (h->health != ILB_HEALTH_UNHEALTHY && h->fails >= fall) {
      nh = ILB_HEALTH_UNHEALTHY;
      reason = ILB_REASON_PROBE_FAILED;
    } else if (h->health == ILB_HEALTH_HEALTHY && h->nonpass >= fall) {
      nh = ILB_HEALTH_STARTING;
      reason = ILB_REASON_NOT_READY;
    }
    break;
  }
  if (set_health(p, r, nh, reason, now))
    ramp_publish(p);
  return ilb__writer_leave(p, 0);
}

/* ---- drain ------------------------------------------------------------------ */

int ilb_replica_drain(ilb_pool *p, const char *id, int32_t drain,
                      uint64_t timeout_ms) {
  if (!p || !id || (drain != 0 && drain != 1))
    return ILB_EINVAL;
  if (timeout_ms > UINT64_C(1) << 32)
    return ILB_ERANGE;
  struct ilb__replica *r;
  int rc = ilb__enter_find(p, id, &r);
  if (rc)
    return rc;
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  uint64_t now = ilb__now(p);
  if (!drain) {
    if (r->h.draining) {
      r->h.draining = 0;
      atomic_fetch_and(&s->why, ~(uint32_t)ILB_EXCLUDED_DRAINING);
      ilb__hsync(p, r);
      ilb__panic_check(p, now);
    }
    return ilb__writer_leave(p, 0);
  }
  r->h.drain_deadline = timeout_ms ? now + MS(timeout_ms) : 0;
  if (r->h.draining)
    return ilb__writer_leave(p, 0); /* a new deadline only */
  r->h.draining = 1;
  r->h.drain_seen = 0;
  /* seq_cst store of `down` (in hsync) then seq_cst load of the in-flight
   * count; a completion does the opposite (pick.c): one of the two sees
   * the other, so the drained event is neither lost nor left waiting. */
  atomic_fetch_or(&s->why, ILB_EXCLUDED_DRAINING);
  ilb__hsync(p, r);
  ilb__panic_check(p, now);
  /* A pick that read `down` before the store may still be counting a
   * request on it: wait for every pick in progress (the snapshot grace
   * period) before trusting a zero. If that cannot be known, the next
   * ilb_next_due reports the drain. */
  if (ilb__wait_readers(p) == 0 &&
      ILB__INFLIGHT(atomic_load(&s->load)) == 0) {
    r->h.drain_seen = 1;
    ilb__emit(p, ILB_EVENT_DRAINED, r, ilb__state_of(s), ilb__state_of(s), 0,
              0, ILB_REASON_DRAIN_DONE, now);
  }
  return ilb__writer_leave(p, 0);
}

/* ---- the timer -------------------------------------------------------------- */

/* The replica's state as it was without exclusion bit `bit` and with the
 * breaker in state brk: what an event's old_state says of a change a
 * completion made before the writer saw it. */
static int32_t state_without(struct ilb__slot *s, uint32_t bit, uint32_t brk) {
  uint32_t why = atomic_load(&s->why) & ~bit;
  return ilb__excluded(why, brk) ? ILB_REPLICA_UNAVAILABLE
                                 : ILB_REPLICA_ACTIVE;
}

/* What completions did to this replica since the last call: finish an
 * ejection they started, report breaker changes. */
static void catch_up(struct ilb_pool *p, struct ilb__replica *r,
                     struct ilb__slot *s, uint32_t pend, uint64_t now) {
  struct ilb__hrec *h = &r->h;
  int32_t st = ilb__state_of(s);
  /* an ejection's time and reason are stored before its flag */
  if ((pend & ILB__PEND_EJECT) &&
      (atomic_load(&s->why) & ILB_EXCLUDED_EJECTED) && !h->eject_seen) {
    uint64_t at = atomic_load(&s->eject_at);
    if (!at || at > now)
      at = now;
    h->eject_n += h->eject_n < UINT32_MAX;
    h->eject_total++;
    uint64_t d = MS(ilb__hopt(p, ILB_OPT_OUTLIER_BASE_EJECTION_MS));
    uint64_t max = MS(ilb__hopt(p, ILB_OPT_OUTLIER_MAX_EJECTION_MS));
    d = h->eject_n > max / d ? max : d * h->eject_n;
    if (d > max)
      d = max;
    d = jittered(p, d, ilb__hopt(p, ILB_OPT_OUTLIER_JITTER_PERCENT));
    h->eject_since = at;
    h->eject_until = at + d;
    h->eject_seen = 1;
    ilb__emit(p, ILB_EVENT_EJECTED, r,
              state_without(s, ILB_EXCLUDED_EJECTED, (uint32_t)h->brk_seen),
              st, h->eject_n, d, (int32_t)atomic_load(&s->eject_reason), at);
  }
  /* Completions move a breaker half-open -> closed -> open at most
   * between two calls: the close has its own flag, so each transition has
   * its event, in order. */
  if ((pend & ILB__PEND_BRK_CLOSED) && h->brk_seen != ILB_BREAKER_CLOSED) {
    ilb__emit(p, ILB_EVENT_BREAKER, r,
              state_without(s, 0, (uint32_t)h->brk_seen),
              state_without(s, 0, ILB_BREAKER_CLOSED),
              (uint64_t)h->brk_seen, ILB_BREAKER_CLOSED,
              ILB_REASON_BREAKER_TRIALS_PASSED, atomic_load(&s->closed_at));
    h->brk_seen = ILB_BREAKER_CLOSED;
  }
  int32_t b = (int32_t)(atomic_load(&s->brk) & ILB__BRK_STATE);
  if (b != h->brk_seen) {
    ilb__emit(p, ILB_EVENT_BREAKER, r,
              state_without(s, 0, (uint32_t)h->brk_seen), st,
              (uint64_t)h->brk_seen, (uint64_t)b,
              (int32_t)atomic_load(&s->brk_reason), atomic_load(&s->brk_at));
    h->brk_seen = b;
  }
}

/* Timers of one replica; returns its next deadline, sets *pub when the
 * snapshot's weights must change. */
static uint64_t replica_timers(struct ilb_pool *p, struct ilb__replica *r,
                               uint64_t now, int *pub) {
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  struct ilb__hrec *h = &r->h;
  uint64_t next = UINT64_MAX;
  int sync = 0;
  uint32_t pend = atomic_exchange(&s->pend, 0);
  if (pend) {
    catch_up(p, r, s, pend, now);
    sync = 1;
  }
  /* ejection over? (only one catch_up has timed) */
  if ((atomic_load(&s->why) & ILB_EXCLUDED_EJECTED) && h->eject_seen) {
    if (now >= h->eject_until) {
      int32_t old = ilb__state_of(s);
      atomic_fetch_and(&s->why, ~(uint32_t)ILB_EXCLUDED_EJECTED);
      atomic_fetch_sub(&p->n_ejected, 1);
      h->eject_seen = 0;
      ilb__hsync(p, r);
      sync = 0;
      if (h->health == ILB_HEALTH_HEALTHY)
        *pub |= ramp_begin(p, r, now);
      ilb__emit(p, ILB_EVENT_RESTORED, r, old, ilb__state_of(s),
                h->eject_until - h->eject_since, 0,
                ILB_REASON_EJECTION_EXPIRED, now);
    } else {
      next = min64(next, h->eject_until);
    }
  }
  /* open breaker timed out: half-open (only once catch_up has seen it
   * open, after its flag: brk_at is then the opening's) */
  uint32_t b = atomic_load(&s->brk);
  if ((b & ILB__BRK_STATE) == ILB_BREAKER_OPEN &&
      h->brk_seen == ILB_BREAKER_OPEN) {
    uint64_t t = atomic_load(&s->brk_at) +
                 MS(ilb__hopt(p, ILB_OPT_BREAKER_OPEN_MS));
    if (now >= t) {
      if (atomic_compare_exchange_strong(&s->brk, &b,
                                         ILB_BREAKER_HALF_OPEN)) {
        int32_t old = ilb__state_of(s);
        atomic_store(&s->brk_reason, ILB_REASON_BREAKER_TIMEOUT);
        atomic_store(&s->brk_at, now);
        ilb__hsync(p, r);
        sync = 0;
        h->brk_seen = ILB_BREAKER_HALF_OPEN;
        ilb__emit(p, ILB_EVENT_BREAKER, r, old, ilb__state_of(s),
                  ILB_BREAKER_OPEN, ILB_BREAKER_HALF_OPEN,
                  ILB_REASON_BREAKER_TIMEOUT, now);
      }
    } else {
      next = min64(next, t);
    }
  }
  /* drain */
  if (h->draining && !h->drain_seen) {
    uint64_t left = ILB__INFLIGHT(atomic_load(&s->load));
    int32_t st = ilb__state_of(s);
    if (left == 0) {
      uint64_t at = atomic_load(&s->drained_at);
      h->drain_seen = 1;
      ilb__emit(p, ILB_EVENT_DRAINED, r, st, st, 0, 0, ILB_REASON_DRAIN_DONE,
                at && at <= now ? at : now);
    } else if (h->drain_deadline && now >= h->drain_deadline) {
      h->drain_seen = 1;
      ilb__emit(p, ILB_EVENT_DRAINED, r, st, st, 0, left,
                ILB_REASON_DRAIN_DEADLINE, now);
    } else if (h->drain_deadline) {
      next = min64(next, h->drain_deadline);
    }
  }
  /* slow start step */
  if (h->ramp_start) {
    uint32_t q = ramp_q(p, h->ramp_start, now);
    if (q != h->ramp_q) {
      h->ramp_q = q;
      *pub = 1;
    }
    if (q >= ILB__RAMP_STEPS) {
      ramp_end(p, r);
      *pub = 1;
    } else {
      uint64_t step = MS(ilb__hopt(p, ILB_OPT_SLOW_START_MS)) / 64;
      next = min64(next, now + (step ? step : 1));
    }
  }
  if (sync)
    ilb__hsync(p, r);
  return next;
}

int ilb_next_due(ilb_due *due, size_t due_size, size_t cap, size_t *n_due,
                 uint64_t *next_ns_out, ilb_pool *p) {
  if (!p || !n_due || (cap && !due))
    return ILB_EINVAL;
  if (cap && due_size < DUE_MIN)
    return ILB_ESIZE;
  *n_due = 0;
  int rc = ilb__writer_enter(p);
  if (rc)
    return rc;
  uint64_t now = ilb__now(p), next = UINT64_MAX;
  int pub = p->ramp_dirty;
  ilb__budget_sample(p, now);

  /* The outlier interval runs while an analysis is on or an ejection
   * count has to decay; it starts counting when it is first needed. */
  uint64_t iv = MS(ilb__hopt(p, ILB_OPT_OUTLIER_INTERVAL_MS));
  int need = ilb__hopt(p, ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV) ||
             ilb__hopt(p, ILB_OPT_OUTLIER_FAILURE_PERCENT) ||
             atomic_load(&p->n_ejected);
  for (uint32_t i = 0; !need && i < p->n_reps; i++)
    need = p->reps[i]->h.eject_n != 0;
  if (!need) {
    p->next_interval = 0;
  } else if (!p->next_interval) {
    ilb__outlier_marks(p);
    p->next_interval = now + iv;
  } else if (now >= p->next_interval) {
    ilb__outlier_interval(p, now);
    p->next_interval = now + iv;
  }
  if (p->next_interval)
    next = min64(next, p->next_interval);
  if (ilb__hopt(p, ILB_OPT_BREAKER_ERROR_PERCENT)) {
    uint64_t hw = MS(ilb__hopt(p, ILB_OPT_BREAKER_WINDOW_MS)) / 2;
    if (!p->next_half) { /* (re)enabled: the window starts now */
      ilb__breaker_reset(p);
      p->next_half = now + hw;
    } else if (now >= p->next_half) {
      ilb__breaker_half(p);
      p->next_half = now + hw;
    }
    next = min64(next, p->next_half);
  } else {
    p->next_half = 0;
  }

  int64_t pi = ilb__hopt(p, ILB_OPT_PROBE_INTERVAL_MS);
  int64_t ui = ilb__hopt(p, ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS);
  int64_t si = ilb__hopt(p, ILB_OPT_SCRAPE_INTERVAL_MS);
  int64_t jit = ilb__hopt(p, ILB_OPT_PROBE_JITTER_PERCENT);
  size_t n = 0;
  int draining = 0;
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__replica *r = p->reps[i];
    struct ilb__hrec *h = &r->h;
    draining |= h->draining && !h->drain_seen;
    next = min64(next, replica_timers(p, r, now, &pub));
    for (int kind = ILB_DUE_PROBE; kind <= ILB_DUE_SCRAPE; kind++) {
      int64_t ival = kind == ILB_DUE_SCRAPE ? si
                     : h->health == ILB_HEALTH_HEALTHY ? pi
                                                       : ui;
      if (pi == 0 && kind == ILB_DUE_PROBE)
        continue;
      if (ival == 0)
        continue;
      uint64_t *at = kind == ILB_DUE_PROBE ? &h->next_probe : &h->next_scrape;
      if (now < *at) {
        next = min64(next, *at);
      } else if (n < cap) {
        ilb_due d = {r->id, r->host_data, kind, h->health};
        memcpy((char *)due + n * due_size, &d,
               due_size < sizeof(d) ? due_size : sizeof(d));
        n++;
        *at = now + jittered(p, MS(ival), jit);
        next = min64(next, *at);
      } else {
        next = now; /* more than cap: call again at once */
      }
    }
  }
  ilb__panic_check(p, now);
  if (pub)
    ramp_publish(p);
  /* What completions and writers do between calls is only timed and
   * reported here: while it can happen, come back within a second (and
   * within a probe interval, for replicas added meanwhile). */
  if (draining || p->ramp_dirty || ilb__hopt(p, ILB_OPT_SLOW_START_MS) ||
      ilb__hopt(p, ILB_OPT_OUTLIER_CONSECUTIVE_5XX) ||
      ilb__hopt(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY) ||
      ilb__hopt(p, ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV) ||
      ilb__hopt(p, ILB_OPT_OUTLIER_FAILURE_PERCENT) ||
      ilb__hopt(p, ILB_OPT_BREAKER_CONSECUTIVE) ||
      ilb__hopt(p, ILB_OPT_BREAKER_ERROR_PERCENT))
    next = min64(next, now + POLL_NS);
  if (!p->n_reps && pi) /* the first replica added is probed by then */
    next = min64(next, now + MS(pi));
  *n_due = n;
  if (next_ns_out)
    *next_ns_out = next;
  return ilb__writer_leave(p, 0);
}

/* ---- pool status ------------------------------------------------------------- */

int ilb_pool_health(ilb_pool_status *st, ilb_pool *p) {
  if (!st || !p)
    return ILB_EINVAL;
  size_t caller = st->struct_size;
  if (caller < offsetof(ilb_pool_status, replicas) + sizeof(uint32_t))
    return ILB_ESIZE;
  ilb_pool_status v;
  memset(&v, 0, sizeof(v));
  v.struct_size = caller < sizeof(v) ? caller : sizeof(v);
  pthread_mutex_lock(&p->mu);
  v.replicas = p->n_reps;
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__replica *r = p->reps[i];
    struct ilb__slot *s = ilb__slot_at(p, r->slot);
    uint32_t why = atomic_load(&s->why), brk = atomic_load(&s->brk);
    v.eligible += ilb__excluded(why, brk) == 0;
    v.healthy += r->h.health == ILB_HEALTH_HEALTHY;
    v.ejected += (why & ILB_EXCLUDED_EJECTED) != 0;
    v.breakers_open += (brk & ILB__BRK_STATE) == ILB_BREAKER_OPEN;
    v.draining += r->h.draining;
    v.in_flight += ILB__INFLIGHT(atomic_load(&s->load));
  }
  v.panic = (int32_t)atomic_load(&p->panic);
  v.retries = atomic_load(&p->n_retries);
  v.retries_denied_budget = atomic_load(&p->n_retry_denied);
  v.shed = atomic_load(&p->n_shed);
  pthread_mutex_unlock(&p->mu);
  memcpy(st, &v, v.struct_size);
  return 0;
}
