/* sim - the fleet simulator: replays a Mooncake-format trace through the
 * real library (public API only) against modelled replicas (replica.h),
 * one run per policy and offered load, and prints a comparison table with
 * one SIM line per row. Deterministic: the host clock is the simulation's
 * clock and every random draw comes from the seeded library generators.
 *
 *   build/bench/sim [--trace PATH | --workload NAME] [--policy all|NAME,..]
 *                   [--load 0.5,0.8,0.95] [--gateways G] [--seed S]
 *                   [--fleet h100:2,a100:2,l4:2,t4:2] [--scrape-ms 1000]
 *                   [--scenario none|faults] [--fault SPEC]...
 *                   [--out DIR] [--chart-policy NAME] [--capacity X]
 *                   [--repeat K] [--opt ID=VALUE]... [--kv-events]
 *                   [--quiet] [--bench]
 *
 * --opt: a pool option (enum ilb_option's number) set on every gateway
 * after the simulator's own, e.g. --opt 170=25 (ILB_OPT_PREFIX_LOAD_WEIGHT).
 * --kv-events: the prefix policy's gateways learn what each replica holds
 * from its KV-cache events (ILB_PREFIX_EVENTS, every gateway subscribed to
 * every replica), not from their own picks.
 * --workload: shared-prefix, heavy-tail, bursty, multi-turn (workload.h)
 * instead of a trace. --out DIR: SVG charts (latency p99 against load per
 * policy; requests in flight per replica over time for --chart-policy at
 * the middle load). --capacity X: each replica takes at most X times its
 * maximum batch in flight (ilb_replica_spec.capacity); a pick that finds
 * every candidate full is shed (ILB_ESATURATED) as a gateway would answer
 * 503; default 0, no limit. Faults: see "faults" below.
 *
 * --bench: one run of p2c at load 0.8 with the trace repeated until at
 * least 1,000,000 requests on 64 replicas; prints
 * "BENCH sim requests=<n> replicas=<r> s=<x>".
 * SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <inferlb/inferlb.h>

#include <errno.h>
#include <sys/stat.h>

#include "replica.h"
#include "svg.h"
#include "trace.h"
#include "workload.h"

#define MAX_REPLICAS 1024
#define MAX_GATEWAYS 16
#define PAGE_MAX 4096

/* --opt ID=VALUE: pool options set on every gateway after the defaults. */
#define MAX_OPTS 16
static int32_t g_opt_id[MAX_OPTS];
static int64_t g_opt_val[MAX_OPTS];
static size_t g_n_opts;
/* --kv-events: under the prefix policy, every gateway learns from the
 * replicas' KV-cache events (ILB_PREFIX_EVENTS) instead of its own picks */
static int g_kv_events;

/* One replica's KV events, delivered to every gateway at once (as if each
 * subscribed to the replica's event stream). */
#define KV_BATCH 1024
typedef struct kv_sub {
  ilb_pool **gw;
  uint32_t n_gw;
  const char *id;
  uint64_t seq;
  uint64_t stored[KV_BATCH]; /* an admission's blocks, sent as one event */
  size_t n_stored;
} kv_sub;

static void kv_send(kv_sub *k, int32_t type, const uint64_t *blocks,
                    size_t n) {
  ilb_kv_event ev;
  ilb_kv_event_init(&ev);
  ev.type = type;
  ev.seq = ++k->seq;
  ev.block_hashes = blocks;
  ev.n_blocks = n;
  for (uint32_t g = 0; g < k->n_gw; g++)
    if (ilb_replica_kv_event(k->gw[g], k->id, &ev)) {
      fprintf(stderr, "sim: ilb_replica_kv_event failed\n");
      exit(1);
    }
}

static void kv_deliver(void *ud, int type, uint64_t block) {
  kv_sub *k = ud;
  if (type == 1 && k->n_stored < KV_BATCH) {
    k->stored[k->n_stored++] = block;
    return;
  }
  if (k->n_stored) { /* the admission's BlockStored, in prompt order */
    kv_send(k, ILB_KV_STORED, k->stored, k->n_stored);
    k->n_stored = 0;
  }
  if (type == 1)
    k->stored[k->n_stored++] = block; /* (a batch past KV_BATCH) */
  else if (type == 2)
    kv_send(k, ILB_KV_REMOVED, &block, 1);
  else if (type == 3)
    kv_send(k, ILB_KV_CLEARED, NULL, 0);
}

/* ---- the clock ---------------------------------------------------------- */

static uint64_t sim_now;
static uint64_t sim_clock(void *ud) {
  (void)ud;
  return sim_now;
}

/* ---- events: a binary heap on (time, seq) --------------------------------- */

enum {
  EV_ARRIVAL,
  EV_RETRY, /* a retried attempt, after its backoff */
  EV_REPLICA,
  EV_SCRAPE,
  EV_TICK,
  EV_FAULT,
  EV_SAMPLE
};

typedef struct event {
  uint64_t t, seq;
  uint32_t type, a;
} event;

typedef struct heap {
  event *e;
  size_t n, cap;
  uint64_t seq;
} heap;

static int ev_less(const event *x, const event *y) {
  return x->t < y->t || (x->t == y->t && x->seq < y->seq);
}

static void push(heap *h, uint64_t t, uint32_t type, uint32_t a) {
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 1024;
    h->e = realloc(h->e, h->cap * sizeof(*h->e));
    if (!h->e) {
      fprintf(stderr, "sim: out of memory\n");
      exit(2);
    }
  }
  event x = {t, h->seq++, type, a};
  size_t i = h->n++;
  while (i > 0 && ev_less(&x, &h->e[(i - 1) / 2])) {
    h->e[i] = h->e[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->e[i] = x;
}

static event pop(heap *h) {
  event top = h->e[0], x = h->e[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n)
      break;
    if (c + 1 < h->n && ev_less(&h->e[c + 1], &h->e[c]))
      c++;
    if (!ev_less(&h->e[c], &x))
      break;
    h->e[i] = h->e[c];
    i = c;
  }
  if (h->n)
    h->e[i] = x;
  return top;
}

/* ---- configuration ------------------------------------------------------- */

typedef struct fleet {
  const sim_gpu *gpu[MAX_REPLICAS];
  uint32_t n;
} fleet;

static int parse_fleet(fleet *f, const char *spec) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", spec);
  f->n = 0;
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    char *colon = strchr(tok, ':');
    long count = 1;
    if (colon) {
      *colon = 0;
      count = strtol(colon + 1, NULL, 10);
    }
    const sim_gpu *g = sim_gpu_find(tok);
    if (!g || count < 1 || f->n + count > MAX_REPLICAS)
      return -1;
    for (long i = 0; i < count; i++)
      f->gpu[f->n++] = g;
  }
  return f->n ? 0 : -1;
}

/* Requests per second a replica sustains on the trace's mean request:
 * its whole prefill (no cache reuse) plus its decode at full batch. The
 * fleet's capacity is the sum: the "offered load" 1.0. Cache reuse is
 * headroom a policy can win on top of it. */
static double replica_rate(const sim_gpu *g, double in_tokens,
                           double out_tokens) {
  double prefill_s = in_tokens / g->prefill_tok_s;
  /* the batch is bounded by the KV cache too */
  double per_req = (in_tokens + out_tokens) / SIM_BLOCK_TOKENS + 1;
  double b = g->kv_blocks / per_req;
  if (b > g->max_batch)
    b = g->max_batch;
  if (b < 1)
    b = 1;
  double decode_tok_s = b / (g->step_base_s + g->step_per_seq_s * b);
  return 1.0 / (prefill_s + out_tokens / decode_tok_s);
}

/* ---- faults ----------------------------------------------------------------
 * Times are fractions of the trace's arrival span (0 = first arrival, 1 =
 * last), so a scenario means the same at every offered load.
 *   crash:R:T1:T2    replica R dies at T1 (its requests in flight fail)
 *                    and restarts at T2, cold, loading its model for
 *                    LOAD_S seconds (probes answer "not ready")
 *   slow:R:T1:T2:F   replica R runs F times slower (gray failure)
 *   flap:R:T1:T2     replica R's probes alternate pass / fail each second
 *   join:R:T         replica R joins the pool at T, cold
 *   partition:K:T1:T2 replicas 0..K-1 unreachable (connect errors, failed
 *                    probes, no scrapes)
 *   stale:T1:T2      every scrape fails: telemetry goes stale */

#define LOAD_S 30

enum { F_CRASH, F_SLOW, F_FLAP, F_JOIN, F_PARTITION, F_STALE };

typedef struct fault {
  int kind;
  uint32_t r;      /* replica, or K for partition */
  double t1, t2;   /* fractions of the span */
  double factor;   /* slow */
} fault;

#define MAX_FAULTS 32

static int parse_fault(fault *f, const char *spec) {
  char kind[16];
  memset(f, 0, sizeof *f);
  f->t2 = 2; /* never */
  if (sscanf(spec, "crash:%u:%lf:%lf", &f->r, &f->t1, &f->t2) == 3)
    f->kind = F_CRASH;
  else if (sscanf(spec, "slow:%u:%lf:%lf:%lf", &f->r, &f->t1, &f->t2,
                  &f->factor) == 4 && f->factor >= 1)
    f->kind = F_SLOW;
  else if (sscanf(spec, "flap:%u:%lf:%lf", &f->r, &f->t1, &f->t2) == 3)
    f->kind = F_FLAP;
  else if (sscanf(spec, "join:%u:%lf", &f->r, &f->t1) == 2)
    f->kind = F_JOIN;
  else if (sscanf(spec, "partition:%u:%lf:%lf", &f->r, &f->t1, &f->t2) == 3)
    f->kind = F_PARTITION;
  else if (sscanf(spec, "stale:%lf:%lf", &f->t1, &f->t2) == 2)
    f->kind = F_STALE;
  else
    return -1;
  (void)kind;
  return f->t1 >= 0 && f->t2 >= f->t1 ? 0 : -1;
}

/* The "faults" scenario on a fleet of n replicas: one of everything. */
static size_t preset_faults(fault *f, uint32_t n) {
  size_t k = 0;
  if (n < 4)
    return 0;
  f[k++] = (fault){F_CRASH, 0, 0.20, 0.45, 0};
  f[k++] = (fault){F_SLOW, 2, 0.30, 0.60, 10};
  f[k++] = (fault){F_FLAP, 4, 0.50, 0.60, 0};
  f[k++] = (fault){F_JOIN, n - 1, 0.40, 2, 0};
  f[k++] = (fault){F_PARTITION, n / 2, 0.70, 0.75, 0};
  f[k++] = (fault){F_STALE, 0, 0.80, 0.90, 0};
  return k;
}

/* ---- one run --------------------------------------------------------------- */

typedef struct req_state {
  sim_job job;
  ilb_retry_state retry;
  uint64_t ticket;
  uint32_t gateway, replica;
  uint8_t placed;
} req_state;

typedef struct result {
  double ttft_p50, ttft_p90, ttft_p99, e2e_p50, e2e_p99, tput, hit_rate,
      max_mean;
  uint64_t shed, failed, retried, done;
  /* with runcfg.sample_ns: requests in flight per replica over time,
   * sample k of replica i at load[k * n_replicas + i], time t[k] (s) */
  double *t, *load;
  size_t n_samples;
} result;

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static double pct(uint64_t *v, size_t n, double p) {
  if (!n)
    return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return (double)v[i] / 1e6;
}

typedef struct runcfg {
  const sim_trace *tr;
  const fleet *fl;
  int32_t policy;
  double scale;
  uint32_t n_gw;
  uint64_t seed, scrape_ns;
  const fault *faults;
  size_t n_faults;
  uint64_t sample_ns; /* 0: no time series */
  double capacity_x;  /* replica capacity = this x its max batch; 0 none */
} runcfg;

/* What a replica is doing, as the world (not the gateways) knows it. */
typedef struct world {
  int down;          /* crashed, or not joined yet */
  uint64_t ready_at; /* loading its model until then */
  int unreachable, flapping, stale;
} world;

static int run(const runcfg *cf, result *res) {
  const sim_trace *tr = cf->tr;
  const fleet *fl = cf->fl;
  uint32_t n_gw = cf->n_gw;
  uint64_t scrape_ns = cf->scrape_ns;
  double scale = cf->scale;
  memset(res, 0, sizeof *res);
  size_t n = tr->n;
  req_state *rs = calloc(n ? n : 1, sizeof(*rs));
  sim_replica *rep[MAX_REPLICAS];
  ilb_pool *gw[MAX_GATEWAYS];
  /* one parser per gateway and replica: scr[g * fl->n + i] */
  ilb_scrape **scr = calloc((size_t)n_gw * fl->n, sizeof(*scr));
  uint32_t n_scr = fl->n;
  if (!scr)
    return -1;
  double *area = calloc(fl->n, sizeof(double));
  uint32_t *inflight = calloc(fl->n, sizeof(uint32_t));
  uint64_t *last_change = calloc(fl->n, sizeof(uint64_t));
  uint64_t *ttft = malloc(sizeof(uint64_t) * (n ? n : 1));
  uint64_t *e2e = malloc(sizeof(uint64_t) * (n ? n : 1));
  if (!rs || !area || !inflight || !last_change || !ttft || !e2e)
    return -1;
  char ids[MAX_REPLICAS][16];
  for (uint32_t i = 0; i < fl->n; i++) {
    rep[i] = sim_replica_new(fl->gpu[i]);
    snprintf(ids[i], sizeof ids[i], "r%u", i);
  }
  sim_now = 0;
  world wd[MAX_REPLICAS];
  memset(wd, 0, sizeof wd);
  uint64_t span = tr->n ? tr->req[tr->n - 1].arrival_ns - tr->req[0].arrival_ns
                        : 0;
  uint64_t t_base = tr->n ? (uint64_t)((double)tr->req[0].arrival_ns * scale)
                          : 0;
#define AT(frac) (t_base + (uint64_t)((frac) * (double)span * scale))
  for (size_t k = 0; k < cf->n_faults; k++)
    if (cf->faults[k].kind == F_JOIN && cf->faults[k].r < fl->n)
      wd[cf->faults[k].r].down = 1; /* absent until it joins */
  for (uint32_t g = 0; g < n_gw; g++) {
    ilb_host h;
    ilb_host_init(&h);
    h.clock_ns = sim_clock;
    h.seed = cf->seed * 1000003u + g;
    h.log_level = ILB_LOG_NONE;
    if (ilb_pool_new(&gw[g], &h))
      return -1;
    ilb_pool_set_option(gw[g], ILB_OPT_POLICY, cf->policy);
    /* prefix: the traces' hash ids stand for 512 tokens each */
    ilb_pool_set_option(gw[g], ILB_OPT_PREFIX_BLOCK_TOKENS, SIM_BLOCK_TOKENS);
    /* a host's failure handling: probes, ejection on connect errors,
     * slow start for replicas that come back */
    ilb_pool_set_option(gw[g], ILB_OPT_PROBE_INTERVAL_MS, 2000);
    ilb_pool_set_option(gw[g], ILB_OPT_PROBE_UNHEALTHY_INTERVAL_MS, 1000);
    ilb_pool_set_option(gw[g], ILB_OPT_HEALTH_FALL, 2);
    ilb_pool_set_option(gw[g], ILB_OPT_OUTLIER_CONSECUTIVE_GATEWAY, 3);
    ilb_pool_set_option(gw[g], ILB_OPT_OUTLIER_BASE_EJECTION_MS, 10000);
    ilb_pool_set_option(gw[g], ILB_OPT_SLOW_START_MS, 30000);
    /* a gateway in front of an overloaded fleet holds many requests */
    ilb_pool_set_option(gw[g], ILB_OPT_MAX_IN_FLIGHT, 1 << 22);
    /* a replica whose KV cache cannot hold a prompt refuses it: retried
     * elsewhere, up to every GPU type */
    ilb_pool_set_option(gw[g], ILB_OPT_RETRY_MAX_ATTEMPTS, 4);
    ilb_pool_set_option(gw[g], ILB_OPT_RETRY_BUDGET_MIN_PER_S, 1000000);
    ilb_pool_set_option(gw[g], ILB_OPT_TELEMETRY_MAX_AGE_MS,
                        (int64_t)(3 * scrape_ns / 1000000));
    for (size_t k = 0; k < g_n_opts; k++) {
      int orc = ilb_pool_set_option(gw[g], g_opt_id[k], g_opt_val[k]);
      if (orc) {
        fprintf(stderr, "sim: --opt %d=%lld: %s\n", (int)g_opt_id[k],
                (long long)g_opt_val[k], ilb_strerror(orc));
        exit(2);
      }
    }
    ilb_pool_batch_begin(gw[g]);
    for (uint32_t i = 0; i < fl->n; i++) {
      if (wd[i].down)
        continue; /* joins later */
      ilb_replica_spec sp;
      ilb_replica_spec_init(&sp);
      sp.id = ids[i];
      sp.weight = fl->gpu[i]->weight;
      sp.capacity = (uint32_t)(cf->capacity_x * fl->gpu[i]->max_batch);
      sp.host_data = (void *)(uintptr_t)(i + 1);
      ilb_replica_add(gw[g], &sp);
    }
    ilb_pool_batch_commit(gw[g]);
    for (uint32_t i = 0; i < n_scr; i++)
      ilb_scrape_new(&scr[g * fl->n + i], NULL, NULL);
  }
  kv_sub *kv = NULL; /* 8 KiB each: not on the stack */
  if (g_kv_events && cf->policy == ILB_POLICY_PREFIX) {
    if (!(kv = calloc(fl->n, sizeof(*kv))))
      return -1;
    for (uint32_t i = 0; i < fl->n; i++) {
      kv[i].gw = gw;
      kv[i].n_gw = n_gw;
      kv[i].id = ids[i];
      sim_replica_on_kv(rep[i], kv_deliver, &kv[i]);
      for (uint32_t g = 0; g < n_gw; g++)
        ilb_pool_set_option(gw[g], ILB_OPT_PREFIX_MODE, ILB_PREFIX_EVENTS);
    }
  }

  heap h = {0};
  for (size_t i = 0; i < n; i++)
    push(&h, (uint64_t)((double)tr->req[i].arrival_ns * scale), EV_ARRIVAL,
         (uint32_t)i);
  for (uint32_t g = 0; g < n_gw; g++) { /* gateways out of phase */
    push(&h, scrape_ns * (g + 1) / n_gw, EV_SCRAPE, g);
    push(&h, 0, EV_TICK, g);
  }
  size_t cap_samples = 0;
  if (cf->sample_ns)
    push(&h, 0, EV_SAMPLE, 0);
  /* fault transitions: a = fault index * 2 + (0 start, 1 end) */
  for (size_t k = 0; k < cf->n_faults; k++) {
    push(&h, AT(cf->faults[k].t1), EV_FAULT, (uint32_t)(2 * k));
    if (cf->faults[k].t2 <= 1.5)
      push(&h, AT(cf->faults[k].t2), EV_FAULT, (uint32_t)(2 * k + 1));
  }
  size_t outstanding = n, n_done = 0;
  uint64_t first = UINT64_MAX, last = 0, out_tokens = 0, hits = 0,
           queries = 0;
  char page[PAGE_MAX];
  sim_job *done[256];
  /* in-flight time integral of replica r, then a change of d */
#define inflight_change(r, d)                                                 \
  do {                                                                       \
    area[r] += (double)inflight[r] * (double)(sim_now - last_change[r]);     \
    last_change[r] = sim_now;                                                \
    inflight[r] = (uint32_t)((int64_t)inflight[r] + (d));                    \
  } while (0)
  /* a job finished on its replica: complete its ticket, count it */
#define finish_job(jj)                                                        \
  do {                                                                       \
    sim_job *j_ = (jj);                                                      \
    req_state *q_ = &rs[j_->id];                                             \
    uint64_t arr_ =                                                          \
        (uint64_t)((double)tr->req[j_->id].arrival_ns * scale);              \
    ilb_outcome o_;                                                          \
    ilb_outcome_init(&o_);                                                   \
    o_.latency_ns = j_->done_ns - arr_;                                      \
    o_.ttft_ns = j_->first_token_ns - arr_;                                  \
    o_.prompt_tokens = j_->input_tokens;                                     \
    o_.output_tokens = j_->output_tokens;                                    \
    ilb_complete(gw[q_->gateway], q_->ticket, &o_);                          \
    ttft[n_done] = o_.ttft_ns;                                               \
    e2e[n_done] = o_.latency_ns;                                             \
    n_done++;                                                                \
    out_tokens += j_->output_tokens;                                         \
    hits += j_->hit_blocks;                                                  \
    queries += j_->n_blocks;                                                 \
    if (j_->done_ns > last)                                                  \
      last = j_->done_ns;                                                    \
    inflight_change(q_->replica, -1);                                        \
    outstanding--;                                                           \
  } while (0)

  while (h.n && outstanding) {
    event ev = pop(&h);
    sim_now = ev.t;
    if (ev.type == EV_ARRIVAL || ev.type == EV_RETRY) {
      req_state *q = &rs[ev.a];
      const sim_req *tq = &tr->req[ev.a];
      uint64_t key = tq->n_blocks ? tr->blocks[tq->blocks_off] : ev.a;
      ilb_request req;
      ilb_request_init(&req);
      req.key = &key;
      req.key_len = sizeof key;
      req.prompt_tokens = tq->input_tokens;
      req.output_tokens = tq->output_tokens;
      req.block_hashes = tr->blocks + tq->blocks_off; /* for prefix */
      req.n_blocks = tq->n_blocks;
      if (ev.type == EV_ARRIVAL) {
        q->job.id = ev.a;
        q->job.input_tokens = tq->input_tokens;
        q->job.output_tokens = tq->output_tokens;
        q->job.blocks = tr->blocks + tq->blocks_off;
        q->job.n_blocks = tq->n_blocks;
        q->gateway = (uint32_t)(ev.a % n_gw);
        if (first == UINT64_MAX)
          first = sim_now;
        ilb_pick_result pr;
        ilb_pick_result_init(&pr);
        if (ilb_pick(&pr, gw[q->gateway], &req)) {
          res->shed++; /* answered 503 */
          outstanding--;
          continue;
        }
        q->replica = (uint32_t)((uintptr_t)pr.host_data - 1);
        q->ticket = pr.ticket;
        ilb_retry_state_init(&q->retry);
      }
      /* send the attempt to q->replica */
      uint32_t r = q->replica;
      ilb_outcome o;
      ilb_outcome_init(&o);
      if (wd[r].down || wd[r].unreachable) {
        o.status = ILB_OUTCOME_CONNECT_ERROR;
      } else if (sim_now < wd[r].ready_at) {
        o.status = ILB_OUTCOME_REFUSED; /* loading: 503 before any work */
      } else if (sim_replica_submit(rep[r], &q->job, sim_now)) {
        q->placed = 1;
        inflight_change(r, +1);
        push(&h, sim_replica_next(rep[r]), EV_REPLICA, r);
        continue;
      } else {
        o.status = ILB_OUTCOME_REFUSED; /* too long for its KV cache */
      }
      /* the library decides whether and where to retry, and when */
      ilb_retry_result rr;
      ilb_retry_result_init(&rr);
      if (ilb_retry(&rr, gw[q->gateway], &q->retry, &req, q->ticket, &o) ||
          rr.verdict != ILB_RETRY_YES) {
        res->failed++;
        outstanding--;
        continue;
      }
      res->retried++;
      q->ticket = rr.ticket;
      q->replica = (uint32_t)((uintptr_t)rr.host_data - 1);
      push(&h, sim_now + rr.backoff_ns, EV_RETRY, ev.a); /* after backoff */
    } else if (ev.type == EV_REPLICA) {
      uint32_t r = ev.a;
      if (ev.t != sim_replica_next(rep[r]))
        continue; /* superseded */
      size_t got, more;
      do {
        more = sim_replica_advance(rep[r], sim_now, done, 256, &got);
        for (size_t k = 0; k < got; k++)
          finish_job(done[k]);
      } while (more);
      if (sim_replica_next(rep[r]) != UINT64_MAX)
        push(&h, sim_replica_next(rep[r]), EV_REPLICA, r);
    } else if (ev.type == EV_TICK) { /* the gateway's timer and probes */
      uint32_t g = ev.a;
      ilb_due due[64];
      size_t nd;
      uint64_t next;
      do {
        if (ilb_next_due(due, sizeof due[0], 64, &nd, &next, gw[g]))
          break;
        for (size_t k = 0; k < nd; k++) {
          if (due[k].kind != ILB_DUE_PROBE)
            continue;
          uint32_t i = (uint32_t)((uintptr_t)due[k].host_data - 1);
          int32_t verdict = ILB_PROBE_PASS;
          if (wd[i].down || wd[i].unreachable)
            verdict = ILB_PROBE_FAIL;
          else if (sim_now < wd[i].ready_at)
            verdict = ILB_PROBE_NOT_READY;
          else if (wd[i].flapping && (sim_now / 1000000000u) % 2)
            verdict = ILB_PROBE_FAIL;
          ilb_health_report(gw[g], due[k].replica_id, verdict);
        }
      } while (nd == 64);
      if (next != UINT64_MAX)
        push(&h, next > sim_now ? next : sim_now + 1, EV_TICK, g);
    } else if (ev.type == EV_SAMPLE) {
      if (res->n_samples == cap_samples) {
        cap_samples = cap_samples ? cap_samples * 2 : 256;
        double *nt = realloc(res->t, cap_samples * sizeof(double));
        double *nl = nt ? realloc(res->load, cap_samples * fl->n *
                                                 sizeof(double))
                        : NULL;
        if (nt)
          res->t = nt;
        if (!nl)
          return -1;
        res->load = nl;
      }
      res->t[res->n_samples] = (double)sim_now / 1e9;
      for (uint32_t i = 0; i < fl->n; i++)
        res->load[res->n_samples * fl->n + i] = inflight[i];
      res->n_samples++;
      push(&h, sim_now + cf->sample_ns, EV_SAMPLE, 0);
    } else if (ev.type == EV_FAULT) {
      const fault *f = &cf->faults[ev.a / 2];
      int start = ev.a % 2 == 0;
      uint32_t r = f->r < fl->n ? f->r : fl->n - 1;
      switch (f->kind) {
      case F_CRASH:
        if (start) {
          sim_job **lost;
          size_t n_lost, got, more;
          do { /* what finished before the crash completes normally */
            more = sim_replica_advance(rep[r], sim_now, done, 256, &got);
            for (size_t k = 0; k < got; k++)
              finish_job(done[k]);
          } while (more);
          if (sim_replica_crash(rep[r], &lost, &n_lost) == 0) {
            for (size_t k = 0; k < n_lost; k++) {
              req_state *q = &rs[lost[k]->id];
              ilb_outcome o;
              ilb_outcome_init(&o);
              o.status = ILB_OUTCOME_CONNECT_ERROR; /* reset mid-request */
              ilb_complete(gw[q->gateway], q->ticket, &o);
              res->failed++;
              outstanding--;
              inflight_change(r, -1);
            }
            free(lost);
          }
          wd[r].down = 1;
        } else {
          wd[r].down = 0;
          wd[r].ready_at = sim_now + (uint64_t)LOAD_S * 1000000000u;
        }
        break;
      case F_SLOW:
        sim_replica_set_slowdown(rep[r], start ? f->factor : 1.0, sim_now);
        if (sim_replica_next(rep[r]) != UINT64_MAX)
          push(&h, sim_replica_next(rep[r]), EV_REPLICA, r);
        break;
      case F_FLAP:
        wd[r].flapping = start;
        break;
      case F_JOIN:
        if (start && wd[r].down) {
          wd[r].down = 0;
          wd[r].ready_at = sim_now; /* cold: an empty cache */
          for (uint32_t g = 0; g < n_gw; g++) {
            ilb_replica_spec sp;
            ilb_replica_spec_init(&sp);
            sp.id = ids[r];
            sp.weight = fl->gpu[r]->weight;
            sp.capacity = (uint32_t)(cf->capacity_x * fl->gpu[r]->max_batch);
            sp.host_data = (void *)(uintptr_t)(r + 1);
            ilb_pool_set_option(gw[g], ILB_OPT_HEALTH_INITIAL,
                                ILB_HEALTH_UNKNOWN);
            ilb_replica_add(gw[g], &sp);
            ilb_pool_set_option(gw[g], ILB_OPT_HEALTH_INITIAL,
                                ILB_HEALTH_HEALTHY);
          }
        }
        break;
      case F_PARTITION:
        for (uint32_t i = 0; i < f->r && i < fl->n; i++)
          wd[i].unreachable = start;
        break;
      default: /* F_STALE */
        for (uint32_t i = 0; i < fl->n; i++)
          wd[i].stale = start;
        break;
      }
    } else { /* EV_SCRAPE: the gateway reads every replica's /metrics */
      uint32_t g = ev.a;
      for (uint32_t i = 0; i < n_scr; i++) {
        if (wd[i].down || wd[i].unreachable || wd[i].stale)
          continue; /* the scrape fails: its telemetry ages */
        size_t len = sim_replica_metrics(rep[i], "m", page, sizeof page);
        ilb_telemetry t;
        ilb_telemetry_init(&t);
        if (ilb_telemetry_parse(&t, scr[g * fl->n + i], page, len, sim_now) == 0)
          ilb_replica_report(gw[g], ids[i], &t);
      }
      push(&h, sim_now + scrape_ns, EV_SCRAPE, g);
    }
  }

  qsort(ttft, n_done, sizeof(uint64_t), cmp_u64);
  qsort(e2e, n_done, sizeof(uint64_t), cmp_u64);
  res->done = n_done;
  res->ttft_p50 = pct(ttft, n_done, 0.50);
  res->ttft_p90 = pct(ttft, n_done, 0.90);
  res->ttft_p99 = pct(ttft, n_done, 0.99);
  res->e2e_p50 = pct(e2e, n_done, 0.50);
  res->e2e_p99 = pct(e2e, n_done, 0.99);
  res->tput = last > first ? (double)out_tokens / ((double)(last - first) / 1e9)
                           : 0;
  res->hit_rate = queries ? (double)hits / (double)queries : 0;
  double sum = 0, max = 0;
  for (uint32_t i = 0; i < fl->n; i++) {
    area[i] += (double)inflight[i] * (double)(sim_now - last_change[i]);
    sum += area[i];
    if (area[i] > max)
      max = area[i];
  }
  res->max_mean = sum > 0 ? max / (sum / fl->n) : 0;

  for (uint32_t g = 0; g < n_gw; g++) {
    for (uint32_t i = 0; i < n_scr; i++)
      ilb_scrape_free(scr[g * fl->n + i]);
    ilb_pool_free(gw[g]);
  }
  free(scr);
  for (uint32_t i = 0; i < fl->n; i++)
    sim_replica_free(rep[i]);
  free(h.e);
  free(rs);
  free(area);
  free(inflight);
  free(last_change);
  free(ttft);
  free(e2e);
  free(kv);
  return 0;
}

/* ---- charts ---------------------------------------------------------------- */

static int make_dir(const char *dir) {
  if (mkdir(dir, 0777) && errno != EEXIST) {
    fprintf(stderr, "sim: cannot create %s: %s\n", dir, strerror(errno));
    return -1;
  }
  return 0;
}

/* One line per policy: its latency p99 (ms) at each offered load. */
static int write_load_chart(const char *dir, const char *file,
                            const char *title, const double *load,
                            size_t n_load, const int32_t *pol, size_t n_pol,
                            double v[16][32]) {
  if (make_dir(dir))
    return -1;
  static double y[32][16];
  sim_series s[32];
  for (size_t p = 0; p < n_pol; p++) {
    for (size_t l = 0; l < n_load; l++)
      y[p][l] = v[l][p];
    s[p] = (sim_series){ilb_policy_name(pol[p]), load, y[p], n_load};
  }
  sim_chart c = {title, "offered load (fraction of capacity)",
                 "milliseconds (log)", 1, 0, 0};
  char path[1024], err[256];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  if (sim_svg_lines(path, &c, s, n_pol, err, sizeof err)) {
    fprintf(stderr, "sim: %s\n", err);
    return -1;
  }
  return 0;
}

/* Requests in flight on each replica over time, for one run. */
static int write_replica_chart(const char *dir, const fleet *fl,
                               const char *policy, double load,
                               const result *r) {
  if (make_dir(dir) || !r->n_samples)
    return -1;
  double *y = malloc(sizeof(double) * r->n_samples * fl->n);
  static char names[MAX_REPLICAS][32];
  sim_series *s = malloc(sizeof(sim_series) * fl->n);
  if (!y || !s) {
    free(y);
    free(s);
    return -1;
  }
  for (uint32_t i = 0; i < fl->n; i++) {
    for (size_t k = 0; k < r->n_samples; k++)
      y[i * r->n_samples + k] = r->load[k * fl->n + i];
    snprintf(names[i], sizeof names[i], "r%u %s", i, fl->gpu[i]->name);
    s[i] = (sim_series){names[i], r->t, y + i * r->n_samples, r->n_samples};
  }
  char title[128], path[1024], err[256];
  snprintf(title, sizeof title, "Requests in flight per replica: %s, load %.2f",
           policy, load);
  sim_chart c = {title, "simulated time (s)", "requests in flight", 0, 0, 0};
  snprintf(path, sizeof path, "%s/replica_load.svg", dir);
  int rc = sim_svg_lines(path, &c, s, fl->n, err, sizeof err);
  if (rc)
    fprintf(stderr, "sim: %s\n", err);
  free(y);
  free(s);
  return rc ? -1 : 0;
}

/* ---- main ------------------------------------------------------------------ */


static const char *stem(const char *path) {
  const char *s = strrchr(path, '/');
  s = s ? s + 1 : path;
  static char buf[64];
  snprintf(buf, sizeof buf, "%s", s);
  char *dot = strchr(buf, '.');
  if (dot)
    *dot = 0;
  return buf;
}

int main(int argc, char **argv) {
  const char *trace_path = "bench/data/mooncake/synthetic_trace.jsonl";
  const char *policies = "all", *loads = "0.5,0.8,0.95";
  const char *fleet_spec = "h100:2,a100:2,l4:2,t4:2";
  uint32_t n_gw = 1, repeat = 1;
  uint64_t seed = 1, scrape_ms = 1000;
  int quiet = 0, bench = 0;
  fault faults[MAX_FAULTS];
  size_t n_faults = 0;
  const char *scenario = "none";
  const char *out_dir = NULL, *chart_policy = "least_tokens";
  const char *workload = NULL;
  double capacity_x = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--trace") && v)
      trace_path = argv[++i];
    else if (!strcmp(a, "--policy") && v)
      policies = argv[++i];
    else if (!strcmp(a, "--load") && v)
      loads = argv[++i];
    else if (!strcmp(a, "--gateways") && v)
      n_gw = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (!strcmp(a, "--seed") && v)
      seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--fleet") && v)
      fleet_spec = argv[++i];
    else if (!strcmp(a, "--scrape-ms") && v)
      scrape_ms = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(a, "--repeat") && v)
      repeat = (uint32_t)strtoul(argv[++i], NULL, 10);
    else if (!strcmp(a, "--fault") && v) {
      if (n_faults == MAX_FAULTS || parse_fault(&faults[n_faults], argv[++i])) {
        fprintf(stderr, "sim: bad --fault %s (see bench/sim/sim.c)\n", v);
        return 2;
      }
      n_faults++;
    } else if (!strcmp(a, "--scenario") && v)
      scenario = argv[++i];
    else if (!strcmp(a, "--capacity") && v)
      capacity_x = strtod(argv[++i], NULL);
    else if (!strcmp(a, "--workload") && v)
      workload = argv[++i];
    else if (!strcmp(a, "--out") && v)
      out_dir = argv[++i];
    else if (!strcmp(a, "--chart-policy") && v)
      chart_policy = argv[++i];
    else if (!strcmp(a, "--opt") && v) {
      char *end;
      long id = strtol(argv[++i], &end, 10);
      if (g_n_opts == MAX_OPTS || *end != '=' ||
          ilb_option_bounds(NULL, NULL, NULL, (int32_t)id)) {
        fprintf(stderr, "sim: bad --opt %s (ID=VALUE, ID an ilb_option)\n", v);
        return 2;
      }
      g_opt_id[g_n_opts] = (int32_t)id;
      g_opt_val[g_n_opts++] = strtoll(end + 1, NULL, 10);
    } else if (!strcmp(a, "--kv-events"))
      g_kv_events = 1;
    else if (!strcmp(a, "--quiet"))
      quiet = 1;
    else if (!strcmp(a, "--bench"))
      bench = 1;
    else {
      fprintf(stderr, "usage: see the comment at the top of bench/sim/sim.c\n");
      return 2;
    }
  }
  if (n_gw < 1 || n_gw > MAX_GATEWAYS || repeat < 1 || scrape_ms < 1) {
    fprintf(stderr, "sim: --gateways 1..%d, --repeat >= 1, --scrape-ms >= 1\n",
            MAX_GATEWAYS);
    return 2;
  }
  fleet fl;
  if (bench)
    fleet_spec = "h100:16,a100:16,l4:16,t4:16";
  if (parse_fleet(&fl, fleet_spec)) {
    fprintf(stderr, "sim: bad --fleet %s (gpus: h100 a100 l4 t4)\n",
            fleet_spec);
    return 2;
  }
  if (!strcmp(scenario, "faults"))
    n_faults += preset_faults(faults + n_faults, fl.n);
  else if (strcmp(scenario, "none")) {
    fprintf(stderr, "sim: unknown --scenario %s (none, faults)\n", scenario);
    return 2;
  }
  for (size_t k = 0; k < n_faults; k++)
    if (faults[k].r >= fl.n && faults[k].kind != F_STALE) {
      fprintf(stderr, "sim: fault on replica %u of %u\n", faults[k].r, fl.n);
      return 2;
    }
  sim_trace tr0 = {0}, tr = {0};
  char err[512];
  if (workload ? sim_workload(&tr0, workload, seed, 0, err, sizeof err)
               : sim_trace_load(&tr0, trace_path, err, sizeof err)) {
    fprintf(stderr, "sim: %s\n", err);
    if (workload) {
      fprintf(stderr, "workloads:\n");
      for (size_t k = 0; sim_workload_names[k]; k++)
        fprintf(stderr, "  %-14s %s\n", sim_workload_names[k],
                sim_workload_descriptions[k]);
    }
    return 1;
  }
  const char *source = workload ? workload : trace_path;
  if (!tr0.n) {
    fprintf(stderr, "sim: %s: no requests\n", trace_path);
    return 1;
  }
  uint64_t span = tr0.req[tr0.n - 1].arrival_ns - tr0.req[0].arrival_ns;
  if (bench && tr0.n * repeat < 1000000)
    repeat = (uint32_t)((1000000 + tr0.n - 1) / tr0.n);
  if (repeat > 1) { /* back to back, block ids kept apart per copy */
    uint64_t max_id = 0;
    for (size_t b = 0; b < tr0.n_blocks; b++)
      if (tr0.blocks[b] > max_id)
        max_id = tr0.blocks[b];
    tr.n = tr.cap = tr0.n * repeat;
    tr.n_blocks = tr.cap_blocks = tr0.n_blocks * repeat;
    tr.req = malloc(sizeof(sim_req) * tr.n);
    tr.blocks = malloc(sizeof(uint64_t) * (tr.n_blocks ? tr.n_blocks : 1));
    if (!tr.req || !tr.blocks)
      return 2;
    for (uint32_t c = 0; c < repeat; c++) {
      for (size_t i = 0; i < tr0.n; i++) {
        sim_req q = tr0.req[i];
        q.arrival_ns += c * (span + 1000000);
        q.blocks_off += c * tr0.n_blocks;
        tr.req[c * tr0.n + i] = q;
      }
      for (size_t b = 0; b < tr0.n_blocks; b++)
        tr.blocks[c * tr0.n_blocks + b] = tr0.blocks[b] + c * (max_id + 1);
    }
    span = tr.req[tr.n - 1].arrival_ns - tr.req[0].arrival_ns;
  } else {
    tr = tr0;
  }

  /* offered load: the fleet's capacity on the mean request */
  double in_mean = 0, out_mean = 0;
  for (size_t i = 0; i < tr.n; i++) {
    in_mean += tr.req[i].input_tokens;
    out_mean += tr.req[i].output_tokens;
  }
  in_mean /= (double)tr.n;
  out_mean /= (double)tr.n;
  size_t kv_total = 0;
  for (uint32_t i = 0; i < fl.n; i++)
    kv_total += fl.gpu[i]->kv_blocks;
  double ceiling = sim_reuse_lru(&tr, kv_total);
  double cap = 0;
  for (uint32_t i = 0; i < fl.n; i++)
    cap += replica_rate(fl.gpu[i], in_mean, out_mean);
  double natural = span ? (double)tr.n / ((double)span / 1e9) : cap;

  int32_t pol[32];
  size_t n_pol = 0;
  if (bench)
    policies = "p2c";
  if (!strcmp(policies, "all")) {
    for (int32_t p = 1; ilb_policy_name(p); p++)
      pol[n_pol++] = p;
  } else {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", policies);
    for (char *t = strtok(buf, ","); t && n_pol < 32; t = strtok(NULL, ",")) {
      if (ilb_policy_from_name(&pol[n_pol], t)) {
        fprintf(stderr, "sim: unknown policy %s\n", t);
        return 2;
      }
      n_pol++;
    }
  }
  double load[16];
  size_t n_load = 0;
  {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", bench ? "0.8" : loads);
    for (char *t = strtok(buf, ","); t && n_load < 16; t = strtok(NULL, ",")) {
      load[n_load] = strtod(t, NULL);
      if (!(load[n_load] > 0 && load[n_load] <= 10)) {
        fprintf(stderr, "sim: bad load %s\n", t);
        return 2;
      }
      n_load++;
    }
  }
  if (!quiet)
    printf("# %zu requests from %s, %u replicas (%s), capacity %.2f req/s "
           "(mean request %.0f in / %.0f out tokens, no reuse; an LRU as "
           "large as the fleet's KV cache would reuse %.1f%%, an infinite "
           "cache %.1f%%), "
           "%u gateway(s), seed %" PRIu64 "\n"
           "%-22s %5s %10s %10s %10s %10s %10s %8s %6s %7s %8s %5s %6s %7s\n",
           tr.n, source, fl.n, fleet_spec, cap, in_mean, out_mean,
           ceiling * 100, sim_reuse_infinite(&tr) * 100, n_gw, seed, "policy",
           "load", "ttft_p50", "ttft_p90", "ttft_p99", "e2e_p50", "e2e_p99",
           "tok/s", "hit", "ceiling", "max/mean", "shed", "failed",
           "retried");
  static double t99[16][32], e99[16][32];
  int32_t chart_pol = 0;
  if (out_dir && ilb_policy_from_name(&chart_pol, chart_policy)) {
    fprintf(stderr, "sim: unknown --chart-policy %s\n", chart_policy);
    return 2;
  }
  size_t chart_load = n_load / 2;
  for (size_t li = 0; li < n_load; li++) {
    for (size_t pi = 0; pi < n_pol; pi++) {
      result r;
      double scale = natural / (load[li] * cap);
      struct timespec t0, t1;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      runcfg cf = {&tr,     &fl,      pol[pi],  scale, n_gw, seed,
                   scrape_ms * 1000000, faults, n_faults, 0, capacity_x};
      int sampled = out_dir && pol[pi] == chart_pol && li == chart_load;
      if (sampled) /* 200 samples over the arrivals, then on to the end */
        cf.sample_ns = (uint64_t)((double)span * scale / 200) + 1;
      if (run(&cf, &r)) {
        fprintf(stderr, "sim: out of memory\n");
        return 2;
      }
      clock_gettime(CLOCK_MONOTONIC, &t1);
      const char *name = ilb_policy_name(pol[pi]);
      if (!quiet)
        printf("%-22s %5.2f %10.1f %10.1f %10.1f %10.1f %10.1f %8.0f %6.3f "
               "%7.3f %8.2f %5" PRIu64 " %6" PRIu64 " %7" PRIu64 "\n",
               name, load[li], r.ttft_p50, r.ttft_p90, r.ttft_p99, r.e2e_p50,
               r.e2e_p99, r.tput, r.hit_rate, ceiling, r.max_mean, r.shed,
               r.failed, r.retried);
      printf("SIM policy=%s workload=%s load=%.2f gateways=%u "
             "ttft_p50_ms=%.1f ttft_p99_ms=%.1f e2e_p99_ms=%.1f "
             "tput_tok_s=%.0f hit_rate=%.3f hit_ceiling=%.3f "
             "max_mean_load=%.2f shed=%" PRIu64 " failed=%" PRIu64 "\n",
             name, workload ? workload : stem(trace_path), load[li], n_gw,
             r.ttft_p50, r.ttft_p99,
             r.e2e_p99, r.tput, r.hit_rate, ceiling, r.max_mean, r.shed,
             r.failed);
      t99[li][pi] = r.ttft_p99;
      e99[li][pi] = r.e2e_p99;
      if (sampled && write_replica_chart(out_dir, &fl, chart_policy,
                                         load[li], &r))
        return 1;
      free(r.t);
      free(r.load);
      if (bench)
        printf("BENCH sim requests=%zu replicas=%u s=%.2f\n", tr.n, fl.n,
               (double)(t1.tv_sec - t0.tv_sec) +
                   (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
      fflush(stdout);
    }
  }
  if (out_dir && n_load > 1 &&
      (write_load_chart(out_dir, "ttft_p99_vs_load.svg",
                        "TTFT p99 against offered load", load, n_load, pol,
                        n_pol, t99) ||
       write_load_chart(out_dir, "e2e_p99_vs_load.svg",
                        "End-to-end latency p99 against offered load", load,
                        n_load, pol, n_pol, e99)))
    return 1;
  if (out_dir && !quiet) {
    printf("# charts in %s:", out_dir);
    if (n_load > 1)
      printf(" ttft_p99_vs_load.svg e2e_p99_vs_load.svg");
    for (size_t pi = 0; pi < n_pol; pi++)
      if (pol[pi] == chart_pol)
        printf(" replica_load.svg (%s)", chart_policy);
    printf("\n");
  }
  if (tr.req != tr0.req) {
    free(tr.req);
    free(tr.blocks);
  }
  sim_trace_free(&tr0);
  return 0;
}
