/* Telemetry: the signals a host reports per replica, their validation, and
 * the composite policy's precomputed scores (ilb__slot.tm0, tm_more).
 *
 * Reports are rare (one per scrape per replica) and take the pool mutex;
 * picks never read the raw signals, only the stages: the weighted sum of
 * the telemetry terms as a float, a "saturated" bit (deep health), and the
 * time until which that sum holds. When its oldest signal expires, the
 * next stage (without it) takes over, up to ILB__TM_STAGES distinct
 * expiries. The stages are recomputed on every report, weight change,
 * removal and telemetry option change (at the batch commit inside a
 * batch); between those they simply expire.
 * SPDX-License-Identifier: MIT */
#include <stddef.h>

#include "core/internal.h"
#include "policy/prefix.h"

/* One row per signal: name, field and accepted range. */
struct sig_def {
  const char *name;
  size_t off;
  double min, max;
};

#define SIG(field, lo, hi) {#field, offsetof(ilb_telemetry, field), lo, hi}
static const struct sig_def sigs[ILB_SIGNAL_COUNT] = {
    [ILB_SIGNAL_REQUESTS_WAITING] = SIG(requests_waiting, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_REQUESTS_RUNNING] = SIG(requests_running, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_KV_CACHE_USAGE] = SIG(kv_cache_usage, 0, 1),
    [ILB_SIGNAL_GPU_UTILIZATION] = SIG(gpu_utilization, 0, 1),
    [ILB_SIGNAL_GPU_MEMORY_FREE] = SIG(gpu_memory_free, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_GPU_MEMORY_TOTAL] = SIG(gpu_memory_total, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_PREFIX_HIT_RATE] = SIG(prefix_hit_rate, 0, 1),
    [ILB_SIGNAL_GEN_TOKENS_PER_S] = SIG(gen_tokens_per_s, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_TTFT] = SIG(ttft_s, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_QUEUE_TIME] = SIG(queue_time_s, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_REQUEST_RATE] = SIG(request_rate, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_MAX_CONCURRENCY] = SIG(max_concurrency, 0, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_MODEL_READY] = SIG(model_ready, 0, 1),
    [ILB_SIGNAL_KV_BLOCK_SIZE] = SIG(kv_block_size, 1, ILB_SIGNAL_MAX),
    [ILB_SIGNAL_KV_BLOCKS_TOTAL] = SIG(kv_blocks_total, 0, ILB_SIGNAL_MAX),
};
#undef SIG
#define ALL_SIGNALS ((UINT64_C(1) << ILB_SIGNAL_COUNT) - 1)

int ilb_telemetry_init(ilb_telemetry *t) {
  if (!t)
    return ILB_EINVAL;
  memset(t, 0, sizeof(*t));
  t->struct_size = sizeof(*t);
  return 0;
}

const char *ilb_signal_name(int32_t signal) {
  return signal >= 0 && signal < ILB_SIGNAL_COUNT ? sigs[signal].name : NULL;
}

static double field(const ilb_telemetry *t, int i) {
  double v;
  memcpy(&v, (const char *)t + sigs[i].off, sizeof(v));
  return v;
}

static void stage_clear(struct ilb__tm_stage *st) {
  atomic_store_explicit(&st->until, 0, memory_order_relaxed);
  atomic_store_explicit(&st->word, 0, memory_order_relaxed);
}

void ilb__tm_reset(struct ilb__slot *s) {
  atomic_store_explicit(&s->tokens, 0, memory_order_relaxed);
  stage_clear(&s->tm0);
  for (int j = 0; j < ILB__TM_STAGES - 1; j++)
    stage_clear(&s->tm_more[j]);
  atomic_store_explicit(&s->ewma, 0, memory_order_relaxed);
  atomic_store_explicit(&s->ewma_stamp, 0, memory_order_relaxed);
  s->tm_present = 0;
}

/* The signals the composite score reads. */
#define SCORE_SIGNALS                                                         \
  (ILB_SIGNAL_BIT(ILB_SIGNAL_REQUESTS_WAITING) |                             \
   ILB_SIGNAL_BIT(ILB_SIGNAL_GPU_UTILIZATION) |                              \
   ILB_SIGNAL_BIT(ILB_SIGNAL_KV_CACHE_USAGE) | ILB_SIGNAL_BIT(ILB_SIGNAL_TTFT) | \
   ILB_SIGNAL_BIT(ILB_SIGNAL_GPU_MEMORY_FREE) |                              \
   ILB_SIGNAL_BIT(ILB_SIGNAL_GPU_MEMORY_TOTAL) |                             \
   ILB_SIGNAL_BIT(ILB_SIGNAL_MODEL_READY))

/* The composite terms of the signals in `use` (all fresh), as a stage
 * word: float score, ILB__TM_SAT when they say "saturated". */
static uint32_t stage_word(struct ilb_pool *p, const struct ilb__replica *r,
                           const double *v, uint64_t use) {
  double w[5];
  for (int i = 0; i < 5; i++)
    w[i] = (double)atomic_load(&p->opt_score[i]) / 1000.0;
  double score = 0;
  int sat = 0;
#define HAS(sig) (use & ILB_SIGNAL_BIT(ILB_SIGNAL_##sig))
  if (HAS(REQUESTS_WAITING))
    score += w[0] * v[ILB_SIGNAL_REQUESTS_WAITING] / r->weight;
  if (HAS(GPU_UTILIZATION))
    score += w[1] * v[ILB_SIGNAL_GPU_UTILIZATION];
  if (HAS(KV_CACHE_USAGE)) {
    double kv = v[ILB_SIGNAL_KV_CACHE_USAGE];
    int64_t pct = atomic_load(&p->opt_kv_sat_pct);
    score += w[2] * kv;
    sat |= pct > 0 && kv * 100.0 >= (double)pct;
  }
  if (HAS(TTFT))
    score += w[3] * v[ILB_SIGNAL_TTFT];
  if (HAS(GPU_MEMORY_FREE) && HAS(GPU_MEMORY_TOTAL) &&
      v[ILB_SIGNAL_GPU_MEMORY_TOTAL] > 0)
    score += w[4] * (1.0 - v[ILB_SIGNAL_GPU_MEMORY_FREE] /
                               v[ILB_SIGNAL_GPU_MEMORY_TOTAL]);
  if (HAS(GPU_MEMORY_FREE)) {
    int64_t mib = atomic_load(&p->opt_mem_min_mib);
    sat |= mib > 0 && v[ILB_SIGNAL_GPU_MEMORY_FREE] < (double)mib * 1048576.0;
  }
  if (HAS(MODEL_READY))
    sat |= v[ILB_SIGNAL_MODEL_READY] == 0;
#undef HAS
  float f = score < 3e38 ? (float)score : 3e38f;
  uint32_t fb;
  memcpy(&fb, &f, sizeof(fb));
  return (fb & ~ILB__TM_SAT) | (sat ? ILB__TM_SAT : 0);
}

/* When a signal measured at ts expires: saturated, so a clock near
 * UINT64_MAX does not wrap. */
static uint64_t expiry(uint64_t ts, uint64_t age) {
  return ts > UINT64_MAX - age ? UINT64_MAX : ts + age;
}

/* Recompute the stages from the signals fresh now. With d distinct expiry
 * times x1 < ... < xd, stage j ends at the j-th of them and holds the
 * signals fresh until its end; past ILB__TM_STAGES of them the stages end
 * at x1, then at the last three, so the signals between x1 and those
 * expire together, early. Returns the last end (0 when none is fresh). */
static uint64_t refresh(struct ilb_pool *p, struct ilb__replica *r,
                        uint64_t now) {
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  uint64_t age = (uint64_t)atomic_load(&p->opt_tm_max_age_ms) * 1000000u;
  uint64_t exp[ILB_SIGNAL_COUNT], x[ILB_SIGNAL_COUNT], use = 0;
  uint32_t d = 0;
  for (int i = 0; i < ILB_SIGNAL_COUNT; i++) {
    exp[i] = 0;
    if (!(s->tm_present & ILB_SIGNAL_BIT(i) & SCORE_SIGNALS))
      continue;
    exp[i] = expiry(s->tm_ts[i], age);
    if (exp[i] <= now)
      continue;
    use |= ILB_SIGNAL_BIT(i);
    uint32_t k = 0; /* insert into the sorted distinct expiries */
    while (k < d && x[k] < exp[i])
      k++;
    if (k < d && x[k] == exp[i])
      continue;
    for (uint32_t m = d++; m > k; m--)
      x[m] = x[m - 1];
    x[k] = exp[i];
  }
  uint64_t ends[ILB__TM_STAGES];
  uint32_t n = d < ILB__TM_STAGES ? d : ILB__TM_STAGES;
  for (uint32_t j = 0; j < n; j++)
    ends[j] = j == 0 ? x[0] : x[d - n + j];
  for (uint32_t j = 0; j < ILB__TM_STAGES; j++) {
    struct ilb__tm_stage *st = j ? &s->tm_more[j - 1] : &s->tm0;
    if (j >= n) {
      stage_clear(st);
      continue;
    }
    uint64_t in = 0; /* the signals fresh until this stage's end */
    for (int i = 0; i < ILB_SIGNAL_COUNT; i++)
      if ((use & ILB_SIGNAL_BIT(i)) && exp[i] >= ends[j])
        in |= ILB_SIGNAL_BIT(i);
    /* word before until: a reader that sees the new expiry sees this
     * stage's score or a newer one */
    atomic_store_explicit(&st->word, stage_word(p, r, s->tm_val, in),
                          memory_order_relaxed);
    atomic_store_explicit(&st->until, ends[j], memory_order_release);
  }
  return n ? ends[n - 1] : 0;
}

static void until_max_raise(struct ilb_pool *p, uint64_t until) {
  if (until > atomic_load_explicit(&p->tm_until_max, memory_order_relaxed))
    atomic_store_explicit(&p->tm_until_max, until, memory_order_relaxed);
}

void ilb__tm_refresh(struct ilb_pool *p, struct ilb__replica *r) {
  if (p->batch_depth > 0)
    p->tm_dirty = 1; /* at the commit, with the rest of the batch */
  else
    until_max_raise(p, refresh(p, r, ilb__now(p)));
}

void ilb__tm_refresh_all(struct ilb_pool *p) {
  if (p->batch_depth > 0) {
    p->tm_dirty = 1;
    return;
  }
  p->tm_dirty = 0;
  uint64_t now = ilb__now(p), max = 0;
  for (uint32_t i = 0; i < p->n_reps; i++) {
    uint64_t u = refresh(p, p->reps[i], now);
    if (u > max)
      max = u;
  }
  atomic_store_explicit(&p->tm_until_max, max, memory_order_relaxed);
}

/* Check every present value; 0 or ILB_ERANGE with the culprit logged. */
static int validate(struct ilb_pool *p, const ilb_telemetry *t,
                    uint64_t now) {
  if (t->timestamp_ns > now) {
    ilb__log(p, ILB_LOG_DEBUG, "telemetry timestamp in the future");
    return ILB_ERANGE;
  }
  for (int i = 0; i < ILB_SIGNAL_COUNT; i++) {
    if (!(t->present & ILB_SIGNAL_BIT(i)))
      continue;
    double v = field(t, i);
    /* written so that NaN fails too */
    if (!(v >= sigs[i].min && v <= sigs[i].max) ||
        (i == ILB_SIGNAL_MODEL_READY && v != 0 && v != 1)) {
      ilb__log(p, ILB_LOG_DEBUG, "telemetry %s: %g outside %g..%g",
               sigs[i].name, v, sigs[i].min, sigs[i].max);
      return ILB_ERANGE;
    }
  }
  const uint64_t both = ILB_SIGNAL_BIT(ILB_SIGNAL_GPU_MEMORY_FREE) |
                        ILB_SIGNAL_BIT(ILB_SIGNAL_GPU_MEMORY_TOTAL);
  if ((t->present & both) == both &&
      t->gpu_memory_free > t->gpu_memory_total) {
    ilb__log(p, ILB_LOG_DEBUG, "telemetry: free GPU memory above total");
    return ILB_ERANGE;
  }
  return 0;
}

int ilb_replica_report(ilb_pool *p, const char *id, const ilb_telemetry *t) {
  if (!p || !id || !t)
    return ILB_EINVAL;
  int rc = ilb__check_struct_in(t, t->struct_size, sizeof(*t), sizeof(*t));
  if (rc)
    return rc;
  if (t->present & ~ALL_SIGNALS)
    return ILB_EINVAL; /* a signal this version does not know */
  if ((rc = ilb__writer_enter(p)))
    return rc;
  struct ilb__replica *r;
  if ((rc = ilb__find_locked(p, id, &r)))
    return ilb__writer_leave(p, rc);
  uint64_t now = ilb__now(p);
  if ((rc = validate(p, t, now)))
    return ilb__writer_leave(p, rc);
  struct ilb__slot *s = ilb__slot_at(p, r->slot);
  /* free <= total: checked within the report (validate); a report that
   * gives only one of them forgets a stored other one that contradicts it
   * (a Triton page whose "used" gauge was NaN sends the total alone). */
  const int F = ILB_SIGNAL_GPU_MEMORY_FREE, T = ILB_SIGNAL_GPU_MEMORY_TOTAL;
  uint64_t fb = ILB_SIGNAL_BIT(F), tb = ILB_SIGNAL_BIT(T);
  if ((t->present & (fb | tb)) == tb && (s->tm_present & fb) &&
      s->tm_val[F] > t->gpu_memory_total)
    s->tm_present &= ~fb;
  if ((t->present & (fb | tb)) == fb && (s->tm_present & tb) &&
      t->gpu_memory_free > s->tm_val[T])
    s->tm_present &= ~tb;
  uint64_t ts = t->timestamp_ns ? t->timestamp_ns : now;
  for (int i = 0; i < ILB_SIGNAL_COUNT; i++) {
    if (!(t->present & ILB_SIGNAL_BIT(i)))
      continue;
    s->tm_val[i] = field(t, i);
    s->tm_ts[i] = ts;
    s->tm_present |= ILB_SIGNAL_BIT(i);
  }
  ilb__tm_refresh(p, r); /* inside a batch: at its commit */
  ilb__pfx_telemetry(p, r);
  return ilb__writer_leave(p, 0);
}

int ilb_replica_telemetry(ilb_telemetry *t, ilb_pool *p, const char *id) {
  if (!t || !p || !id)
    return ILB_EINVAL;
  size_t want;
  struct ilb__replica *r;
  int rc = ilb__out_find(p, id, t->struct_size,
                         offsetof(ilb_telemetry, present) + sizeof(uint64_t),
                         sizeof(*t), &want, &r);
  if (rc)
    return rc;
  const struct ilb__slot *s = ilb__slot_at(p, r->slot);
  ilb_telemetry v;
  ilb_telemetry_init(&v);
  v.struct_size = want;
  uint64_t now = ilb__now(p);
  uint64_t age = (uint64_t)atomic_load(&p->opt_tm_max_age_ms) * 1000000u;
  for (int i = 0; i < ILB_SIGNAL_COUNT; i++) {
    if (!(s->tm_present & ILB_SIGNAL_BIT(i)))
      continue;
    v.present |= ILB_SIGNAL_BIT(i);
    memcpy((char *)&v + sigs[i].off, &s->tm_val[i], sizeof(double));
    if (expiry(s->tm_ts[i], age) <= now)
      v.stale |= ILB_SIGNAL_BIT(i);
    if (!v.timestamp_ns || s->tm_ts[i] < v.timestamp_ns)
      v.timestamp_ns = s->tm_ts[i];
  }
  pthread_mutex_unlock(&p->mu);
  memcpy(t, &v, want);
  return 0;
}
