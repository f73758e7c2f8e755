/* Passive health: what a completion's outcome does to its replica
 * (consecutive errors, outlier ejection, circuit breaker), lock-free, and
 * the writer's interval analysis (success rate, failure percentage).
 *
 * A completion that ejects a replica or opens its breaker sets the bits in
 * `why` and, unless the pool is in panic, in `down` at once, then flags the
 * slot (`pend`) so that the next ilb_next_due reports it and times it.
 * SPDX-License-Identifier: MIT */
#include "core/internal.h"

#define MS(v) ((uint64_t)(v)*UINT64_C(1000000))

/* After the state it describes is stored: the writer reads that state
 * after consuming the flag. */
static void flag(struct ilb__slot *s, uint32_t what) {
  atomic_fetch_or(&s->pend, what);
}

/* Take the replica out for `bit` (EJECTED or BREAKER) now, unless the pool
 * is in panic. (Should panic start in between, the bit stays in `down`
 * until the next ilb_next_due re-derives it: the slot is flagged.) */
static void exclude(struct ilb_pool *p, struct ilb__slot *s, uint32_t bit) {
  if (!atomic_load(&p->panic))
    atomic_fetch_or(&s->down, bit);
}

int ilb__eject(struct ilb_pool *p, struct ilb__slot *s, int32_t reason,
               uint64_t now) {
  if (atomic_load(&s->why) & ILB_EXCLUDED_EJECTED)
    return 0;
  /* Reserve one of the floor(max% * replicas) ejections first, so the
   * limit holds however many completions race here. */
  uint64_t allowed =
      (uint64_t)ilb__hopt(p, ILB_OPT_OUTLIER_MAX_EJECTION_PERCENT) *
      atomic_load(&p->n_members) / 100;
  uint32_t e = atomic_load(&p->n_ejected);
  do {
    if (e >= allowed)
      return 0;
  } while (!atomic_compare_exchange_weak(&p->n_ejected, &e, e + 1));
  uint32_t old = atomic_fetch_or(&s->why, ILB_EXCLUDED_EJECTED);
  if (old & ILB_EXCLUDED_EJECTED) { /* another completion was first */
    atomic_fetch_sub(&p->n_ejected, 1);
    return 0;
  }
  if (old & ILB__WHY_GONE) {
    /* removed meanwhile: whoever clears the bit gives the count back
     * (ilb__health_removed may have done it already) */
    if (atomic_fetch_and(&s->why, ~(uint32_t)ILB_EXCLUDED_EJECTED) &
        ILB_EXCLUDED_EJECTED)
      atomic_fetch_sub(&p->n_ejected, 1);
    return 0;
  }
  atomic_store(&s->eject_reason, (uint32_t)reason);
  atomic_store(&s->eject_at, now);
  exclude(p, s, ILB_EXCLUDED_EJECTED);
  flag(s, ILB__PEND_EJECT);
  return 1;
}

/* Breaker: from state `from` (value b as loaded) to open. */
static void breaker_open(struct ilb_pool *p, struct ilb__slot *s, uint32_t b,
                         int32_t reason, uint64_t now) {
  if (!atomic_compare_exchange_strong(&s->brk, &b, ILB_BREAKER_OPEN))
    return; /* another completion moved it */
  atomic_store(&s->brk_reason, (uint32_t)reason);
  atomic_store(&s->brk_at, now);
  exclude(p, s, ILB_EXCLUDED_BREAKER);
  atomic_fetch_and(&s->down, ILB__EXCL_MASK); /* no half-open limit */
  flag(s, ILB__PEND_BRK);
}

void ilb__passive_error(struct ilb_pool *p, struct ilb__slot *s, int gw) {
  uint64_t now = ilb__now_fast(p);
  uint32_t c = atomic_load(&s->consec), nc, e, g;
  do {
    e = c & 0xffff;
    g = c >> 16;
    e += e < 0xffff;
    g = gw ? g + (g < 0xffff) : 0;
    nc = e | g << 16;
  } while (!atomic_compare_exchange_weak(&s->consec, &c, nc));

  uint32_t b = atomic_load(&s->brk);
  if ((b & ILB__BRK_STATE) == ILB_BREAKER_HALF_OPEN) {
    breaker_open(p, s, b, ILB_REASON_BREAKER_TRIAL_FAILED, now);
  } else if ((b & ILB__BRK_STATE) == ILB_BREAKER_CLOSED) {
    int64_t thr = ilb__hopt(p, ILB_OPT_BREAKER_CONSECUTIVE);
    int64_t pct = ilb__hopt(p, ILB_OPT_BREAKER_ERROR_PERCENT);
    int32_t reason = ILB_REASON_NONE;
    if (thr && e >= (uint64_t)thr) {
      reason = ILB_REASON_BREAKER_CONSECUTIVE;
    } else if (pct) {
      /* this completion is counted in errors but not yet in completed */
      uint64_t tot = ilb__completed(s) + 1 - atomic_load(&s->neutral) -
                     atomic_load(&s->win_c);
      uint64_t errs = atomic_load(&s->errors) - atomic_load(&s->win_e);
      if (tot >= (uint64_t)ilb__hopt(p, ILB_OPT_BREAKER_MIN_REQUESTS) &&
          errs * 100 >= (uint64_t)pct * tot)
        reason = ILB_REASON_BREAKER_ERROR_RATE;
    }
    if (reason) {
      breaker_open(p, s, b, reason, now);
      atomic_store(&s->consec, 0);
    }
  }

  int64_t t5 = ilb__hopt(p, ILB_OPT_OUTLIER_CONSECUTIVE_5XX);
  int64_t tg = ilb__hopt(p, ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY);
  int32_t reason = ILB_REASON_NONE;
  if (t5 && e >= (uint64_t)t5)
    reason = ILB_REASON_CONSECUTIVE_5XX;
  else if (tg && gw && g >= (uint64_t)tg)
    reason = ILB_REASON_CONSECUTIVE_GATEWAY;
  if (reason && ilb__eject(p, s, reason, now))
    atomic_store(&s->consec, 0);
}

void ilb__passive_half_success(struct ilb_pool *p, struct ilb__slot *s) {
  uint32_t need = (uint32_t)ilb__hopt(p, ILB_OPT_BREAKER_CLOSE_SUCCESSES);
  uint32_t b = atomic_load(&s->brk), nb;
  do {
    if ((b & ILB__BRK_STATE) != ILB_BREAKER_HALF_OPEN)
      return;
    uint32_t ok = (b >> 2) + 1;
    nb = ok >= need ? ILB_BREAKER_CLOSED
                    : (ILB_BREAKER_HALF_OPEN | ok << 2);
  } while (!atomic_compare_exchange_weak(&s->brk, &b, nb));
  if (nb != ILB_BREAKER_CLOSED)
    return;
  atomic_store(&s->closed_at, ilb__now_fast(p));
  atomic_fetch_and(&s->down, ILB__EXCL_MASK); /* lift the trial limit */
  flag(s, ILB__PEND_BRK_CLOSED); /* its own event, even if it reopens */
}

/* ---- writer: per-interval analysis --------------------------------------- */

/* Integer square root of a double's worth of variance, no libm: Newton. */
static double sqrt_pos(double x) {
  if (!(x > 0))
    return 0;
  double r = x > 1 ? x : 1;
  for (int i = 0; i < 64; i++) {
    double n = 0.5 * (r + x / r);
    if (n == r)
      break;
    r = n;
  }
  return r;
}

void ilb__outlier_interval(struct ilb_pool *p, uint64_t now) {
  uint64_t iv = MS(ilb__hopt(p, ILB_OPT_OUTLIER_INTERVAL_MS));
  uint64_t vol = (uint64_t)ilb__hopt(p, ILB_OPT_OUTLIER_REQUEST_VOLUME);
  uint64_t min_hosts = (uint64_t)ilb__hopt(p, ILB_OPT_OUTLIER_MIN_HOSTS);
  int64_t k = ilb__hopt(p, ILB_OPT_OUTLIER_SUCCESS_RATE_STDEV);
  int64_t fp = ilb__hopt(p, ILB_OPT_OUTLIER_FAILURE_PERCENT);
  uint64_t m = 0;
  double sum = 0, sum2 = 0;
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__replica *r = p->reps[i];
    struct ilb__slot *s = ilb__slot_at(p, r->slot);
    /* CANCELLED completions count as neither success nor error */
    uint64_t c = ilb__completed(s) - atomic_load(&s->neutral);
    uint64_t e = atomic_load(&s->errors);
    r->h.last_dc = c - r->h.iv_c;
    r->h.last_de = e - r->h.iv_e;
    if (r->h.last_de > r->h.last_dc) /* errors counted before completions */
      r->h.last_de = r->h.last_dc;
    r->h.iv_c = c;
    r->h.iv_e = e;
    uint32_t why = atomic_load(&s->why);
    /* one ejection forgiven per interval spent in, and not just out of,
     * ejection */
    if (!(why & ILB_EXCLUDED_EJECTED) && r->h.eject_n &&
        r->h.eject_until + iv <= now)
      r->h.eject_n--;
    if (r->h.last_dc >= vol && !(why & ILB_EXCLUDED_EJECTED)) {
      double sr = 1.0 - (double)r->h.last_de / (double)r->h.last_dc;
      sum += sr;
      sum2 += sr * sr;
      m++;
    }
  }
  if (m < min_hosts || (!k && !fp))
    return;
  double mean = sum / (double)m;
  double sd = sqrt_pos(sum2 / (double)m - mean * mean);
  double floor_sr = mean - (double)k / 1000.0 * sd;
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__replica *r = p->reps[i];
    struct ilb__slot *s = ilb__slot_at(p, r->slot);
    if (r->h.last_dc < vol)
      continue;
    double sr = 1.0 - (double)r->h.last_de / (double)r->h.last_dc;
    if (k && sr < floor_sr)
      ilb__eject(p, s, ILB_REASON_SUCCESS_RATE, now);
    else if (fp && r->h.last_de * 100 >= (uint64_t)fp * r->h.last_dc)
      ilb__eject(p, s, ILB_REASON_FAILURE_PERCENT, now);
  }
}

void ilb__outlier_marks(struct ilb_pool *p) {
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__replica *r = p->reps[i];
    struct ilb__slot *s = ilb__slot_at(p, r->slot);
    r->h.iv_c = ilb__completed(s) - atomic_load(&s->neutral);
    r->h.iv_e = atomic_load(&s->errors);
  }
}

void ilb__breaker_reset(struct ilb_pool *p) {
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__replica *r = p->reps[i];
    struct ilb__slot *s = ilb__slot_at(p, r->slot);
    uint64_t c = ilb__completed(s) - atomic_load(&s->neutral);
    uint64_t e = atomic_load(&s->errors);
    r->h.half_c = r->h.prev_c = c;
    r->h.half_e = r->h.prev_e = e;
    atomic_store(&s->win_c, c);
    atomic_store(&s->win_e, e);
  }
}

void ilb__breaker_half(struct ilb_pool *p) {
  for (uint32_t i = 0; i < p->n_reps; i++) {
    struct ilb__replica *r = p->reps[i];
    struct ilb__slot *s = ilb__slot_at(p, r->slot);
    /* the window starts two half-windows back: it covers 1 to 1.5
     * windows */
    atomic_store(&s->win_c, r->h.prev_c);
    atomic_store(&s->win_e, r->h.prev_e);
    r->h.prev_c = r->h.half_c;
    r->h.prev_e = r->h.half_e;
    r->h.half_c = ilb__completed(s) - atomic_load(&s->neutral);
    r->h.half_e = atomic_load(&s->errors);
  }
}
