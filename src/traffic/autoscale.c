/* The autoscaling signal (ilb_pool_autoscale): how many replicas the
 * pool's load asks for, and a recommendation stabilised the way the
 * Kubernetes HPA stabilises its own (a scale-up only as far as the whole
 * up window asked for, a scale-down only as far as the whole down window
 * allowed), so a host can hand it to any autoscaler as an external metric.
 *
 * Everything is read under the pool mutex from what the pool already
 * tracks: requests in flight, fresh telemetry, the pick counters (arrival)
 * and the latency estimates (service). Nothing here touches the pick path:
 * the history lives in ilb_pool.autoscale, allocated at the first call.
 * SPDX-License-Identifier: MIT */
#include <stddef.h>

#include "traffic/traffic.h"

/* Calls remembered: enough for the default 5 min down window polled every
 * 2 s; a window holding more calls is judged on the last 256. */
#define HIST 256u

struct ilb__autoscale {
  uint64_t base_ns;     /* host clock of the arrival baseline */
  uint64_t base_picks;  /* the pool's pick count then */
  double arrival;       /* the last measured arrival rate (per s) */
  uint32_t recommended; /* the previous recommendation */
  uint32_t head;        /* next ring slot to write */
  uint32_t n;           /* calls in the ring; 0 = no call yet */
  uint32_t pad;
  uint64_t at[HIST];      /* host clock of each call */
  uint32_t desired[HIST]; /* its raw recommendation */
};

void ilb__autoscale_free(struct ilb_pool *p) {
  ilb__free(&p->a, p->autoscale);
  p->autoscale = NULL;
}

static int64_t sopt(const struct ilb_pool *p, int32_t id) {
  return atomic_load_explicit(
      &p->opt_scale[id - ILB_OPT_SCALE_TARGET_IN_FLIGHT], memory_order_relaxed);
}

/* Is signal sig of slot s known now? The rule of ilb_replica_telemetry:
 * unknown from the moment its age reaches the maximum. */
static int fresh(const struct ilb__slot *s, int sig, uint64_t age,
                 uint64_t now) {
  if (!(s->tm_present & ILB_SIGNAL_BIT(sig)))
    return 0;
  uint64_t ts = s->tm_ts[sig];
  return ts > UINT64_MAX - age || now < ts + age;
}

/* ceil(x) for x >= 0 (NaN: 0), at most cap; no libm. */
static uint64_t ceil_cap(double x, uint64_t cap) {
  if (!(x > 0))
    return 0;
  if (x >= (double)cap)
    return cap;
  uint64_t u = (uint64_t)x;
  return (double)u < x ? u + 1 : u;
}

/* Successful picks so far, all threads (as the retry budget counts them). */
static uint64_t picks_total(struct ilb_pool *p) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < ILB__STRIPES; i++)
    n += atomic_load_explicit(&p->stripes[i].picks, memory_order_relaxed);
  return n;
}

/* Within the bounds; when they cross (MIN > MAX, set one at a time), the
 * maximum wins: it is the one that caps what the host pays for. */
static uint32_t clamp(uint64_t v, uint64_t lo, uint64_t hi) {
  if (v < lo)
    v = lo;
  if (v > hi)
    v = hi;
  return (uint32_t)v; /* hi <= 1000000 */
}

/* What the pool's replicas carry and can serve now. */
struct load {
  uint32_t current, ready;
  uint64_t in_flight, waiting;
  double service; /* per second, of the ready replicas; 0 unknown */
};

static void measure(struct ilb_pool *p, uint64_t now, struct load *m) {
  uint64_t age = (uint64_t)atomic_load(&p->opt_tm_max_age_ms) * 1000000u;
  double tau = (double)atomic_load(&p->opt_ewma_decay_ms) * 1e6;
  double target = (double)sopt(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT);
  double waiting = 0, lat_sum = 0, conc_unknown = 0;
  uint32_t with_lat = 0;
  memset(m, 0, sizeof(*m));
  m->current = p->n_reps;
  for (uint32_t i = 0; i < p->n_reps; i++) {
    const struct ilb__replica *r = p->reps[i];
    struct ilb__slot *s = ilb__slot_at(p, r->slot);
    /* Load counts on every replica, routable or not: it is there. */
    m->in_flight += ILB__INFLIGHT(atomic_load(&s->load));
    if (fresh(s, ILB_SIGNAL_REQUESTS_WAITING, age, now))
      waiting += s->tm_val[ILB_SIGNAL_REQUESTS_WAITING];
    /* Service only on the replicas picks may choose (what they obey). */
    if (atomic_load(&s->down) & ILB__EXCL_MASK)
      continue;
    m->ready++;
    double conc = target;
    if (r->capacity)
      conc = (double)r->capacity;
    else if (fresh(s, ILB_SIGNAL_MAX_CONCURRENCY, age, now) &&
             s->tm_val[ILB_SIGNAL_MAX_CONCURRENCY] > 0)
      conc = s->tm_val[ILB_SIGNAL_MAX_CONCURRENCY];
    double e = ilb__ewma_now(s, tau, now);
    if (e < 0) { /* no estimate yet: the others' mean, below */
      conc_unknown += conc;
      continue;
    }
    if (e < 1.0)
      e = 1.0; /* decayed to nothing: 1 ns, never a division by 0 */
    m->service += conc * 1e9 / e;
    lat_sum += e;
    with_lat++;
  }
  if (with_lat)
    m->service += conc_unknown * 1e9 / (lat_sum / with_lat);
  /* Servers report whole requests; a fractional sum (an averaged page)
   * is rounded so that the count shown is the count used. */
  m->waiting = waiting >= 1.8e19 ? UINT64_MAX : (uint64_t)(waiting + 0.5);
}

/* Picks per second since the previous call. At the same instant there is
 * no interval to measure: the last rate stands (a 0 there would be a
 * false "no traffic" in the up window's minimum). */
static double arrival(struct ilb__autoscale *st, uint64_t picks, uint64_t now,
                      int first) {
  if (first || now < st->base_ns) { /* no baseline, or the clock stepped back */
    st->base_ns = now;
    st->base_picks = picks;
    return first ? 0 : st->arrival;
  }
  if (now == st->base_ns)
    return st->arrival;
  /* > 64 threads share stripes and may lose a count: never negative */
  uint64_t d = picks > st->base_picks ? picks - st->base_picks : 0;
  st->arrival = (double)d * 1e9 / (double)(now - st->base_ns);
  st->base_ns = now;
  st->base_picks = picks;
  return st->arrival;
}

/* HPA stabilisation over the ring (the call just recorded included): up
 * to the lowest desired value of the up window when that is above the
 * previous recommendation, down to the highest of the down window when
 * that is below it. As in Kubernetes, a call counts while it is younger
 * than the window: a window of 0 stabilises nothing, and a spike is
 * followed once the last call that did not ask for it is a window old. */
static uint32_t stabilise(const struct ilb__autoscale *st, uint32_t desired,
                          uint32_t prev, uint64_t now, uint64_t up_ns,
                          uint64_t down_ns) {
  uint32_t up = desired, down = desired;
  for (uint32_t i = 0; i < st->n; i++) {
    uint64_t age = now > st->at[i] ? now - st->at[i] : 0;
    uint32_t d = st->desired[i];
    if (age < up_ns && d < up)
      up = d;
    if (age < down_ns && d > down)
      down = d;
  }
  if (up > prev)
    return up;
  if (down < prev)
    return down;
  return prev;
}

int ilb_pool_autoscale(ilb_autoscale *out, ilb_pool *p) {
  if (!out || !p)
    return ILB_EINVAL;
  size_t caller = out->struct_size;
  if (caller < offsetof(ilb_autoscale, current) + sizeof(uint32_t))
    return ILB_ESIZE;
  int rc = ilb__writer_enter(p);
  if (rc)
    return rc;
  struct ilb__autoscale *st = p->autoscale;
  if (!st) {
    st = ilb__calloc(&p->a, 1, sizeof(*st));
    if (!st)
      return ilb__writer_leave(p, ILB_ENOMEM);
    p->autoscale = st;
  }
  uint64_t now = ilb__now(p);
  int first = st->n == 0;
  struct load m;
  measure(p, now, &m);

  ilb_autoscale v;
  memset(&v, 0, sizeof(v));
  v.struct_size = caller < sizeof(v) ? caller : sizeof(v);
  v.current = m.current;
  v.ready = m.ready;
  v.in_flight = m.in_flight;
  v.waiting = m.waiting;
  v.arrival_per_s = arrival(st, picks_total(p), now, first);
  v.service_per_s = m.service;
  if (m.service > 0) {
    v.utilization = v.arrival_per_s / m.service;
    v.overloaded = v.arrival_per_s > m.service;
  }

  uint64_t lo = (uint64_t)sopt(p, ILB_OPT_SCALE_MIN_REPLICAS);
  uint64_t hi = (uint64_t)sopt(p, ILB_OPT_SCALE_MAX_REPLICAS);
  uint64_t t_if = (uint64_t)sopt(p, ILB_OPT_SCALE_TARGET_IN_FLIGHT);
  uint64_t t_q = (uint64_t)sopt(p, ILB_OPT_SCALE_TARGET_QUEUE);
  double util = (double)sopt(p, ILB_OPT_SCALE_TARGET_UTILIZATION);
  uint64_t want = m.in_flight / t_if + (m.in_flight % t_if != 0);
  uint64_t q = m.waiting / t_q + (m.waiting % t_q != 0);
  if (q > want)
    want = q;
  if (m.service > 0 && m.ready) {
    /* arrival / (service per ready replica * util%), reordered so exact
     * quotients stay exact; the relative nudge keeps rounding noise in
     * the latency estimate from asking for one replica more */
    double x = v.arrival_per_s * m.ready * 100.0 / (m.service * util);
    uint64_t a = ceil_cap(x * (1.0 - 1e-9), hi + 1);
    if (a > want)
      want = a;
  }
  v.desired = clamp(want, lo, hi);

  st->at[st->head] = now;
  st->desired[st->head] = v.desired;
  st->head = (st->head + 1) % HIST;
  if (st->n < HIST)
    st->n++;
  uint64_t up_ns = (uint64_t)sopt(p, ILB_OPT_SCALE_UP_WINDOW_MS) * 1000000u;
  uint64_t down_ns = (uint64_t)sopt(p, ILB_OPT_SCALE_DOWN_WINDOW_MS) * 1000000u;
  uint32_t prev = first ? v.desired : st->recommended;
  /* Bounds changed since: they apply to the recommendation at once. */
  v.recommended =
      clamp(stabilise(st, v.desired, prev, now, up_ns, down_ns), lo, hi);
  st->recommended = v.recommended;
  memcpy(out, &v, v.struct_size);
  return ilb__writer_leave(p, 0);
}
