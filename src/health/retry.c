/* Retries (ilb_retry) with a retry budget and backoff, and the
 * retry-after hint of a shed or saturated pick.
 * SPDX-License-Identifier: MIT */
#include <stddef.h>

#include "core/internal.h"
#include "policy/policy.h"

#define MS(v) ((uint64_t)(v)*UINT64_C(1000000))
#define BUDGET_WINDOW_S 10

int ilb_retry_state_init(ilb_retry_state *st) {
  if (!st)
    return ILB_EINVAL;
  memset(st, 0, sizeof(*st));
  st->struct_size = sizeof(*st);
  st->attempts = 1;
  return 0;
}

int ilb_retry_result_init(ilb_retry_result *res) {
  if (!res)
    return ILB_EINVAL;
  memset(res, 0, sizeof(*res));
  res->struct_size = sizeof(*res);
  return 0;
}

uint64_t ilb__retry_after(struct ilb_pool *p, const struct ilb__snap *s,
                          uint64_t r) {
  /* The soonest a replica is expected to finish one of its requests: its
   * latency estimate over its requests in flight. */
  uint64_t now = ilb__now_fast(p);
  double best = -1;
  for (uint32_t i = 0; i < s->n; i++) {
    const struct ilb__cand *c = &s->cand[i];
    if (!ilb__available(c))
      continue;
    double e = ilb__ewma_now(c->slot, s->ewma_tau_ns, now);
    uint64_t n = ilb__load(c);
    if (e < 0 || n == 0)
      continue;
    e /= (double)n;
    if (best < 0 || e < best)
      best = e;
  }
  if (best > 3600e9)
    best = 3600e9; /* an hour at most */
  uint64_t base = best < 0 ? MS(ilb__hopt(p, ILB_OPT_RETRY_AFTER_MS))
                           : (uint64_t)best;
  if (base < 1000000)
    base = 1000000; /* 1 ms */
  return base + r % (base / 2 + 1);
}

/* Successful picks so far, all threads (approximate for threads beyond
 * the 64 stripes, which share theirs). */
static uint64_t picks_total(struct ilb_pool *p) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < ILB__STRIPES; i++)
    n += atomic_load_explicit(&p->stripes[i].picks, memory_order_relaxed);
  return n;
}

/* Take one retry from the budget: over the last BUDGET_WINDOW_S seconds
 * (1 s slots), retries <= percent * requests + min_per_s * window, where
 * requests = picks - retries. The pick count is sampled only when a retry
 * is asked for, so the count at the window's start is interpolated between
 * the last sample before it (at first, the pool's creation) and the first
 * one inside. Returns the slot used, or -1 when spent. */
static int budget_take(struct ilb_pool *p, uint64_t now) {
  uint64_t pct = (uint64_t)ilb__hopt(p, ILB_OPT_RETRY_BUDGET_PERCENT);
  uint64_t minps = (uint64_t)ilb__hopt(p, ILB_OPT_RETRY_BUDGET_MIN_PER_S);
  uint64_t sec = now / UINT64_C(1000000000) + 1; /* 0 marks an empty slot */
  pthread_mutex_lock(&p->budget_mu);
  uint64_t picks = picks_total(p);
  int cur = (int)(sec % ILB__BUDGET_SLOTS);
  if (p->bud_sec[cur] != sec) {
    p->bud_sec[cur] = sec;
    p->bud_picks[cur] = picks;
    p->bud_retries[cur] = 0;
  }
  uint64_t t0 = sec > BUDGET_WINDOW_S ? sec - BUDGET_WINDOW_S + 1 : 1;
  uint64_t o_sec = sec, o_picks = picks, retries = 0;
  for (int i = 0; i < ILB__BUDGET_SLOTS; i++) {
    if (!p->bud_sec[i])
      continue;
    if (p->bud_sec[i] < t0) { /* before the window: maybe a newer base */
      if (p->bud_sec[i] > p->bud_base_sec) {
        p->bud_base_sec = p->bud_sec[i];
        p->bud_base_picks = p->bud_picks[i];
      }
      continue;
    }
    retries += p->bud_retries[i];
    if (p->bud_sec[i] < o_sec) {
      o_sec = p->bud_sec[i];
      o_picks = p->bud_picks[i];
    }
  }
  uint64_t p0 = o_picks; /* picks at the window's start */
  if (p->bud_base_sec >= t0) /* the pool is younger than the window */
    p0 = p->bud_base_picks < o_picks ? p->bud_base_picks : o_picks;
  else if (o_sec > p->bud_base_sec && o_picks >= p->bud_base_picks)
    p0 = p->bud_base_picks +
         (uint64_t)((double)(o_picks - p->bud_base_picks) *
                    (double)(t0 - p->bud_base_sec) /
                    (double)(o_sec - p->bud_base_sec));
  uint64_t made = picks - p0;
  uint64_t requests = made > retries ? made - retries : 0;
  /* retries + 1 <= pct/100 * requests + minps * window, in integers */
  int ok = (retries + 1) * 100 <=
           pct * requests + minps * BUDGET_WINDOW_S * 100;
  if (ok)
    p->bud_retries[cur]++;
  pthread_mutex_unlock(&p->budget_mu);
  return ok ? cur : -1;
}

void ilb__budget_sample(struct ilb_pool *p, uint64_t now) {
  uint64_t sec = now / UINT64_C(1000000000) + 1;
  int cur = (int)(sec % ILB__BUDGET_SLOTS);
  pthread_mutex_lock(&p->budget_mu);
  if (p->bud_sec[cur] != sec) {
    p->bud_sec[cur] = sec;
    p->bud_picks[cur] = picks_total(p);
    p->bud_retries[cur] = 0;
  }
  pthread_mutex_unlock(&p->budget_mu);
}

static void budget_refund(struct ilb_pool *p, int slot) {
  pthread_mutex_lock(&p->budget_mu);
  if (p->bud_retries[slot])
    p->bud_retries[slot]--;
  pthread_mutex_unlock(&p->budget_mu);
}

static int retryable(int64_t on, const ilb_outcome *o) {
  if (!o)
    return 0;
  switch (o->status) {
  case ILB_OUTCOME_CONNECT_ERROR:
    return (on & ILB_RETRY_ON_CONNECT_ERROR) != 0;
  case ILB_OUTCOME_REFUSED:
    return (on & ILB_RETRY_ON_REFUSED) != 0;
  case ILB_OUTCOME_TIMEOUT:
    return (on & ILB_RETRY_ON_TIMEOUT) != 0;
  case ILB_OUTCOME_CANCELLED:
    return 0;
  default:
    break;
  }
  if (o->http_status == 429)
    return (on & ILB_RETRY_ON_429) != 0;
  if (o->http_status >= 500 ||
      (o->status == ILB_OUTCOME_HTTP_ERROR && o->http_status == 0))
    return (on & ILB_RETRY_ON_5XX) != 0;
  return 0;
}

/* Smallest result struct we accept: up to and including host_data. */
#define RES_MIN (offsetof(ilb_retry_result, host_data) + sizeof(void *))

int ilb_retry(ilb_retry_result *res, ilb_pool *p, ilb_retry_state *st,
              const ilb_request *req, uint64_t ticket,
              const ilb_outcome *outcome) {
  if (!res || !p || !st)
    return ILB_EINVAL;
  if (res->struct_size < RES_MIN)
    return ILB_ESIZE;
  int rc = ilb__check_struct_in(st, st->struct_size, sizeof(*st), sizeof(*st));
  if (rc)
    return rc;
  if (st->attempts == 0 || st->attempts > ILB_RETRY_TRIED_MAX)
    return ILB_EINVAL;
  uint32_t slot;
  rc = ilb__complete(p, ticket, outcome, &slot);
  if (rc && rc != ILB_EREMOVED)
    return rc;
  ilb_retry_result v;
  memset(&v, 0, sizeof(v));
  v.struct_size = res->struct_size < sizeof(v) ? res->struct_size : sizeof(v);
  st->tried[st->attempts - 1] = (uint64_t)slot + 1;

  if (!retryable(ilb__hopt(p, ILB_OPT_RETRY_ON), outcome)) {
    v.verdict = ILB_RETRY_NOT_RETRYABLE;
  } else if (st->attempts >= ilb__hopt(p, ILB_OPT_RETRY_MAX_ATTEMPTS)) {
    v.verdict = ILB_RETRY_ATTEMPTS;
  } else {
    uint64_t now = ilb__now_fast(p);
    int bslot = budget_take(p, now);
    if (bslot < 0) {
      v.verdict = ILB_RETRY_BUDGET;
      atomic_fetch_add(&p->n_retry_denied, 1);
    } else {
      ilb_pick_result pr;
      ilb_pick_result_init(&pr);
      struct ilb__pick_opts po = {st->tried, st->attempts, 0, 0, 0, 0, 0, 0};
      rc = ilb__pick_ex(&pr, p, req, &po);
      if (rc) {
        budget_refund(p, bslot);
        v.verdict = ILB_RETRY_NO_REPLICA;
        v.error = rc;
        v.backoff_ns = pr.retry_after_ns;
      } else {
        atomic_fetch_add(&p->n_retries, 1);
        st->attempts++;
        v.verdict = ILB_RETRY_YES;
        v.ticket = pr.ticket;
        v.replica_id = pr.replica_id;
        v.host_data = pr.host_data;
        /* full jitter over base * 2^(retry - 1), capped */
        uint64_t base = MS(ilb__hopt(p, ILB_OPT_RETRY_BACKOFF_BASE_MS));
        uint64_t cap = MS(ilb__hopt(p, ILB_OPT_RETRY_BACKOFF_MAX_MS));
        uint32_t k = st->attempts - 2; /* 0 for the first retry */
        uint64_t b = k < 40 && base <= (cap >> k) ? base << k : cap;
        uint64_t r = ilb__mix64(pr.ticket ^ p->ticket_salt ^ now);
        v.backoff_ns = b ? r % (b + 1) : 0;
      }
    }
  }
  memcpy(res, &v, v.struct_size);
  return 0;
}
